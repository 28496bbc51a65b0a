//! What one connection costs with dfdwatch, in the daemon and in the kernel, and how many bytes it
//! leaves on disk: loopback storms of one approved flow repeated (one client thread, then four,
//! saturating both vCPUs), and the worst case, every connection a flow of its own (each from its
//! own loopback address). For each: the daemon's CPU time (utime + stime from /proc) over the
//! storm and the two flow intervals after it; the probe's run time from the kernel's BPF
//! statistics (switched on with BPF_ENABLE_STATS for the run only, read with bpftool); the events
//! file's size; the ring-buffer records read; and the proof that nothing was lost: the flow
//! records and the connection records add up to every connect and accept, or the kernel's loss
//! counters account for the rest.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::monitor;

const PORT: u16 = 9300;
/// Connections opened, then closed, to measure the transitions the probe ignores.
const CLOSES: usize = 20_000;

/// The DFD of the storms: the whole loopback range is one node, approved to call itself on the
/// sink's port.
const STORM_DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: loopback-storm
spec:
  tiers:
    - {id: T2, name: Internal, level: 2}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: host, name: Host, tier: T2, match: {cidrs: ["127.0.0.0/8"]}}
  nodes:
    - {id: storm, name: Storm client and sink, kind: process, zone: host, match: {cidrs: ["127.0.0.0/8"]}}
  flows:
    - id: storm-to-sink
      from: storm
      to: storm
      ports: [{port: PORT, protocol: TCP}]
      appProtocol: tcp
      encryption: {required: none}
      data: [public]
"#;

/// Switches the kernel's BPF run-time statistics on for as long as the returned fd lives.
fn enable_bpf_stats() -> Result<OwnedFd> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // `union bpf_attr` for BPF_ENABLE_STATS: `type` = BPF_STATS_RUN_TIME (0), padded.
    let attr = [0u64; 2];
    // SAFETY: a valid BPF_ENABLE_STATS attribute; the call returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_ptr(), size_of_val(&attr)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_ENABLE_STATS");
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Run time (ns) and runs of dfdwatch's attached probe, from bpftool.
fn probe_stats() -> Result<(u64, u64)> {
    let out = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("run bpftool")?;
    ensure!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let progs: Value = serde_json::from_slice(&out.stdout).context("bpftool output")?;
    let ours = progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("dfdw_")))
        .map(|p| (p["run_time_ns"].as_u64().unwrap_or(0), p["run_cnt"].as_u64().unwrap_or(0)))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    Ok(ours)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).context("/proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// Connections the events file accounts for: (connects, accepts, flow records, connection records).
fn accounted(events: &Path) -> Result<(u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(events).context("read the events file")?;
    let (mut connects, mut accepts, mut flows, mut records) = (0, 0, 0, 0);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).context("event line")?;
        if v["dst"]["port"] != PORT {
            continue;
        }
        let n = match v["schema"].as_str() {
            Some("dfdwatch.flow.v1") => {
                flows += 1;
                v["connections"].as_u64().unwrap_or(0)
            }
            // Connections of tracked flows are in their flow records too; a build before the
            // flow table wrote every connection as a record without `recorded`.
            Some("dfdwatch.connection.v1") => {
                records += 1;
                u64::from(v["recorded"] == "untracked" || v.get("recorded").is_none())
            }
            _ => 0,
        };
        if v["kind"] == "accept" {
            accepts += n;
        } else {
            connects += n;
        }
    }
    Ok((connects, accepts, flows, records))
}

/// One storm.
/// A daemon to measure: a build, and options of its own (`{DIR}` stands for the scenario's
/// directory).
pub struct Build {
    pub name: String,
    pub bin: PathBuf,
    pub args: Vec<String>,
}

impl Build {
    /// `common` followed by this build's own options, for a run in `dir`.
    fn args(&self, dir: &Path, mut common: Vec<String>) -> Vec<String> {
        common.extend(self.args.iter().map(|a| a.replace("{DIR}", &dir.display().to_string())));
        common
    }
}

struct Storm {
    name: &'static str,
    connections: u64,
    parallel: u64,
    distinct: bool,
}

/// One storm with the dfdwatch build `bin` watching.
fn scenario(dir: &Path, dfd: &Path, b: &Build, storm: &Storm) -> Result<Value> {
    let Storm { name, connections, parallel, distinct } = *storm;
    let (build, bin) = (b.name.as_str(), b.bin.as_path());
    let exe = std::env::current_exe()?;
    let dir = dir.join(build).join(name);
    let extra = b.args(&dir, vec!["--dfd".into(), dfd.display().to_string(), "--no-metrics".into()]);
    let running = monitor::start_dfdwatch(bin, &dir, &extra)?;
    let pid = running.pid().context("dfdwatch pid")?;
    let stats = enable_bpf_stats()?;
    let (run_ns0, runs0) = probe_stats()?;
    let cpu0 = cpu_seconds(pid)?;
    let mut args = vec![
        "storm".to_owned(),
        "--to".into(),
        SocketAddr::from(([127, 0, 0, 1], PORT)).to_string(),
        "--connections".into(),
        connections.to_string(),
        "--parallel".into(),
        parallel.to_string(),
    ];
    if distinct {
        args.push("--distinct".into());
    }
    let out = Command::new(&exe).args(&args).output()?;
    ensure!(out.status.success(), "storm failed: {}", String::from_utf8_lossy(&out.stderr));
    let storm: Value = serde_json::from_slice(&out.stdout).context("storm output")?;
    if storm["errors"].as_u64().unwrap_or(0) > 0 {
        bail!("{name}: {} connections failed", storm["errors"]);
    }
    let (run_ns1, runs1) = probe_stats()?;
    drop(stats);
    // Two flow intervals: the last counters are read and written.
    std::thread::sleep(Duration::from_millis(2500));
    let cpu1 = cpu_seconds(pid)?;
    let counters = running.stop()?.context("dfdwatch final counters")?;
    let bytes = std::fs::metadata(dir.join("events.jsonl"))?.len();
    let (connects, accepts, flow_records, connection_records) = accounted(&dir.join("events.jsonl"))?;
    let kernel = |k: &str| counters["kernel"][k].as_u64().unwrap_or(0);
    let skipped = kernel("skipped_recursion");
    let lost_connect = kernel("lost_connect") + kernel("lost_connect_failed");
    let lost_accept = kernel("lost_accept");
    ensure!(
        connects + lost_connect + skipped >= connections && accepts + lost_accept + skipped >= connections,
        "{name}: {connects} connects and {accepts} accepts accounted for out of {connections} ({counters})"
    );
    let n = connections as f64;
    let elapsed = storm["elapsed_ns"].as_u64().unwrap_or(0) as f64 / 1e9;
    let result = json!({
        "build": build,
        "scenario": name,
        "connections": connections,
        "parallel": parallel,
        "storm_seconds": elapsed,
        "daemon_cpu_seconds": cpu1 - cpu0,
        "daemon_cpu_us_per_connection": (cpu1 - cpu0) * 1e6 / n,
        "probe_ns_per_connection": (run_ns1 - run_ns0) as f64 / n,
        "probe_runs_per_connection": (runs1 - runs0) as f64 / n,
        "probe_ns_per_run": (run_ns1 - run_ns0) as f64 / (runs1 - runs0).max(1) as f64,
        "events_bytes": bytes,
        "bytes_per_connection": bytes as f64 / n,
        "flow_records": flow_records,
        "connection_records": connection_records,
        "records_read": counters["pipeline"]["records_read"],
        "connects_accounted": connects,
        "accepts_accounted": accepts,
        "lost": lost_connect + lost_accept,
        "skipped_recursion": skipped,
        "flow_table_full": counters["pipeline"]["flow_table_full"],
    });
    eprintln!("bench cost {build} {name}: {result}");
    Ok(result)
}

/// The probe's cost on the transitions it ignores, measured apart: `n` connections are opened
/// (their connects and accepts are the interesting transitions), then, with the statistics
/// switched on, all are closed. A close gives only transitions the probe ignores
/// (ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT, CLOSE_WAIT -> LAST_ACK -> CLOSE).
fn ignored_transitions(dir: &Path, dfd: &Path, b: &Build, n: usize) -> Result<Value> {
    let (build, bin) = (b.name.as_str(), b.bin.as_path());
    let dir = dir.join(build).join("closes");
    let extra = b.args(&dir, vec!["--dfd".into(), dfd.display().to_string(), "--no-metrics".into()]);
    let running = monitor::start_dfdwatch(bin, &dir, &extra)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let to = listener.local_addr()?;
    let acceptor = std::thread::spawn(move || -> std::io::Result<Vec<std::net::TcpStream>> {
        (0..n).map(|_| listener.accept().map(|(s, _)| s)).collect()
    });
    let clients: Vec<std::net::TcpStream> =
        (0..n).map(|_| std::net::TcpStream::connect(to)).collect::<std::io::Result<_>>()?;
    let servers = acceptor.join().map_err(|_| anyhow::anyhow!("the acceptor panicked"))??;
    let stats = enable_bpf_stats()?;
    let (ns0, runs0) = probe_stats()?;
    drop(clients);
    drop(servers);
    // The last transitions (TIME_WAIT aside) follow within milliseconds.
    std::thread::sleep(Duration::from_millis(500));
    let (ns1, runs1) = probe_stats()?;
    drop(stats);
    running.stop()?;
    let runs = runs1 - runs0;
    let result = json!({
        "build": build,
        "scenario": "closes-only",
        "connections": n,
        "probe_runs": runs,
        "probe_runs_per_connection": runs as f64 / n as f64,
        "probe_ns_per_run": (ns1 - ns0) as f64 / runs.max(1) as f64,
    });
    eprintln!("bench cost {build} closes-only: {result}");
    Ok(result)
}

/// Raises the open-file limit to its hard limit; returns how many connections (two fds each)
/// fit, leaving some room, at most `want`.
fn connections_that_fit(want: usize) -> Result<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a valid rlimit value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("RLIMIT_NOFILE");
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("raise RLIMIT_NOFILE");
        }
    }
    Ok(want.min((limit.rlim_cur.saturating_sub(256) / 2) as usize))
}

/// Runs the three storms with each build in `bins` (name, daemon binary), one build after the
/// other for each storm; returns the results as JSON.
pub fn run(dir: &Path, connections: u64, distinct: u64, bins: &[Build]) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let dfd = dir.join("storm-dfd.yaml");
    std::fs::write(&dfd, STORM_DFD.replace("PORT", &PORT.to_string()))?;
    let exe = std::env::current_exe()?;
    let mut sink = Command::new(&exe)
        .args(["sink", "--listen", &format!("127.0.0.1:{PORT}")])
        .stdout(Stdio::null())
        .spawn()
        .context("start the sink")?;
    let storms = [
        Storm { name: "repeated-one-client", connections, parallel: 1, distinct: false },
        Storm { name: "repeated-saturated", connections, parallel: 4, distinct: false },
        Storm { name: "distinct-flows", connections: distinct, parallel: 4, distinct: true },
    ];
    let result = (|| -> Result<Value> {
        let mut out = Vec::new();
        for storm in &storms {
            for b in bins {
                out.push(scenario(dir, &dfd, b, storm)?);
            }
        }
        // Short and noisy: three rounds, the builds interleaved; the median is reported.
        let closes = connections_that_fit(CLOSES)?;
        let mut per_run: Vec<Vec<f64>> = vec![Vec::new(); bins.len()];
        for _ in 0..3 {
            for (i, b) in bins.iter().enumerate() {
                let r = ignored_transitions(dir, &dfd, b, closes)?;
                per_run[i].push(r["probe_ns_per_run"].as_f64().unwrap_or(0.0));
            }
        }
        for (Build { name: build, .. }, runs) in bins.iter().zip(&per_run) {
            out.push(json!({
                "build": build,
                "scenario": "closes-only",
                "connections": closes,
                "probe_ns_per_run_rounds": runs,
                "probe_ns_per_run": crate::stats::median(runs),
            }));
        }
        Ok(json!({"scenarios": out}))
    })();
    let _ = sink.kill();
    let _ = sink.wait();
    result
}
