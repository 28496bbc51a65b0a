//! A daemon whose first-occurrence alerts are timed as they arrive: `dfdwatch run` with alerts on
//! stdout and a one-second window, and a thread that sends (arrival time, destination port) for
//! each `first` alert line. Shared by the latency and stall benchmarks.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

/// The running daemon and its alert feed.
pub struct AlertFeed {
    /// The daemon.
    pub child: Child,
    /// (arrival, destination port) of each first-occurrence alert.
    pub alerts: mpsc::Receiver<(Instant, u64)>,
    reader: JoinHandle<()>,
}

impl AlertFeed {
    /// Starts `bin run` with `extra` options, its log in `log`.
    pub fn start(bin: &Path, extra: &[&std::ffi::OsStr], log: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args([
                "run",
                "--events-file",
                "/dev/null",
                "--alerts-file",
                "-",
                "--alert-window-secs",
                "1",
                "--no-metrics",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child.stdout.take().context("dfdwatch stdout")?;
        let (tx, alerts) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                if v["occurrence"] == "first"
                    && let Some(port) = v["event"]["dst"]["port"].as_u64()
                    && tx.send((at, port)).is_err()
                {
                    return;
                }
            }
        });
        Ok(Self { child, alerts, reader })
    }

    /// Stops the daemon (SIGTERM, by pid) and the feed.
    pub fn stop(mut self) {
        tests::sys::signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
        let _ = self.reader.join();
    }
}
