//! What happens while the daemon is down, with the real daemon and real connections: after a
//! restart, a gap record says from when to when nothing was watched, and a connection opened
//! meanwhile and still open is found at start-up and judged like a new one; when each approved
//! flow was last seen survives the restart.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab};

#[test]
fn after_a_restart_a_gap_record_marks_the_gap_and_open_connections_are_judged() -> Result<()> {
    let _serial = lab::exclusive();
    let mut s = ClientServer::with_nginx("restart-open", &[80])?;
    // Only port 443 is approved: the open connection to port 80 is a violation.
    let flows = ClientServer::flow("worker-to-web", "worker", "web", "{port: 443, protocol: TCP}");
    std::fs::write(s.dir.join("dfd.yaml"), s.worker_web_dfd("restart-test", &flows))?;
    let options = DaemonOptions {
        extra_args: vec!["--dfd".into(), s.dir.join("dfd.yaml").display().to_string()],
        state_dir: Some(s.dir.join("state")),
        ..Default::default()
    };
    let first = Daemon::start("restart-first", &options)?.stop()?;
    ensure!(first.gaps.is_empty(), "a first start has no gap: {:?}", first.gaps);
    let stopped = std::time::SystemTime::now();
    // While the daemon is down, a client connects and keeps the connection open.
    let script = format!("exec 3<>/dev/tcp/{}/80; sleep 60", s.server.ipv4);
    let client = s.lab.spawn(&s.client.clone(), "bash", &["-c", &script])?;
    let server = s.server.ipv4.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{client}/net/tcp"))?.contains(" 01 ") {
        ensure!(std::time::Instant::now() < deadline, "the client's connection is not established");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let daemon = Daemon::start("restart-second", &options)?;
    let found = |e: &serde_json::Value| e["recorded"] == "found_at_start" && e["dst"]["addr"] == server.as_str();
    daemon.wait_for(Duration::from_secs(10), |events| events.iter().filter(|e| found(e)).count() >= 2)?;
    let done = daemon.stop()?;
    let connect = done
        .events
        .iter()
        .find(|e| found(e) && e["kind"] == "connect")
        .context("the open connection's connect side was not found at start")?;
    ensure!(connect["dst"]["port"] == 80, "{connect}");
    ensure!(connect["local"]["tgid"].as_u64() == Some(u64::from(client)), "held by the client: {connect}");
    ensure!(connect["verdict"]["alert"] == true, "judged like a new one: {connect}");
    let accept = done.events.iter().find(|e| found(e) && e["kind"] == "accept").context("no accept side")?;
    ensure!(accept["local"]["comm"] == "nginx", "the server's side is nginx's: {accept}");
    // One gap record: from the first daemon's stop to the second one's start.
    ensure!(done.gaps.len() == 1, "one gap record: {:?}", done.gaps);
    let gap = &done.gaps[0];
    let at = |field: &str| -> Result<std::time::SystemTime> {
        Ok(humantime::parse_rfc3339(gap[field].as_str().context("time field")?)?)
    };
    let (from, to) = (at("from")?, at("to")?);
    ensure!(gap["reason"] == "restart", "{gap}");
    ensure!(from <= stopped && stopped.duration_since(from)? < Duration::from_secs(2), "from: the stop: {gap}");
    ensure!(to.duration_since(stopped)? >= Duration::from_secs(1), "to: the restart, after the 1 s down: {gap}");
    ensure!(gap["found_at_start"].as_u64() >= Some(2), "the open connection's two ends: {gap}");
    Ok(())
}

fn gauge(text: &str, flow: &str) -> Option<i64> {
    let series = format!("dfdwatch_dfd_flow_last_seen_timestamp_seconds{{flow=\"{flow}\"}}");
    text.lines().find_map(|l| l.strip_prefix(series.as_str()).and_then(|v| v.trim().parse().ok()))
}

/// When each approved flow was last seen is kept across restarts, so an approval nothing uses
/// does not look fresh after an upgrade (the rule DfdwatchApprovalUnused reads it).
#[test]
fn the_flows_last_seen_times_survive_a_restart() -> Result<()> {
    let _serial = lab::exclusive();
    let s = ClientServer::with_nginx("restart-seen", &[80])?;
    let flows = ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}")
        + &ClientServer::flow("web-to-worker", "web", "worker", "{port: 80, protocol: TCP}");
    std::fs::write(s.dir.join("dfd.yaml"), s.worker_web_dfd("seen-test", &flows))?;
    let options = DaemonOptions {
        extra_args: vec!["--dfd".into(), s.dir.join("dfd.yaml").display().to_string()],
        state_dir: Some(s.dir.join("state")),
        ..Default::default()
    };
    let daemon = Daemon::start("restart-seen-1", &options)?;
    let first_watched =
        gauge(&daemon.metrics()?, "web-to-worker").context("an unused flow has its first-watched time")?;
    // Later than the first-watched time, so that the two can be told apart.
    std::thread::sleep(Duration::from_millis(1100));
    let url = format!("http://{}:80/", s.server.ipv4);
    let (_, out) = s.lab.run(&s.client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let used = loop {
        let text = daemon.metrics()?;
        if let Some(t) = gauge(&text, "worker-to-web").filter(|t| *t > first_watched) {
            break t;
        }
        ensure!(std::time::Instant::now() < deadline, "the used flow is not marked seen:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    daemon.stop()?;
    std::thread::sleep(Duration::from_millis(1100));
    let daemon = Daemon::start("restart-seen-2", &options)?;
    let text = daemon.metrics()?;
    ensure!(gauge(&text, "worker-to-web") == Some(used), "the used flow keeps its time:\n{text}");
    ensure!(gauge(&text, "web-to-worker") == Some(first_watched), "the unused one too:\n{text}");
    daemon.stop()?;
    Ok(())
}
