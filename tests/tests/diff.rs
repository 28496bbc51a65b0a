//! `dfdwatch diff`, end to end with the real binary and git: each kind of change is reported
//! with its severity, `--fail-on` gates the exit status, every format is well formed, and the
//! example CI script (deploy/ci/dfd-review.sh) gates a pull request in a real git repository.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use tests::daemon::{binary, run_to_exit};
use tests::sys;

fn demo() -> Result<String> {
    Ok(std::fs::read_to_string(sys::workspace_root().join("approved-dfd/demo/shop-demo.yaml"))?)
}

/// Writes `text` as the only DFD file of `dir`.
fn dfd_dir(dir: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("shop.yaml"), text)?;
    Ok(())
}

fn diff(old: &Path, new: &Path, extra: &[&str]) -> Result<std::process::Output> {
    let mut args = vec!["diff".to_owned(), old.display().to_string(), new.display().to_string()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    run_to_exit(&args)
}

#[test]
fn each_change_has_its_severity_and_fail_on_gates_the_exit_status() -> Result<()> {
    let dir = sys::scratch_dir("diff-kinds")?;
    let base = demo()?;
    let (old, new) = (dir.join("old"), dir.join("new"));
    dfd_dir(&old, &base)?;

    // A port more on one flow: medium.
    let widened = base.replacen(
        "ports: [{port: 8080, protocol: TCP}]",
        "ports: [{port: 8080, protocol: TCP}, {port: 8443, protocol: TCP}]",
        1,
    );
    ensure!(widened != base, "the demo DFD changed");
    dfd_dir(&new, &widened)?;
    let out = diff(&old, &new, &["--fail-on", "high"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.code() == Some(0), "a medium change passes --fail-on high: {text}");
    ensure!(
        text.contains("medium: ports_widened front-to-api") && text.contains("1 change(s): 0 high, 1 medium"),
        "{text}"
    );
    ensure!(diff(&old, &new, &["--fail-on", "medium"])?.status.code() == Some(1), "fails --fail-on medium");

    // Alerts switched off: high, in every format.
    dfd_dir(&new, &format!("{widened}  defaults: {{unapprovedFlow: log}}\n"))?;
    let out = diff(&old, &new, &["--fail-on", "high", "--format", "markdown"])?;
    let md = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.code() == Some(1), "a high change fails --fail-on high: {md}");
    ensure!(md.contains("| **high** | `alerts_switched_off` | `defaults.unapprovedFlow` |"), "{md}");
    let out = diff(&old, &new, &["--format", "sarif"])?;
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let results = sarif["runs"][0]["results"].as_array().context("sarif results")?;
    ensure!(results.len() == 2 && results[0]["level"] == "error", "{sarif}");
    ensure!(results[0]["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64().is_some(), "{sarif}");
    let out = diff(&old, &new, &["--format", "json"])?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(json["changes"][0]["kind"] == "alerts_switched_off", "{json}");

    // A side that does not parse: 65.
    dfd_dir(&new, "apiVersion: [unclosed\n")?;
    ensure!(diff(&old, &new, &[])?.status.code() == Some(65), "a broken side");
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .current_dir(repo)
        .args(["-c", "user.name=dfdwatch test", "-c", "user.email=test@dfdwatch.invalid"])
        .args(args)
        .output()?;
    ensure!(out.status.success(), "git {args:?}: {out:?}");
    Ok(())
}

#[test]
fn the_example_ci_script_gates_a_pull_request() -> Result<()> {
    let dir = sys::scratch_dir("diff-ci")?;
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    let base = demo()?;
    dfd_dir(&repo.join("approved-dfd"), &base)?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "the approved DFD"])?;
    let script = sys::workspace_root().join("deploy/ci/dfd-review.sh");
    let run = || -> Result<std::process::Output> {
        Ok(Command::new(&script)
            .current_dir(&repo)
            .env("BASE", "main")
            .env("DFD", "approved-dfd")
            .env("FAIL_ON", "high")
            .env("REPORT", dir.join("report.md"))
            .env("DFDWATCH", binary()?)
            .output()?)
    };

    // A pull request that only adds a port: reviewed, not blocked.
    git(&repo, &["checkout", "-q", "-b", "pr"])?;
    let widened = base.replacen(
        "ports: [{port: 8080, protocol: TCP}]",
        "ports: [{port: 8080, protocol: TCP}, {port: 8443, protocol: TCP}]",
        1,
    );
    dfd_dir(&repo.join("approved-dfd"), &widened)?;
    git(&repo, &["commit", "-q", "-am", "another port"])?;
    let out = run()?;
    ensure!(out.status.success(), "a medium change passes: {out:?}");
    ensure!(std::fs::read_to_string(dir.join("report.md"))?.contains("`ports_widened`"), "the report lists it");

    // One that switches alerts off: blocked until a security review.
    dfd_dir(&repo.join("approved-dfd"), &format!("{widened}  defaults: {{unapprovedFlow: log}}\n"))?;
    git(&repo, &["commit", "-q", "-am", "quiet please"])?;
    let out = run()?;
    ensure!(out.status.code() == Some(1), "a high change is blocked: {out:?}");
    let report = std::fs::read_to_string(dir.join("report.md"))?;
    ensure!(report.contains("`alerts_switched_off`"), "{report}");
    ensure!(String::from_utf8_lossy(&out.stderr).contains("need a security review"), "{out:?}");
    Ok(())
}
