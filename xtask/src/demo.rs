//! `cargo xtask demo`: a small shop on this host, in network namespaces and cgroups (an nginx
//! front, an api, PostgreSQL, Redis, and a simulated payment provider on a documentation-range
//! address), watched by the real daemon with the approved DFD in `approved-dfd/demo/`. It drives
//! the approved traffic, then an attacker's moves, prints the alerts and the metrics that changed,
//! then investigates the attack as a SOC analyst would (`dfdwatch investigate path` from the first
//! alert, drawn over the DFD in target/demo/investigate-path.svg), shows where the DFD and what was
//! seen disagree (`dfdwatch drift`), and removes everything else it created.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tests::{Daemon, DaemonOptions, Lab, Pod, servers, sys};

use crate::{cmd, setup};

/// The demo's subnet: 10.213.99.0/24, as in approved-dfd/demo/shop-demo.yaml.
const SUBNET: u8 = 99;
/// Connections of the busy approved flow.
const BUSY: usize = 500;
/// The simulated payment provider (documentation range), as in the DFD.
const PAYMENTS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub fn run() -> Result<()> {
    if !cmd::is_root() {
        bail!("cargo xtask demo needs root: it loads eBPF programs and creates network namespaces");
    }
    setup::run()?;
    cmd::build_daemon()?;
    // SAFETY: setting an environment variable before any thread starts.
    unsafe { std::env::set_var("DFDWATCH_BIN", cmd::daemon_binary()) };
    let dfd_dir = cmd::root().join("approved-dfd/demo");

    println!("\n== dfdwatch demo: a three-tier shop in namespaces, watched against approved-dfd/demo/ ==\n");
    let mut lab = Lab::with_subnet("demo", SUBNET)?;
    let front = lab.add_pod("front")?;
    let api = lab.add_pod("api")?;
    let postgres = lab.add_pod("postgres")?;
    let redis = lab.add_pod("redis")?;
    let payments = lab.add_external_pod("payments", PAYMENTS)?;
    for (pod, role) in [
        (&front, "nginx front (edge, T1)"),
        (&api, "api (app, T2)"),
        (&postgres, "PostgreSQL (data, T3)"),
        (&redis, "Redis (data, T3)"),
        (&payments, "payment provider (external)"),
    ] {
        println!("  {:<9} {:<15} {role}", pod.name, pod.ipv4);
    }

    let scratch = sys::scratch_dir("demo")?;
    let alerts_path = scratch.join("alerts.jsonl");
    let store = scratch.join("flows.db");
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            dfd_dir.display().to_string(),
            "--alerts-file".into(),
            alerts_path.display().to_string(),
            "--alert-window-secs".into(),
            "2".into(),
            "--store".into(),
            store.display().to_string(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("demo", &options)?;
    println!(
        "\ndfdwatch is running (pid {}), metrics at {}/metrics",
        daemon.pid().unwrap_or(0),
        daemon.metrics_base()?
    );

    start_servers(&mut lab, &scratch, &api, &postgres, &redis, &payments)?;
    let before = scrape(&daemon)?;

    println!("\n-- approved traffic --");
    step(
        &lab,
        &front,
        "front -> api:8080 (front-to-api)",
        "curl",
        &["-s", "-m", "3", "-o", "/dev/null", &format!("http://{}:8080/", api.ipv4)],
    )?;
    step(
        &lab,
        &api,
        "api -> postgres:5432 (api-to-postgres)",
        "psql",
        &["-h", &postgres.ipv4.to_string(), "-U", "postgres", "-c", "select 1", "-qtA"],
    )?;
    step(&lab, &api, "api -> redis:6379 (api-to-redis)", "redis-cli", &["-h", &redis.ipv4.to_string(), "PING"])?;
    step(
        &lab,
        &api,
        "api -> payments:443 (api-to-payments)",
        "curl",
        &["-s", "-m", "3", "-o", "/dev/null", &format!("http://{PAYMENTS}:443/")],
    )?;

    // A busy approved flow: the kernel counts its repeats, the daemon judges it once.
    let urls = scratch.join("busy-urls.txt");
    let url = format!("url = \"http://{}:8080/\"\noutput = \"/dev/null\"\n", api.ipv4);
    std::fs::write(&urls, url.repeat(BUSY))?;
    step(
        &lab,
        &front,
        &format!("front -> api:8080, {BUSY} more times (a busy flow)"),
        "curl",
        &["-s", "--no-keepalive", "-H", "Connection: close", "-K", &urls.display().to_string()],
    )?;

    println!("\n-- the attacker's moves --");
    step(
        &lab,
        &front,
        "front -> postgres:5432, skipping the api tier",
        "psql",
        &["-h", &postgres.ipv4.to_string(), "-U", "postgres", "-c", "select 1", "-qtA"],
    )?;
    for port in [22, 3306, 5432, 6379, 8080] {
        step(
            &lab,
            &redis,
            &format!("port scan from redis -> postgres:{port}"),
            "curl",
            &["-s", "-m", "1", "-o", "/dev/null", &format!("http://{}:{port}/", postgres.ipv4)],
        )?;
    }
    step(
        &lab,
        &postgres,
        "exfiltration: postgres -> payments host:443",
        "curl",
        &["-s", "-m", "3", "-o", "/dev/null", &format!("http://{PAYMENTS}:443/")],
    )?;

    // Let the alert windows close so repeat summaries are written too.
    std::thread::sleep(Duration::from_millis(2500));
    let after = scrape(&daemon)?;
    let done = daemon.stop()?;

    println!("\n== alerts ({}) ==", alerts_path.display());
    let alerts = std::fs::read_to_string(&alerts_path).unwrap_or_default();
    let mut others = 0;
    let mut first_key = None;
    for line in alerts.lines() {
        let a: Value = serde_json::from_str(line).context("alert line")?;
        let v = &a["verdict"];
        let e = &a["event"];
        if !in_lab(&e["src"]) || !in_lab(&e["dst"]) {
            others += 1;
            continue;
        }
        if first_key.is_none() {
            first_key = a["flow_key"].as_str().map(str::to_owned);
        }
        let occurrence = match a["occurrence"].as_str() {
            Some("repeats") => format!("+{} repeat(s)", a["count"]),
            Some("scan") => format!("scan of ports {}", join(&a["scan"]["ports"])),
            _ => "first".to_owned(),
        };
        println!(
            "{:<8} {:<20} {:<8} {:>16} -> {:<17} {:<13} {} STRIDE {} CAPITALS {}",
            v["severity"].as_str().unwrap_or("?"),
            v["kind"].as_str().unwrap_or("?"),
            if v["attempt"] == true { "attempt" } else { "" },
            endpoint(&e["src"]),
            endpoint(&e["dst"]),
            occurrence,
            v["tier_direction"].as_str().map(|d| format!("tier {d}")).unwrap_or_default(),
            join(&v["stride"]),
            join(&v["capitals"]),
        );
    }
    if others > 0 {
        println!(
            "({others} more from outside the shop: the demo's own scrapes of /metrics on 127.0.0.1, which this DFD does not model)"
        );
    }
    println!("\n(full alert JSON: {})", alerts_path.display());

    print_flows(&done.flows, &done.events);

    println!("\n== metrics that changed ==");
    for (series, value) in &after {
        let old = before.get(series).copied().unwrap_or(0.0);
        if (value - old).abs() > f64::EPSILON
            && (series.starts_with("dfdwatch_flows_total")
                || series.starts_with("dfdwatch_violations_total")
                || series.starts_with("dfdwatch_alerts"))
        {
            println!("  {series} {old} -> {value}");
        }
    }
    println!("\nfinal counters: {}", done.counters);
    if let Some(key) = first_key {
        investigate(&store, &dfd_dir, &key)?;
    }
    println!("(pods, bridge and cgroups are removed now)");
    drop(lab);
    let _ = std::fs::remove_dir_all(pg_dir());
    Ok(())
}

/// What a SOC analyst does next: the path from the first alert, and the picture of it.
fn investigate(store: &std::path::Path, dfd: &std::path::Path, key: &str) -> Result<()> {
    let bin = cmd::daemon_binary();
    let run = |args: &[&str]| -> Result<std::process::Output> {
        let mut all = vec![
            "investigate",
            "--store",
            store.to_str().unwrap_or_default(),
            "--dfd",
            dfd.to_str().unwrap_or_default(),
        ];
        all.extend(args);
        std::process::Command::new(&bin).args(&all).output().context("run dfdwatch investigate")
    };
    println!("\n== investigate: dfdwatch investigate path {key} (the first alert) ==\n");
    let table = run(&["path", key, "--since", "1h"])?;
    print!("{}{}", String::from_utf8_lossy(&table.stdout), String::from_utf8_lossy(&table.stderr));
    for (title, args) in [
        (
            "what else did the database do? dfdwatch investigate timeline postgres",
            ["timeline", "postgres", "--since", "1h"],
        ),
        (
            "how far could the front get without an alert? dfdwatch investigate reach front",
            ["reach", "front", "--since", "1h"],
        ),
    ] {
        println!("\n== {title} ==\n");
        let out = run(&args)?;
        print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    println!("\n== and the DFD against what was seen: dfdwatch drift ==\n");
    let drift = std::process::Command::new(&bin)
        .args([
            "drift",
            "--store",
            store.to_str().unwrap_or_default(),
            "--dfd",
            dfd.to_str().unwrap_or_default(),
            "--since",
            "1h",
        ])
        .output()
        .context("run dfdwatch drift")?;
    print!("{}{}", String::from_utf8_lossy(&drift.stdout), String::from_utf8_lossy(&drift.stderr));
    let picture = cmd::root().join("target/demo/investigate-path.svg");
    std::fs::create_dir_all(picture.parent().context("target/demo")?)?;
    let svg = run(&["--format", "svg", "path", key, "--since", "1h"])?;
    if svg.status.success() {
        std::fs::write(&picture, &svg.stdout)?;
        std::fs::write(picture.with_extension("dot"), run(&["--format", "dot", "path", key, "--since", "1h"])?.stdout)?;
        println!("\nthe path drawn over the DFD: {} (and .dot)", picture.display());
    } else {
        println!("\n(no picture: {})", String::from_utf8_lossy(&svg.stderr).trim());
    }
    Ok(())
}

fn start_servers(
    lab: &mut Lab,
    scratch: &std::path::Path,
    api: &Pod,
    postgres: &Pod,
    redis: &Pod,
    payments: &Pod,
) -> Result<()> {
    lab.start_nginx(api, &scratch.join("api"), &[8080])?;
    lab.start_nginx(payments, &scratch.join("payments"), &[443])?;
    lab.spawn(redis, "redis-server", &servers::redis_args(scratch, &redis.ipv4.to_string(), 6379))?;
    let pg_dir = pg_dir();
    let _ = std::fs::remove_dir_all(&pg_dir);
    let args = servers::postgres_command(&pg_dir, &postgres.ipv4.to_string())?;
    lab.spawn(postgres, "setpriv", &args)?;
    lab.wait_listening(redis, 6379)?;
    lab.wait_listening(postgres, 5432)?;
    println!("servers up: nginx as api on :8080, nginx as the payment provider on :443, redis :6379, postgres :5432");
    Ok(())
}

/// PostgreSQL's data directory: outside the checkout, whose parents the `postgres` user may not
/// be allowed to enter. Removed at the end.
fn pg_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dfdwatch-demo-pg-{}", std::process::id()))
}

/// Sums the shop's flow records per flow (connects only: an accept of a local client is the same
/// connection) and prints them with their verdicts, beside how many connections were recorded one
/// by one.
fn print_flows(flows: &[Value], connections: &[Value]) {
    let ours = |r: &Value| in_lab(&r["src"]) && in_lab(&r["dst"]);
    let flows: Vec<&Value> = flows.iter().filter(|f| ours(f)).collect();
    let connection_records = connections.iter().filter(|c| ours(c)).count();
    let mut per_flow: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for f in flows.iter().filter(|f| f["kind"] == "connect") {
        let key = (endpoint(&f["src"]), endpoint(&f["dst"]), f["verdict"]["kind"].as_str().unwrap_or("-").to_owned());
        let entry = per_flow.entry(key).or_default();
        entry.0 += f["connections"].as_u64().unwrap_or(0);
        entry.1 += 1;
    }
    println!("\n== flows: {} flow records, {connection_records} connection records ==", flows.len());
    for ((src, dst, verdict), (connections, records)) in &per_flow {
        println!("  {src:>16} -> {dst:<17} {verdict:<20} {connections:>5} connection(s) in {records} flow record(s)");
    }
}

fn step(lab: &Lab, pod: &Pod, what: &str, program: &str, args: &[&str]) -> Result<()> {
    let (_, out) = lab.run(pod, program, args)?;
    let status = if out.status.success() {
        "ok".to_owned()
    } else {
        format!("failed (exit {})", out.status.code().unwrap_or(-1))
    };
    println!("  {what:<48} {status}");
    Ok(())
}

fn scrape(daemon: &Daemon) -> Result<BTreeMap<String, f64>> {
    let out =
        std::process::Command::new("curl").args(["-sf", &format!("{}/metrics", daemon.metrics_base()?)]).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v))))
        .collect())
}

fn endpoint(v: &Value) -> String {
    let who =
        v["dfd"]["node"].as_str().map(str::to_owned).unwrap_or_else(|| v["addr"].as_str().unwrap_or("?").to_owned());
    match v["port"].as_u64() {
        Some(port) => format!("{who}:{port}"),
        None => who,
    }
}

/// Whether an end is one of the shop's (not the demo's own scrapes of /metrics).
fn in_lab(end: &Value) -> bool {
    end["addr"].as_str().is_some_and(|ip| ip.starts_with("10.213.99.") || ip.starts_with("203.0.113."))
}

fn join(v: &Value) -> String {
    let item = |v: &Value| v.as_str().map(str::to_owned).or_else(|| v.as_u64().map(|n| n.to_string()));
    v.as_array().map(|a| a.iter().filter_map(item).collect::<Vec<_>>().join(",")).unwrap_or_default()
}
