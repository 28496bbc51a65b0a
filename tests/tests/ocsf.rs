//! OCSF output for SIEMs: the real daemon writes its events (`--events-format ocsf`) and alerts
//! (`--alerts-format ocsf`) as OCSF 1.5.0 while real connections are judged, a DFD reload widens a
//! flow and a restart leaves a gap; every line validates against the OCSF JSON Schema of its class
//! (ocsf-json-schema from PyPI, offline, with jsonschema), and the DFD verdict, zones and STRIDE and
//! CAPITALS categories are where docs/events.md says.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// Validates `files` with tools/ocsf-check (the venv `cargo xtask setup` builds).
fn validate(files: &[&Path]) -> Result<()> {
    let root = sys::workspace_root();
    let python = root.join("target/deploy-tools/venv/bin/python");
    ensure!(python.exists(), "{} is missing: run `cargo xtask setup`", python.display());
    let out = Command::new(python).arg(root.join("tools/ocsf-check/ocsf_check.py")).args(files).output()?;
    ensure!(
        out.status.success(),
        "OCSF validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn events_and_alerts_validate_as_ocsf_and_carry_the_verdict() -> Result<()> {
    let _serial = lab::exclusive();
    let s = ClientServer::with_nginx("ocsf", &[80, 8080])?;
    let flow = ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}");
    let dfd = s.dir.join("dfd.yaml");
    std::fs::write(&dfd, s.worker_web_dfd("ocsf-test", &flow))?;
    let (events, alerts, state) = (s.dir.join("events.jsonl"), s.dir.join("alerts.jsonl"), s.dir.join("state"));
    let arg = |p: &Path| p.display().to_string();
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            arg(&dfd),
            "--events-format".into(),
            "ocsf".into(),
            "--alerts-format".into(),
            "ocsf".into(),
            "--alerts-file".into(),
            arg(&alerts),
            "--dfd-watch-interval-secs".into(),
            "1".into(),
        ],
        events_file: Some(events.clone()),
        state_dir: Some(state.clone()),
        ..Default::default()
    };
    let daemon = Daemon::start("ocsf", &options)?;
    let curl = |port: u16| {
        let url = format!("http://{}:{port}/", s.server.ipv4);
        s.lab.run(&s.client, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])
    };
    curl(80)?;
    curl(8080)?;
    curl(81)?;
    daemon.wait_for_flows(Duration::from_secs(5), |f| !f.is_empty())?;
    // A reload that widens the approved flow: a DFD change record, in both streams.
    let wider =
        ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}, {port: 8080, protocol: TCP}");
    std::fs::write(&dfd, s.worker_web_dfd("ocsf-test", &wider))?;
    daemon.wait_log("approved DFD reloaded", 1)?;
    daemon.stop()?;
    // A restart: the time between the two runs is a gap record.
    let daemon = Daemon::start("ocsf", &options)?;
    daemon.stop()?;

    validate(&[&events, &alerts])?;
    let events = tests::daemon::json_lines(&events)?;
    let alerts = tests::daemon::json_lines(&alerts)?;
    let activity = |e: &Value| (e["class_uid"].as_u64().unwrap_or(0), e["activity_id"].as_u64().unwrap_or(0));
    for want in [(4001, 1), (4001, 4), (4001, 6), (2004, 1)] {
        ensure!(events.iter().any(|e| activity(e) == want), "no event of class/activity {want:?}");
    }
    let gap = events.iter().find(|e| e["finding_info"]["types"][0] == "monitoring_gap").context("the restart's gap")?;
    ensure!(gap["unmapped"]["dfdwatch"]["reason"] == "restart", "{gap:#}");
    let open = events
        .iter()
        .find(|e| activity(e) == (4001, 1) && e["dst_endpoint"]["port"] == 8080)
        .context("the unapproved connection")?;
    ensure!(
        open["src_endpoint"]["zone"] == "internal"
            && open["src_endpoint"]["name"] == "worker"
            && open["dst_endpoint"]["name"] == "web",
        "zones and DFD nodes on the endpoints: {open:#}"
    );
    ensure!(open["actor"]["process"]["name"] == "curl" && open["severity_id"].as_u64() >= Some(2), "{open:#}");
    let flow = events.iter().find(|e| activity(e) == (4001, 6)).context("a flow")?;
    ensure!(flow["count"].as_u64() >= Some(1) && flow["start_time"].as_u64() <= flow["end_time"].as_u64(), "{flow:#}");

    let finding = alerts.iter().find(|a| a["finding_info"]["types"][0] == "wrong_port").context("the alert")?;
    let native = &finding["unmapped"]["dfdwatch"];
    ensure!(
        finding["class_uid"] == 2004
            && finding["finding_info"]["uid"] == native["flow_key"]
            && finding["is_alert"] == true,
        "{finding:#}"
    );
    ensure!(
        native["verdict"]["kind"] == "wrong_port"
            && native["verdict"]["stride"].as_array().is_some_and(|s| !s.is_empty())
            && native["verdict"]["capitals"].as_array().is_some_and(|c| !c.is_empty()),
        "the verdict with STRIDE and CAPITALS: {native:#}"
    );
    ensure!(finding["evidences"][0]["dst_endpoint"]["port"] == 8080, "{finding:#}");
    ensure!(alerts.iter().any(|a| a["finding_info"]["types"][0] == "dfd_change"), "the DFD change among the alerts");
    Ok(())
}
