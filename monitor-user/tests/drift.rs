//! `dfdwatch drift` end to end on a store of known contents: the real binary reads a SQLite flow
//! store written with the daemon's own writer code and reports exactly the stale approvals, the
//! unapproved flows, the unmodelled workloads and the nodes that matched nothing.

use std::process::Command;

use monitor_user::store::row::Row;
use monitor_user::store::sqlite::SqliteStore;
use monitor_user::store::writer::unix_ns;
use serde_json::Value;

const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata: {name: drift-store}
spec:
  tiers: [{id: T2, name: App, level: 2}]
  dataClasses: [{id: public, level: 0}]
  zones: [{id: app, name: App, tier: T2, match: {cidrs: ["10.0.0.0/24"]}}]
  nodes:
    - {id: web, name: Web, kind: process, zone: app, match: {cidrs: ["10.0.0.1/32"]}}
    - {id: api, name: API, kind: process, zone: app, match: {cidrs: ["10.0.0.2/32"]}}
    - {id: db, name: DB, kind: datastore, zone: app, match: {cidrs: ["10.0.0.3/32"]}}
  flows:
    - {id: web-api, from: web, to: api, ports: [{port: 80}], encryption: {required: none}, data: [public]}
    - {id: api-db, from: api, to: db, ports: [{port: 5432}], encryption: {required: none}, data: [public]}
"#;

fn row(t: i64, src: (&str, &str), dst: (&str, &str), port: i64, verdict: &str) -> Row {
    Row {
        time_ns: t,
        last_ns: t,
        reporter: "n1".into(),
        record: "flow".into(),
        kind: "connect".into(),
        connections: 3,
        src_addr: src.0.into(),
        src_node: src.1.into(),
        dst_addr: dst.0.into(),
        dst_node: dst.1.into(),
        dst_port: port,
        verdict: verdict.into(),
        severity: if verdict == "approved" { "info" } else { "high" }.into(),
        alert: i64::from(verdict != "approved"),
        json: "{}".into(),
        ..Row::default()
    }
}

#[test]
fn drift_reads_a_store_and_reports_exactly_what_disagrees() {
    let dir = std::env::temp_dir().join(format!("dfdwatch-drift-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dfd.yaml"), DFD).unwrap();
    let store = dir.join("flows.db");
    let now = unix_ns();
    let hour = 3_600_000_000_000i64;
    let (web, api, db) = (("10.0.0.1", "web"), ("10.0.0.2", "api"), ("10.0.0.3", "db"));
    let mut s = SqliteStore::open(&store).unwrap();
    s.insert(&[
        // In the last hour: web -> api approved; web -> db not; an unknown host probes the API.
        row(now - hour / 2, web, api, 80, "approved"),
        row(now - hour / 3, web, db, 5432, "lateral_movement"),
        row(now - hour / 4, ("10.0.9.9", ""), api, 22, "unmodelled_endpoint"),
        // api -> db was last used two days ago: before the period.
        row(now - 48 * hour, api, db, 5432, "approved"),
    ])
    .unwrap();
    drop(s);
    let out = Command::new(env!("CARGO_BIN_EXE_dfdwatch"))
        .args(["drift", "--dfd"])
        .arg(dir.join("dfd.yaml"))
        .arg("--store")
        .arg(&store)
        .args(["--since", "1h", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(&str, &str)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("unapproved_flow", "10.0.9.9 -> api:22"),
            ("unapproved_flow", "web -> db:5432"),
            ("unmodelled_workload", "10.0.9.9"),
            ("stale_approval", "api-db"),
        ],
        "{report:#}"
    );
    let stale = &report["findings"][3];
    assert!(stale["last_seen"].is_string(), "the stale approval's last sighting, from before the period: {stale}");
    let _ = std::fs::remove_dir_all(&dir);
}
