//! `cargo xtask test`: set up, build, lint, then every test of the workspace, the real-kernel
//! ones included. Runs as root (CI does): the kernel tests load eBPF programs and build network
//! namespaces; they fail, never skip, without it.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::cmd;
use crate::setup;

pub fn run() -> Result<()> {
    if !cmd::is_root() {
        bail!("cargo xtask test needs root: the kernel tests load eBPF programs and create network namespaces and cgroups");
    }
    setup::run()?;
    let started = Instant::now();
    cmd::build_daemon()?;
    eprintln!("xtask: build took {:.1} s", started.elapsed().as_secs_f64());
    cmd::run(cmd::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    let started = Instant::now();
    cmd::run(cmd::cargo()
        .args(["test", "--workspace"])
        .env("DFDWATCH_BIN", cmd::daemon_binary())
        .env_remove("RUST_BACKTRACE"))?;
    eprintln!("xtask: tests took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

