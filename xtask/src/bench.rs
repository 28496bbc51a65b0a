//! `cargo xtask bench`: set up, build the release daemon and the benchmark runner, then run the
//! benchmarks (all, or the ones named): `pipeline` (criterion), `overhead`, `cost`, `latency`,
//! `memory`, `stall`, `store`.
//! Results are printed and kept as JSON in target/bench/; BENCHMARKS.md reports them.

use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

/// Every benchmark, in the order they run.
pub const ALL: [&str; 7] = ["pipeline", "latency", "memory", "stall", "store", "cost", "overhead"];

/// Runs the benchmarks in `which` (all when empty).
pub fn run(which: &[String]) -> Result<()> {
    for name in which {
        if !ALL.contains(&name.as_str()) {
            bail!("unknown benchmark {name}; choose from {}", ALL.join(", "));
        }
    }
    if !cmd::is_root() {
        bail!("the benchmarks load eBPF programs and create network namespaces: run `cargo xtask bench` as root");
    }
    crate::setup::run()?;
    cmd::run(cmd::cargo().args(["build", "--release", "--package", "monitor-user", "--package", "dfdwatch-bench"]))?;
    let runner = cmd::root().join("target/release/dfdwatch-bench");
    let chosen: Vec<&str> = if which.is_empty() { ALL.to_vec() } else { which.iter().map(String::as_str).collect() };
    for name in chosen {
        eprintln!("xtask: benchmark {name}");
        if name == "pipeline" {
            cmd::run(cmd::cargo().args(["bench", "--package", "dfdwatch-bench", "--bench", "pipeline"]))?;
        } else {
            cmd::run(Command::new(&runner).arg(name))?;
        }
    }
    Ok(())
}
