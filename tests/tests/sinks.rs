//! The sinks and DFD admission with the real daemon and real connections: metrics keep counting
//! while the events file sits on a full filesystem; a DFD whose approval expired yesterday is
//! admitted with a warning and the expiry metrics (`dfdwatch check` still fails it, for CI).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dfdwatch_dfd::date::Date;
use tests::daemon::{counter, run_to_exit};
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// A date `days` from today (UTC), as `YYYY-MM-DD`.
fn day(days: i64) -> String {
    Date::from_unix_days(Date::today_utc().unix_days() + days).to_string()
}

fn setup(tag: &str) -> Result<ClientServer> {
    let s = ClientServer::with_nginx(tag, &[80])?;
    // One approval expired yesterday, one expires in five days.
    let approval =
        |ticket: &str, expires: String| format!("      approval: {{ticket: {ticket}, expires: \"{expires}\"}}\n");
    let flows = ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}")
        + &approval("SEC-1", day(-1))
        + &ClientServer::flow("web-to-worker", "web", "worker", "{port: 80, protocol: TCP}")
        + &approval("SEC-2", day(5));
    let text = s.worker_web_dfd("sinks-test", &flows);
    std::fs::write(s.dir.join("dfd.yaml"), text)?;
    Ok(s)
}

fn request(s: &ClientServer) -> Result<()> {
    let url = format!("http://{}:80/", s.server.ipv4);
    let (_, out) = s.lab.run(&s.client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    Ok(())
}

fn dfd_arg(s: &ClientServer) -> Vec<String> {
    vec!["--dfd".into(), s.dir.join("dfd.yaml").display().to_string()]
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// A tmpfs of 1 MiB, filled to the last byte; unmounted when dropped, also on failure.
struct FullFs(PathBuf);

impl FullFs {
    fn mount(at: &Path) -> Result<Self> {
        std::fs::create_dir_all(at)?;
        sys::run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &at.display().to_string()])?;
        let fs = Self(at.to_owned());
        // The events file exists (the daemon opens it at start); then nothing is left.
        std::fs::write(at.join("events.jsonl"), b"")?;
        let filler = at.join("filler");
        let out = std::process::Command::new("dd")
            .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
            .output()?;
        ensure!(String::from_utf8_lossy(&out.stderr).contains("No space left"), "dd did not fill the tmpfs: {out:?}");
        Ok(fs)
    }
}

impl Drop for FullFs {
    fn drop(&mut self) {
        sys::run_quiet("umount", &[&self.0.display().to_string()]);
    }
}

#[test]
fn metrics_keep_counting_while_the_events_file_is_on_a_full_filesystem() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("sinks-full")?;
    let full = FullFs::mount(&s.dir.join("full"))?;
    let options =
        DaemonOptions { extra_args: dfd_arg(&s), events_file: Some(full.0.join("events.jsonl")), ..Default::default() };
    let daemon = Daemon::start("sinks-full", &options)?;
    for _ in 0..5 {
        request(&s)?;
    }
    // 5 connections, each seen as a connect and an accept on this node: counted once each.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = daemon.metrics()?;
        if metric(&text, "dfdwatch_flows_total{verdict=\"approved\"}") == Some(5.0)
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(metric(&text, "dfdwatch_flows_total{verdict=\"approved\"}") == Some(5.0), "flows counted:\n{text}");
    let errors = metric(&text, "dfdwatch_write_errors_total").unwrap_or(0.0);
    ensure!(errors >= 1.0, "the full disk is counted as write errors:\n{text}");
    let done = daemon.stop()?;
    ensure!(done.log.contains("No space left on device"), "the write error is logged:\n{}", done.log);
    ensure!(
        counter(&done.counters, "pipeline", "events_written") >= 10,
        "the events sink took every line (its buffer, not the disk): {}",
        done.counters
    );
    Ok(())
}

#[test]
fn an_approval_that_expired_yesterday_is_admitted_with_a_warning_and_metrics() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("sinks-expired")?;
    let options = DaemonOptions { extra_args: dfd_arg(&s), ..Default::default() };
    let daemon = Daemon::start("sinks-expired", &options)?;
    let text = daemon.metrics()?;
    ensure!(metric(&text, "dfdwatch_dfd_approvals{state=\"expired\"}") == Some(1.0), "{text}");
    ensure!(metric(&text, "dfdwatch_dfd_approvals{state=\"expiring\"}") == Some(1.0), "{text}");
    ensure!(metric(&text, "dfdwatch_dfd_approvals{state=\"valid\"}") == Some(0.0), "{text}");
    ensure!(
        metric(&text, "dfdwatch_dfd_approval_expiry_timestamp_seconds{flow=\"worker-to-web\"}").is_some(),
        "the expiry time per flow, for rules: {text}"
    );
    // The expired approval still approves: the daemon judges by the DFD, the rule raises the alarm.
    request(&s)?;
    let done = daemon.stop()?;
    ensure!(done.log.contains("approval of flow worker-to-web expired on"), "a warning at load:\n{}", done.log);
    ensure!(
        done.log.contains("approval of flow web-to-worker expires on"),
        "a warning for the one expiring:\n{}",
        done.log
    );
    let server = s.server.ipv4.to_string();
    let connect = done
        .events
        .iter()
        .find(|e| e["kind"] == "connect" && e["dst"]["addr"] == server.as_str())
        .context("no connect event to the server")?;
    ensure!(connect["verdict"]["kind"] == "approved", "{connect}");

    // `dfdwatch check` keeps H001 as an error for CI.
    let out = run_to_exit(&["check", &s.dir.join("dfd.yaml").display().to_string()])?;
    let report = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.code() == Some(1) && report.contains("H001"), "check fails an expired approval: {report}");
    Ok(())
}
