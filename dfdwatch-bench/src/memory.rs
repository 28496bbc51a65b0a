//! Memory: the daemon's resident size (VmRSS, and the peak VmHWM) side by side in three set-ups:
//! bare (no DFD, no cluster), with a 10,000-node DFD, and with that DFD plus 100,000 live pod
//! identities served by the stand-in Kubernetes API server over real HTTP. Each set-up first
//! carries a loopback storm so that the pipeline's queues and caches are in use.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::monitor::{self, Monitor};
use dfdwatch_kube_standin::{FakeApiServer, Kind, namespace, pod};

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

fn pid_of(log: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(log)?;
    text.lines()
        .filter(|l| l.contains("dfdwatch ready"))
        .find_map(|l| l.split("pid=").nth(1).and_then(|p| p.split_whitespace().next()).and_then(|p| p.parse().ok()))
        .context("pid in the ready line")
}

/// Measures one set-up started with `extra` options.
fn measure(dir: &Path, name: &str, extra: &[String], wait_for: Option<&str>) -> Result<Value> {
    let sub = dir.join(name);
    let running = monitor::start(Monitor::Dfdwatch, &sub, extra)?;
    let log = sub.join("dfdwatch.log");
    if let Some(needle) = wait_for {
        tests::sys::wait_for_text(&log, needle, 1, Duration::from_secs(300))?;
    }
    let pid = pid_of(&log)?;
    let exe = std::env::current_exe()?;
    let mut sink = Command::new(&exe).args(["sink", "--listen", "127.0.0.1:9001"]).stdout(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let storm = Command::new(&exe)
        .args([
            "storm",
            "--to",
            &SocketAddr::from((Ipv4Addr::LOCALHOST, 9001)).to_string(),
            "--connections",
            "20000",
            "--parallel",
            "4",
        ])
        .output();
    let _ = sink.kill();
    let _ = sink.wait();
    storm?;
    std::thread::sleep(Duration::from_secs(1));
    let rss = status_kib(pid, "VmRSS:")?;
    let hwm = status_kib(pid, "VmHWM:")?;
    running.stop()?;
    eprintln!("bench memory {name}: VmRSS {:.1} MiB, VmHWM {:.1} MiB", rss as f64 / 1024.0, hwm as f64 / 1024.0);
    Ok(json!({"setup": name, "vm_rss_mib": rss as f64 / 1024.0, "vm_hwm_mib": hwm as f64 / 1024.0}))
}

/// Runs the three set-ups; `dfd` is the 10,000-node DFD.
pub fn run(dir: &Path, dfd: &Path, pods: usize) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let bare = measure(dir, "bare", &["--no-metrics".into()], None)?;
    let with_dfd =
        measure(dir, "dfd-10000-nodes", &["--no-metrics".into(), "--dfd".into(), dfd.display().to_string()], None)?;

    let rt = tokio::runtime::Runtime::new()?;
    let api = rt.block_on(FakeApiServer::start());
    let started = "2026-11-23T00:00:00Z";
    for n in 0..100 {
        api.apply(Kind::Namespaces, namespace(&format!("ns{n}"), json!({"team": format!("t{n}")})));
    }
    for i in 0..pods {
        let ip = Ipv4Addr::new(10, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8).to_string();
        let node = if i % 50 == 0 { "bench-node" } else { "other-node" };
        api.apply(
            Kind::Pods,
            pod(
                &format!("ns{}", i % 100),
                &format!("pod-{i}"),
                &format!("uid-{i}"),
                node,
                Some(&ip),
                "Running",
                started,
            ),
        );
    }
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, tests::sys::kubeconfig(&api.url()))?;
    let extra = [
        "--no-metrics".into(),
        "--dfd".into(),
        dfd.display().to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--node-name".into(),
        "bench-node".into(),
    ];
    let with_pods = measure(
        dir,
        &format!("dfd-10000-nodes+{pods}-pods"),
        &extra,
        Some("kubernetes identity synced and connected"),
    )?;
    drop(api);
    drop(rt);
    let base = bare["vm_rss_mib"].as_f64().unwrap_or(1.0);
    Ok(json!({
        "pods": pods,
        "setups": [bare.clone(), with_dfd.clone(), with_pods.clone()],
        "ratio_rss_dfd_to_bare": with_dfd["vm_rss_mib"].as_f64().unwrap_or(0.0) / base,
        "ratio_rss_full_to_bare": with_pods["vm_rss_mib"].as_f64().unwrap_or(0.0) / base,
    }))
}
