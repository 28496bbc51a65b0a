//! The flow store: how fast SQLite takes the store writer's rows on one core (batches of 2,000 in
//! one transaction, as the writer writes them), what a row costs on disk, how long `dfdwatch
//! investigate path` takes over a store of 1,000,000 flow records (the real CLI, timed end to end),
//! and how fast one daemon's shipper (the same code: sequential JSONEachRow inserts of 10,000
//! rows) gets rows into a real ClickHouse on loopback. The daemon's own CPU with the store on is
//! in the `cost` benchmark (`this` against `this-no-store`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use monitor_user::store::clickhouse::{ClickHouse, ClickHouseArgs};
use monitor_user::store::row::Row;
use monitor_user::store::sqlite::SqliteStore;
use serde_json::{Value, json};

/// Rows per transaction, as the store writer batches them.
const BATCH: usize = 2_000;
/// Rows per ClickHouse insert, as the shipper batches them.
const SHIP_BATCH: usize = 10_000;
/// The alert key the path starts from.
const KEY: &str = "0a1b2c3d4e5f6789";

/// Thread CPU time, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Row `i` of `n`, spread over the 24 hours before `end_ns`: flows between 2,000 clients and 200
/// servers in 20 zones, 1% alerting; with an attack chain (edge -> cache -> db) at the middle.
fn row(i: u64, n: u64, end_ns: i64) -> Row {
    let day = 86_400_000_000_000i64;
    let time_ns = end_ns - day + (i as i64) * (day / n as i64);
    let (c, s) = (i % 2_000, (i * 7) % 200);
    let alert = i.is_multiple_of(100);
    let mut r = Row {
        time_ns,
        last_ns: time_ns + 900_000_000,
        reporter: format!("node-{}", i % 16),
        record: "flow".into(),
        kind: "connect".into(),
        connections: 1 + (i % 50) as i64,
        src_addr: format!("10.1.{}.{}", c / 250, c % 250),
        src_node: format!("client-{}", c % 100),
        src_zone: format!("zone-{}", c % 20),
        src_tier: "T2".into(),
        src_pod: format!("shop/client-{c}"),
        src_cgroup: format!("/kubepods/pod-client-{c}"),
        src_exe: "/usr/bin/app".into(),
        dst_addr: format!("10.2.0.{s}"),
        dst_port: 8080,
        dst_node: format!("server-{}", s % 50),
        dst_zone: format!("zone-{}", s % 20),
        dst_tier: "T2".into(),
        dst_pod: format!("shop/server-{s}"),
        verdict: if alert { "lateral_movement" } else { "approved" }.into(),
        severity: if alert { "high" } else { "info" }.into(),
        alert: i64::from(alert),
        raises_alert: i64::from(alert),
        dfd_sha256: "5f".repeat(32),
        ..Row::default()
    };
    // A flow record's JSON is about 900 bytes; this stands in for it.
    r.json = serde_json::to_string(&json!({
        "schema": "dfdwatch.flow.v1", "node": r.reporter, "flow_id": i % 65_536, "kind": "connect", "ip_version": 4,
        "src": {"addr": r.src_addr, "dfd": {"node": r.src_node, "zone": r.src_zone, "tier": "T2"}, "k8s": {"namespace": "shop", "pod": r.src_pod}},
        "dst": {"addr": r.dst_addr, "port": 8080, "dfd": {"node": r.dst_node, "zone": r.dst_zone, "tier": "T2"}},
        "local_side": "src", "local": {"tgid": 4242, "pid": 4242, "comm": "app", "uid": 1000, "cgroup_id": 8812, "netns": 4_026_532_178u32,
            "attribution": "task", "exe": "/usr/bin/app", "exe_source": "proc", "cgroup_path": r.src_cgroup},
        "verdict": {"kind": r.verdict, "alert": alert, "attempt": false, "severity": r.severity, "stride": [], "capitals": []},
        "dfd": {"name": "shop", "sha256": r.dfd_sha256}, "connections": r.connections, "failed": 0, "recorded": 1, "unreported": 0,
        "first_seen": "2026-12-01T00:00:00.000000000Z", "last_seen": "2026-12-01T00:00:00.900000000Z"
    }))
    .unwrap_or_default();
    r
}

/// The attack chain, at the middle of the day: the edge reaches the cache, a minute later the
/// cache reaches the database.
fn chain(end_ns: i64) -> Vec<Row> {
    let t0 = end_ns - 43_200_000_000_000;
    let hop = |t: i64, src: &str, dst: &str, key: &str| Row {
        time_ns: t,
        last_ns: t,
        reporter: "node-0".into(),
        record: "connection".into(),
        kind: "connect".into(),
        connections: 1,
        src_addr: src.into(),
        dst_addr: dst.into(),
        dst_port: 6379,
        verdict: "lateral_movement".into(),
        severity: "high".into(),
        alert: 1,
        raises_alert: 1,
        flow_key: key.into(),
        json: "{}".into(),
        ..Row::default()
    };
    vec![hop(t0, "10.9.0.1", "10.9.0.2", KEY), hop(t0 + 60_000_000_000, "10.9.0.2", "10.9.0.3", "")]
}

/// Median wall seconds of five runs of `dfdwatch investigate` with `args`.
fn timed(bin: &Path, store: &Path, args: &[&str]) -> Result<(f64, Value)> {
    let mut times = Vec::new();
    let mut answer = Value::Null;
    for _ in 0..5 {
        let start = Instant::now();
        let out = Command::new(bin)
            .args(["investigate", "--store", &store.display().to_string(), "--format", "json"])
            .args(args)
            .output()?;
        times.push(start.elapsed().as_secs_f64());
        ensure!(out.status.success(), "investigate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        answer = serde_json::from_slice(&out.stdout)?;
    }
    Ok((crate::stats::median(&times), answer))
}

pub fn run(dir: &Path, rows: u64, clickhouse_rows: u64) -> Result<Value> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let end_ns = monitor_user::store::writer::unix_ns();
    let path = dir.join("flows.db");
    let mut store = SqliteStore::open(&path)?;

    // Write throughput: rows built outside the clock, inserted as the writer does.
    let (mut wall, mut cpu) = (0.0, 0.0);
    let mut i = 0;
    while i < rows {
        let batch: Vec<Row> = (i..(i + BATCH as u64).min(rows)).map(|j| row(j, rows, end_ns)).collect();
        let (w0, c0) = (Instant::now(), thread_cpu());
        store.insert(&batch)?;
        wall += w0.elapsed().as_secs_f64();
        cpu += thread_cpu() - c0;
        i += batch.len() as u64;
    }
    store.insert(&chain(end_ns))?;
    let bytes = store.bytes()?;
    let file = std::fs::metadata(&path)?.len();
    let write = json!({
        "rows": rows,
        "batch": BATCH,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "rows_per_second": rows as f64 / wall,
        "rows_per_cpu_second": rows as f64 / cpu,
        "store_bytes": bytes,
        "file_bytes": file,
        "bytes_per_row": bytes as f64 / rows as f64,
    });
    eprintln!("bench store write: {write}");
    drop(store);

    // investigate over the whole store, as an analyst runs it.
    let bin = crate::monitor::dfdwatch_bin()?;
    let (path_s, answer) = timed(&bin, &path, &["path", KEY, "--since", "48h"])?;
    ensure!(answer["hops"].as_array().map(Vec::len) == Some(2), "the chain is found: {answer}");
    let (approved_s, answer_all) = timed(&bin, &path, &["path", KEY, "--since", "48h", "--include-approved"])?;
    let (timeline_s, timeline) = timed(&bin, &path, &["timeline", "client-7", "--since", "48h", "--limit", "1000"])?;
    let investigate = json!({
        "store_rows": rows + 2,
        "path_seconds": path_s,
        "path_include_approved_seconds": approved_s,
        "path_include_approved_hops": answer_all["hops"].as_array().map_or(0, Vec::len),
        "timeline_1000_seconds": timeline_s,
        "timeline_entries": timeline["entries"].as_array().map_or(0, Vec::len),
    });
    eprintln!("bench store investigate: {investigate}");

    // ClickHouse ingest from one shipper.
    let server = tests::clickhouse::ClickHouseServer::start("bench")?;
    let args = ClickHouseArgs {
        clickhouse_url: Some(server.url()),
        clickhouse_database: "dfdwatch".into(),
        clickhouse_user: Some("dfdwatch".into()),
        clickhouse_password_file: Some(server.password_file()),
    };
    let client = ClickHouse::from_args(&args)?.context("ClickHouse")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(client.init(7))?;
    let batches: Vec<Vec<Row>> = (0..clickhouse_rows)
        .collect::<Vec<_>>()
        .chunks(SHIP_BATCH)
        .map(|c| c.iter().map(|&j| row(j, clickhouse_rows, end_ns)).collect())
        .collect();
    let start = Instant::now();
    for batch in &batches {
        runtime.block_on(client.insert(batch))?;
    }
    let ship = start.elapsed().as_secs_f64();
    let counted = server.query("SELECT count() FROM dfdwatch.flow_records")?;
    ensure!(counted.trim() == clickhouse_rows.to_string(), "ClickHouse holds {counted} rows");
    let version = server.query("SELECT version()")?;
    let clickhouse = json!({
        "version": version.trim(),
        "rows": clickhouse_rows,
        "batch": SHIP_BATCH,
        "seconds": ship,
        "rows_per_second": clickhouse_rows as f64 / ship,
    });
    eprintln!("bench store clickhouse: {clickhouse}");
    Ok(json!({"write": write, "investigate": investigate, "clickhouse": clickhouse}))
}
