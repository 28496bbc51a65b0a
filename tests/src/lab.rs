//! A lab: a Linux bridge in the root network namespace and one network namespace plus one cgroup
//! per "pod", joined to the bridge by a veth pair. Pods get addresses from a private test subnet
//! (10.213.K.0/24 and fd00:dfd:0:K::/64); no namespace gets a default route, so traffic never
//! leaves what the lab built. Dropping the lab ends its processes and removes everything.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sys;

/// Serialises the kernel tests of one test binary: each lab and daemon sees the whole node, so
/// tests run one at a time to keep counts and timings clean.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// One workload: a network namespace with one interface on the lab bridge, and a cgroup.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Short name given by the test ("client", "server").
    pub name: String,
    /// Name of the network namespace (`ip netns` name).
    pub netns: String,
    /// The namespace's inode number, as dfdwatch reports it.
    pub netns_inode: u64,
    /// The pod's cgroup v2 directory.
    pub cgroup_dir: PathBuf,
    /// The cgroup id (inode of `cgroup_dir`), as dfdwatch reports it.
    pub cgroup_id: u64,
    /// IPv4 address on the lab subnet.
    pub ipv4: Ipv4Addr,
    /// IPv6 address on the lab subnet.
    pub ipv6: Ipv6Addr,
}

/// The network and cgroups of one test. See the module documentation.
pub struct Lab {
    subnet: u8,
    bridge: String,
    cgroup_root: PathBuf,
    pods: Vec<Pod>,
    children: Vec<Child>,
}

impl Lab {
    /// Builds an empty lab (a bridge and a cgroup directory). `tag` names its cgroup directory.
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let subnet = u8::try_from((std::process::id() + n * 37) % 200 + 20).unwrap_or(20);
        Self::with_subnet(tag, subnet)
    }

    /// As [`Lab::new`] on a chosen subnet (10.213.`subnet`.0/24), for a DFD with fixed CIDRs.
    pub fn with_subnet(tag: &str, subnet: u8) -> Result<Self> {
        sys::require_root()?;
        let bridge = format!("dwbr{subnet}");
        let cgroup_root = sys::cgroup2_mount()?.join(format!("dfdwatch-{tag}-{subnet}"));
        // Leftovers of an earlier run that was killed before it could clean up.
        sys::run_quiet("ip", &["link", "del", &bridge]);
        let _ = std::fs::remove_dir(&cgroup_root);
        let lab = Self { subnet, bridge, cgroup_root, pods: Vec::new(), children: Vec::new() };
        sys::run("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
        sys::run("ip", &["link", "set", &lab.bridge, "up"])?;
        std::fs::create_dir(&lab.cgroup_root)
            .with_context(|| format!("create cgroup {}", lab.cgroup_root.display()))?;
        Ok(lab)
    }

    /// Adds a pod: its namespace, veth pair on the bridge, addresses, and cgroup.
    pub fn add_pod(&mut self, name: &str) -> Result<Pod> {
        self.add_pod_in(name, name)
    }

    /// Adds a pod whose cgroup is `cgroup_path` (relative, may be nested, e.g. a path shaped
    /// like a container runtime's) under the lab's cgroup directory.
    pub fn add_pod_in(&mut self, name: &str, cgroup_path: &str) -> Result<Pod> {
        self.add_pod_with(name, cgroup_path, None)
    }

    /// Adds a pod that stands for a host outside the cluster, at `ipv4` (a documentation range
    /// such as 203.0.113.0/24) on the same bridge. Every pod gets an on-link route to the other
    /// side; no pod gets a default route.
    pub fn add_external_pod(&mut self, name: &str, ipv4: Ipv4Addr) -> Result<Pod> {
        let pod = self.add_pod_with(name, name, Some(ipv4))?;
        let lab_net = format!("10.213.{}.0/24", self.subnet);
        let ext_net = format!("{}/24", Ipv4Addr::from(u32::from(ipv4) & 0xffff_ff00));
        sys::run("ip", &["-n", &pod.netns, "route", "add", &lab_net, "dev", "eth0"])?;
        for other in self.pods.iter().filter(|p| p.netns != pod.netns) {
            sys::run_quiet("ip", &["-n", &other.netns, "route", "add", &ext_net, "dev", "eth0"]);
        }
        Ok(pod)
    }

    fn add_pod_with(&mut self, name: &str, cgroup_path: &str, external: Option<Ipv4Addr>) -> Result<Pod> {
        let host_index = u8::try_from(self.pods.len() + 2).context("too many pods")?;
        let netns = format!("dfdw{}-{name}", self.subnet);
        let host_if = format!("dwv{}p{host_index}", self.subnet);
        sys::run_quiet("ip", &["netns", "del", &netns]);
        sys::run("ip", &["netns", "add", &netns])?;
        let ipv4 = external.unwrap_or(Ipv4Addr::new(10, 213, self.subnet, host_index));
        let ipv6 = Ipv6Addr::new(0xfd00, 0xdfd, 0, u16::from(self.subnet), 0, 0, 0, u16::from(host_index));
        let cgroup_dir = self.cgroup_root.join(cgroup_path);
        // Record the pod before the first step that can fail, so Drop removes what exists.
        self.pods.push(Pod {
            name: name.to_owned(),
            netns: netns.clone(),
            netns_inode: 0,
            cgroup_dir: cgroup_dir.clone(),
            cgroup_id: 0,
            ipv4,
            ipv6,
        });
        sys::run("ip", &["link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
        sys::run("ip", &["link", "set", &host_if, "master", &self.bridge, "up"])?;
        let v4 = format!("{ipv4}/24");
        let v6 = format!("{ipv6}/64");
        sys::run("ip", &["-n", &netns, "addr", "add", &v4, "dev", "eth0"])?;
        sys::run("ip", &["-n", &netns, "-6", "addr", "add", &v6, "dev", "eth0", "nodad"])?;
        sys::run("ip", &["-n", &netns, "link", "set", "eth0", "up"])?;
        sys::run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
        std::fs::create_dir_all(&cgroup_dir).with_context(|| format!("create cgroup {}", cgroup_dir.display()))?;
        let netns_inode = sys::inode(&PathBuf::from("/run/netns").join(&netns))?;
        let cgroup_id = sys::inode(&cgroup_dir)?;
        let pod = self.pods.last_mut().context("pod just added")?;
        pod.netns_inode = netns_inode;
        pod.cgroup_id = cgroup_id;
        Ok(pod.clone())
    }

    /// The command that runs `program args` inside `pod`: it joins the pod's cgroup, then its
    /// network namespace, and execs, so the pid of the spawned child is the program's pid.
    fn command<S: AsRef<OsStr>>(pod: &Pod, program: &str, args: &[S]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"cg=$1; ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" && exec ip netns exec "$ns" "$@""#)
            .arg("sh")
            .arg(&pod.cgroup_dir)
            .arg(&pod.netns)
            .arg(program)
            .args(args);
        cmd
    }

    /// Starts a long-running program in `pod`; the lab ends it on drop. Returns its pid.
    pub fn spawn<S: AsRef<OsStr>>(&mut self, pod: &Pod, program: &str, args: &[S]) -> Result<u32> {
        let child = Self::command(pod, program, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {program} in pod {}", pod.name))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Runs a program in `pod` to completion. Returns its pid and output.
    pub fn run<S: AsRef<OsStr>>(&self, pod: &Pod, program: &str, args: &[S]) -> Result<(u32, Output)> {
        let child = Self::command(pod, program, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {program} in pod {}", pod.name))?;
        let pid = child.id();
        let out = child.wait_with_output().context("wait for client")?;
        Ok((pid, out))
    }

    /// Starts a real nginx in `pod` listening on `ports` (IPv4 and IPv6; configuration and logs
    /// in `dir`) and waits until every port listens. Returns its pid.
    pub fn start_nginx(&mut self, pod: &Pod, dir: &Path, ports: &[u16]) -> Result<u32> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let pid = self.spawn(pod, "nginx", &crate::servers::nginx_args_ports(dir, ports)?)?;
        for port in ports {
            self.wait_listening(pod, *port)?;
        }
        Ok(pid)
    }

    /// Waits until a TCP socket listens on `port` inside `pod`.
    pub fn wait_listening(&self, pod: &Pod, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let filter = format!("sport = :{port}");
        loop {
            let out = sys::run("ip", &["netns", "exec", &pod.netns, "ss", "-Hltn", &filter])?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nothing listens on port {port} in pod {} after 10 s", pod.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Translates connections from `pod` to `service` into connections to `backend`, as kube-proxy
    /// does for a ClusterIP Service: a route to the service address and a destination NAT rule in
    /// the pod's own network namespace (nftables), gone with the namespace.
    pub fn dnat(&self, pod: &Pod, service: SocketAddrV4, backend: SocketAddrV4) -> Result<()> {
        let ns = pod.netns.as_str();
        sys::run("ip", &["-n", ns, "route", "add", &format!("{}/32", service.ip()), "dev", "eth0"])?;
        let nft = |args: &[&str]| sys::run("ip", &[&["netns", "exec", ns, "nft"], args].concat());
        nft(&["add", "table", "ip", "lab_nat"])?;
        nft(&["add", "chain", "ip", "lab_nat", "output", "{ type nat hook output priority -100; }"])?;
        let (daddr, dport, to) = (service.ip().to_string(), service.port().to_string(), backend.to_string());
        nft(&[
            "add", "rule", "ip", "lab_nat", "output", "ip", "daddr", &daddr, "tcp", "dport", &dport, "dnat", "to", &to,
        ])?;
        Ok(())
    }

    /// Whether a child started with [`Lab::spawn`] is still running.
    pub fn is_running(&mut self, pid: u32) -> bool {
        self.children.iter_mut().find(|c| c.id() == pid).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &self.children {
            sys::signal(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        for pod in &self.pods {
            // A cgroup can be removed once its last process is gone; give exits a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(&pod.cgroup_dir).is_ok() || !pod.cgroup_dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Nested cgroup paths: remove the parents the pod created, deepest first.
            let mut parent = pod.cgroup_dir.parent();
            while let Some(dir) = parent.filter(|d| d.starts_with(&self.cgroup_root) && *d != self.cgroup_root) {
                let _ = std::fs::remove_dir(dir);
                parent = dir.parent();
            }
            sys::run_quiet("ip", &["netns", "del", &pod.netns]);
        }
        let _ = std::fs::remove_dir(&self.cgroup_root);
        sys::run_quiet("ip", &["link", "del", &self.bridge]);
    }
}

/// The common two-pod set-up: a client pod, a server pod running nginx on `ports`, and a scratch
/// directory (for the DFD and nginx's files); all removed when dropped.
pub struct ClientServer {
    /// The lab holding both pods.
    pub lab: Lab,
    /// The pod that connects.
    pub client: Pod,
    /// The pod running nginx.
    pub server: Pod,
    /// Scratch directory.
    pub dir: sys::Scratch,
}

impl ClientServer {
    /// Builds the lab `tag` with nginx listening on `ports` in the server pod.
    pub fn with_nginx(tag: &str, ports: &[u16]) -> Result<Self> {
        let mut lab = Lab::new(tag)?;
        let client = lab.add_pod("client")?;
        let server = lab.add_pod("server")?;
        let dir = sys::scratch_dir(tag)?;
        lab.start_nginx(&server, &dir, ports)?;
        Ok(Self { lab, client, server, dir })
    }

    /// `template` with `CLIENT` and `SERVER` replaced by the pods' IPv4 addresses.
    pub fn fill(&self, template: &str) -> String {
        template.replace("CLIENT", &self.client.ipv4.to_string()).replace("SERVER", &self.server.ipv4.to_string())
    }

    /// The DFD most tests start from, named `name`: one T2 zone holding the client pod (node
    /// `worker`) and the server pod (node `web`), and `flows` (YAML list items, indented 4) as
    /// its flows.
    pub fn worker_web_dfd(&self, name: &str, flows: &str) -> String {
        let head = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: NAME
spec:
  tiers:
    - {id: T2, name: Internal, level: 2}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: internal, name: Internal, tier: T2, match: {cidrs: ["CLIENT/32", "SERVER/32"]}}
  nodes:
    - {id: worker, name: Worker, kind: process, zone: internal, match: {cidrs: ["CLIENT/32"]}}
    - {id: web, name: Web, kind: process, zone: internal, match: {cidrs: ["SERVER/32"]}}
  flows:
"#;
        self.fill(&head.replace("NAME", name)) + flows
    }

    /// A flow item for [`Self::worker_web_dfd`]: `from` -> `to` on `ports` (YAML port entries).
    pub fn flow(id: &str, from: &str, to: &str, ports: &str) -> String {
        format!(
            "    - id: {id}\n      from: {from}\n      to: {to}\n      ports: [{ports}]\n      appProtocol: http\n      encryption: {{required: none}}\n      data: [public]\n"
        )
    }
}
