//! `dfdwatch-bench`: the benchmark runner behind `cargo xtask bench` (overhead, latency, memory;
//! the pipeline's throughput is the criterion benchmark in benches/pipeline.rs), and the storm
//! client and sink it runs inside network namespaces.

mod alert_feed;
mod cost;
mod latency;
mod memory;
mod monitor;
mod overhead;
mod stall;
mod stats;
mod store;
mod storm;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "dfdwatch's benchmarks (run them through `cargo xtask bench`)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open and reset connections as fast as possible; print the time as JSON.
    Storm {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 100_000)]
        connections: u64,
        #[arg(long, default_value_t = 4)]
        parallel: u64,
        /// Each connection from its own loopback address (127.1.0.0 and up): every one a new flow.
        #[arg(long)]
        distinct: bool,
    },
    /// Accept and drop connections until killed.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Connection overhead: none vs dfdwatch vs bpftrace, interleaved.
    Overhead {
        #[arg(long, default_value_t = 100_000)]
        connections: u64,
        #[arg(long, default_value_t = 4)]
        parallel: u64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Another daemon binary to run in the same rounds, as NAME=PATH; repeatable.
        #[arg(long = "compare", value_name = "NAME=PATH")]
        compare: Vec<String>,
    },
    /// What a connection costs: daemon CPU, probe time, bytes written, for a repeated approved
    /// flow (one client, then saturated) and for connections that are all distinct flows.
    Cost {
        #[arg(long, default_value_t = 100_000)]
        connections: u64,
        /// Connections in the distinct-flows storm.
        #[arg(long, default_value_t = 100_000)]
        distinct: u64,
        /// Another daemon binary to run the same storms with, as NAME=PATH; repeatable. This
        /// build always runs, as `this`.
        #[arg(long = "compare", value_name = "NAME=PATH")]
        compare: Vec<String>,
    },
    /// Detection latency, connect() to alert line.
    Latency {
        #[arg(long, default_value_t = 200)]
        ports: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Resident memory: bare, 10,000-node DFD, and 100,000 pods.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        pods: usize,
    },
    /// The flow store: SQLite write throughput and bytes per row, `investigate path` over a big
    /// store, ClickHouse ingest from one shipper.
    Store {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 200_000)]
        clickhouse_rows: u64,
    },
    /// Detection latency while the daemon lists, then relists, this many pods.
    Stall {
        #[arg(long, default_value_t = 100_000)]
        pods: usize,
        /// Another daemon binary to run the same scenario with, as NAME=PATH (e.g. an older
        /// build, for a side-by-side comparison); repeatable. This build always runs, as `this`.
        #[arg(long = "compare", value_name = "NAME=PATH")]
        compare: Vec<String>,
    },
}

fn out_dir() -> PathBuf {
    tests::sys::workspace_root().join("target/bench")
}

fn report(name: &str, value: &serde_json::Value) -> Result<()> {
    let path = out_dir().join(format!("{name}.json"));
    std::fs::create_dir_all(out_dir())?;
    std::fs::write(&path, serde_json::to_string_pretty(value)?)?;
    println!("{}", serde_json::to_string_pretty(value)?);
    eprintln!("bench: results in {}", path.display());
    Ok(())
}

/// The daemon builds of `--compare NAME=PATH`.
fn compared(compare: &[String]) -> Result<Vec<(String, PathBuf)>> {
    compare
        .iter()
        .map(|c| {
            let (name, path) = c.split_once('=').context("--compare NAME=PATH")?;
            Ok((name.to_owned(), PathBuf::from(path)))
        })
        .collect()
}

/// The builds of `--compare`, then this one, as `this`.
fn builds(compare: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut bins = compared(compare)?;
    bins.push(("this".to_owned(), monitor::dfdwatch_bin()?));
    Ok(bins)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = out_dir();
    match cli.command {
        Cmd::Storm { to, connections, parallel, distinct } => storm::storm(to, connections, parallel.max(1), distinct),
        Cmd::Sink { listen } => storm::sink(listen),
        Cmd::Overhead { connections, parallel, rounds, compare } => {
            let dfd = tests::sys::workspace_root().join("approved-dfd/demo");
            let others = compared(&compare)?;
            let v = overhead::run(&dir.join("overhead"), connections, parallel.max(1), rounds.max(1), &dfd, &others)?;
            report("overhead", &v)
        }
        Cmd::Cost { connections, distinct, compare } => {
            // This build twice: with its flow store (in the run's own state directory), and
            // without, for what the store costs.
            let this = monitor::dfdwatch_bin()?;
            let mut bins: Vec<cost::Build> = compared(&compare)?
                .into_iter()
                .map(|(name, bin)| cost::Build { name, bin, args: Vec::new() })
                .collect();
            bins.push(cost::Build {
                name: "this".into(),
                bin: this.clone(),
                args: vec!["--state-dir={DIR}/state".into()],
            });
            bins.push(cost::Build {
                name: "this-no-store".into(),
                bin: this,
                args: vec!["--state-dir={DIR}/state".into(), "--no-store".into()],
            });
            let v = cost::run(&dir.join("cost"), connections.max(1), distinct.max(1), &bins)?;
            report("cost", &v)
        }
        Cmd::Store { rows, clickhouse_rows } => {
            let v = store::run(&dir.join("store"), rows.max(1), clickhouse_rows.max(1))?;
            report("store", &v)
        }
        Cmd::Latency { ports, rounds } => {
            let dfd = dfdwatch_bench::synth::write_dfd(&dir.join("dfd"), 10)?;
            let v = latency::run(&dir.join("latency"), &dfd, ports.max(1), rounds.max(1))?;
            report("latency", &v)
        }
        Cmd::Stall { pods, compare } => {
            let dfd = dfdwatch_bench::synth::write_dfd(&dir.join("dfd"), 10)?;
            let v = stall::run(&dir.join("stall"), &dfd, pods, &builds(&compare)?)?;
            report("stall", &v)
        }
        Cmd::Memory { pods } => {
            let dfd = dfdwatch_bench::synth::write_dfd(&dir.join("dfd"), 10_000)?;
            let v = memory::run(&dir.join("memory"), &dfd, pods)?;
            report("memory", &v)
        }
    }
}
