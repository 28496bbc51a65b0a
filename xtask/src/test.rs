//! `cargo xtask test`: set up, build, lint, then every test of the workspace, the real-kernel
//! ones included. Runs as root (CI does): the kernel tests load eBPF programs and build network
//! namespaces; they fail, never skip, without it.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::cmd;
use crate::setup;

/// Every crate of the workspace that builds for the host.
const WORKSPACE_ARGS: &[&str] = &["--workspace", "--exclude", "monitor-ebpf"];

pub fn run() -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "cargo xtask test needs root: the kernel tests load eBPF programs and create network namespaces and cgroups"
        );
    }
    setup::run()?;
    // One formatting style (rustfmt.toml) over every crate, the eBPF one included.
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    let started = Instant::now();
    cmd::build_daemon()?;
    eprintln!("xtask: build took {:.1} s", started.elapsed().as_secs_f64());
    // Every crate but the eBPF one, which only builds for the BPF target (monitor-user's build
    // script compiles it, with rustc's own warnings denied there).
    cmd::run(cmd::cargo().args(["clippy", "--all-targets"]).args(WORKSPACE_ARGS).args(["--", "-D", "warnings"]))?;
    // The eBPF crate, linted on its own target with the nightly that builds it.
    cmd::run(
        std::process::Command::new("rustup")
            .current_dir(cmd::root().join("monitor-ebpf"))
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .args(["run", crate::toolchain::EBPF_NIGHTLY, "cargo", "clippy", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--", "-D", "warnings"])
            .env("CARGO_TARGET_DIR", cmd::root().join("target/ebpf-clippy")),
    )?;
    let started = Instant::now();
    // The whole workspace: the real-kernel tests (crate `tests`) and the benchmarks' own tests
    // are not default members, so a plain unprivileged `cargo test` runs only the unit tests.
    cmd::run(
        cmd::cargo()
            .arg("test")
            .args(WORKSPACE_ARGS)
            .env("DFDWATCH_BIN", cmd::daemon_binary())
            .env_remove("RUST_BACKTRACE"),
    )?;
    eprintln!("xtask: tests took {:.1} s", started.elapsed().as_secs_f64());
    // A short fuzzing run of every target; `cargo xtask fuzz` runs them longer.
    let started = Instant::now();
    crate::fuzz::run(&[], crate::fuzz::TEST_SECONDS)?;
    eprintln!("xtask: fuzzing took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
