//! Connection overhead: a connect-and-reset storm (parallel clients, at least 100,000
//! connections) on loopback and between two network namespaces, with no monitor, with dfdwatch
//! and with bpftrace, interleaved round by round (the order rotates), reported as medians and
//! ratios to the unmonitored time. dfdwatch's own counters prove no event was lost.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tests::{Lab, Pod};

use crate::monitor::{self, Monitor};
use crate::stats::median;

const PORT: u16 = 9000;
const MONITORS: [Monitor; 3] = [Monitor::None, Monitor::Dfdwatch, Monitor::Bpftrace];

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
pub fn run(dir: &Path, connections: u64, parallel: u64, rounds: usize, dfd: &Path) -> Result<Value> {
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
            out.push(run_scenario(name, &mut scenario, dir, connections, parallel, rounds, dfd)?);
        }
        Ok(json!({"connections": connections, "parallel": parallel, "rounds": rounds, "scenarios": out}))
    })();
    let _ = loop_sink.kill();
    let _ = loop_sink.wait();
    result
}

fn run_scenario(
    name: &str,
    scenario: &mut Scenario<'_>,
    dir: &Path,
    connections: u64,
    parallel: u64,
    rounds: usize,
    dfd: &Path,
) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); MONITORS.len()];
    let mut dfdwatch_runs = Vec::new();
    let extra = vec![
        "--dfd".into(),
        dfd.display().to_string(),
        "--alerts-file".into(),
        dir.join("dfdwatch/alerts.jsonl").display().to_string(),
        "--no-metrics".into(),
    ];
    for round in 0..rounds {
        for k in 0..MONITORS.len() {
            let i = (round + k) % MONITORS.len();
            let m = MONITORS[i];
            let running = monitor::start(m, &dir.join(m.name()), &extra)?;
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
                bail!("{name}/{}: {errors} connections failed", m.name());
            }
            eprintln!("bench overhead {name} round {round} {}: {:.3} s", m.name(), ns as f64 / 1e9);
            times[i].push(ns as f64 / 1e9);
            if let Some(c) = counters {
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
        "seconds": MONITORS.iter().zip(&times).map(|(m, t)| (m.name().to_owned(), json!(t))).collect::<serde_json::Map<_, _>>(),
        "median_seconds": MONITORS.iter().zip(&medians).map(|(m, t)| (m.name().to_owned(), json!(t))).collect::<serde_json::Map<_, _>>(),
        "ratio_dfdwatch": medians[1] / medians[0],
        "ratio_bpftrace": medians[2] / medians[0],
        "connections_per_second_unmonitored": connections as f64 / medians[0],
        "dfdwatch_kernel_lost": lost,
        "dfdwatch_skipped_recursion": skipped,
        "dfdwatch_min_events_written": min_written,
        "dfdwatch_expected_events": 2 * connections,
    }))
}
