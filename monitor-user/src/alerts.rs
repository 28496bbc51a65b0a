//! Alert events (schema `dfdwatch.alert.v1`): one JSON line per flow whose verdict calls for an
//! alert, de-duplicated by a stable flow key. The first occurrence of a key is written at once;
//! repeats inside `--alert-window-secs` are counted, and when the window closes one summary line
//! carries their count, so a port scan or a retry loop gives a few alerts, never a storm.
//! Runs on its own thread, fed by the event writer through a bounded channel. Lines go to stdout
//! or to a rotating file ([`crate::rotate`]), and, with `--alertmanager-url`, to Alertmanager
//! ([`crate::alertmanager`]).

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::alertmanager::AlertmanagerQueue;
use crate::counters::Counters;
use crate::identity::Enriched;
use crate::policy::DfdRef;
use crate::rotate::{FsyncPolicy, RotatingFile};

/// Schema id written in every alert.
pub const SCHEMA: &str = "dfdwatch.alert.v1";

/// One alert candidate from the event writer.
#[derive(Debug)]
pub struct Candidate {
    /// Stable key of the flow (see [`flow_key`]).
    pub key: String,
    /// The event that raised it, as written to the events stream.
    pub event: Value,
    /// When it was seen (RFC 3339).
    pub time: String,
    /// The DFD revision that judged it.
    pub dfd: DfdRef,
}

/// The stable key of a flow: who (DFD node, else zone and address, else address) talks to whom,
/// on which port, with which verdict. Source ports and pids are left out on purpose.
pub fn flow_key(e: &Enriched) -> String {
    let end = |p: &Option<crate::policy::Placement>, ip: std::net::IpAddr| match p.as_ref() {
        Some(p) if p.node.is_some() => format!("node={}", p.node.as_deref().unwrap_or_default()),
        Some(p) if p.zone.is_some() => {
            format!("zone={}/{ip}", p.zone.as_deref().unwrap_or_default())
        }
        _ => format!("ip={ip}"),
    };
    let kind = e.verdict.as_ref().map(|v| v.kind.as_str()).unwrap_or("none");
    let canonical = format!(
        "{}|{}|{}|{kind}",
        end(&e.src_dfd, e.conn.src.ip()),
        end(&e.dst_dfd, e.conn.dst.ip()),
        e.conn.dst.port()
    );
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Serialize)]
struct AlertRecord<'a> {
    schema: &'static str,
    time: &'a str,
    flow_key: &'a str,
    /// `first` for the first occurrence in a window, `repeats` for the summary at its end.
    occurrence: &'static str,
    /// Occurrences this line stands for: 1 for `first`, the repeats for `repeats`.
    count: u64,
    first_seen: &'a str,
    last_seen: &'a str,
    window_seconds: u64,
    dfd: &'a DfdRef,
    verdict: &'a Value,
    event: &'a Value,
}

/// Where alert lines go to, and how the alert file rotates and syncs.
#[derive(Clone, Debug)]
pub struct AlertFile {
    /// A file path, or `-` for stdout.
    pub path: std::path::PathBuf,
    /// Rotate the file once it holds this many bytes (0: never).
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// When lines are forced to disk.
    pub fsync: FsyncPolicy,
}

struct Window {
    opened: Instant,
    first_seen: String,
    last_seen: String,
    repeats: u64,
    last_event: Value,
    dfd: DfdRef,
}

/// De-duplicates candidates by key over a window and writes alert lines.
pub struct AlertWriter {
    out: Box<dyn Write + Send>,
    window: Duration,
    open: HashMap<String, Window>,
    counters: Arc<Counters>,
    alertmanager: Option<AlertmanagerQueue>,
}

impl AlertWriter {
    /// Alerts appended to the file (created 0600), or to stdout for `-`.
    pub fn open(file: &AlertFile, window: Duration, counters: Arc<Counters>) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if file.path == Path::new("-") {
            Box::new(BufWriter::new(std::io::stdout()))
        } else {
            Box::new(RotatingFile::open(&file.path, file.max_bytes, file.keep, file.fsync)?)
        };
        Ok(Self { out, window, open: HashMap::new(), counters, alertmanager: None })
    }

    /// A writer that keeps no lines itself (when alerts only go to Alertmanager).
    pub fn discarding(window: Duration, counters: Arc<Counters>) -> Self {
        Self { out: Box::new(std::io::sink()), window, open: HashMap::new(), counters, alertmanager: None }
    }

    /// Also hands every alert line to Alertmanager.
    pub fn with_alertmanager(mut self, queue: AlertmanagerQueue) -> Self {
        self.alertmanager = Some(queue);
        self
    }

    /// Runs until the sender side closes, then closes every window.
    pub fn run(mut self, rx: Receiver<Candidate>) {
        let tick = (self.window / 4).max(Duration::from_millis(50));
        loop {
            match rx.recv_timeout(tick) {
                Ok(c) => self.offer(c, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.close_expired(Instant::now(), false);
            self.flush();
        }
        self.close_expired(Instant::now(), true);
        self.flush();
    }

    /// Takes one candidate seen at `now`.
    pub fn offer(&mut self, c: Candidate, now: Instant) {
        if let Some(w) = self.open.get_mut(&c.key) {
            w.repeats += 1;
            w.last_seen = c.time;
            w.last_event = c.event;
            w.dfd = c.dfd;
            return;
        }
        self.write(&c.key, "first", 1, (&c.time, &c.time), &c.event, &c.dfd);
        self.open.insert(
            c.key,
            Window {
                opened: now,
                first_seen: c.time.clone(),
                last_seen: c.time,
                repeats: 0,
                last_event: c.event,
                dfd: c.dfd,
            },
        );
    }

    /// Closes windows older than the window length (all of them when `all`), writing a summary
    /// for each that saw repeats.
    pub fn close_expired(&mut self, now: Instant, all: bool) {
        let expired: Vec<String> = self
            .open
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.opened) >= self.window)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(w) = self.open.remove(&key)
                && w.repeats > 0
            {
                self.write(&key, "repeats", w.repeats, (&w.first_seen, &w.last_seen), &w.last_event, &w.dfd);
            }
        }
    }

    fn write(
        &mut self,
        key: &str,
        occurrence: &'static str,
        count: u64,
        (first, last): (&str, &str),
        event: &Value,
        dfd: &DfdRef,
    ) {
        let record = AlertRecord {
            schema: SCHEMA,
            time: last,
            flow_key: key,
            occurrence,
            count,
            first_seen: first,
            last_seen: last,
            window_seconds: self.window.as_secs(),
            dfd,
            verdict: &event["verdict"],
            event,
        };
        if let Some(am) = &self.alertmanager {
            am.offer(&serde_json::to_value(&record).unwrap_or_default(), self.window);
        }
        let result = serde_json::to_writer(&mut self.out, &record)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        match result {
            Ok(()) => self.counters.record_alert_written(),
            Err(e) => self.counters.report_write_error("writing an alert", &e),
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.counters.report_write_error("flushing alerts", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(s: &Shared) -> Vec<Value> {
        let text = String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn repeats_inside_a_window_give_one_alert_and_one_count() {
        let buf = Shared::default();
        let mut w = AlertWriter {
            out: Box::new(buf.clone()),
            window: Duration::from_secs(10),
            open: HashMap::new(),
            counters: Arc::new(Counters::default()),
            alertmanager: None,
        };
        let t0 = Instant::now();
        let cand = |key: &str, n: u32| Candidate {
            key: key.into(),
            event: serde_json::json!({"n": n, "verdict": {"kind": "lateral_movement"}}),
            time: format!("t{n}"),
            dfd: DfdRef::default(),
        };
        for n in 0..100 {
            w.offer(cand("a", n), t0);
        }
        w.offer(cand("b", 0), t0);
        w.close_expired(t0 + Duration::from_secs(5), false);
        assert_eq!(lines(&buf).len(), 2, "one first line per key, nothing more inside the window");
        w.close_expired(t0 + Duration::from_secs(10), false);
        let out = lines(&buf);
        assert_eq!(out.len(), 3);
        let summary = &out[2];
        assert_eq!(
            (summary["flow_key"].as_str(), summary["occurrence"].as_str(), summary["count"].as_u64()),
            (Some("a"), Some("repeats"), Some(99))
        );
        assert_eq!((summary["first_seen"].as_str(), summary["last_seen"].as_str()), (Some("t0"), Some("t99")));
        assert_eq!(summary["verdict"]["kind"], "lateral_movement");
        // A new occurrence after the window opens a new one.
        w.offer(cand("a", 200), t0 + Duration::from_secs(11));
        assert_eq!(lines(&buf).len(), 4);
    }
}
