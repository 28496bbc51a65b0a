//! The sinks and DFD admission with the real daemon and real connections: a full disk leaves only
//! whole lines in the events and alert files, the lines it refused are written once space is
//! back, and the written counters count what reached the disk; a DFD whose approval expired yesterday is
//! admitted with a warning and the expiry metrics (`dfdwatch check` still fails it, for CI).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dfdwatch_dfd::date::Date;
use tests::daemon::{counter, metric, run_to_exit};
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// A date `days` from today (UTC), as `YYYY-MM-DD`.
fn day(days: i64) -> String {
    Date::from_unix_days(Date::today_utc().unix_days() + days).to_string()
}

fn setup(tag: &str, ports: &[u16]) -> Result<ClientServer> {
    let s = ClientServer::with_nginx(tag, ports)?;
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

fn request(s: &ClientServer, port: u16) -> Result<()> {
    let url = format!("http://{}:{port}/", s.server.ipv4);
    let (_, out) = s.lab.run(&s.client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    Ok(())
}

fn dfd_arg(s: &ClientServer) -> Vec<String> {
    vec!["--dfd".into(), s.dir.join("dfd.yaml").display().to_string()]
}

/// Every line of `path`, parsed; any line that is not whole JSON fails the test.
fn json_lines(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)?;
    ensure!(text.is_empty() || text.ends_with('\n'), "{} ends in a partial line", path.display());
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("torn line in {}: {l:?}", path.display())))
        .collect()
}

#[test]
fn a_full_disk_leaves_whole_lines_and_counters_count_what_reached_it() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("sinks-full", &[80, 8080])?;
    let full = sys::FullFs::mount(&s.dir.join("full"))?;
    let (events, alerts) = (full.0.join("events.jsonl"), full.0.join("alerts.jsonl"));
    let mut extra_args = dfd_arg(&s);
    extra_args.extend(["--alerts-file".into(), alerts.display().to_string(), "--alert-window-secs".into(), "1".into()]);
    let options = DaemonOptions { extra_args, events_file: Some(events.clone()), ..Default::default() };
    let daemon = Daemon::start("sinks-full", &options)?;
    // Approved requests on port 80, unapproved ones on 8080 (each recorded, and alerting).
    let round = |n: usize| -> Result<()> {
        for _ in 0..n {
            request(&s, 80)?;
            request(&s, 8080)?;
            std::thread::sleep(Duration::from_millis(150));
        }
        Ok(())
    };
    round(10)?;
    // Each connection is seen as a connect and an accept on this node: counted once each.
    let text = daemon.wait_metric("dfdwatch_flows_total{verdict=\"approved\"}", |v| v >= 10.0)?;
    ensure!(metric(&text, "dfdwatch_flows_total{verdict=\"approved\"}") == Some(10.0), "flows counted:\n{text}");
    let text = daemon.wait_metric("dfdwatch_write_errors_total", |v| v >= 1.0)?;
    ensure!(metric(&text, "dfdwatch_write_errors_total") >= Some(1.0), "the full disk is counted:\n{text}");
    // While the daemon runs, a write may be cut by the full disk at this very moment (the alert
    // writer's error can be counted before the events writer cuts its partial line off again):
    // count whole lines only here; the whole files are checked once the daemon has stopped.
    let whole_lines = |p: &Path| -> Result<usize> { Ok(std::fs::read_to_string(p)?.matches('\n').count()) };
    let before = (whole_lines(&events)?, whole_lines(&alerts)?);

    full.free()?;
    round(3)?;
    // The lines kept while the disk was full are written on the next retry (every second) and
    // every alert window (1 s) has closed.
    std::thread::sleep(Duration::from_millis(2500));
    let done = daemon.stop()?;
    ensure!(done.log.contains("No space left on device"), "the write error is logged:\n{}", done.log);
    let (on_disk, alerts_on_disk) = (json_lines(&events)?, json_lines(&alerts)?);
    ensure!(on_disk.len() > before.0 && alerts_on_disk.len() > before.1, "lines kept while full came later");
    let pipeline = |name: &str| counter(&done.counters, "pipeline", name);
    ensure!(
        pipeline("events_written") == on_disk.len() as u64 && pipeline("alerts_written") == alerts_on_disk.len() as u64,
        "the written counters count the {} event and {} alert lines on disk: {}",
        on_disk.len(),
        alerts_on_disk.len(),
        done.counters
    );
    ensure!(pipeline("events_dropped") == 0 && pipeline("alerts_dropped") == 0, "nothing dropped: {}", done.counters);
    // No line was lost: all 13 unapproved connections are on disk, one by one.
    let unapproved = done.events.iter().filter(|e| e["kind"] == "connect" && e["dst"]["port"] == 8080).count();
    ensure!(unapproved == 13, "{unapproved} of 13 unapproved connects recorded");
    Ok(())
}

#[test]
fn an_approval_that_expired_yesterday_is_admitted_with_a_warning_and_metrics() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("sinks-expired", &[80])?;
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
    request(&s, 80)?;
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
