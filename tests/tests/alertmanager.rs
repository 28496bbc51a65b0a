//! End to end with the real Prometheus and Alertmanager from Debian, all on 127.0.0.1: a real
//! unauthorized connection between namespaced workloads (the demo's front straight to its
//! database, a tier-skipping crossing) reaches an Alertmanager webhook receiver twice over: as the
//! daemon's own alert (POST /api/v2/alerts) and as the alerting rule in deploy/prometheus that
//! Prometheus evaluates on the scraped dfdwatch_violations_total.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tests::{Daemon, DaemonOptions, Lab, lab, sys};

/// A webhook receiver: records every JSON body POSTed to it.
struct Webhook {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Ok(body) = read_post(conn) {
                            b.lock().unwrap_or_else(|e| e.into_inner()).push(body);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { port, bodies, stop, thread: Some(thread) })
    }

    /// Every alert received so far (Alertmanager's webhook bodies carry `alerts`).
    fn alerts(&self) -> Vec<Value> {
        let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.iter().flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default()).collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 POST (Content-Length body), answers 200, returns the body as JSON.
fn read_post(conn: std::net::TcpStream) -> Result<Value> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let mut conn = conn;
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
    Ok(serde_json::from_slice(&body)?)
}

/// A server process of this test, ended by pid when dropped.
struct Server(Child, &'static str);

impl Server {
    fn start(name: &'static str, program: &str, args: &[String], log: &Path) -> Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {program} (Debian package)"))?;
        Ok(Self(child, name))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        sys::signal(self.0.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_http_ok(url: &str, what: &str, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("curl").args(["-sf", "-o", "/dev/null", url]).status().is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} not ready at {url} after 30 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn unauthorized_connection_reaches_the_alertmanager_webhook() -> Result<()> {
    let _serial = lab::exclusive();
    let dir = sys::scratch_dir("alertmanager")?;
    let hook = Webhook::start()?;

    let am_port = sys::free_port()?;
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, flow_key, src_zone, dst_zone]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{}/hook\n        send_resolved: false\n",
            hook.port
        ),
    )?;
    let am_log = dir.join("alertmanager.log");
    let _alertmanager = Server::start(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &am_log,
    )?;
    wait_http_ok(&format!("http://127.0.0.1:{am_port}/-/ready"), "alertmanager", &am_log)?;

    let mut lab = Lab::with_subnet("alertmanager", 99)?;
    // Pods take the demo DFD's addresses in this order.
    let front = lab.add_pod("front")?;
    let _api = lab.add_pod("api")?;
    let postgres = lab.add_pod("postgres")?;
    lab.start_nginx(&postgres, &dir.join("nginx"), &[5432])?;
    let daemon = Daemon::start(
        "alertmanager",
        &DaemonOptions {
            extra_args: vec![
                "--dfd".into(),
                sys::workspace_root().join("approved-dfd/demo").display().to_string(),
                "--alerts-file".into(),
                dir.join("alerts.jsonl").display().to_string(),
                "--alertmanager-url".into(),
                format!("http://127.0.0.1:{am_port}"),
            ],
            ..Default::default()
        },
    )?;
    let metrics = daemon.metrics_base()?;
    let metrics_target = metrics.trim_start_matches("http://");

    let prom_port = sys::free_port()?;
    let rules = sys::workspace_root().join("deploy/prometheus/dfdwatch-rules.yaml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\nalerting:\n  alertmanagers:\n    - static_configs: [{{targets: [\"127.0.0.1:{am_port}\"]}}]\nscrape_configs:\n  - job_name: dfdwatch\n    static_configs: [{{targets: [\"{metrics_target}\"]}}]\n",
            rules.canonicalize()?.display()
        ),
    )?;
    let prom_log = dir.join("prometheus.log");
    let _prometheus = Server::start(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &prom_log,
    )?;
    wait_http_ok(&format!("http://127.0.0.1:{prom_port}/-/ready"), "prometheus", &prom_log)?;

    // The attack: the public front straight to the restricted database.
    let (_, out) =
        lab.run(&front, "curl", &["-s", "-m", "5", "-o", "/dev/null", &format!("http://{}:5432/", postgres.ipv4)])?;
    ensure!(out.status.success(), "front -> postgres: {out:?}");

    // Prometheus scrapes every second and evaluates every second; its first scrape and the
    // Alertmanager group wait add a few seconds. Allow a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (direct, rule) = loop {
        let alerts = hook.alerts();
        // The test's own loopback traffic (scrapes, webhook calls) is unmodelled and alerts too;
        // look for the attack.
        let named = |name: &str| {
            alerts.iter().find(|a| a["labels"]["alertname"] == name && a["labels"]["dst_zone"] == "data").cloned()
        };
        if let (Some(d), Some(r)) = (named("DfdwatchUnauthorizedFlow"), named("DfdwatchCriticalBoundaryViolation")) {
            break (d, r);
        }
        if Instant::now() > deadline {
            bail!(
                "webhook got {alerts:#?}\nprometheus log:\n{}\nalertmanager log:\n{}\ndaemon log:\n{}",
                std::fs::read_to_string(&prom_log).unwrap_or_default(),
                std::fs::read_to_string(&am_log).unwrap_or_default(),
                std::fs::read_to_string(daemon.log_path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let labels = &direct["labels"];
    ensure!(
        labels["verdict"] == "unapproved_crossing"
            && labels["severity"] == "critical"
            && labels["src_node"] == "front"
            && labels["dst_node"] == "postgres"
            && labels["dst_port"] == "5432",
        "the daemon's alert names the flow: {direct:#}"
    );
    let event: Value = serde_json::from_str(direct["annotations"]["event"].as_str().unwrap_or("{}"))?;
    ensure!(event["dst"]["addr"] == postgres.ipv4.to_string(), "the event rides along: {event:#}");
    ensure!(
        rule["labels"]["dst_zone"] == labels["dst_zone"] && rule["labels"]["src_zone"] == labels["src_zone"],
        "{rule:#}"
    );
    let done = daemon.stop()?;
    let sent = done.counters["pipeline"]["alertmanager_sent"].as_u64().unwrap_or(0);
    ensure!(sent >= 1 && done.counters["pipeline"]["alertmanager_dropped"] == 0, "{}", done.counters);
    Ok(())
}
