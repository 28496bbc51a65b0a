//! The deployment tests' Python tools (real Helm through helm-python-sdk, kubernetes-validate,
//! yamllint, the prometheus-operator CRD models), pinned in tools/deploy-check/requirements.txt
//! and installed into a venv under target/, idempotently: a stamp holds the requirements the venv
//! was built from, so an unchanged venv costs one file comparison.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Creates or refreshes the venv when tools/deploy-check/requirements.txt changed.
pub fn install() -> Result<()> {
    let requirements = cmd::root().join("tools/deploy-check/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).with_context(|| format!("read {}", requirements.display()))?;
    // tests/tests/deploy.rs runs the tools from here.
    let venv = cmd::root().join("target/deploy-tools/venv");
    let stamp = venv.join("installed-requirements.txt");
    if venv.join("bin/python").exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    if !make_venv(&venv) {
        // Debian's python3 has no ensurepip without python3-venv.
        if !cmd::is_root() {
            bail!("`python3 -m venv` failed; install Debian's python3-venv or run `cargo xtask setup` as root");
        }
        cmd::run(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "python3-venv",
        ]))?;
        if !make_venv(&venv) {
            bail!("`python3 -m venv {}` failed even with python3-venv installed", venv.display());
        }
    }
    // Wheels only: helm-python-sdk's sdist would need Go to build the Helm library.
    cmd::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "--only-binary", ":all:", "-r"])
            .arg(&requirements),
    )
    .context("install the deployment test tools from PyPI")?;
    std::fs::write(&stamp, wanted).with_context(|| format!("write {}", stamp.display()))
}

fn make_venv(venv: &std::path::Path) -> bool {
    Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv).status().is_ok_and(|s| s.success())
}
