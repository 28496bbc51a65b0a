//! The monitor under attack, with the real daemon: the probe's link closed from outside (with
//! gdb, as an attacker with ptrace would) is found, counted as tampering and attached again; a
//! daemon whose ring reader is frozen (ptrace) sees nothing, fails /readyz and says it is blind; the probes' stats map zeroed with
//! bpftool is reported and its counts kept; a flood of idle connections to the metrics endpoint
//! cannot use up its file descriptors.

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tests::daemon::metric;
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// The daemon's fds whose link target contains `kind` (e.g. `bpf_link`).
fn fds_of_kind(pid: u32, kind: &str) -> Result<Vec<u32>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().contains(kind) {
            fds.push(entry.file_name().to_string_lossy().parse()?);
        }
    }
    Ok(fds)
}

/// Closes `fds` inside process `pid` with gdb, as an attacker holding ptrace would.
fn close_in(pid: u32, fds: &[u32]) -> Result<()> {
    let mut cmd = Command::new("gdb");
    cmd.args(["-p", &pid.to_string(), "-batch", "-nx"]);
    for fd in fds {
        cmd.args(["-ex", &format!("call (int)close({fd})")]);
    }
    // gdb may exit 1 on this kernel after the call ("Couldn't write extended state status"),
    // with the call done; the daemon may have attached again under the same fd number since.
    // What the test asserts is the daemon's reaction.
    cmd.output().context("run gdb")?;
    Ok(())
}

/// Waits until /readyz answers `code` (10 s at most).
fn wait_for_readyz(daemon: &Daemon, code: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = readyz(daemon)?;
        if got == code {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("/readyz answers {got} {body}, not {code}, after 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPUs a per-CPU map has a slot for (`/sys/devices/system/cpu/possible`, e.g. `0-1`).
fn possible_cpus() -> Result<u64> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for range in text.trim().split(',') {
        n += match range.split_once('-') {
            Some((a, b)) => b.parse::<u64>()? - a.parse::<u64>()? + 1,
            None => 1,
        };
    }
    Ok(n)
}

fn readyz(daemon: &Daemon) -> Result<(String, String)> {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", &format!("{}/readyz", daemon.metrics_base()?)])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').context("curl output")?;
    Ok((code.to_owned(), body.to_owned()))
}

#[test]
fn a_probe_link_closed_from_outside_is_found_counted_and_attached_again() -> Result<()> {
    let _serial = lab::exclusive();
    let s = ClientServer::with_nginx("tamper-link", &[80])?;
    for attach in ["raw-tracepoint", "tracepoint"] {
        link_closed_from_outside(&s, attach).with_context(|| format!("attached at {attach}"))?;
    }
    Ok(())
}

fn link_closed_from_outside(s: &ClientServer, attach: &str) -> Result<()> {
    let options = DaemonOptions {
        attach: Some(attach.into()),
        extra_args: vec!["--heartbeat-interval-ms".into(), "300".into()],
        ..Default::default()
    };
    let daemon = Daemon::start("tamper-link", &options)?;
    let pid = daemon.pid().context("daemon pid")?;
    // The state probe's link (the exec tracking has links of its own): its fdinfo names the
    // tracepoint.
    let links: Vec<u32> = fds_of_kind(pid, "bpf_link")?
        .into_iter()
        .filter(|fd| {
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .is_ok_and(|info| info.contains("tp_name:\tinet_sock_set_state"))
        })
        .collect();
    ensure!(links.len() == 1, "one link of the state probe expected: {links:?}");
    close_in(pid, &links)?;
    let text = daemon.wait_metric("dfdwatch_tampering_detected_total{what=\"probe_detached\"}", |v| v == 1.0)?;
    ensure!(metric(&text, "dfdwatch_probe_reattached_total") == Some(1.0), "attached again:\n{text}");
    let log = daemon.wait_log("the probe's link was closed from outside the daemon", 1)?;
    ensure!(log.contains("probe attached again"), "{log}");
    // Connections made now are seen again.
    let url = format!("http://{}:80/", s.server.ipv4);
    let (_, out) = s.lab.run(&s.client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    let server = s.server.ipv4.to_string();
    daemon.wait_for(Duration::from_secs(10), |events| {
        events.iter().any(|e| e["kind"] == "connect" && e["dst"]["addr"] == server.as_str())
    })?;
    // gdb stopped the whole daemon for a moment, so it may have called itself blind meanwhile;
    // once the heartbeat comes through again it is ready.
    wait_for_readyz(&daemon, "200")?;
    let done = daemon.stop()?;
    ensure!(done.clean_exit, "the daemon exits cleanly, never closing the fd number it lost:\n{}", done.log);
    ensure!(
        done.gaps.iter().any(|g| g["reason"] == "blind" && g["seconds"].as_f64() > Some(0.0)),
        "the time the probe was detached is marked by a gap record: {:?}",
        done.gaps
    );
    Ok(())
}

#[test]
fn a_daemon_whose_ring_is_not_read_says_it_is_blind() -> Result<()> {
    let _serial = lab::exclusive();
    let options =
        DaemonOptions { extra_args: vec!["--heartbeat-interval-ms".into(), "300".into()], ..Default::default() };
    let daemon = Daemon::start("tamper-blind", &options)?;
    let pid = daemon.pid().context("daemon pid")?;
    let (code, _) = readyz(&daemon)?;
    ensure!(code == "200", "ready before: {code}");
    // The probes stay attached, but nothing reads what they write: the daemon sees nothing.
    let reader = sys::thread_named(pid, "ring-reader")?;
    let frozen = sys::FrozenThread::freeze(reader)?;
    daemon.wait_metric("dfdwatch_blind", |v| v == 1.0)?;
    let (code, body) = readyz(&daemon)?;
    ensure!(code == "503" && body.contains("blind"), "/readyz while blind: {code} {body}");
    drop(frozen);
    // Reading again, the heartbeat comes through and the daemon is ready again.
    daemon.wait_metric("dfdwatch_blind", |v| v == 0.0)?;
    wait_for_readyz(&daemon, "200")?;
    let done = daemon.stop()?;
    ensure!(done.log.contains("blind: no heartbeat came through the probes"), "{}", done.log);
    ensure!(done.log.contains("no longer blind"), "{}", done.log);
    ensure!(
        done.gaps.len() == 1 && done.gaps[0]["reason"] == "blind" && done.gaps[0]["seconds"].as_f64() > Some(0.9),
        "the blind spell is marked by a gap record: {:?}",
        done.gaps
    );
    Ok(())
}

#[test]
fn a_kernel_counter_written_from_outside_is_reported_and_its_count_kept() -> Result<()> {
    let _serial = lab::exclusive();
    let options = DaemonOptions { extra_args: vec!["--stats-interval-ms".into(), "200".into()], ..Default::default() };
    let daemon = Daemon::start("tamper-stats", &options)?;
    // bpftool writes the map of every loaded dfdwatch; only this test's daemon runs now.
    let set = |value: &str| -> Result<()> {
        let mut args = vec!["map", "update", "name", "DFDW_STATS", "key", "0", "0", "0", "0", "value", value];
        args.extend(["0"; 7]);
        let out = Command::new("bpftool").args(&args).output()?;
        ensure!(out.status.success(), "bpftool: {out:?}");
        Ok(())
    };
    set("7")?;
    // Every CPU's slot holds 7: the daemon sees the sum grow, then fall to 0.
    let cpus = possible_cpus()? as f64;
    daemon.wait_metric("dfdwatch_kernel_stats_total{stat=\"lost_connect\"}", |v| v == 7.0 * cpus)?;
    set("0")?;
    let text = daemon.wait_metric("dfdwatch_tampering_detected_total{what=\"kernel_counter_reset\"}", |v| v == 1.0)?;
    ensure!(
        metric(&text, "dfdwatch_kernel_stats_total{stat=\"lost_connect\"}") == Some(7.0 * cpus),
        "the count is kept:\n{text}"
    );
    let done = daemon.stop()?;
    ensure!(done.log.contains("a kernel counter went backwards"), "{}", done.log);
    ensure!(
        tests::daemon::counter(&done.counters, "kernel", "lost_connect") == 7 * cpus as u64,
        "the final counters keep it: {}",
        done.counters
    );
    Ok(())
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[test]
fn idle_connections_to_the_metrics_endpoint_are_capped_and_timed_out() -> Result<()> {
    let _serial = lab::exclusive();
    let daemon = Daemon::start("tamper-http", &DaemonOptions::default())?;
    let pid = daemon.pid().context("daemon pid")?;
    let addr = daemon.metrics_base()?.trim_start_matches("http://").to_owned();
    let before = open_fds(pid)?;
    // 100 clients connect and say nothing.
    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&addr)).collect::<std::io::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(pid)?;
    ensure!(during <= before + 16, "the daemon holds {during} fds with 100 idle clients ({before} before)");
    // The server closes every idle connection within its header timeout (5 s).
    let started = Instant::now();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        ensure!(n == 0, "an idle connection got {n} bytes");
    }
    ensure!(started.elapsed() < Duration::from_secs(8), "idle connections closed after {:?}", started.elapsed());
    let text = daemon.metrics()?;
    let refused = metric(&text, "dfdwatch_http_connections_refused_total").unwrap_or(0.0);
    ensure!(refused >= 84.0, "the connections over the cap are counted: {refused}");
    daemon.stop()?;
    Ok(())
}
