//! Connection overhead: a connect-and-reset storm (parallel clients, at least 100,000
//! connections) on loopback and between two network namespaces, with no monitor, with dfdwatch
//! and with bpftrace, interleaved round by round (the order rotates), reported as medians and
//! ratios to the unmonitored time. dfdwatch's own counters prove no event was lost.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tests::{Lab, Pod};

use crate::monitor::{self, Monitor};
use crate::stats::median;

const PORT: u16 = 9000;

/// One monitor of the comparison: none, bpftrace, or a dfdwatch build.
struct Entry {
    name: String,
    monitor: Monitor,
    bin: Option<PathBuf>,
}

impl Entry {
    fn start(&self, dir: &Path, extra: &[String]) -> Result<monitor::Running> {
        match &self.bin {
            Some(bin) => monitor::start_dfdwatch(bin, &dir.join(&self.name), extra),
            None => monitor::start(self.monitor, &dir.join(&self.name), extra),
        }
    }
}

/// none, this dfdwatch build, bpftrace, then the builds to compare with.
fn entries(bins: &[(String, PathBuf)]) -> Vec<Entry> {
    let mut out = vec![
        Entry { name: "none".into(), monitor: Monitor::None, bin: None },
        Entry { name: "dfdwatch".into(), monitor: Monitor::Dfdwatch, bin: None },
        Entry { name: "bpftrace".into(), monitor: Monitor::Bpftrace, bin: None },
    ];
    for (name, bin) in bins {
        out.push(Entry { name: format!("dfdwatch-{name}"), monitor: Monitor::Dfdwatch, bin: Some(bin.clone()) });
    }
    out
}

/// Where the storm runs.
enum Scenario<'a> {
    Loopback,
    Namespaces { lab: &'a Lab, client: &'a Pod, server: &'a Pod },
}

fn storm_args(to: SocketAddr, connections: u64, parallel: u64) -> Vec<String> {
    vec![
        "storm".into(),
        "--to".into(),
        to.to_string(),
        "--connections".into(),
        connections.to_string(),
        "--parallel".into(),
        parallel.to_string(),
    ]
}

fn parse_storm(out: &std::process::Output) -> Result<(u64, u64)> {
    ensure!(out.status.success(), "storm failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).context("storm output")?;
    Ok((v["elapsed_ns"].as_u64().unwrap_or(0), v["errors"].as_u64().unwrap_or(0)))
}

/// Runs the benchmark; returns its results as JSON.
pub fn run(
    dir: &Path,
    connections: u64,
    parallel: u64,
    rounds: usize,
    dfd: &Path,
    compare: &[(String, PathBuf)],
) -> Result<Value> {
    let monitors = entries(compare);
    let exe = std::env::current_exe()?;
    let mut lab = Lab::new("bench")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    lab.spawn(&server, exe.to_str().context("exe path")?, &["sink", "--listen", &format!("{}:{PORT}", server.ipv4)])?;
    lab.wait_listening(&server, PORT)?;
    let mut loop_sink = Command::new(&exe)
        .args(["sink", "--listen", &format!("127.0.0.1:{PORT}")])
        .stdout(Stdio::null())
        .spawn()
        .context("start the loopback sink")?;
    let result = (|| -> Result<Value> {
        let mut out = Vec::new();
        for (name, mut scenario) in [
            ("loopback", Scenario::Loopback),
            ("namespaces", Scenario::Namespaces { lab: &lab, client: &client, server: &server }),
        ] {
            let storm = StormSize { connections, parallel, rounds };
            out.push(run_scenario(name, &mut scenario, dir, &monitors, &storm, dfd)?);
        }
        Ok(json!({"connections": connections, "parallel": parallel, "rounds": rounds, "scenarios": out}))
    })();
    let _ = loop_sink.kill();
    let _ = loop_sink.wait();
    result
}

/// How big each storm is and how many rounds run.
struct StormSize {
    connections: u64,
    parallel: u64,
    rounds: usize,
}

fn run_scenario(
    name: &str,
    scenario: &mut Scenario<'_>,
    dir: &Path,
    monitors: &[Entry],
    size: &StormSize,
    dfd: &Path,
) -> Result<Value> {
    let StormSize { connections, parallel, rounds } = *size;
    let exe = std::env::current_exe()?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); monitors.len()];
    let mut dfdwatch_runs = Vec::new();
    let extra = vec![
        "--dfd".into(),
        dfd.display().to_string(),
        "--alerts-file".into(),
        dir.join("dfdwatch/alerts.jsonl").display().to_string(),
        "--no-metrics".into(),
    ];
    for round in 0..rounds {
        for k in 0..monitors.len() {
            let i = (round + k) % monitors.len();
            let m = &monitors[i];
            let running = m.start(dir, &extra)?;
            let output = match scenario {
                Scenario::Loopback => Command::new(&exe)
                    .args(storm_args(SocketAddr::from(([127, 0, 0, 1], PORT)), connections, parallel))
                    .output()?,
                Scenario::Namespaces { lab, client, server } => {
                    let args = storm_args(SocketAddr::from((server.ipv4, PORT)), connections, parallel);
                    lab.run(client, exe.to_str().context("exe path")?, &args)?.1
                }
            };
            let (ns, errors) = parse_storm(&output)?;
            let counters = running.stop()?;
            if errors > 0 {
                bail!("{name}/{}: {errors} connections failed", m.name);
            }
            eprintln!("bench overhead {name} round {round} {}: {:.3} s", m.name, ns as f64 / 1e9);
            times[i].push(ns as f64 / 1e9);
            if let Some(c) = counters
                && m.bin.is_none()
            {
                dfdwatch_runs.push(c);
            }
        }
    }
    let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
    let lost: u64 = dfdwatch_runs
        .iter()
        .map(|c| {
            ["lost_connect", "lost_accept", "lost_connect_failed"]
                .iter()
                .map(|k| c["kernel"][k].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    let skipped: u64 = dfdwatch_runs.iter().map(|c| c["kernel"]["skipped_recursion"].as_u64().unwrap_or(0)).sum();
    let min_written =
        dfdwatch_runs.iter().map(|c| c["pipeline"]["events_written"].as_u64().unwrap_or(0)).min().unwrap_or(0);
    Ok(json!({
        "scenario": name,
        "seconds": monitors.iter().zip(&times).map(|(m, t)| (m.name.clone(), json!(t))).collect::<serde_json::Map<_, _>>(),
        "median_seconds": monitors.iter().zip(&medians).map(|(m, t)| (m.name.clone(), json!(t))).collect::<serde_json::Map<_, _>>(),
        "ratios": monitors.iter().zip(&medians).skip(1).map(|(m, t)| (m.name.clone(), json!(t / medians[0]))).collect::<serde_json::Map<_, _>>(),
        "ratio_dfdwatch": medians[1] / medians[0],
        "ratio_bpftrace": medians[2] / medians[0],
        "connections_per_second_unmonitored": connections as f64 / medians[0],
        "dfdwatch_kernel_lost": lost,
        "dfdwatch_skipped_recursion": skipped,
        "dfdwatch_min_events_written": min_written,
        "dfdwatch_expected_events": 2 * connections,
    }))
}
