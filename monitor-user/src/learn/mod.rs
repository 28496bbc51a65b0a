//! `dfdwatch learn`: a draft DFD from what was observed, the hardest part of adopting dfdwatch
//! made a review instead of a blank page. It reads the flow store (local or ClickHouse) for
//! `--since`, or watches live for `--for` (running the daemon into a scratch store), turns the
//! workloads and flows into a draft ([`observed`], [`draft`]) that `dfdwatch check` parses, with
//! the decisions only a person can make marked TODO (lint L001). With `--base`, it proposes only
//! what the base DFD lacks, as a separate file. `defaults.unmatchedEndpoint: learn` in the
//! running DFD records unmodelled workloads without alerting, for exactly this.

pub mod draft;
pub mod observed;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::store::clickhouse::ClickHouseArgs;
use crate::store::query::Query;
use crate::store::source::{Source, SourceError};
use crate::store::writer::unix_ns;

/// Exit: the draft is written.
const EXIT_OK: u8 = 0;
/// Exit: nothing was observed in the time asked for.
const EXIT_NOTHING: u8 = 1;
/// Exit: bad usage.
const EXIT_USAGE: u8 = 64;
/// Exit: the base DFD has errors.
const EXIT_DATA: u8 = 65;
/// Exit: the store cannot be read, or the draft cannot be written.
const EXIT_NOINPUT: u8 = 66;
/// Exit: the live watch failed.
const EXIT_SOFTWARE: u8 = 70;

/// Rows read at most.
const MAX_ROWS: u32 = 5_000_000;

/// Options of `dfdwatch learn`.
#[derive(clap::Args, Debug)]
pub struct LearnArgs {
    /// The flow store to learn from (the daemon's --store).
    #[arg(long, value_name = "PATH", default_value = "/var/lib/dfdwatch/flows.db")]
    pub store: PathBuf,
    /// Learn from the cluster store instead.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// How far back to learn from.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Watch live for this long instead of reading a store (runs `dfdwatch run` into a scratch
    /// store; needs what `run` needs).
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "clickhouse_url")]
    pub watch_for: Option<Duration>,
    /// The DFD in force (files or directories): propose only what it lacks, as a fragment to
    /// review next to it.
    #[arg(long = "base", value_name = "PATH")]
    pub base: Vec<PathBuf>,
    /// The draft's `metadata.name`.
    #[arg(long, default_value = "learned")]
    pub name: String,
    /// Write the draft here instead of to stdout (created 0644; refused if it exists).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A failure: its message and exit status.
struct Failed(String, u8);

/// Runs `dfdwatch learn`; returns the exit status.
pub fn learn(args: &LearnArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match draft_of(args, err) {
        Ok(text) => {
            let written = match &args.output {
                Some(path) => std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .map_err(|e| format!("{}: {e}", crate::escape::escape_bytes(path.as_os_str().as_encoded_bytes()))),
                None => out.write_all(text.as_bytes()).map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    let _ = writeln!(err, "dfdwatch: cannot write the draft: {e}");
                    EXIT_NOINPUT
                }
            }
        }
        Err(Failed(msg, code)) => {
            let _ = writeln!(err, "dfdwatch: {msg}");
            code
        }
    }
}

fn draft_of(args: &LearnArgs, err: &mut dyn Write) -> Result<String, Failed> {
    let base = if args.base.is_empty() {
        None
    } else {
        let loaded = dfdwatch_dfd::load::load_paths(&args.base).map_err(|e| Failed(e.to_string(), EXIT_USAGE))?;
        if loaded.findings.iter().any(|f| f.severity == dfdwatch_dfd::diag::Severity::Error) {
            return Err(Failed("the base DFD does not parse: run `dfdwatch check` on it".into(), EXIT_DATA));
        }
        Some(loaded.dfd)
    };
    let scratch;
    let (store, clickhouse, since) = match args.watch_for {
        Some(duration) => {
            scratch = Scratch::new()?;
            watch(&scratch.0, duration, &args.base, err)?;
            (scratch.0.join("flows.db"), ClickHouseArgs::default(), duration + Duration::from_secs(3600))
        }
        None => (args.store.clone(), args.clickhouse.clone(), args.since),
    };
    let source = Source::open(&store, &clickhouse).map_err(|e| match e {
        SourceError::Usage(m) => Failed(m, EXIT_USAGE),
        SourceError::Unreadable(_) => Failed(e.to_string(), EXIT_NOINPUT),
    })?;
    let to = unix_ns().saturating_add(1);
    let from = to.saturating_sub(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
    let query = Query { from_ns: from, to_ns: to, limit: MAX_ROWS, ..Query::default() };
    let rows: Vec<_> = source
        .rows(&query)
        .map_err(|e| Failed(e.to_string(), EXIT_NOINPUT))?
        .into_iter()
        .filter(|r| r.record == "flow")
        .collect();
    let base_ids: Option<BTreeSet<String>> = base.as_ref().map(|b| b.nodes.iter().map(|n| n.id.clone()).collect());
    let seen = observed::Observed::from_rows(&rows, base_ids.as_ref());
    if seen.flows.is_empty() {
        return Err(Failed(
            if base.is_some() {
                "nothing to add: every flow in the time asked for is approved by the base DFD".into()
            } else {
                "no flow in the time asked for (see --since, or watch live with --for)".into()
            },
            EXIT_NOTHING,
        ));
    }
    Ok(draft::draft(&seen, &args.name, base.as_ref()))
}

/// A scratch directory (0700) for a live watch, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, Failed> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("dfdwatch-learn-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Failed(format!("{}: {e}", dir.display()), EXIT_SOFTWARE))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the daemon for `duration` into a store in `dir`, with the base DFD if there is one (so
/// that what it approves is known).
fn watch(dir: &Path, duration: Duration, base: &[PathBuf], err: &mut dyn Write) -> Result<(), Failed> {
    let exe =
        std::env::current_exe().map_err(|e| Failed(format!("cannot find dfdwatch itself: {e}"), EXIT_SOFTWARE))?;
    let mut cmd = Command::new(exe);
    cmd.args(["run", "--no-metrics", "--events-file", "/dev/null"])
        .arg("--state-dir")
        .arg(dir)
        .arg("--store")
        .arg(dir.join("flows.db"));
    for b in base {
        cmd.arg("--dfd").arg(b);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failed(format!("cannot start dfdwatch run: {e}"), EXIT_SOFTWARE))?;
    let stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stderr.map(BufReader::new).into_iter().flat_map(BufRead::lines).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let ready = line.contains("dfdwatch ready");
                log.push(line);
                if ready {
                    break true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) => {}
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Failed(format!("dfdwatch run did not start watching:\n{}", log.join("\n")), EXIT_SOFTWARE));
    }
    let _ = writeln!(err, "dfdwatch: watching for {} ...", humantime::format_duration(duration));
    std::thread::sleep(duration);
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let status = child.wait().map_err(|e| Failed(format!("dfdwatch run: {e}"), EXIT_SOFTWARE))?;
    let _ = reader.join();
    if !status.success() {
        let log: Vec<String> = rx.try_iter().collect();
        return Err(Failed(format!("dfdwatch run ended with {status}:\n{}", log.join("\n")), EXIT_SOFTWARE));
    }
    Ok(())
}
