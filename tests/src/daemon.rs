//! Runs the real `dfdwatch run` daemon for a test: waits until it is ready, reads the events it
//! writes, and stops it with SIGTERM to collect its final counters.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::sys;

/// How to start the daemon.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// `--attach` value, or the daemon's own choice.
    pub attach: Option<String>,
    /// Further arguments for `dfdwatch run`.
    pub extra_args: Vec<String>,
    /// Where the events go, instead of a file in the daemon's scratch directory.
    pub events_file: Option<PathBuf>,
    /// `--state-dir`, instead of one in the daemon's scratch directory (a restart test gives
    /// two daemons the same).
    pub state_dir: Option<PathBuf>,
}

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    events_path: PathBuf,
    log_path: PathBuf,
    /// Holds the events and log; removed when the daemon is dropped.
    _dir: sys::Scratch,
}

/// What a stopped daemon left: its events, its final counters and its log.
#[derive(Debug)]
pub struct Finished {
    /// Every connection record (`dfdwatch.connection.v1`), parsed.
    pub events: Vec<Value>,
    /// Every flow record (`dfdwatch.flow.v1`), parsed.
    pub flows: Vec<Value>,
    /// Every gap record (`dfdwatch.gap.v1`), parsed.
    pub gaps: Vec<Value>,
    /// Every DFD change record (`dfdwatch.dfd_change.v1`), parsed.
    pub dfd_changes: Vec<Value>,
    /// The `final counters` object (`kernel` and `pipeline`).
    pub counters: Value,
    /// The daemon's whole log (stderr).
    pub log: String,
    /// Whether it exited with status 0.
    pub clean_exit: bool,
}

/// The daemon binary: `DFDWATCH_BIN`, else the workspace's debug build.
pub fn binary() -> Result<PathBuf> {
    let path = match std::env::var_os("DFDWATCH_BIN") {
        Some(p) => PathBuf::from(p),
        None => sys::workspace_root().join("target/debug/dfdwatch"),
    };
    if !path.exists() {
        bail!(
            "dfdwatch binary not found at {} (build it with `cargo build -p monitor-user`, which \
             `cargo xtask test` does, or set DFDWATCH_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs the dfdwatch binary to completion, for commands that exit by themselves (`check`,
/// `render`, a `run` that must refuse to start).
pub fn run_to_exit<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<std::process::Output> {
    Command::new(binary()?).args(args).env_remove("RUST_BACKTRACE").output().context("run dfdwatch")
}

impl Daemon {
    /// Starts `dfdwatch run` writing events into a scratch file and waits for "dfdwatch ready".
    pub fn start(tag: &str, options: &DaemonOptions) -> Result<Self> {
        sys::require_root()?;
        let dir = sys::scratch_dir(&format!("daemon-{tag}"))?;
        let events_path = options.events_file.clone().unwrap_or_else(|| dir.join("events.jsonl"));
        let log_path = dir.join("dfdwatch.log");
        let log = std::fs::File::create(&log_path).context("create daemon log")?;
        let mut cmd = Command::new(binary()?);
        cmd.arg("run")
            .arg("--events-file")
            .arg(&events_path)
            .arg("--node-name")
            .arg("test-node")
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--state-dir")
            .arg(options.state_dir.clone().unwrap_or_else(|| dir.join("state")))
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(attach) = &options.attach {
            cmd.arg("--attach").arg(attach);
        }
        cmd.args(&options.extra_args);
        let child = cmd.spawn().context("start dfdwatch")?;
        let mut daemon = Self { child: Some(child), events_path, log_path, _dir: dir };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            if log.contains("dfdwatch ready") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("dfdwatch exited before it was ready ({status}):\n{log}");
            }
            if Instant::now() > deadline {
                bail!("dfdwatch not ready after 30 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The metrics endpoint's base URL (`http://127.0.0.1:PORT`), from the daemon's log.
    pub fn metrics_base(&self) -> Result<String> {
        let log = std::fs::read_to_string(&self.log_path).context("read daemon log")?;
        log.lines()
            .find_map(|l| l.split_once("metrics listening on http://").map(|(_, rest)| rest.to_owned()))
            .and_then(|rest| rest.split_once("/metrics").map(|(addr, _)| format!("http://{addr}")))
            .context("no `metrics listening` line in the daemon log")
    }

    /// Waits until the log holds `needle` `times` times (15 s at most); returns the log.
    pub fn wait_log(&self, needle: &str, times: usize) -> Result<String> {
        sys::wait_for_text(&self.log_path, needle, times, Duration::from_secs(15))
    }

    /// The /metrics exposition, fetched with curl on loopback.
    pub fn metrics(&self) -> Result<String> {
        let out = Command::new("curl").args(["-sf", &format!("{}/metrics", self.metrics_base()?)]).output()?;
        anyhow::ensure!(out.status.success(), "/metrics: {out:?}");
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Waits until `series` in /metrics satisfies `done` (15 s at most); returns the exposition.
    pub fn wait_metric(&self, series: &str, done: impl Fn(f64) -> bool) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.metrics()?;
            if metric(&text, series).is_some_and(&done) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!("{series} did not reach the value waited for in 15 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's log file (stderr), for tests that wait on a log line.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The connection records written so far.
    pub fn events(&self) -> Result<Vec<Value>> {
        Ok(read_events(&self.events_path)?.connections)
    }

    /// The flow records written so far.
    pub fn flows(&self) -> Result<Vec<Value>> {
        Ok(read_events(&self.events_path)?.flows)
    }

    /// Polls the connection records until `done` holds for them or `timeout` passes; returns the
    /// last read.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
        self.wait_for_records(timeout, Self::events, done)
    }

    /// Polls the flow records until `done` holds for them or `timeout` passes; returns the last
    /// read.
    pub fn wait_for_flows(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
        self.wait_for_records(timeout, Self::flows, done)
    }

    fn wait_for_records(
        &self,
        timeout: Duration,
        read: fn(&Self) -> Result<Vec<Value>>,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = read(self)?;
            if done(&records) || Instant::now() > deadline {
                return Ok(records);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM, waits for the exit, and collects events, counters and log.
    pub fn stop(mut self) -> Result<Finished> {
        let mut child = self.child.take().context("daemon already stopped")?;
        sys::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("dfdwatch did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&self.log_path).context("read daemon log")?;
        let counters = log
            .lines()
            .find_map(|l| l.split_once("final counters: ").map(|(_, json)| json.to_owned()))
            .context("no `final counters` line in the daemon log")?;
        let counters = serde_json::from_str(&counters).context("parse final counters")?;
        let Records { connections: events, flows, gaps, dfd_changes } = read_events(&self.events_path)?;
        Ok(Finished { events, flows, gaps, dfd_changes, counters, log, clean_exit: status.success() })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The events file's records, by schema.
#[derive(Default)]
struct Records {
    connections: Vec<Value>,
    flows: Vec<Value>,
    gaps: Vec<Value>,
    dfd_changes: Vec<Value>,
}

/// The events file's connection, flow and gap records; any other line is an error. An OCSF event
/// (`--events-format ocsf`) counts as the dfdwatch record it carries in `unmapped.dfdwatch`.
fn read_events(path: &PathBuf) -> Result<Records> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Records::default()),
        Err(e) => return Err(e).context("read events"),
    };
    // The last line may be half written while the daemon runs: parse complete lines only.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut records = Records::default();
    for line in complete.lines() {
        let mut v: Value = serde_json::from_str(line).with_context(|| format!("bad event line: {line}"))?;
        if v.get("class_uid").is_some() {
            v = v["unmapped"]["dfdwatch"].take();
        }
        match v["schema"].as_str() {
            Some("dfdwatch.connection.v1") => records.connections.push(v),
            Some("dfdwatch.flow.v1") => records.flows.push(v),
            Some("dfdwatch.gap.v1") => records.gaps.push(v),
            Some("dfdwatch.dfd_change.v1") => records.dfd_changes.push(v),
            _ => bail!("event line of no known schema: {line}"),
        }
    }
    Ok(records)
}

/// The connections the flow records matching `which` add up to.
pub fn connections(flows: &[Value], which: impl Fn(&Value) -> bool) -> u64 {
    flows.iter().filter(|f| which(f)).map(|f| f["connections"].as_u64().unwrap_or(0)).sum()
}

/// Every line of a JSON Lines file (an alert file, an events file), parsed; none for a file that
/// does not exist yet.
pub fn json_lines(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}"))).collect()
}

/// The value of one series (`name{labels}`, written as /metrics writes it) in an exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// A counter from [`Finished::counters`], e.g. `counter(&c, "kernel", "lost_accept")`.
pub fn counter(counters: &Value, group: &str, name: &str) -> u64 {
    counters[group][name].as_u64().unwrap_or(0)
}
