//! The monitor under attack, with the real daemon: a flood of idle connections to the metrics
//! endpoint cannot use up its file descriptors.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tests::{Daemon, DaemonOptions, lab};

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
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
