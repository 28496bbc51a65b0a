//! `cargo xtask setup`: installs, idempotently, what a fresh Debian 12 machine with only rustup
//! lacks. Each step first checks whether its work is already done, so a second run takes about a
//! second.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, output};
use crate::toolchain::{BPF_LINKER_VERSION, DEBIAN_PACKAGES, EBPF_NIGHTLY, LLVM_PREFIX, STABLE};

/// Runs every step.
pub fn run() -> Result<()> {
    let started = Instant::now();
    toolchain(STABLE, &["clippy", "rustfmt"])?;
    toolchain(EBPF_NIGHTLY, &["rust-src", "clippy"])?;
    debian_packages()?;
    bpf_linker()?;
    cargo_fuzz()?;
    tracefs()?;
    mermaid_checker()?;
    crate::deploy_tools::install()?;
    eprintln!("xtask: setup complete in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn toolchain(name: &str, components: &[&str]) -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", name]))
        .unwrap_or_default();
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| !installed.lines().any(|l| l.starts_with(&format!("{c}-")) || l == *c))
        .collect();
    if !installed.is_empty() && missing.is_empty() {
        return Ok(());
    }
    let mut install = Command::new("rustup");
    install.args(["toolchain", "install", name, "--profile", "minimal"]);
    for c in components {
        install.args(["--component", c]);
    }
    cmd::run(&mut install).context("install a pinned Rust toolchain (is rustup on PATH?)")
}

fn debian_packages() -> Result<()> {
    // dpkg-query exits 1 when one package is unknown; what it printed still counts.
    let listed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Status}\n"])
        .args(DEBIAN_PACKAGES)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !listed.lines().any(|l| l.starts_with(&format!("{p} ")) && l.ends_with("install ok installed")))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!("Debian packages missing: {}; run `cargo xtask setup` as root", missing.join(" "));
    }
    // Debian starts a service when its package installs (nginx on port 80, redis on 6379). The
    // tests start their own servers in their own namespaces, so keep those off while installing.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(policy, "#!/bin/sh\n# written by cargo xtask setup while installing\nexit 101\n")
            .context("write policy-rc.d")?;
        make_executable(policy)?;
    }
    let result = cmd::run(Command::new("apt-get").args(["update", "-q"])).and_then(|()| {
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )
    });
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

fn bpf_linker() -> Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION) {
        return Ok(());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    cmd::run(
        Command::new("cargo")
            .args([&format!("+{}", crate::toolchain::STABLE), "install", "bpf-linker", "--locked", "--force"])
            .args(["--version", BPF_LINKER_VERSION, "--no-default-features", "--features", "llvm-22"])
            .env("PATH", format!("{LLVM_PREFIX}/bin:{path}"))
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )
    .context("build bpf-linker against Debian's LLVM 22")
}

/// cargo-fuzz, for `cargo xtask fuzz` and the short fuzzing run of `cargo xtask test`.
fn cargo_fuzz() -> Result<()> {
    let version = output(Command::new("cargo").args(["fuzz", "--version"])).unwrap_or_default();
    if version.split_whitespace().nth(1) == Some(crate::toolchain::CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    cmd::run(
        Command::new("cargo")
            .args([&format!("+{}", crate::toolchain::STABLE), "install", "cargo-fuzz", "--locked", "--force"])
            .args(["--version", crate::toolchain::CARGO_FUZZ_VERSION]),
    )
    .context("install cargo-fuzz")
}

fn tracefs() -> Result<()> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return Ok(());
    }
    if !cmd::is_root() {
        eprintln!(
            "xtask: tracefs is not mounted and we are not root; `dfdwatch run` will fall back to the raw tracepoint"
        );
        return Ok(());
    }
    cmd::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])).context("mount tracefs")
}

/// The DFD renderer's Mermaid output is checked by the real mermaid parser from npm.
fn mermaid_checker() -> Result<()> {
    let dir = cmd::root().join("tools/mermaid-check");
    if !dir.join("package-lock.json").exists() || dir.join("node_modules").exists() {
        return Ok(());
    }
    cmd::run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix"]).arg(&dir))
        .context("install the mermaid checker (needs node and npm)")
}
