//! `dfdwatch investigate` on what the real daemon stored: an attack chain over three pods (the
//! edge reaches the cache it should not, then from the cache the database) among approved
//! traffic, with real nginx, redis and PostgreSQL servers and their real clients. The path from
//! the first alert is the two hops in order, with nothing approved in it; the cache's timeline
//! lists its flows both ways; the reach from the edge follows the DFD's approved flows; the
//! pictures are the DFD with the path drawn over it. The daemon also ships its records to a real
//! ClickHouse (Debian's 18.16) started on loopback: every question gets the same answer there.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::clickhouse::ClickHouseServer;
use tests::daemon::run_to_exit;
use tests::{Daemon, DaemonOptions, Lab, lab, servers, sys};

const SUBNET: u8 = 97;

/// The shop: edge (T1) may reach the api (T2), which may reach the cache (T2) and the database
/// (T3). The edge may not reach the cache, nor the cache the database.
const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: investigate-test
spec:
  tiers:
    - {id: T1, name: Public, level: 1}
    - {id: T2, name: Application, level: 2}
    - {id: T3, name: Restricted, level: 3}
  dataClasses:
    - {id: public, level: 0}
  checkpoints:
    - {id: api-authn, kind: authn, enforcedBy: api, mechanism: oidc-jwt}
    - {id: db-authn, kind: authn, enforcedBy: db, mechanism: scram-sha-256}
  zones:
    - {id: edge, name: Edge, tier: T1, match: {cidrs: ["10.213.97.2/32"]}}
    - {id: app, name: Application, tier: T2, match: {cidrs: ["10.213.97.3/32", "10.213.97.4/32"]}}
    - {id: data, name: Data, tier: T3, match: {cidrs: ["10.213.97.5/32"]}}
  nodes:
    - {id: edge, name: Edge proxy, kind: process, zone: edge, match: {cidrs: ["10.213.97.2/32"]}}
    - {id: api, name: API, kind: process, zone: app, match: {cidrs: ["10.213.97.3/32"]}}
    - {id: cache, name: Cache, kind: datastore, zone: app, match: {cidrs: ["10.213.97.4/32"]}}
    - {id: db, name: Database, kind: datastore, zone: data, match: {cidrs: ["10.213.97.5/32"]}}
  flows:
    - {id: edge-to-api, from: edge, to: api, ports: [{port: 8080}], appProtocol: http, encryption: {required: tls}, data: [public], checkpoints: [api-authn]}
    - {id: api-to-cache, from: api, to: cache, ports: [{port: 6379}], appProtocol: redis, encryption: {required: none}, data: [public]}
    - {id: api-to-db, from: api, to: db, ports: [{port: 5432}], appProtocol: postgres, encryption: {required: tls}, data: [public], checkpoints: [db-authn]}
"#;

fn investigate(store: &Path, dfd: &Path, args: &[&str]) -> Result<std::process::Output> {
    let mut all = vec!["investigate".to_owned(), "--store".into(), store.display().to_string()];
    all.extend(["--dfd".into(), dfd.display().to_string()]);
    all.extend(args.iter().map(|s| (*s).to_owned()));
    run_to_exit(&all)
}

fn json(out: &std::process::Output) -> Result<Value> {
    ensure!(out.status.success(), "investigate failed: {out:?}");
    serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_path_from_the_first_alert_is_the_attack_and_nothing_approved() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::with_subnet("investigate", SUBNET)?;
    let edge = lab.add_pod("edge")?;
    let api = lab.add_pod("api")?;
    let cache = lab.add_pod("cache")?;
    let db = lab.add_pod("db")?;
    let dir = sys::scratch_dir("investigate")?;
    lab.start_nginx(&api, &dir.join("nginx"), &[8080])?;
    lab.spawn(&cache, "redis-server", &servers::redis_args(&dir, &cache.ipv4.to_string(), 6379))?;
    let pg = std::env::temp_dir().join(format!("dfdwatch-investigate-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pg);
    let pg_args = servers::postgres_command(&pg, &db.ipv4.to_string())?;
    lab.spawn(&db, "setpriv", &pg_args)?;
    lab.wait_listening(&cache, 6379)?;
    lab.wait_listening(&db, 5432)?;

    let clickhouse = ClickHouseServer::start("investigate")?;
    let mut init = vec!["store".to_owned(), "init".into()];
    init.extend(clickhouse.args());
    let out = run_to_exit(&init)?;
    ensure!(out.status.success(), "store init: {out:?}");
    let dfd = dir.join("dfd.yaml");
    std::fs::write(&dfd, DFD)?;
    let store = dir.join("flows.db");
    let alerts = dir.join("alerts.jsonl");
    let arg = |p: &Path| p.display().to_string();
    let mut extra_args =
        vec!["--dfd".into(), arg(&dfd), "--store".into(), arg(&store), "--alerts-file".into(), arg(&alerts)];
    extra_args.extend(clickhouse.args());
    let options = DaemonOptions { extra_args, ..Default::default() };
    let daemon = Daemon::start("investigate", &options)?;
    let (api_url, cache_ip, db_ip) =
        (format!("http://{}:8080/", api.ipv4), cache.ipv4.to_string(), db.ipv4.to_string());
    let approved = |lab: &Lab| -> Result<()> {
        lab.run(&edge, "curl", &["-s", "-m", "3", "-o", "/dev/null", &api_url])?;
        lab.run(&api, "redis-cli", &["-h", &cache_ip, "ping"])?;
        lab.run(&api, "psql", &["-h", &db_ip, "-U", "postgres", "-c", "select 1"])?;
        Ok(())
    };
    approved(&lab)?;
    approved(&lab)?;
    // The attack: the edge reaches the cache, then from the cache the database.
    let (_, out) = lab.run(&edge, "redis-cli", &["-h", &cache_ip, "ping"])?;
    ensure!(out.status.success(), "edge -> cache: {out:?}");
    std::thread::sleep(Duration::from_millis(300));
    let (_, out) = lab.run(&cache, "psql", &["-h", &db_ip, "-U", "postgres", "-c", "select 1"])?;
    ensure!(out.status.success(), "cache -> db: {out:?}");
    approved(&lab)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let first_alert = loop {
        let text = std::fs::read_to_string(&alerts).unwrap_or_default();
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            break lines.into_iter().next().context("no alert")?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Flow records of the approved traffic reach the store once an interval.
    daemon.wait_for_flows(Duration::from_secs(5), |f| {
        f.iter().filter(|r| r["verdict"]["kind"] == "approved").count() >= 3
    })?;
    daemon.stop()?;
    let key = first_alert["flow_key"].as_str().context("flow_key")?;
    ensure!(first_alert["event"]["src"]["dfd"]["node"] == "edge", "the first alert is the edge's: {first_alert}");

    let path = json(&investigate(&store, &dfd, &["--format", "json", "path", key, "--since", "10m"])?)?;
    let hops = path["hops"].as_array().context("hops")?;
    let pairs: Vec<(&str, &str, &str)> = hops
        .iter()
        .map(|h| {
            (
                h["src"]["node"].as_str().unwrap_or("?"),
                h["dst"]["node"].as_str().unwrap_or("?"),
                h["part"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    ensure!(pairs == [("edge", "cache", "start"), ("cache", "db", "after")], "the two hops in order: {path:#}");
    ensure!(hops[0]["n"] == 1 && hops[1]["n"] == 2 && hops[0]["time"].as_str() < hops[1]["time"].as_str(), "{path:#}");
    ensure!(hops.iter().all(|h| h["verdict"] != "approved" && h["alert"] == true), "nothing approved: {path:#}");
    ensure!(
        hops[0]["crossed_boundary"] == true && hops[1]["tier_direction"] == "up" && hops[1]["dst"]["zone"] == "data",
        "zones and tier direction: {path:#}"
    );
    // The table says the same.
    let out = investigate(&store, &dfd, &["path", key, "--since", "10m"])?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success() && table.contains("START") && table.lines().count() == 5, "{table}");

    // The cache's timeline: the api's approved connections in, the edge's alert in, its own out.
    let timeline = json(&investigate(&store, &dfd, &["--format", "json", "timeline", "cache", "--since", "10m"])?)?;
    let entries = timeline["entries"].as_array().context("entries")?;
    let has = |dir: &str, peer: &str, alert: bool| {
        entries.iter().any(|e| {
            let other = if dir == "out" { &e["dst"] } else { &e["src"] };
            e["direction"] == dir && other["node"] == peer && e["alert"] == alert
        })
    };
    ensure!(has("in", "api", false) && has("in", "edge", true) && has("out", "db", true), "{timeline:#}");
    ensure!(entries.windows(2).all(|w| w[0]["time"].as_str() <= w[1]["time"].as_str()), "in time order: {timeline:#}");

    // The reach from the edge through approved flows: the database (restricted) in two hops.
    let reach = json(&investigate(&store, &dfd, &["--format", "json", "reach", "edge", "--since", "10m"])?)?;
    let reached: Vec<(&str, u64)> = reach["reached"]
        .as_array()
        .context("reached")?
        .iter()
        .map(|r| (r["node"].as_str().unwrap_or("?"), r["hops"].as_u64().unwrap_or(0)))
        .collect();
    ensure!(reached == [("api", 1), ("cache", 2), ("db", 2)], "{reach:#}");
    ensure!(reach["restricted_zones"] == serde_json::json!(["data"]), "{reach:#}");
    ensure!(
        reach["tree"].as_array().is_some_and(|t| t.iter().all(|h| h["seen"].is_string())),
        "every approved hop was used: {reach:#}"
    );

    // The pictures: the DFD with the two hops over it in red, numbered.
    let dot = investigate(&store, &dfd, &["--format", "dot", "path", key, "--since", "10m"])?;
    let dot = String::from_utf8_lossy(&dot.stdout);
    ensure!(
        dot.contains("\"edge\" -> \"cache\" [label=\"1: ")
            && dot.contains("\"cache\" -> \"db\" [label=\"2: ")
            && dot.contains("cluster_data"),
        "{dot}"
    );
    let svg = investigate(&store, &dfd, &["--format", "svg", "path", key, "--since", "10m"])?;
    ensure!(svg.status.success() && String::from_utf8_lossy(&svg.stdout).contains("<svg"), "{svg:?}");
    let mermaid = investigate(&store, &dfd, &["--format", "mermaid", "path", key, "--since", "10m"])?;
    let mermaid = String::from_utf8_lossy(&mermaid.stdout);
    ensure!(
        mermaid.starts_with("flowchart LR")
            && mermaid.contains("n_edge == \"1: ")
            && mermaid.contains("linkStyle 3,4 stroke:#ff0000"),
        "{mermaid}"
    );

    // The cluster store gives the same answers to the same questions.
    for question in [
        vec!["path", key, "--since", "10m"],
        vec!["timeline", "cache", "--since", "10m"],
        vec!["timeline", "addr:10.213.97.5", "--since", "10m"],
        vec!["reach", "edge", "--since", "10m"],
    ] {
        let mut args = vec!["--format", "json"];
        args.extend(&question);
        let local = investigate(&store, &dfd, &args)?;
        let mut remote = vec!["investigate".to_owned(), "--dfd".into(), arg(&dfd)];
        remote.extend(clickhouse.args());
        remote.extend(args.iter().map(|s| (*s).to_owned()));
        let remote = run_to_exit(&remote)?;
        ensure!(remote.status.success(), "investigate on ClickHouse: {remote:?}");
        // Both ask for "until now": the time range in the answer differs, nothing else.
        let strip = |out: &std::process::Output| -> Result<Value> {
            let mut v: Value = serde_json::from_slice(&out.stdout)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("from");
                o.remove("to");
            }
            Ok(v)
        };
        ensure!(
            strip(&local)? == strip(&remote)?,
            "{question:?}: local {:#} but ClickHouse {:#}",
            strip(&local)?,
            strip(&remote)?
        );
    }

    // Questions it cannot answer say why.
    let out = investigate(&store, &dfd, &["path", "0123456789abcdef", "--since", "10m"])?;
    ensure!(out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("no alert found"), "{out:?}");
    let out = run_to_exit(&[
        "investigate".into(),
        "--store".into(),
        arg(&dir.join("missing.db")),
        "timeline".into(),
        "cache".into(),
    ])?;
    ensure!(out.status.code() == Some(66), "{out:?}");
    let out = investigate(&store, &dfd, &["timeline", "pod:a/b/c"])?;
    ensure!(out.status.code() == Some(64), "{out:?}");
    drop(lab);
    let _ = std::fs::remove_dir_all(&pg);
    Ok(())
}
