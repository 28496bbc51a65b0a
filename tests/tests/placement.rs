//! Placing both ends of real connections on the approved DFD: the local end by its cgroup path,
//! remote ends by address (an external zone by CIDR); and a DFD with errors is refused.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tests::{Daemon, DaemonOptions, Lab, lab, sys};

const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: placement-test
spec:
  tiers:
    - {id: T1, name: Public, level: 1}
    - {id: T2, name: Internal, level: 2}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: internal, name: Internal, tier: T2}
    - id: partner
      name: Partner
      tier: T1
      external: true
      match: {cidrs: ["SERVER/32"]}
  nodes:
    - id: worker
      name: Batch worker
      kind: process
      zone: internal
      match: {cgroupPaths: ["/dfdwatch-placement-*/client"]}
    - id: partner-api
      name: Partner API
      kind: external
      zone: partner
      match: {cidrs: ["SERVER/32"]}
  flows:
    - id: worker-to-partner
      from: worker
      to: partner-api
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
"#;

#[test]
fn both_ends_are_placed_on_nodes_zones_and_tiers() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::new("placement")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let dir = sys::scratch_dir("placement")?;
    std::fs::write(dir.join("dfd.yaml"), DFD.replace("SERVER", &server.ipv4.to_string()))?;
    let options = DaemonOptions { extra_args: vec!["--dfd".into(), dir.display().to_string()], ..Default::default() };
    let daemon = Daemon::start("placement", &options)?;
    lab.start_nginx(&server, &dir, &[80])?;
    let url = format!("http://{}/", server.ipv4);
    let (_, out) = lab.run(&client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    // The approved pair on a port the DFD does not approve, refused: a wrong_port attempt.
    let closed = format!("http://{}:81/", server.ipv4);
    let (_, out) = lab.run(&client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &closed])?;
    ensure!(out.status.code() == Some(7), "curl to a closed port: {out:?}");
    let s = server.clone();
    let c = client.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| {
        ev.iter().any(|e| e["kind"] == "accept" && e["local"]["netns"].as_u64() == Some(s.netns_inode))
            && ev.iter().any(|e| e["kind"] == "connect_failed" && e["local"]["netns"].as_u64() == Some(c.netns_inode))
    })?;
    // Metrics count connections from the flow records, written once an interval.
    daemon.wait_for_flows(Duration::from_secs(5), |flows| {
        ["approved", "wrong_port"].iter().all(|k| flows.iter().any(|f| f["verdict"]["kind"] == *k))
    })?;
    let metrics = scrape(&daemon)?;
    let done = daemon.stop()?;
    ensure!(done.log.contains("approved DFD loaded"), "{}", done.log);
    // The metrics saw the same verdicts, with zone labels from the DFD.
    ensure!(metric(&metrics, "dfdwatch_flows_total{verdict=\"approved\"}") >= 1.0, "{metrics}");
    ensure!(metric(&metrics, "dfdwatch_flows_total{verdict=\"wrong_port\"}") >= 1.0, "{metrics}");
    ensure!(
        metric(&metrics, "dfdwatch_violations_total{dst_zone=\"partner\",severity=\"medium\",src_zone=\"internal\"}")
            >= 1.0,
        "{metrics}"
    );
    ensure!(metrics.contains("dfdwatch_dfd_info{name=\"placement-test\",sha256=\""), "{metrics}");
    ensure!(metrics.contains("dfdwatch_processing_latency_seconds_count"), "{metrics}");
    let find = |kind: &str, netns: u64| -> Result<&Value> {
        done.events
            .iter()
            .find(|e| e["kind"] == kind && e["local"]["netns"].as_u64() == Some(netns))
            .with_context(|| format!("no {kind}: {:#?}", done.events))
    };
    let c = find("connect", client.netns_inode)?;
    ensure!(c["src"]["dfd"] == json!({"node": "worker", "zone": "internal", "tier": "T2"}), "client placement: {c}");
    ensure!(c["dst"]["dfd"] == json!({"node": "partner-api", "zone": "partner", "tier": "T1"}), "server by CIDR: {c}");
    let a = find("accept", server.netns_inode)?;
    ensure!(
        a["dst"]["dfd"] == json!({"node": "partner-api", "zone": "partner", "tier": "T1"}),
        "server placement: {a}"
    );
    // Seen from the server, the client is a remote address that no CIDR covers: unmodelled.
    ensure!(a["src"]["dfd"] == json!({}), "remote client is unplaced: {a}");
    // Verdicts.
    ensure!(
        c["verdict"]["kind"] == "approved"
            && c["verdict"]["flow"] == "worker-to-partner"
            && c["verdict"]["alert"] == false,
        "approved: {c}"
    );
    ensure!(a["verdict"]["kind"] == "unmodelled_endpoint" && a["verdict"]["alert"] == true, "unmodelled: {a}");
    let f = find("connect_failed", client.netns_inode)?;
    let v = &f["verdict"];
    ensure!(v["kind"] == "wrong_port" && v["attempt"] == true && v["alert"] == true, "wrong port attempt: {f}");
    ensure!(v["nearest_flows"] == json!(["worker-to-partner"]) && v["capitals"] == json!(["A"]), "context: {f}");
    Ok(())
}

/// Fetches /metrics (and checks /healthz and /readyz) with curl on loopback, and has promtool
/// check the exposition format.
fn scrape(daemon: &Daemon) -> Result<String> {
    let base = daemon.metrics_base()?;
    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let out = std::process::Command::new("curl").args(["-sf", &format!("{base}{path}")]).output()?;
        ensure!(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == want, "{path}: {out:?}");
    }
    let text = daemon.metrics()?;
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = check.stdin.take() {
        std::io::Write::write_all(&mut stdin, text.as_bytes())?;
    }
    let checked = check.wait_with_output()?;
    ensure!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    Ok(text)
}

/// The value of one sample line, or 0.
fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[test]
fn dfd_with_errors_is_refused_at_start() -> Result<()> {
    let dir = sys::scratch_dir("placement-bad")?;
    std::fs::write(
        dir.join("dfd.yaml"),
        DFD.replace("zone: partner\n", "zone: nowhere\n").replace("SERVER", "192.0.2.1"),
    )?;
    let out = tests::daemon::run_to_exit(&["run".as_ref(), "--dfd".as_ref(), dir.as_os_str()])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(78), "exit {:?}: {stderr}", out.status.code());
    ensure!(stderr.contains("dfd.yaml:") && stderr.contains("nowhere"), "message: {stderr}");
    Ok(())
}

/// Nodes bound by `hosts`: the server by the name the identity file gives its address, the
/// client (a host process of this node) by the node's own host name.
const HOSTS_DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: hosts-test
spec:
  tiers:
    - {id: T2, name: Internal, level: 2}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: internal, name: Internal, tier: T2}
  nodes:
    - {id: batch, name: Batch host, kind: process, zone: internal, match: {hosts: ["test-node"]}}
    - {id: billing-db, name: Billing DB, kind: datastore, zone: internal, match: {hosts: ["billing-*"]}}
  flows:
    - id: batch-to-billing
      from: batch
      to: billing-db
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
"#;

#[test]
fn hosts_selectors_match_the_identity_file_names_and_this_hosts_name() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::new("hosts")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let dir = sys::scratch_dir("hosts")?;
    std::fs::write(dir.join("dfd.yaml"), HOSTS_DFD)?;
    let names = format!("[[host]]\nname = \"billing-primary\"\ncidrs = [\"{}/32\"]\n", server.ipv4);
    std::fs::write(dir.join("identities.toml"), names)?;
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            dir.join("dfd.yaml").display().to_string(),
            "--identity-file".into(),
            dir.join("identities.toml").display().to_string(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("hosts", &options)?;
    lab.start_nginx(&server, &dir, &[80])?;
    let url = format!("http://{}/", server.ipv4);
    let (pid, out) = lab.run(&client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    let events = daemon.wait_for(Duration::from_secs(5), |ev| {
        ev.iter().any(|e| e["kind"] == "connect" && e["local"]["tgid"] == pid)
    })?;
    daemon.stop()?;
    let c = events.iter().find(|e| e["kind"] == "connect" && e["local"]["tgid"] == pid).context("no connect")?;
    ensure!(c["src"]["dfd"]["node"] == "batch", "the client by this node's host name: {c}");
    ensure!(c["dst"]["dfd"]["node"] == "billing-db", "the server by its identity-file name: {c}");
    ensure!(c["verdict"]["kind"] == "approved" && c["verdict"]["flow"] == "batch-to-billing", "{c}");
    Ok(())
}
