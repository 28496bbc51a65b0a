//! Alert events from real connections: an unapproved flow repeated inside the window gives one
//! alert and, when the window closes, one summary with the count; approved flows give none.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use tests::{Daemon, DaemonOptions, Lab, lab, sys};

const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: alerts-test
spec:
  tiers:
    - {id: T1, name: Public, level: 1}
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
      to: web
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
"#;

fn read_lines(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

#[test]
fn repeated_unapproved_flow_gives_one_alert_then_one_count() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::new("alerts")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let dir = sys::scratch_dir("alerts")?;
    let dfd = DFD.replace("CLIENT", &client.ipv4.to_string()).replace("SERVER", &server.ipv4.to_string());
    std::fs::write(dir.join("dfd.yaml"), dfd)?;
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
    lab.start_nginx(&server, &dir, &[80])?;

    let ok = format!("http://{}/", server.ipv4);
    let (_, out) = lab.run(&client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &ok])?;
    ensure!(out.status.success(), "approved request: {out:?}");
    let scan = format!("http://{}:8080/", server.ipv4);
    for _ in 0..5 {
        lab.run(&client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &scan])?;
    }
    // The first alert comes at once; the summary when the 2 s window closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read_lines(&alerts)?.len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = daemon.stop()?;
    let lines = read_lines(&alerts)?;
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
