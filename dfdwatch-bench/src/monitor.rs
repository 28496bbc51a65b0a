//! The monitors compared side by side: none; dfdwatch (release build, the full pipeline: DFD,
//! verdicts, events file and alerts file); and Debian's bpftrace running an equivalent script on
//! the same tracepoint (one line per established connect and accept, with pid, comm, both
//! addresses and ports, and the cgroup). Each is started, waited for until attached, and stopped
//! by its pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Which monitor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    None,
    Dfdwatch,
    Bpftrace,
}

impl Monitor {
    pub fn name(self) -> &'static str {
        match self {
            Monitor::None => "none",
            Monitor::Dfdwatch => "dfdwatch",
            Monitor::Bpftrace => "bpftrace",
        }
    }
}

/// The bpftrace peer: the same tracepoint, the same two transitions, comparable fields.
const BPFTRACE_SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state
/args->protocol == 6 && args->newstate == 1 && (args->oldstate == 2 || args->oldstate == 3)/
{
  printf("%d %s %s:%d -> %s:%d %d %d\n", pid, comm, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport, cgroup, args->oldstate);
}
"#;

/// The dfdwatch binary: `DFDWATCH_BIN`, else the workspace's release build.
pub fn dfdwatch_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("DFDWATCH_BIN") {
        Some(p) => PathBuf::from(p),
        None => tests::sys::workspace_root().join("target/release/dfdwatch"),
    };
    if !path.exists() {
        bail!("{} is missing: run `cargo xtask bench` (it builds the release binary)", path.display());
    }
    Ok(path)
}

/// A running monitor.
pub struct Running {
    child: Option<Child>,
    monitor: Monitor,
    log: PathBuf,
}

fn wait_for(log: &Path, needle: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("monitor exited ({status}) before `{needle}`:\n{text}");
        }
        if Instant::now() > deadline {
            bail!("no `{needle}` after 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `monitor`, with its files in `dir`; `extra` are more dfdwatch options.
pub fn start(monitor: Monitor, dir: &Path, extra: &[String]) -> Result<Running> {
    match monitor {
        Monitor::None => Ok(Running { child: None, monitor, log: dir.join("none.log") }),
        Monitor::Dfdwatch => start_dfdwatch(&dfdwatch_bin()?, dir, extra),
        Monitor::Bpftrace => {
            let (log, out) = log_file(monitor, dir)?;
            let child = Command::new("bpftrace")
                .args(["-e", BPFTRACE_SCRIPT])
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context("start bpftrace (Debian package bpftrace)")?;
            attached(monitor, child, log, "Attaching 1 probe")
        }
    }
}

/// Starts the dfdwatch binary `bin` (this build, or another one to compare with), with its files
/// in `dir`; `extra` are more options.
pub fn start_dfdwatch(bin: &Path, dir: &Path, extra: &[String]) -> Result<Running> {
    let (log, out) = log_file(Monitor::Dfdwatch, dir)?;
    for f in ["events.jsonl", "alerts.jsonl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let child = Command::new(bin)
        .arg("run")
        .arg("--events-file")
        .arg(dir.join("events.jsonl"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    attached(Monitor::Dfdwatch, child, log, "dfdwatch ready")
}

fn log_file(monitor: Monitor, dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join(format!("{}.log", monitor.name()));
    let out = std::fs::File::create(&log)?;
    Ok((log, out))
}

/// Waits until the monitor says it attached; stops it if it does not.
fn attached(monitor: Monitor, mut child: Child, log: PathBuf, needle: &str) -> Result<Running> {
    if let Err(e) = wait_for(&log, needle, &mut child) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Running { child: Some(child), monitor, log })
}

impl Running {
    /// The monitor's pid (none for [`Monitor::None`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the monitor (SIGTERM, then waits); for dfdwatch returns its final counters.
    pub fn stop(mut self) -> Result<Option<Value>> {
        let Some(mut child) = self.child.take() else { return Ok(None) };
        tests::sys::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not stop within 60 s of SIGTERM", self.monitor.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.monitor != Monitor::Dfdwatch {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.log)?;
        let json = text
            .lines()
            .find_map(|l| l.split_once("final counters: ").map(|(_, j)| j.to_owned()))
            .context("no final counters in the dfdwatch log")?;
        Ok(Some(serde_json::from_str(&json)?))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
