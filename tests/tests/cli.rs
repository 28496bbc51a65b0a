//! The `dfdwatch` binary's DFD subcommands, end to end: the shipped DFDs check clean, a broken
//! file is reported as `file:line:col` with exit 1, a missing path is bad usage (64), bad `run`
//! options are all reported at once with 64, a sink file that is a symbolic link is refused, a
//! file name cannot forge report lines, and render produces a drawing Graphviz accepts.

use std::process::{Command, Stdio};

use anyhow::{Result, ensure};
use tests::{daemon, daemon::run_to_exit, sys};

fn dfdwatch(args: &[&str]) -> Result<std::process::Output> {
    run_to_exit(args)
}

#[test]
fn check_shipped_broken_and_missing() -> Result<()> {
    for dir in ["approved-dfd", "approved-dfd/demo"] {
        let shipped = sys::workspace_root().join(dir);
        // A fixed day: the shipped approvals expire, and this test must not fail on that day.
        let out = dfdwatch(&["check", "--today", "2026-11-23", "--format", "json", &shipped.display().to_string()])?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(out.status.code() == Some(0), "{dir} must check clean: {report}");
        ensure!(
            report["findings"].as_array().is_some_and(Vec::is_empty),
            "{dir} must have no findings at all: {report}"
        );
    }

    let dir = sys::scratch_dir("cli-check")?;
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata: {name: x}\nspec:\n  zones: 12\n",
    )?;
    let out = dfdwatch(&["check", &broken.display().to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "broken file must exit 1: {text}");
    ensure!(text.contains("broken.yaml:5:"), "want file:line:col: {text}");

    let out = dfdwatch(&["check", "/nonexistent/dfd.yaml"])?;
    ensure!(out.status.code() == Some(64), "missing path is bad usage: {out:?}");

    // `run` with bad options: every problem reported at once, exit 64, before anything is loaded.
    let out = dfdwatch(&["run", "--ring-buffer-mib", "3", "--alert-window-secs", "0", "--alerts-file", "/tmp/x"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(64), "bad run options are bad usage: {out:?}");
    for want in ["--ring-buffer-mib 3", "--alert-window-secs", "need --dfd"] {
        ensure!(err.contains(want), "{want} missing from the one report: {err}");
    }

    // Without privilege (user nobody), `run` says what it needs and exits 77 (EX_NOPERM).
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(daemon::binary()?)
        .args(["run", "--no-metrics"])
        .env_remove("RUST_BACKTRACE")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(77), "unprivileged run exits 77: {out:?}");
    ensure!(err.contains("needs root, or the capabilities CAP_BPF and CAP_PERFMON"), "{err}");
    Ok(())
}

/// A symbolic link planted where the daemon writes its events or alerts is refused, not followed:
/// the daemon says so and stops before loading anything, and the link's target is untouched.
#[test]
fn sink_files_that_are_symbolic_links_are_refused() -> Result<()> {
    let dir = sys::scratch_dir("cli-symlink")?;
    let target = dir.join("target.txt");
    std::fs::write(&target, "precious\n")?;
    let link = dir.join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link)?;
    let dfd = sys::workspace_root().join("approved-dfd/demo");
    let link = link.display().to_string();
    // A BTF path that does not exist: were the link followed, the run would still stop (at loading
    // the probes, which comes after the sinks are opened) instead of running on.
    let common = ["run", "--no-metrics", "--btf", "/nonexistent/vmlinux"];
    for extra in [
        vec!["--events-file", link.as_str()],
        vec!["--dfd", dfd.to_str().unwrap_or_default(), "--alerts-file", link.as_str()],
    ] {
        let args: Vec<&str> = common.iter().copied().chain(extra).collect();
        let out = dfdwatch(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{args:?} must fail: {err}");
        ensure!(err.contains("is a symbolic link") && err.contains("link.jsonl"), "{args:?}: {err}");
        ensure!(!err.contains("dfdwatch ready"), "refused before the probes are loaded: {err}");
    }
    ensure!(std::fs::read_to_string(&target)? == "precious\n", "the link's target is untouched");
    Ok(())
}

/// A file name cannot forge report lines: a newline or an escape sequence in it is printed
/// escaped, so each finding stays one line that starts with its own file's name.
#[test]
fn file_names_in_reports_are_escaped() -> Result<()> {
    let dir = sys::scratch_dir("cli-escape")?;
    let name = "x.yaml\nforged.yaml:1:1: info: all is well\x1b[2J.yaml";
    std::fs::write(dir.join(name), "apiVersion: [unclosed\n")?;
    let out = dfdwatch(&["check", dir.to_str().unwrap_or_default()])?;
    let report = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.code() == Some(1), "a broken file fails: {report}");
    ensure!(!report.contains('\x1b'), "no raw escape byte reaches the terminal: {report:?}");
    for line in report.lines().filter(|l| !l.trim().is_empty() && l.contains(": error:")) {
        ensure!(line.contains("x.yaml\\x0aforged.yaml"), "the newline is escaped, on one line: {line:?}");
    }
    ensure!(!report.lines().any(|l| l.starts_with("forged.yaml")), "no forged line: {report:?}");
    Ok(())
}

#[test]
fn render_is_accepted_by_graphviz() -> Result<()> {
    let shipped = sys::workspace_root().join("approved-dfd");
    let out = dfdwatch(&["render", &shipped.display().to_string(), "--format", "dot"])?;
    ensure!(out.status.success(), "render: {out:?}");
    let mut dot =
        Command::new("dot").arg("-Tsvg").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = dot.stdin.take() {
        std::io::Write::write_all(&mut stdin, &out.stdout)?;
    }
    let svg = dot.wait_with_output()?;
    ensure!(
        svg.status.success() && String::from_utf8_lossy(&svg.stdout).contains("<svg"),
        "dot refused: {}",
        String::from_utf8_lossy(&svg.stderr)
    );
    Ok(())
}
