//! Detection latency: from just before connect() to the alert line arriving on the daemon's
//! stdout, one connection at a time (no queueing), each from its own loopback address to its own
//! port, so each is a new flow whose first connection reaches the daemon and opens an alert
//! window of its own: each gives a `first` alert at once. Reports p50, p99 and max.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::alert_feed::AlertFeed;
use crate::stats::percentile;

/// Runs `rounds` rounds of one connection to each of `ports` listeners; returns the results.
pub fn run(dir: &Path, dfd: &Path, ports: usize, rounds: usize) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    // Listeners that never accept: the kernel completes the handshake, which is what the probe
    // reports; the backlog holds the few connections each gets.
    let listeners: Vec<TcpListener> =
        (0..ports).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = listeners.iter().map(TcpListener::local_addr).collect::<Result<_, _>>()?;
    let log = dir.join("dfdwatch.log");
    let feed = AlertFeed::start(&crate::monitor::dfdwatch_bin()?, &["--dfd".as_ref(), dfd.as_os_str()], &log)?;
    let rx = &feed.alerts;
    let result = (|| -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("dfdwatch ready") {
            if Instant::now() > deadline {
                bail!("dfdwatch not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut samples = Vec::new();
        let mut missing = 0u64;
        for round in 0..rounds {
            if round > 0 {
                // Let every window (1 s, closed on a 250 ms tick) close.
                std::thread::sleep(Duration::from_millis(1600));
            }
            while rx.try_recv().is_ok() {}
            for (i, addr) in addrs.iter().enumerate() {
                let started = Instant::now();
                let stream = crate::storm::connect_from(*addr, (round * addrs.len() + i) as u64)?;
                drop(stream);
                let port = u64::from(addr.port());
                let wait_until = Instant::now() + Duration::from_secs(2);
                loop {
                    match rx.recv_timeout(wait_until.saturating_duration_since(Instant::now())) {
                        Ok((at, p)) if p == port => {
                            samples.push(at.duration_since(started).as_secs_f64() * 1e3);
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => {
                            missing += 1;
                            break;
                        }
                    }
                }
            }
        }
        Ok(json!({
            "samples": samples.len(),
            "missing": missing,
            "p50_ms": percentile(&samples, 50.0),
            "p99_ms": percentile(&samples, 99.0),
            "max_ms": percentile(&samples, 100.0),
        }))
    })();
    feed.stop();
    drop(listeners);
    result
}
