//! Reloading the approved DFD while real connections flow: a changed file is picked up, SIGHUP
//! reloads at once, a DFD with errors is refused (logged, counted in dfdwatch_dfd_reloads_total)
//! and the running one keeps judging; no event is lost across reloads. Also: a connection
//! between two workloads on this node, seen as a connect and as an accept, is counted once.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::daemon::{connections, counter, metric};
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

fn setup(tag: &str) -> Result<ClientServer> {
    ClientServer::with_nginx(tag, &[80, 8080])
}

fn dfd(s: &ClientServer, ports: &str, target: &str) -> String {
    s.worker_web_dfd("reload-test", &ClientServer::flow("worker-to-web", "worker", target, ports))
}

/// Replaces the DFD file the way an editor or `git checkout` does: write aside, rename.
fn write_dfd(s: &ClientServer, text: &str) -> Result<()> {
    let aside = s.dir.join(".dfd.yaml.new");
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, s.dir.join("dfd.yaml"))?;
    Ok(())
}

/// One request from client to server on `port`; returns the verdict its connect was counted
/// under (the flow record of the interval that holds it).
fn verdict_of_request(s: &ClientServer, daemon: &Daemon, port: u16) -> Result<String> {
    let server = s.server.ipv4.to_string();
    let of_request =
        |f: &Value| f["kind"] == "connect" && f["dst"]["addr"] == server.as_str() && f["dst"]["port"] == port;
    let before = daemon.flows()?.iter().filter(|f| of_request(f)).count();
    let (_, out) = s.lab.run(
        &s.client,
        "curl",
        &["-s", "-m", "5", "-o", "/dev/null", &format!("http://{}:{port}/", s.server.ipv4)],
    )?;
    ensure!(out.status.success(), "curl to port {port}: {out:?}");
    let flows =
        daemon.wait_for_flows(Duration::from_secs(5), |f| f.iter().filter(|f| of_request(f)).count() > before)?;
    let flow = flows.iter().filter(|f| of_request(f)).nth(before).context("no flow record for the request")?;
    ensure!(flow["connections"] == 1, "one request, one connection: {flow}");
    Ok(flow["verdict"]["kind"].as_str().unwrap_or("none").to_owned())
}

fn start(s: &ClientServer, tag: &str, interval: &str) -> Result<Daemon> {
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            s.dir.join("dfd.yaml").display().to_string(),
            "--dfd-watch-interval-secs".into(),
            interval.into(),
        ],
        ..Default::default()
    };
    Daemon::start(tag, &options)
}

#[test]
fn changed_dfd_file_is_applied_and_a_broken_one_refused() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("reload-file")?;
    write_dfd(&s, &dfd(&s, "{port: 80, protocol: TCP}", "web"))?;
    let daemon = start(&s, "reload-file", "1")?;

    ensure!(verdict_of_request(&s, &daemon, 8080)? == "wrong_port", "port 8080 is not approved yet");
    let before = daemon.metrics()?;

    write_dfd(&s, &dfd(&s, "{port: 80, protocol: TCP}, {port: 8080, protocol: TCP}", "web"))?;
    daemon.wait_log("approved DFD reloaded", 1)?;
    ensure!(verdict_of_request(&s, &daemon, 8080)? == "approved", "the new DFD approves port 8080");
    let after = daemon.metrics()?;
    ensure!(metric(&after, "dfdwatch_dfd_reloads_total{result=\"applied\"}") == Some(1.0), "{after}");
    let info = |t: &str| t.lines().find(|l| l.starts_with("dfdwatch_dfd_info{")).map(str::to_owned);
    ensure!(info(&before) != info(&after), "dfdwatch_dfd_info shows the new revision: {:?}", info(&after));

    // A flow to a node that does not exist fails `check`: refused, and the running DFD stays.
    write_dfd(&s, &dfd(&s, "{port: 80, protocol: TCP}", "no-such-node"))?;
    let log = daemon.wait_log("approved DFD refused", 1)?;
    ensure!(log.contains("no-such-node"), "the refusal logs the check report:\n{log}");
    ensure!(verdict_of_request(&s, &daemon, 8080)? == "approved", "the refused DFD did not replace the running one");
    let refused = daemon.metrics()?;
    ensure!(metric(&refused, "dfdwatch_dfd_reloads_total{result=\"refused\"}") == Some(1.0), "{refused}");
    // The same refused content is not retried (and logged) every poll.
    std::thread::sleep(Duration::from_millis(2500));
    let log = std::fs::read_to_string(daemon.log_path())?;
    ensure!(log.matches("approved DFD refused").count() == 1, "refused once, not every poll:\n{log}");

    // Same-node connections: each request gave a connect and an accept; the accept's flow is
    // counted under the connect's, and the verdict metrics count each connection once.
    let flows = daemon.metrics()?;
    let done = daemon.stop()?;
    let server = s.server.ipv4.to_string();
    let to_server =
        |kind: &str, f: &Value| f["kind"] == kind && f["dst"]["addr"] == server.as_str() && f["dst"]["port"] == 8080;
    let connects = connections(&done.flows, |f| to_server("connect", f));
    let accepts = connections(&done.flows, |f| to_server("accept", f));
    ensure!(connects == 3 && accepts == 3, "3 requests: 3 connects and 3 accepts: {:#?}", done.flows);
    ensure!(
        done.flows.iter().filter(|f| to_server("accept", f)).all(|f| f["counted_elsewhere"] == true),
        "the accepts are counted under the connects: {:#?}",
        done.flows
    );
    let counted: f64 = ["wrong_port", "approved"]
        .iter()
        .filter_map(|k| metric(&flows, &format!("dfdwatch_flows_total{{verdict=\"{k}\"}}")))
        .sum();
    ensure!(counted == 3.0, "dfdwatch_flows_total counts 3 connections, not 6 sightings:\n{flows}");
    Ok(())
}

#[test]
fn sighup_reloads_at_once() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("reload-hup")?;
    write_dfd(&s, &dfd(&s, "{port: 80, protocol: TCP}", "web"))?;
    // With an hour between polls, only SIGHUP can apply the change within this test.
    let daemon = start(&s, "reload-hup", "3600")?;
    write_dfd(&s, &dfd(&s, "{port: 8080, protocol: TCP}", "web"))?;
    ensure!(verdict_of_request(&s, &daemon, 8080)? == "wrong_port", "not reloaded before SIGHUP");
    sys::signal(daemon.pid().context("daemon pid")?, libc::SIGHUP);
    let log = daemon.wait_log("approved DFD reloaded", 1)?;
    ensure!(log.contains("Sighup"), "the log says what triggered the reload:\n{log}");
    ensure!(verdict_of_request(&s, &daemon, 8080)? == "approved", "applied after SIGHUP");
    let done = daemon.stop()?;
    ensure!(done.clean_exit, "{}", done.log);
    Ok(())
}

#[test]
fn sighup_without_a_dfd_is_logged_not_fatal() -> Result<()> {
    let _serial = lab::exclusive();
    let daemon = Daemon::start("reload-nodfd", &DaemonOptions::default())?;
    sys::signal(daemon.pid().context("daemon pid")?, libc::SIGHUP);
    daemon.wait_log("SIGHUP: no approved DFD to reload", 1)?;
    let done = daemon.stop()?;
    ensure!(done.clean_exit, "the daemon kept running and stopped cleanly on SIGTERM:\n{}", done.log);
    Ok(())
}

/// The kernel counts an approved flow's repeats without asking the daemon; a reload that
/// withdraws the approval must not leave that "approved" behind: the very next connection of the
/// flow is recorded with its pid and alerts.
#[test]
fn withdrawn_approval_alerts_on_the_next_connection() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("reload-withdraw")?;
    write_dfd(&s, &dfd(&s, "{port: 80, protocol: TCP}, {port: 8080, protocol: TCP}", "web"))?;
    let daemon = start(&s, "reload-withdraw", "1")?;
    let url = format!("http://{}:8080/", s.server.ipv4);
    let curl = |lab: &tests::Lab| -> Result<u32> {
        let (pid, out) = lab.run(&s.client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
        ensure!(out.status.success(), "curl: {out:?}");
        Ok(pid)
    };
    for _ in 0..5 {
        curl(&s.lab)?;
    }
    let server = s.server.ipv4.to_string();
    let to_8080 = |f: &Value| f["kind"] == "connect" && f["dst"]["addr"] == server.as_str() && f["dst"]["port"] == 8080;
    let flows = daemon.wait_for_flows(Duration::from_secs(5), |f| connections(f, to_8080) >= 5)?;
    ensure!(flows.iter().filter(|f| to_8080(f)).all(|f| f["verdict"]["kind"] == "approved"), "{flows:#?}");
    let recorded = daemon.events()?.iter().filter(|e| to_8080(e)).count();
    ensure!(recorded == 1, "an approved flow is recorded once, then counted: {recorded} records");

    write_dfd(&s, &dfd(&s, "{port: 80, protocol: TCP}", "web"))?;
    daemon.wait_log("approved DFD reloaded", 1)?;
    let pid = curl(&s.lab)?;
    let events = daemon.wait_for(Duration::from_secs(5), |ev| ev.iter().any(|e| e["local"]["tgid"] == pid))?;
    let e =
        events.iter().find(|e| e["local"]["tgid"] == pid && to_8080(e)).context("the next connection is recorded")?;
    ensure!(
        e["verdict"]["kind"] == "wrong_port" && e["verdict"]["alert"] == true && e["recorded"] == "first",
        "the withdrawn approval alerts at once: {e}"
    );
    let done = daemon.stop()?;
    ensure!(counter(&done.counters, "pipeline", "flow_verdicts_withdrawn") >= 1, "{}", done.counters);
    ensure!(connections(&done.flows, to_8080) == 6, "every connection counted: {:#?}", done.flows);
    Ok(())
}

/// A megabyte of copies of the DFD (it fits a ConfigMap) is refused on reload within the chart's
/// 256 MiB memory limit, quickly, and the running DFD keeps judging.
#[test]
fn a_megabyte_of_copies_is_refused_and_the_running_dfd_stays() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("reload-copies")?;
    let text = dfd(&s, "{port: 80, protocol: TCP}, {port: 8080, protocol: TCP}", "web");
    write_dfd(&s, &text)?;
    let daemon = start(&s, "reload-copies", "1")?;
    ensure!(verdict_of_request(&s, &daemon, 8080)? == "approved", "approved before");
    let copies = (1 << 20) / text.len() + 1;
    write_dfd(&s, &vec![text.as_str(); copies].join("---\n"))?;
    let started = std::time::Instant::now();
    let log = daemon.wait_log("approved DFD refused", 1)?;
    ensure!(started.elapsed() < Duration::from_secs(20), "refused after {:?}", started.elapsed());
    ensure!(
        log.contains("more duplicate ids are not listed"),
        "the report is bounded:\n{}",
        &log[..log.len().min(2000)]
    );
    let pid = daemon.pid().context("daemon pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")?;
    ensure!(peak_kib < 256 * 1024, "peak memory {peak_kib} KiB while refusing {copies} copies");
    ensure!(verdict_of_request(&s, &daemon, 8080)? == "approved", "the running DFD stays");
    let done = daemon.stop()?;
    ensure!(done.clean_exit, "{}", done.log);
    Ok(())
}

/// Every applied change is reported with what it widened: a change record in the events and the
/// alert file, and the metric the shipped rule DfdwatchDfdWidened fires on. Switching alerts off
/// (`unapprovedFlow: log`) is a high-severity change.
#[test]
fn an_applied_change_is_reported_with_what_it_widened() -> Result<()> {
    let _serial = lab::exclusive();
    let s = setup("reload-change")?;
    write_dfd(&s, &dfd(&s, "{port: 80, protocol: TCP}", "web"))?;
    let alerts = s.dir.join("alerts.jsonl");
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            s.dir.join("dfd.yaml").display().to_string(),
            "--dfd-watch-interval-secs".into(),
            "1".into(),
            "--alerts-file".into(),
            alerts.display().to_string(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("reload-change", &options)?;
    let widened = dfd(&s, "{port: 80, protocol: TCP}, {port: 8080, protocol: TCP}", "web");
    write_dfd(&s, &widened)?;
    daemon.wait_log("approved DFD reloaded", 1)?;
    write_dfd(&s, &format!("{widened}  defaults: {{unapprovedFlow: log}}\n"))?;
    daemon.wait_log("approved DFD reloaded", 2)?;
    let text = daemon.metrics()?;
    ensure!(metric(&text, "dfdwatch_dfd_changes_total{severity=\"high\"}") == Some(1.0), "{text}");
    ensure!(metric(&text, "dfdwatch_dfd_changes_total{severity=\"medium\"}") == Some(1.0), "{text}");
    let done = daemon.stop()?;
    let kinds: Vec<(String, String)> = done
        .dfd_changes
        .iter()
        .map(|r| {
            (r["highest"].as_str().unwrap_or("").to_owned(), r["changes"][0]["kind"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    ensure!(
        kinds
            == [
                ("medium".to_owned(), "ports_widened".to_owned()),
                ("high".to_owned(), "alerts_switched_off".to_owned())
            ],
        "{:#?}",
        done.dfd_changes
    );
    let second = &done.dfd_changes[1];
    ensure!(second["old"]["sha256"] == done.dfd_changes[0]["new"]["sha256"], "revisions chain: {second}");
    let in_alert_file = std::fs::read_to_string(&alerts)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["schema"] == "dfdwatch.dfd_change.v1")
        .count();
    ensure!(in_alert_file == 2, "both changes are in the alert file too");
    Ok(())
}
