//! The ring reader's stall under a Kubernetes relist: how long a connection waits to be reported
//! while the daemon lists 100,000 pods from the stand-in API server (real HTTP, paged lists, the
//! real kube client). One probe connection at a time, each to a port whose alert window is
//! closed, timed from just before connect() to its alert line on the daemon's stdout, through
//! three phases: the first list (from "dfdwatch ready" to "synced" plus a second), a quiet
//! phase, and a forced relist (history compacted and watches closed, so the watch resumes into
//! 410 Gone and lists again). Several daemon binaries run the same scenario against the same API
//! server, one after the other, so an older build can be compared with this one in one run.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use dfdwatch_kube_standin::{FakeApiServer, Kind, namespace, pod};
use serde_json::{Value, json};

use crate::alert_feed::AlertFeed;
use crate::stats::percentile;

/// Listeners probed in turn (more than a window's worth, so each probe opens a new window).
const PORTS: usize = 2000;
/// Pause between probes, leaving CPU for the list being decoded.
const PAUSE: Duration = Duration::from_millis(2);
/// Rounds per binary.
const ROUNDS: usize = 3;
/// How long one probe waits for its alert before it counts as missing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Fills the stand-in API server with `pods` pods in 100 namespaces (1 in 50 on this node).
fn seed(api: &FakeApiServer, pods: usize) {
    let started = "2026-11-23T00:00:00Z";
    for n in 0..100 {
        api.apply(Kind::Namespaces, namespace(&format!("ns{n}"), json!({"team": format!("t{n}")})));
    }
    for i in 0..pods {
        let ip = Ipv4Addr::new(10, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8).to_string();
        let node = if i % 50 == 0 { "bench-node" } else { "other-node" };
        let p = pod(
            &format!("ns{}", i % 100),
            &format!("pod-{i}"),
            &format!("uid-{i}"),
            node,
            Some(&ip),
            "Running",
            started,
        );
        api.apply(Kind::Pods, p);
    }
}

/// Probes one after another until `done` says stop; returns the latencies (ms) and misses.
struct Prober<'a> {
    addrs: Vec<SocketAddr>,
    next: usize,
    alerts: &'a mpsc::Receiver<(Instant, u64)>,
}

impl Prober<'_> {
    fn phase(&mut self, mut done: impl FnMut() -> bool) -> Result<(Vec<f64>, u64)> {
        let (mut samples, mut missing) = (Vec::new(), 0);
        while !done() {
            let addr = self.addrs[self.next % self.addrs.len()];
            self.next += 1;
            let started = Instant::now();
            // Each probe from its own loopback address: a new flow, and an alert window of its own.
            drop(crate::storm::connect_from(addr, self.next as u64)?);
            let port = u64::from(addr.port());
            let until = started + PROBE_TIMEOUT;
            loop {
                match self.alerts.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok((at, p)) if p == port => {
                        samples.push(at.duration_since(started).as_secs_f64() * 1e3);
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        missing += 1;
                        break;
                    }
                }
            }
            std::thread::sleep(PAUSE);
        }
        Ok((samples, missing))
    }
}

fn summary(phase: &str, (samples, missing): &(Vec<f64>, u64), seconds: f64) -> Value {
    json!({
        "phase": phase,
        "seconds": seconds,
        "samples": samples.len(),
        "missing": missing,
        "p50_ms": percentile(samples, 50.0),
        "p99_ms": percentile(samples, 99.0),
        "max_ms": percentile(samples, 100.0),
        "over_100ms": samples.iter().filter(|&&s| s > 100.0).count(),
    })
}

fn log_has(dir: &Path, needle: &str) -> bool {
    std::fs::read_to_string(dir.join("dfdwatch.log")).unwrap_or_default().contains(needle)
}

/// Runs the three phases with one binary.
fn scenario(
    name: &str,
    bin: &Path,
    dir: &Path,
    dfd: &Path,
    api: &FakeApiServer,
    addrs: &[SocketAddr],
) -> Result<Value> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, tests::sys::kubeconfig(&api.url()))?;
    let extra = ["--node-name".as_ref(), "bench-node".as_ref(), "--dfd".as_ref(), dfd.as_os_str()];
    let extra = [&extra[..], &["--kubeconfig".as_ref(), kubeconfig.as_os_str()]].concat();
    let feed = AlertFeed::start(bin, &extra, &dir.join("dfdwatch.log"))?;
    let result = (|| -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !log_has(&dir, "dfdwatch ready") {
            if Instant::now() > deadline {
                bail!("{name}: not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut prober = Prober { addrs: addrs.to_vec(), next: 0, alerts: &feed.alerts };
        let t = Instant::now();
        let mut synced_at = None;
        let first = prober.phase(|| {
            if synced_at.is_none() && log_has(&dir, "kubernetes identity synced and connected") {
                synced_at = Some(Instant::now());
            }
            synced_at.is_some_and(|s| s.elapsed() > Duration::from_secs(1)) || t.elapsed() > Duration::from_secs(300)
        })?;
        let first_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let quiet = prober.phase(|| t.elapsed() > Duration::from_secs(3))?;
        let quiet_s = t.elapsed().as_secs_f64();
        let lists_before = api.lists(Kind::Pods);
        // Past the watch's last resourceVersion, then compacted: the resumed watch gets 410 Gone.
        api.bump(1);
        api.compact();
        api.close_watches();
        let t = Instant::now();
        let relist = prober.phase(|| t.elapsed() > Duration::from_secs(15))?;
        let relist_s = t.elapsed().as_secs_f64();
        let relist_pages = api.lists(Kind::Pods) - lists_before;
        eprintln!("bench stall {name}: first list {first_s:.1} s, relist pages {relist_pages}");
        Ok(json!({
            "binary": name,
            "path": bin.display().to_string(),
            "relist_list_requests": relist_pages,
            "phases": [
                summary("first_list", &first, first_s),
                summary("quiet", &quiet, quiet_s),
                summary("relist", &relist, relist_s),
            ],
        }))
    })();
    feed.stop();
    result
}

/// Runs the scenario for each `(name, binary)` against one API server holding `pods` pods.
pub fn run(dir: &Path, dfd: &Path, pods: usize, bins: &[(String, PathBuf)]) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let listeners: Vec<TcpListener> =
        (0..PORTS).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = listeners.iter().map(TcpListener::local_addr).collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Runtime::new()?;
    let api = rt.block_on(FakeApiServer::start());
    seed(&api, pods);
    let mut runs = Vec::new();
    // Interleaved rounds, so a noisy moment of this shared machine hits every binary alike.
    for round in 0..ROUNDS {
        for (name, bin) in bins {
            let mut r = scenario(name, bin, &dir.join(format!("round{round}")), dfd, &api, &addrs)?;
            r["round"] = json!(round);
            runs.push(r);
        }
    }
    drop(api);
    drop(rt);
    drop(listeners);
    Ok(json!({"pods": pods, "probe_pause_ms": PAUSE.as_millis() as u64, "runs": runs}))
}
