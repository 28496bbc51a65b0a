//! Reloading the approved DFD while real connections flow: a changed file is picked up, SIGHUP
//! reloads at once, a DFD with errors is refused (logged, counted in dfdwatch_dfd_reloads_total)
//! and the running one keeps judging; no event is lost across reloads. Also: a connection
//! between two workloads on this node, seen as a connect and as an accept, is counted once.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::daemon::counter;
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// `PORTS` is replaced by the approved ports of worker -> web.
const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: reload-test
spec:
  tiers:
    - {id: T2, name: Internal, level: 2}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: internal, name: Internal, tier: T2, match: {cidrs: ["CLIENT/32", "SERVER/32"]}}
  nodes:
    - {id: worker, name: Worker, kind: process, zone: internal, match: {cidrs: ["CLIENT/32"]}}
    - {id: web, name: Web, kind: process, zone: internal, match: {cidrs: ["SERVER/32"]}}
  flows:
    - id: worker-to-web
      from: worker
      to: TARGET
      ports: [PORTS]
      appProtocol: http
      encryption: {required: none}
      data: [public]
"#;

fn setup(tag: &str) -> Result<ClientServer> {
    ClientServer::with_nginx(tag, &[80, 8080])
}

fn dfd(s: &ClientServer, ports: &str, target: &str) -> String {
    s.fill(DFD).replace("PORTS", ports).replace("TARGET", target)
}

/// Replaces the DFD file the way an editor or `git checkout` does: write aside, rename.
fn write_dfd(s: &ClientServer, text: &str) -> Result<()> {
    let aside = s.dir.join(".dfd.yaml.new");
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, s.dir.join("dfd.yaml"))?;
    Ok(())
}

/// One request from client to server on `port`; returns the verdict of its connect event.
fn verdict_of_request(s: &ClientServer, daemon: &Daemon, port: u16) -> Result<String> {
    let (pid, out) = s.lab.run(
        &s.client,
        "curl",
        &["-s", "-m", "5", "-o", "/dev/null", &format!("http://{}:{port}/", s.server.ipv4)],
    )?;
    ensure!(out.status.success(), "curl to port {port}: {out:?}");
    let events = daemon.wait_for(Duration::from_secs(5), |ev| ev.iter().any(|e| is_connect_of(e, pid)))?;
    let event = events.iter().find(|e| is_connect_of(e, pid)).context("no connect event for the request")?;
    Ok(event["verdict"]["kind"].as_str().unwrap_or("none").to_owned())
}

fn is_connect_of(e: &Value, pid: u32) -> bool {
    e["kind"] == "connect" && e["local"]["tgid"] == pid
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
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

    // Same-node connections: each request gave a connect and an accept; the accept is marked as
    // the other end, and the verdict metrics count each connection once.
    let flows = daemon.metrics()?;
    let done = daemon.stop()?;
    let server = s.server.ipv4.to_string();
    let judged: Vec<&Value> = done.events.iter().filter(|e| e["dst"]["addr"] == server.as_str()).collect();
    let seconds = judged.iter().filter(|e| e["other_end_seen"] == true).count();
    ensure!(
        judged.len() == 6 && seconds == 3,
        "3 requests: 3 connects + 3 accepts, 3 marked other_end_seen: {judged:#?}"
    );
    let counted: f64 = ["wrong_port", "approved"]
        .iter()
        .filter_map(|k| metric(&flows, &format!("dfdwatch_flows_total{{verdict=\"{k}\"}}")))
        .sum();
    ensure!(counted == 3.0, "dfdwatch_flows_total counts 3 connections, not 6 sightings:\n{flows}");
    ensure!(
        counter(&done.counters, "pipeline", "records_read") == counter(&done.counters, "pipeline", "events_written"),
        "no event lost across reloads: {}",
        done.counters
    );
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
