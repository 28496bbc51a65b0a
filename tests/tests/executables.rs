//! DFD nodes bound to their programs (`executables`) on the real kernel: the program that made a
//! connection is the one judged. A client bound by its address and its program is approved from
//! the server's side too, where only its address is known (what a node that sees only the accept
//! decides); a shell that connects and then execs the approved program is judged as the shell,
//! with an alert naming both; an approved program whose process then execs another one is judged
//! anew at its next connection, not counted under the approval.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// `worker` (the client pod, running `WORKER_EXE`) may reach `web` (nginx in the server pod).
const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: executables-test
spec:
  tiers:
    - {id: T2, name: Internal, level: 2}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: internal, name: Internal, tier: T2, match: {cidrs: ["CLIENT/32", "SERVER/32"]}}
  nodes:
    - {id: worker, name: Worker, kind: process, zone: internal, match: {cidrs: ["CLIENT/32"], executables: ["WORKER_EXE"]}}
    - {id: web, name: Web, kind: process, zone: internal, match: {cidrs: ["SERVER/32"], executables: ["WEB_EXE"]}}
  flows:
    - id: worker-to-web
      from: worker
      to: web
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
"#;

fn exe(path: &str) -> Result<String> {
    Ok(std::fs::canonicalize(path).with_context(|| format!("{path} is not installed"))?.display().to_string())
}

/// The lab, and a daemon judging against [`DFD`] with `client_exe` as the worker's program.
fn start(tag: &str, client_exe: &str) -> Result<(ClientServer, Daemon, std::path::PathBuf)> {
    let s = ClientServer::with_nginx(tag, &[80])?;
    let dfd = s.fill(DFD).replace("WORKER_EXE", &exe(client_exe)?).replace("WEB_EXE", &exe("/usr/sbin/nginx")?);
    std::fs::write(s.dir.join("dfd.yaml"), dfd)?;
    let alerts = s.dir.join("alerts.jsonl");
    let arg = |p: &Path| p.display().to_string();
    let options = DaemonOptions {
        extra_args: vec![
            "--dfd".into(),
            arg(&s.dir.join("dfd.yaml")),
            "--alerts-file".into(),
            arg(&alerts),
            "--alert-window-secs".into(),
            "1".into(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start(tag, &options)?;
    Ok((s, daemon, alerts))
}

fn connect_of(events: &[Value], pid: u32) -> Option<&Value> {
    events.iter().find(|e| e["kind"] == "connect" && e["local"]["tgid"].as_u64() == Some(u64::from(pid)))
}

#[test]
fn the_approved_program_is_approved_from_both_sides_and_a_borrowed_one_is_not() -> Result<()> {
    let _serial = lab::exclusive();
    let (mut s, daemon, alerts) = start("exe-borrow", "/usr/bin/curl")?;
    let url = format!("http://{}/", s.server.ipv4);
    let (curl, out) = s.lab.run(&s.client, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    let events = daemon.wait_for(Duration::from_secs(5), |ev| connect_of(ev, curl).is_some())?;
    let c = connect_of(&events, curl).context("curl's connect")?;
    let port = c["src"]["port"].clone();
    let events = daemon
        .wait_for(Duration::from_secs(5), |ev| ev.iter().any(|e| e["kind"] == "accept" && e["src"]["port"] == port))?;
    let c = connect_of(&events, curl).context("curl's connect")?;
    ensure!(c["verdict"]["kind"] == "approved" && c["src"]["dfd"]["node"] == "worker", "curl is the worker: {c}");
    // The accept is judged on its own, as on a node that sees only it: the client is known by its
    // address there, and the worker's `executables` are skipped for it.
    let a = events.iter().find(|e| e["kind"] == "accept" && e["src"]["port"] == port).context("the accept")?;
    ensure!(
        a["verdict"]["kind"] == "approved" && a["src"]["dfd"]["node"] == "worker" && a["dst"]["dfd"]["node"] == "web",
        "approved from the server's side: {a}"
    );

    // A shell connects, then execs the approved program, which inherits the socket. The identity
    // stage is held meanwhile, so it looks only once the process runs curl.
    let identity = sys::thread_named(daemon.pid().context("daemon pid")?, "identity")?;
    let frozen = sys::FrozenThread::freeze(identity)?;
    let script = format!("exec 3<>/dev/tcp/{}/80; exec curl -s -m 3 -o /dev/null {url}", s.server.ipv4);
    let client = s.client.clone();
    let bash = s.lab.spawn(&client, "bash", &["-c", &script])?;
    sys::wait_until_exe(bash, "curl")?;
    drop(frozen);
    let alerted = |lines: &[Value]| lines.iter().any(|l| l["event"]["local"]["tgid"].as_u64() == Some(u64::from(bash)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !alerted(&tests::daemon::json_lines(&alerts)?) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = daemon.stop()?;
    let lines = tests::daemon::json_lines(&alerts)?;
    let alert = lines
        .iter()
        .find(|l| l["event"]["local"]["tgid"].as_u64() == Some(u64::from(bash)))
        .with_context(|| format!("the borrowed connect raised no alert: {lines:#?}\n{:#?}", done.events))?;
    let local = &alert["event"]["local"];
    ensure!(
        local["exe"].as_str().is_some_and(|e| e.ends_with("/bash"))
            && local["exec_since"] == true
            && local["exe_now"].as_str().is_some_and(|e| e.ends_with("/curl")),
        "the alert names the program that connected and the one it became: {alert}"
    );
    ensure!(alert["event"]["src"]["dfd"]["node"].is_null(), "bash is not the worker: {alert}");
    ensure!(
        !lines.iter().any(|l| l["event"]["local"]["tgid"].as_u64() == Some(u64::from(curl))),
        "the approved curl raised nothing: {lines:#?}"
    );
    Ok(())
}

#[test]
fn a_process_that_execs_another_program_is_judged_anew() -> Result<()> {
    let _serial = lab::exclusive();
    // Here bash is the worker's program: its connection is approved, and counted in the kernel.
    let (mut s, daemon, alerts) = start("exe-anew", "/usr/bin/bash")?;
    let url = format!("http://{}/", s.server.ipv4);
    let script =
        format!("exec 3<>/dev/tcp/{}/80; exec 3>&-; sleep 1; exec curl -s -m 3 -o /dev/null {url}", s.server.ipv4);
    let client = s.client.clone();
    let pid = s.lab.spawn(&client, "bash", &["-c", &script])?;
    let ours = |e: &Value| e["kind"] == "connect" && e["local"]["tgid"].as_u64() == Some(u64::from(pid));
    let events = daemon.wait_for(Duration::from_secs(8), |ev| ev.iter().filter(|e| ours(e)).count() >= 2)?;
    let done = daemon.stop()?;
    let connects: Vec<&Value> = events.iter().filter(|e| ours(e)).collect();
    ensure!(connects.len() == 2, "bash's connect and then curl's, both judged: {:#?}", done.events);
    let (first, second) = (connects[0], connects[1]);
    ensure!(
        first["local"]["exe"].as_str().is_some_and(|e| e.ends_with("/bash")) && first["verdict"]["kind"] == "approved",
        "bash is the worker: {first}"
    );
    ensure!(
        second["local"]["exe"].as_str().is_some_and(|e| e.ends_with("/curl"))
            && second["verdict"]["alert"] == true
            && second["recorded"] == "first",
        "curl in the same process is a new flow, judged as curl: {second}"
    );
    let lines = tests::daemon::json_lines(&alerts)?;
    ensure!(
        lines.iter().any(|l| l["event"]["local"]["exe"].as_str().is_some_and(|e| e.ends_with("/curl"))),
        "and alerts: {lines:#?}"
    );
    Ok(())
}
