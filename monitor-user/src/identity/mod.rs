//! Workload identity of both ends of a connection, from what this node knows without blocking:
//! the local end's executable (/proc), cgroup path, container, pod UID and systemd unit; names
//! for addresses from the static identity file; Kubernetes identity of both ends when the daemon
//! watches a cluster. Runs as one pipeline stage between the reader and the verdict stage
//! ([`crate::policy::stage`]), owning its caches; a miss is answered with what is known now and
//! counted.

pub mod cgroup;
pub mod container;
pub mod kubernetes;
pub mod names;
pub mod process;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::escape::escape_bytes;
use crate::source::decode::Connection;
use crate::telemetry::counters::{Counters, IdentityMiss};
pub use container::ContainerRef;
pub use names::StaticNames;

/// What the identity stage learned about the local end, beyond the kernel's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LocalIdentity {
    /// Executable path (escaped): the program that made the connection (see `exe_source`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Where `exe` comes from: `proc` (/proc/PID/exe) or `exec` (the kernel's record of the
    /// exec, for a process that has exited or exec'd since).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_source: Option<&'static str>,
    /// True when the process exec'd another program after it connected or listened.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exec_since: bool,
    /// With `exec_since`: the program the process runs now (escaped, as it was exec'd), so an
    /// event names both the program that connected and the one it became.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_now: Option<String>,
    /// cgroup v2 path relative to the mount (escaped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// Container runtime and id, from the cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRef>,
    /// Kubernetes pod UID, from the cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// systemd unit (escaped), from the cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// This node's host name, when the local end is a host process (in no container and no
    /// pod): what a DFD node's `hosts` selector matches. Events carry it as `node` already.
    #[serde(skip)]
    pub host: Option<String>,
}

/// A connection with the identity of its ends: the identity stage's output.
#[derive(Clone, Debug)]
pub struct Identified {
    /// The connection as decoded.
    pub conn: Connection,
    /// The local end's identity.
    pub local: LocalIdentity,
    /// Static name of the source address, if the identity file names it.
    pub src_name: Option<String>,
    /// Static name of the destination address, if the identity file names it.
    pub dst_name: Option<String>,
    /// Kubernetes identity of the source (when the daemon watches a cluster).
    pub src_k8s: Option<kubernetes::K8sEnd>,
    /// Kubernetes identity of the destination (when the daemon watches a cluster).
    pub dst_k8s: Option<kubernetes::K8sEnd>,
    /// The Kubernetes identity cache's generation read before the ends were resolved (0 without
    /// a cluster): a verdict on identities older than a later change is not kept.
    pub identity_generation: u64,
}

/// Resolves identities; owned by the identity stage (no locks).
pub struct Resolver {
    cgroups: Option<cgroup::CgroupPaths>,
    processes: process::Processes,
    names: Arc<StaticNames>,
    kube: Option<dfdwatch_kube::KubeIdentity>,
    host_name: Option<String>,
    counters: Arc<Counters>,
}

impl Resolver {
    /// A resolver over the cgroup v2 hierarchy (if mounted) and the static names.
    pub fn new(cgroups: Option<cgroup::CgroupPaths>, names: Arc<StaticNames>, counters: Arc<Counters>) -> Self {
        Self { cgroups, processes: process::Processes::default(), names, kube: None, host_name: None, counters }
    }

    /// Names each local process's executable from the kernel's exec tracking.
    pub fn with_exec_maps(mut self, maps: crate::probes::execs::ExecMaps) -> Self {
        self.processes = std::mem::take(&mut self.processes).with_exec_maps(maps);
        self
    }

    /// Also resolves both ends through the Kubernetes identity cache.
    pub fn with_kubernetes(mut self, kube: dfdwatch_kube::KubeIdentity) -> Self {
        self.kube = Some(kube);
        self
    }

    /// Names host processes' local ends after this node's host name (for `hosts` selectors).
    pub fn with_host_name(mut self, host_name: String) -> Self {
        self.host_name = Some(host_name);
        self
    }

    /// The identities of one connection.
    pub fn identify(&mut self, conn: Connection) -> Identified {
        let identity_generation = self.kube.as_ref().map_or(0, dfdwatch_kube::KubeIdentity::generation);
        let tgid = conn.process.as_ref().map(|p| p.tgid);
        let mut local = LocalIdentity::default();
        if let Some(p) = &conn.process {
            let exe = self.processes.executable(p);
            local.exe = exe.path.map(|e| escape_bytes(e.as_bytes()));
            local.exe_source = exe.source;
            local.exec_since = exe.exec_since;
            local.exe_now = exe.now.map(|e| escape_bytes(e.as_bytes()));
            if local.exe.is_none() {
                self.counters.record_identity_miss(IdentityMiss::Exe);
            }
        }
        let path = self.cgroups.as_mut().and_then(|c| c.path(conn.cgroup_id, tgid)).map(str::to_owned);
        match path {
            Some(path) => {
                let workload = container::parse(&path);
                local.container = workload.container;
                local.pod_uid = workload.pod_uid;
                local.systemd_unit = workload.systemd_unit.map(|u| escape_bytes(u.as_bytes()));
                local.cgroup_path = Some(escape_bytes(path.as_bytes()));
            }
            None => self.counters.record_identity_miss(IdentityMiss::Cgroup),
        }
        let local_is_src = conn.local_is_src();
        let (local_addr, remote_addr) = if local_is_src { (conn.src, conn.dst) } else { (conn.dst, conn.src) };
        let (local_k8s, remote_k8s) = match &self.kube {
            Some(kube) => {
                let l = kubernetes::local(
                    kube,
                    local.container.as_ref().map(|c| c.id.as_str()),
                    local.pod_uid.as_deref(),
                    local_addr.ip(),
                );
                let r = kubernetes::remote(kube, remote_addr.ip(), remote_addr.port());
                if l.is_none() {
                    self.counters.record_identity_miss(IdentityMiss::Pod);
                }
                (l, r)
            }
            None => (None, None),
        };
        // Only a process known to run on the host itself: its cgroup resolved, and shows no
        // container and no pod. An unresolved cgroup may hide a container, which must not borrow
        // the host's name (a `hosts` selector outranks `cidrs`).
        let host_process = local.cgroup_path.is_some() && local.container.is_none() && local.pod_uid.is_none();
        if host_process && local_k8s.is_none() {
            local.host.clone_from(&self.host_name);
        }
        let (src_k8s, dst_k8s) = if local_is_src { (local_k8s, remote_k8s) } else { (remote_k8s, local_k8s) };
        let src_name = self.names.name(conn.src.ip()).map(str::to_owned);
        let dst_name = self.names.name(conn.dst.ip()).map(str::to_owned);
        Identified { conn, local, src_name, dst_name, src_k8s, dst_k8s, identity_generation }
    }
}

/// The identity stage: connections in, identified connections out, on its own thread (its /proc
/// reads are short but blocking). The output type is the next stage's input (the verdict stage's,
/// or the sinks' when no DFD is loaded), so this stage need not know which one follows.
pub struct IdentityStage<O> {
    resolver: Resolver,
    input: mpsc::Receiver<Connection>,
    output: mpsc::Sender<O>,
}

impl<O: From<Identified> + Send + 'static> IdentityStage<O> {
    /// A stage between `input` and `output`.
    pub fn new(resolver: Resolver, input: mpsc::Receiver<Connection>, output: mpsc::Sender<O>) -> Self {
        Self { resolver, input, output }
    }

    /// Runs until the input closes (the reader stopped) and everything is passed on.
    pub fn run(mut self) {
        while let Some(conn) = self.input.blocking_recv() {
            let identified = self.resolver.identify(conn);
            if self.output.blocking_send(O::from(identified)).is_err() {
                tracing::error!("the next stage stopped; identity stage ends");
                return;
            }
        }
    }
}
