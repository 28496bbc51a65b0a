//! Alert events (schema `dfdwatch.alert.v1`): one JSON line per flow whose verdict calls for an
//! alert, de-duplicated by a stable flow key. The first occurrence of a key is written at once;
//! repeats inside `--alert-window-secs` are counted, and when the window closes one summary line
//! carries their count, so a retry loop gives a few alerts, never a storm. The table of open
//! windows is bounded (`--alert-max-windows`): when a scan fills it, the oldest window is closed
//! early (its summary written) and counted in `dfdwatch_alert_windows_evicted_total`.
//! Runs on its own thread, fed by the fan-out through a bounded queue. Lines go to stdout or to a
//! rotating file ([`super::rotate`]), and, with `--alertmanager-url`, to Alertmanager
//! ([`super::alertmanager`]).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::alertmanager::AlertmanagerQueue;
use super::record::ConnectionRecord;
use super::rotate::{FsyncPolicy, RotatingFile};
use super::windows::{Window, Windows};
use crate::policy::verdict::Verdict;
use crate::policy::{DfdRef, Judged, Placement};
use crate::telemetry::counters::Counters;

/// Schema id written in every alert.
pub const SCHEMA: &str = "dfdwatch.alert.v1";

/// One flow sighting that calls for an alert, from the fan-out.
#[derive(Clone, Debug)]
pub struct AlertCandidate {
    /// Stable key of the flow (see [`flow_key`]).
    pub key: String,
    /// The event that raised it, as written to the events stream.
    pub event: Arc<ConnectionRecord>,
    /// Its verdict.
    pub verdict: Verdict,
    /// The DFD revision that judged it.
    pub dfd: Arc<DfdRef>,
}

/// The stable key of a flow: who (DFD node, else zone and address, else address) talks to whom,
/// on which port, with which verdict. Source ports and pids are left out on purpose.
pub fn flow_key(j: &Judged) -> String {
    let end = |p: &Placement, ip: std::net::IpAddr| match (&p.node, &p.zone) {
        (Some(node), _) => format!("node={node}"),
        (None, Some(zone)) => format!("zone={zone}/{ip}"),
        (None, None) => format!("ip={ip}"),
    };
    let conn = &j.flow.conn;
    let canonical = format!(
        "{}|{}|{}|{}",
        end(&j.judgement.src, conn.src.ip()),
        end(&j.judgement.dst, conn.dst.ip()),
        conn.dst.port(),
        j.judgement.verdict.kind.as_str()
    );
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Which line of a window an alert line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Occurrence {
    /// The first occurrence in a window.
    First,
    /// The summary of a window's repeats, when it closes.
    Repeats,
}

/// One alert line (schema `dfdwatch.alert.v1`, documented in docs/alerts.md).
#[derive(Debug, Serialize)]
pub struct AlertRecord {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The last occurrence's time.
    pub time: String,
    /// The flow's stable key.
    pub flow_key: String,
    /// First occurrence, or repeats summary.
    pub occurrence: Occurrence,
    /// Occurrences this line stands for: 1 for `first`, the repeats for `repeats`.
    pub count: u64,
    /// First occurrence in the window.
    pub first_seen: String,
    /// Last occurrence in the window.
    pub last_seen: String,
    /// The window's length.
    pub window_seconds: u64,
    /// The DFD revision that judged the last occurrence.
    pub dfd: Arc<DfdRef>,
    /// The last occurrence's verdict.
    pub verdict: Verdict,
    /// The last occurrence's event.
    pub event: Arc<ConnectionRecord>,
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

/// De-duplicates candidates by key over a window and writes alert lines.
pub struct AlertWriter {
    out: Box<dyn Write + Send>,
    window: Duration,
    open: Windows<AlertCandidate>,
    counters: Arc<Counters>,
    alertmanager: Option<AlertmanagerQueue>,
}

impl AlertWriter {
    /// A writer to `out`, holding at most `max_windows` open windows.
    pub fn new(out: Box<dyn Write + Send>, window: Duration, max_windows: usize, counters: Arc<Counters>) -> Self {
        Self { out, window, open: Windows::new(max_windows), counters, alertmanager: None }
    }

    /// Alerts appended to the file (created 0600), or to stdout for `-`.
    pub fn open(
        file: &AlertFile,
        window: Duration,
        max_windows: usize,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if file.path == Path::new("-") {
            Box::new(BufWriter::new(std::io::stdout()))
        } else {
            Box::new(RotatingFile::open(&file.path, file.max_bytes, file.keep, file.fsync)?)
        };
        Ok(Self::new(out, window, max_windows, counters))
    }

    /// Also hands every alert line to Alertmanager.
    pub fn with_alertmanager(mut self, queue: AlertmanagerQueue) -> Self {
        self.alertmanager = Some(queue);
        self
    }

    /// Windows open now.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Runs until the sender side closes, then closes every window.
    pub fn run(mut self, rx: Receiver<AlertCandidate>) {
        let tick = (self.window / 4).max(Duration::from_millis(50));
        loop {
            match rx.recv_timeout(tick) {
                Ok(c) => self.offer(c, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.close_expired(Instant::now());
            self.flush();
        }
        while let Some((key, w)) = self.open.pop_oldest_if(|_| true) {
            self.close(&key, w);
        }
        self.flush();
    }

    /// Takes one candidate seen at `now`.
    pub fn offer(&mut self, c: AlertCandidate, now: Instant) {
        // A window that has run out is closed first: a late sighting opens a new one, and a full
        // table is never relieved by evicting a window that had already expired.
        self.close_expired(now);
        if let Some(w) = self.open.get_mut(&c.key) {
            w.repeats += 1;
            w.last_seen.clone_from(&c.event.time);
            w.last = c;
            return;
        }
        if self.open.is_full()
            && let Some((key, w)) = self.open.pop_oldest_if(|_| true)
        {
            let n = self.counters.record_alert_window_evicted();
            if n.is_power_of_two() {
                tracing::warn!(total = n, "too many open alert windows (a scan?): the oldest closed early");
            }
            self.close(&key, w);
        }
        let time = c.event.time.clone();
        self.write(&c, Occurrence::First, 1, (&time, &time));
        self.open.open(c.key.clone(), now, &time, c);
    }

    /// Closes windows older than the window length, writing a summary for each that saw repeats.
    pub fn close_expired(&mut self, now: Instant) {
        while let Some((key, w)) = self.open.pop_expired(now, self.window) {
            self.close(&key, w);
        }
    }

    fn close(&mut self, _key: &str, w: Window<AlertCandidate>) {
        if w.repeats > 0 {
            self.write(&w.last, Occurrence::Repeats, w.repeats, (&w.first_seen, &w.last_seen));
        }
    }

    fn write(&mut self, c: &AlertCandidate, occurrence: Occurrence, count: u64, (first, last): (&str, &str)) {
        let record = AlertRecord {
            schema: SCHEMA,
            time: last.to_owned(),
            flow_key: c.key.clone(),
            occurrence,
            count,
            first_seen: first.to_owned(),
            last_seen: last.to_owned(),
            window_seconds: self.window.as_secs(),
            dfd: c.dfd.clone(),
            verdict: c.verdict.clone(),
            event: c.event.clone(),
        };
        if let Some(am) = &self.alertmanager {
            am.offer(&record, self.window);
        }
        // One whole line per write: a failing disk never leaves half a line behind.
        let result = serde_json::to_vec(&record).map_err(std::io::Error::from).and_then(|mut bytes| {
            bytes.push(b'\n');
            self.out.write_all(&bytes)
        });
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
    use crate::sinks::fixture;

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

    fn lines(s: &Shared) -> Vec<serde_json::Value> {
        let text = String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn writer(buf: &Shared, max_windows: usize) -> AlertWriter {
        AlertWriter::new(Box::new(buf.clone()), Duration::from_secs(10), max_windows, Arc::new(Counters::default()))
    }

    #[test]
    fn repeats_inside_a_window_give_one_alert_and_one_count() {
        let buf = Shared::default();
        let mut w = writer(&buf, 100);
        let t0 = Instant::now();
        for n in 0..100 {
            w.offer(fixture::candidate(5432, n), t0);
        }
        w.offer(fixture::candidate(6379, 0), t0);
        w.close_expired(t0 + Duration::from_secs(5));
        assert_eq!(lines(&buf).len(), 2, "one first line per key, nothing more inside the window");
        w.close_expired(t0 + Duration::from_secs(10));
        let out = lines(&buf);
        assert_eq!(out.len(), 3);
        let summary = &out[2];
        assert_eq!(
            (summary["flow_key"].as_str(), summary["occurrence"].as_str(), summary["count"].as_u64()),
            (out[0]["flow_key"].as_str(), Some("repeats"), Some(99))
        );
        assert_eq!(summary["first_seen"], out[0]["first_seen"]);
        assert_eq!(summary["last_seen"], summary["event"]["time"], "the summary carries the last occurrence");
        assert_eq!(summary["verdict"]["kind"], "lateral_movement");
        assert_eq!(summary["event"]["dst"]["port"], 5432);
        // A new occurrence after the window opens a new one.
        w.offer(fixture::candidate(5432, 200), t0 + Duration::from_secs(11));
        assert_eq!(lines(&buf).len(), 4);
    }

    #[test]
    fn a_port_scan_keeps_the_window_table_within_its_bound_and_counts_evictions() {
        let buf = Shared::default();
        let mut w = writer(&buf, 100);
        let t0 = Instant::now();
        for port in 1..=1000u16 {
            w.offer(fixture::candidate(port, 0), t0);
            w.offer(fixture::candidate(port, 1), t0);
            assert!(w.open_windows() <= 100, "bound held at port {port}");
        }
        assert_eq!(w.counters.snapshot().alert_windows_evicted, 900);
        let out = lines(&buf);
        let firsts = out.iter().filter(|l| l["occurrence"] == "first").count();
        let summaries = out.iter().filter(|l| l["occurrence"] == "repeats").count();
        assert_eq!((firsts, summaries), (1000, 900), "every evicted window wrote its summary, nothing lost");
    }
}
