//! `cargo xtask fuzz`: runs the libFuzzer targets in `fuzz/` (cargo-fuzz, with the pinned
//! nightly and AddressSanitizer) over their seed corpus in the repository. New inputs go to
//! `target/fuzz-corpus/TARGET` (never into the repository), crashes to
//! `target/fuzz-artifacts/TARGET/`; a crash, a hang (`-timeout`) or memory growth
//! (`-rss_limit_mb`) fails the run. `cargo xtask test` runs each target for a few seconds.

use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;
use crate::toolchain::EBPF_NIGHTLY;

/// The fuzz targets, in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["dfd_load", "dfd_signed", "event_record"];

/// Seconds per target in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 15;

/// Runs `targets` (all when empty) for `seconds` each.
pub fn run(targets: &[String], seconds: u64) -> Result<()> {
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("no fuzz target {t}; the targets are {}", TARGETS.join(", "));
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    let root = cmd::root();
    for target in chosen {
        let corpus = root.join("target/fuzz-corpus").join(target);
        let artifacts = root.join("target/fuzz-artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let mut artifact_prefix = artifacts.into_os_string();
        artifact_prefix.push("/");
        cmd::run(
            Command::new("cargo")
                .current_dir(root.join("fuzz"))
                .env("CARGO_TARGET_DIR", root.join("target/fuzz"))
                .env_remove("RUSTC")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .args([&format!("+{EBPF_NIGHTLY}"), "fuzz", "run", target])
                .arg(&corpus)
                .arg(root.join("fuzz/corpus").join(target))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .args(["-timeout=10", "-rss_limit_mb=2048", "-max_len=65536", "-print_final_stats=1"])
                .arg({
                    let mut a = std::ffi::OsString::from("-artifact_prefix=");
                    a.push(&artifact_prefix);
                    a
                }),
        )?;
        // cargo-fuzz makes fuzz/artifacts/TARGET for its default prefix, unused here.
        let _ = std::fs::remove_dir(root.join("fuzz/artifacts").join(target));
        let _ = std::fs::remove_dir(root.join("fuzz/artifacts"));
    }
    Ok(())
}
