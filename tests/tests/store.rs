//! The flow store under the real daemon, when things go wrong: a damaged store file is kept aside
//! for forensics and a new store started; a full disk stops the store, not the alerts, and the
//! batch kept in memory is written once there is room again; a ClickHouse that goes away gets its
//! backlog once it is back. Every failure is counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::clickhouse::ClickHouseServer;
use tests::daemon::{metric, run_to_exit};
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// The lab with nginx on 80 (approved) and 8080 (not), and a daemon storing into `store`.
fn start(
    tag: &str,
    store: impl Fn(&ClientServer) -> Result<PathBuf>,
) -> Result<(ClientServer, Daemon, PathBuf, PathBuf)> {
    start_with(tag, store, Vec::new())
}

/// As [`start`], with more daemon options.
fn start_with(
    tag: &str,
    store: impl Fn(&ClientServer) -> Result<PathBuf>,
    more: Vec<String>,
) -> Result<(ClientServer, Daemon, PathBuf, PathBuf)> {
    let s = ClientServer::with_nginx(tag, &[80, 8080])?;
    let flow = ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}");
    std::fs::write(s.dir.join("dfd.yaml"), s.worker_web_dfd(tag, &flow))?;
    let store = store(&s)?;
    let alerts = s.dir.join("alerts.jsonl");
    let arg = |p: &Path| p.display().to_string();
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            arg(&s.dir.join("dfd.yaml")),
            "--store".into(),
            arg(&store),
            "--alerts-file".into(),
            arg(&alerts),
        ]
        .into_iter()
        .chain(more)
        .collect(),
        ..Default::default()
    };
    let daemon = Daemon::start(tag, &options)?;
    Ok((s, daemon, store, alerts))
}

/// An unapproved connection (to port 8080); waits until it is recorded, and for the alert file to
/// hold an alert.
fn violate(s: &ClientServer, daemon: &Daemon, alerts: &Path) -> Result<()> {
    let to_8080 = |ev: &[Value]| ev.iter().filter(|e| e["kind"] == "connect" && e["dst"]["port"] == 8080).count();
    let before = to_8080(&daemon.events()?);
    let url = format!("http://{}:8080/", s.server.ipv4);
    s.lab.run(&s.client, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;
    let events = daemon.wait_for(Duration::from_secs(5), |ev| to_8080(ev) > before)?;
    ensure!(to_8080(&events) > before, "the unapproved connection was not recorded");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(alerts).unwrap_or_default().is_empty() {
        ensure!(std::time::Instant::now() < deadline, "no alert for the unapproved connection");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The alerting connections the store holds for the server, via `dfdwatch investigate`.
fn stored_alerts(store: &Path, server: &str) -> Result<Vec<Value>> {
    let out = run_to_exit(&[
        "investigate",
        "--store",
        &store.display().to_string(),
        "--format",
        "json",
        "timeline",
        &format!("addr:{server}"),
        "--since",
        "10m",
    ])?;
    ensure!(out.status.success(), "investigate: {out:?}");
    let t: Value = serde_json::from_slice(&out.stdout)?;
    Ok(t["entries"].as_array().context("entries")?.iter().filter(|e| e["alert"] == true).cloned().collect())
}

const WRITTEN: &str = "dfdwatch_store_records_total{result=\"written\"}";

#[test]
fn a_damaged_store_is_kept_aside_and_a_new_one_started() -> Result<()> {
    let _serial = lab::exclusive();
    const EVIDENCE: &[u8] = b"not a database: what an attacker left, or a torn disk";
    let (s, daemon, store, alerts) = start("store-damaged", |s| {
        let store = s.dir.join("state/flows.db");
        std::fs::create_dir_all(s.dir.join("state"))?;
        std::fs::write(&store, EVIDENCE)?;
        Ok(store)
    })?;
    violate(&s, &daemon, &alerts)?;
    let metrics = daemon.wait_metric(WRITTEN, |v| v >= 1.0)?;
    ensure!(metric(&metrics, "dfdwatch_store_errors_total{kind=\"corrupt\"}") == Some(1.0), "{metrics}");
    ensure!(metric(&metrics, "dfdwatch_store_up") == Some(1.0), "{metrics}");
    let done = daemon.stop()?;
    ensure!(done.log.contains("the flow store is damaged: kept aside"), "{}", done.log);
    let aside: Vec<PathBuf> = std::fs::read_dir(s.dir.join("state"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("flows.db.damaged-"))
        .collect();
    ensure!(aside.len() == 1 && std::fs::read(&aside[0])? == EVIDENCE, "kept whole: {aside:?}");
    ensure!(!stored_alerts(&store, &s.server.ipv4.to_string())?.is_empty(), "the new store holds the alert");
    Ok(())
}

#[test]
fn a_full_disk_stops_the_store_not_the_alerts_and_the_batch_is_written_later() -> Result<()> {
    let _serial = lab::exclusive();
    let full = std::cell::RefCell::new(None);
    let (s, daemon, store, alerts) = start("store-full", |s| {
        let fs = sys::FullFs::mount(&s.dir.join("full"))?;
        let store = fs.0.join("flows.db");
        *full.borrow_mut() = Some(fs);
        Ok(store)
    })?;
    let full = full.into_inner().context("the full file system")?;
    violate(&s, &daemon, &alerts)?;
    // The store cannot take it; the alert went out all the same.
    let metrics = daemon.wait_metric("dfdwatch_store_errors_total{kind=\"full\"}", |v| v >= 1.0)?;
    ensure!(metric(&metrics, "dfdwatch_store_up") == Some(0.0), "{metrics}");
    ensure!(metric(&metrics, WRITTEN) == Some(0.0), "{metrics}");
    violate(&s, &daemon, &alerts)?;
    // Room again: the batch kept in memory is written at the next try (every 5 s).
    full.free()?;
    let metrics = daemon.wait_metric(WRITTEN, |v| v >= 2.0)?;
    ensure!(metric(&metrics, "dfdwatch_store_records_total{result=\"dropped\"}") == Some(0.0), "{metrics}");
    daemon.stop()?;
    let stored = stored_alerts(&store, &s.server.ipv4.to_string())?;
    ensure!(stored.len() >= 2, "both alerting connections are in the store: {stored:#?}");
    drop(full);
    Ok(())
}

#[test]
fn a_clickhouse_that_goes_away_gets_its_backlog_when_it_is_back() -> Result<()> {
    let _serial = lab::exclusive();
    let mut clickhouse = ClickHouseServer::start("store-away")?;
    let mut init = vec!["store".to_owned(), "init".into()];
    init.extend(clickhouse.args());
    ensure!(run_to_exit(&init)?.status.success(), "store init");
    let (s, daemon, _, alerts) = start_with("store-away", |s| Ok(s.dir.join("flows.db")), clickhouse.args())?;
    violate(&s, &daemon, &alerts)?;
    daemon.wait_metric("dfdwatch_clickhouse_rows_total{result=\"sent\"}", |v| v >= 1.0)?;
    clickhouse.stop();
    // ClickHouse is away: judging and alerting go on, the failed inserts are counted, the rows wait.
    for port in [8080, 81, 82] {
        let url = format!("http://{}:{port}/", s.server.ipv4);
        s.lab.run(&s.client, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;
    }
    let metrics = daemon.wait_metric("dfdwatch_clickhouse_errors_total", |v| v >= 1.0)?;
    ensure!(metric(&metrics, "dfdwatch_clickhouse_up") == Some(0.0), "{metrics}");
    let waiting = |text: &str| metric(text, "dfdwatch_clickhouse_queued_rows").unwrap_or(0.0);
    clickhouse.resume()?;
    // Back: the backlog goes out at the next try (the wait doubles up to 30 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    let metrics = loop {
        let text = daemon.metrics()?;
        if metric(&text, "dfdwatch_clickhouse_up") == Some(1.0) && waiting(&text) == 0.0 {
            break text;
        }
        ensure!(std::time::Instant::now() < deadline, "the backlog was not sent:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(metric(&metrics, "dfdwatch_clickhouse_rows_total{result=\"dropped\"}") == Some(0.0), "{metrics}");
    daemon.stop()?;
    // The failed connects to 81 and 82, made while ClickHouse was away, are there now.
    let rows = clickhouse.query(&format!(
        "SELECT count() FROM dfdwatch.flow_records WHERE dst_addr = '{}' AND dst_port IN (81, 82) AND record = 'connection'",
        s.server.ipv4
    ))?;
    ensure!(rows.trim().parse::<u64>().unwrap_or(0) >= 2, "{rows}");
    Ok(())
}
