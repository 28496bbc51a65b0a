//! Alert events from real connections: an unapproved flow repeated inside the window gives one
//! alert and, when the window closes, one summary with the count; approved flows give none.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab};

#[test]
fn repeated_unapproved_flow_gives_one_alert_then_one_count() -> Result<()> {
    let _serial = lab::exclusive();
    let s = ClientServer::with_nginx("alerts", &[80])?;
    let (lab, client, server, dir) = (&s.lab, &s.client, &s.server, &s.dir);
    let flow = ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}");
    std::fs::write(dir.join("dfd.yaml"), s.worker_web_dfd("alerts-test", &flow))?;
    let alerts = dir.join("alerts.jsonl");
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            dir.join("dfd.yaml").display().to_string(),
            "--alerts-file".into(),
            alerts.display().to_string(),
            "--alert-window-secs".into(),
            "2".into(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("alerts", &options)?;

    let ok = format!("http://{}/", server.ipv4);
    let (_, out) = lab.run(client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &ok])?;
    ensure!(out.status.success(), "approved request: {out:?}");
    let scan = format!("http://{}:8080/", server.ipv4);
    for _ in 0..5 {
        lab.run(client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &scan])?;
    }
    // The first alert comes at once; the summary when the 2 s window closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tests::daemon::json_lines(&alerts)?.len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = daemon.stop()?;
    let lines = tests::daemon::json_lines(&alerts)?;
    ensure!(lines.len() == 2, "want first + repeats, got {lines:#?}\nlog:\n{}", done.log);
    let (first, repeats) = (&lines[0], &lines[1]);
    ensure!(first["schema"] == "dfdwatch.alert.v1" && first["occurrence"] == "first" && first["count"] == 1, "{first}");
    ensure!(first["verdict"]["kind"] == "wrong_port" && first["verdict"]["attempt"] == true, "{first}");
    ensure!(first["event"]["dst"]["port"] == 8080 && first["event"]["src"]["dfd"]["node"] == "worker", "{first}");
    ensure!(
        first["dfd"]["name"] == "alerts-test" && first["dfd"]["sha256"].as_str().is_some_and(|h| h.len() == 64),
        "{first}"
    );
    ensure!(
        repeats["occurrence"] == "repeats" && repeats["count"] == 4 && repeats["flow_key"] == first["flow_key"],
        "{repeats}"
    );
    // The approved request raised nothing.
    ensure!(lines.iter().all(|l| l["verdict"]["kind"] != "approved"), "{lines:#?}");
    Ok(())
}

/// A scan of 11 closed ports of one peer: one alert at once, then one scan summary naming the 11
/// ports, not 11 alerts.
#[test]
fn a_port_scan_gives_one_alert_and_one_summary_naming_the_ports() -> Result<()> {
    const PORTS: [u16; 11] = [21, 22, 23, 25, 110, 143, 3306, 5432, 6379, 8081, 9200];
    let _serial = lab::exclusive();
    let s = ClientServer::with_nginx("alerts-scan", &[80])?;
    let flow = ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}");
    std::fs::write(s.dir.join("dfd.yaml"), s.worker_web_dfd("scan-test", &flow))?;
    let alerts = s.dir.join("alerts.jsonl");
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            s.dir.join("dfd.yaml").display().to_string(),
            "--alerts-file".into(),
            alerts.display().to_string(),
            "--alert-window-secs".into(),
            "2".into(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("alerts-scan", &options)?;
    for port in PORTS {
        let url = format!("http://{}:{port}/", s.server.ipv4);
        let (_, out) = s.lab.run(&s.client, "curl", &["-s", "-m", "2", "-o", "/dev/null", &url])?;
        ensure!(out.status.code() == Some(7), "port {port} refuses: {out:?}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tests::daemon::json_lines(&alerts)?.len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = daemon.stop()?;
    let lines = tests::daemon::json_lines(&alerts)?;
    ensure!(lines.len() == 2, "want one first alert and one scan summary, got {lines:#?}\nlog:\n{}", done.log);
    ensure!(lines[0]["occurrence"] == "first", "{}", lines[0]);
    let scan = &lines[1];
    ensure!(scan["occurrence"] == "scan" && scan["count"] == 10, "{scan}");
    let ports: Vec<u64> =
        scan["scan"]["ports"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    ensure!(ports == PORTS.map(u64::from), "the summary names the 11 ports: {scan}");
    ensure!(scan["scan"]["peers"] == serde_json::json!(["node=web"]), "{scan}");
    Ok(())
}
