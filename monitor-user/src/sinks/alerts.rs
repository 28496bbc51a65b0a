//! Alert events (schema `dfdwatch.alert.v1`): one JSON line per window of alerting connections,
//! de-duplicated by a window key: the source, the kind of violation and the destination zone.
//! The first occurrence is written at once (with its stable flow key); repeats inside
//! `--alert-window-secs` are counted, and when the window closes one summary line carries their
//! count: `repeats` when they all went to one target (peer and port), `scan` listing the ports and
//! peers when they went to several. So a retry loop or an 11-port scan gives two lines, never one
//! per port. The table of open windows is bounded (`--alert-max-windows`): when it is full, the
//! oldest window is closed early (its summary written) and counted in
//! `dfdwatch_alert_windows_evicted_total`.
//! Runs on its own thread, fed by the fan-out through a bounded queue. Lines go to stdout or to a
//! rotating file ([`super::rotate`]), and, with `--alertmanager-url`, to Alertmanager
//! ([`super::alertmanager`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::alertmanager::AlertmanagerQueue;
use super::line_file::{FsyncPolicy, LineFile, LineOutput, LineSink, PENDING_BYTES, Stream};
use super::record::ConnectionRecord;
use super::windows::{Window, Windows};
use crate::policy::verdict::Verdict;
use crate::policy::{DfdRef, Judged, Placement};
use crate::telemetry::counters::{Counters, Sink};

/// Schema id written in every alert.
pub const SCHEMA: &str = "dfdwatch.alert.v1";

/// Distinct targets a scan summary lists; further ones are only counted.
const MAX_TARGETS: usize = 1024;

/// What the alert writer takes from the fan-out.
#[derive(Debug)]
pub enum AlertInput {
    /// A flow sighting, de-duplicated over its window.
    Candidate(AlertCandidate),
    /// An applied DFD change: written at once, never de-duplicated.
    DfdChange(std::sync::Arc<super::dfd_change_record::DfdChangeRecord>),
}

/// One flow sighting that calls for an alert, from the fan-out.
#[derive(Clone, Debug)]
pub struct AlertCandidate {
    /// Stable key of the flow (see [`flow_key`]).
    pub key: String,
    /// Key of its de-duplication window (see [`window_key`]).
    pub window: String,
    /// Where it went.
    pub target: Target,
    /// The event that raised it, as written to the events stream.
    pub event: Arc<ConnectionRecord>,
    /// Its verdict.
    pub verdict: Verdict,
    /// The DFD revision that judged it.
    pub dfd: Arc<DfdRef>,
}

/// How an alert names one end: its DFD node, else its zone and address, else its address.
fn end_label(p: &Placement, ip: std::net::IpAddr) -> String {
    match (&p.node, &p.zone) {
        (Some(node), _) => format!("node={node}"),
        (None, Some(zone)) => format!("zone={zone}/{ip}"),
        (None, None) => format!("ip={ip}"),
    }
}

/// A short stable hash of `canonical`.
fn digest(canonical: &str) -> String {
    Sha256::digest(canonical.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The stable key of a flow: who (DFD node, else zone and address, else address) talks to whom,
/// on which port, with which verdict. Source ports and pids are left out on purpose.
pub fn flow_key(j: &Judged) -> String {
    let conn = &j.flow.conn;
    digest(&format!(
        "{}|{}|{}|{}",
        end_label(&j.judgement.src, conn.src.ip()),
        end_label(&j.judgement.dst, conn.dst.ip()),
        conn.dst.port(),
        j.judgement.verdict.kind.as_str()
    ))
}

/// The key of a de-duplication window: who (the source end), which kind of violation, and into
/// which zone. A scan of many ports, or of many peers in one zone, shares one window.
pub fn window_key(j: &Judged) -> String {
    let conn = &j.flow.conn;
    digest(&format!(
        "window|{}|{}|{}",
        end_label(&j.judgement.src, conn.src.ip()),
        j.judgement.dst.zone.as_deref().unwrap_or("-"),
        j.judgement.verdict.kind.as_str()
    ))
}

/// Where an alerting connection went: the destination end and port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Target {
    /// The destination end, named as in [`flow_key`] (`node=`, `zone=.../addr`, `ip=`).
    pub peer: String,
    /// The destination port.
    pub port: u16,
}

/// The target of `j`.
pub fn target(j: &Judged) -> Target {
    let conn = &j.flow.conn;
    Target { peer: end_label(&j.judgement.dst, conn.dst.ip()), port: conn.dst.port() }
}

/// A candidate with its keys, as the fan-out builds it.
pub fn candidate(j: &Judged, event: Arc<ConnectionRecord>) -> AlertCandidate {
    AlertCandidate {
        key: flow_key(j),
        window: window_key(j),
        target: target(j),
        event,
        verdict: j.judgement.verdict.clone(),
        dfd: j.judgement.dfd.clone(),
    }
}

/// What a window of several targets saw, in its `scan` summary line.
#[derive(Clone, Debug, Serialize)]
pub struct ScanSummary {
    /// Each target with its occurrences in the window (the first included).
    pub targets: Vec<TargetCount>,
    /// The distinct ports, ascending.
    pub ports: Vec<u16>,
    /// The distinct peers, sorted.
    pub peers: Vec<String>,
    /// Occurrences at targets beyond the first 1,024, counted but not listed.
    pub targets_omitted: u64,
}

/// One target of a scan and how often it was hit.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCount {
    /// The destination end.
    pub peer: String,
    /// The destination port.
    pub port: u16,
    /// Occurrences.
    pub count: u64,
}

/// An open window's state: its last occurrence and its targets.
#[derive(Debug)]
pub struct Open {
    last: AlertCandidate,
    targets: BTreeMap<Target, u64>,
    omitted: u64,
}

impl Open {
    fn new(c: AlertCandidate) -> Self {
        let mut open = Self { targets: BTreeMap::new(), omitted: 0, last: c };
        open.hit(open.last.target.clone());
        open
    }

    fn hit(&mut self, target: Target) {
        if let Some(n) = self.targets.get_mut(&target) {
            *n += 1;
        } else if self.targets.len() < MAX_TARGETS {
            self.targets.insert(target, 1);
        } else {
            self.omitted += 1;
        }
    }

    fn scan(&self) -> Option<ScanSummary> {
        if self.targets.len() + usize::from(self.omitted > 0) < 2 {
            return None;
        }
        let targets: Vec<TargetCount> =
            self.targets.iter().map(|(t, n)| TargetCount { peer: t.peer.clone(), port: t.port, count: *n }).collect();
        let mut ports: Vec<u16> = self.targets.keys().map(|t| t.port).collect();
        ports.sort_unstable();
        ports.dedup();
        let mut peers: Vec<String> = self.targets.keys().map(|t| t.peer.clone()).collect();
        peers.dedup();
        Some(ScanSummary { targets, ports, peers, targets_omitted: self.omitted })
    }
}

/// Which line of a window an alert line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Occurrence {
    /// The first occurrence in a window.
    First,
    /// The summary of a window's repeats at one target, when it closes.
    Repeats,
    /// The summary of a window whose occurrences went to several targets (a scan), when it
    /// closes: its `scan` lists them.
    Scan,
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
    /// Occurrences this line stands for: 1 for `first`, the occurrences after the first for
    /// `repeats` and `scan`.
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
    /// For `scan`: the targets, ports and peers of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanSummary>,
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
    out: LineSink<()>,
    format: super::ocsf::Format,
    window: Duration,
    open: Windows<Open>,
    counters: Arc<Counters>,
    alertmanager: Option<AlertmanagerQueue>,
}

impl AlertWriter {
    /// A writer to `out`, holding at most `max_windows` open windows.
    pub fn new(out: Box<dyn LineOutput>, window: Duration, max_windows: usize, counters: Arc<Counters>) -> Self {
        Self {
            out: LineSink::new(out, PENDING_BYTES),
            format: super::ocsf::Format::Json,
            window,
            open: Windows::new(max_windows),
            counters,
            alertmanager: None,
        }
    }

    /// Alerts appended to the file (created 0600), or to stdout for `-`.
    pub fn open(
        file: &AlertFile,
        window: Duration,
        max_windows: usize,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        let out: Box<dyn LineOutput> = if file.path == Path::new("-") {
            Box::new(Stream(std::io::stdout()))
        } else {
            Box::new(LineFile::open(&file.path, file.max_bytes, file.keep, file.fsync)?)
        };
        Ok(Self::new(out, window, max_windows, counters))
    }

    /// Writes the alerts in `format` (dfdwatch's JSON by default, or OCSF).
    pub fn with_format(mut self, format: super::ocsf::Format) -> Self {
        self.format = format;
        self
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
    pub fn run(mut self, rx: Receiver<AlertInput>) {
        // At least once a second, so lines a full disk refused are tried again soon.
        let tick = (self.window / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match rx.recv_timeout(tick) {
                Ok(AlertInput::Candidate(c)) => self.offer(c, Instant::now()),
                Ok(AlertInput::DfdChange(record)) => match self.format {
                    super::ocsf::Format::Json => self.write_line(&*record),
                    super::ocsf::Format::Ocsf => self.write_line(&super::ocsf::dfd_change(&record)),
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.close_expired(Instant::now());
            self.flush();
        }
        while let Some((_, w)) = self.open.pop_oldest_if(|_| true) {
            self.close(w);
        }
        self.flush();
    }

    /// Takes one candidate seen at `now`.
    pub fn offer(&mut self, c: AlertCandidate, now: Instant) {
        // A window that has run out is closed first: a late sighting opens a new one, and a full
        // table is never relieved by evicting a window that had already expired.
        self.close_expired(now);
        if let Some(w) = self.open.get_mut(&c.window) {
            w.repeats += 1;
            w.last_seen.clone_from(&c.event.time);
            w.last.hit(c.target.clone());
            w.last.last = c;
            return;
        }
        if self.open.is_full()
            && let Some((_, w)) = self.open.pop_oldest_if(|_| true)
        {
            let n = self.counters.record_alert_window_evicted();
            if n.is_power_of_two() {
                tracing::warn!(total = n, "too many open alert windows (a scan?): the oldest closed early");
            }
            self.close(w);
        }
        let time = c.event.time.clone();
        self.write(&c, Occurrence::First, 1, (&time, &time), None);
        self.open.open(c.window.clone(), now, &time, Open::new(c));
    }

    /// Closes windows older than the window length, writing a summary for each that saw repeats.
    pub fn close_expired(&mut self, now: Instant) {
        while let Some((_, w)) = self.open.pop_expired(now, self.window) {
            self.close(w);
        }
    }

    fn close(&mut self, w: Window<Open>) {
        if w.repeats == 0 {
            return;
        }
        let scan = w.last.scan();
        let occurrence = if scan.is_some() { Occurrence::Scan } else { Occurrence::Repeats };
        self.write(&w.last.last, occurrence, w.repeats, (&w.first_seen, &w.last_seen), scan);
    }

    fn write(
        &mut self,
        c: &AlertCandidate,
        occurrence: Occurrence,
        count: u64,
        (first, last): (&str, &str),
        scan: Option<ScanSummary>,
    ) {
        let record = AlertRecord {
            schema: SCHEMA,
            time: last.to_owned(),
            // A scan is named by its window: it has no one flow.
            flow_key: if scan.is_some() { c.window.clone() } else { c.key.clone() },
            occurrence,
            count,
            first_seen: first.to_owned(),
            last_seen: last.to_owned(),
            window_seconds: self.window.as_secs(),
            dfd: c.dfd.clone(),
            verdict: c.verdict.clone(),
            event: c.event.clone(),
            scan,
        };
        if let Some(am) = &self.alertmanager {
            am.offer(&record, self.window);
        }
        match self.format {
            super::ocsf::Format::Json => self.write_line(&record),
            super::ocsf::Format::Ocsf => self.write_line(&super::ocsf::alert(&record)),
        }
    }

    /// Queues one alert line. Whole lines only reach the file; one counts as written once it is
    /// there.
    fn write_line(&mut self, record: &impl Serialize) {
        let queued = match serde_json::to_vec(record) {
            Ok(bytes) => self.out.push(&bytes, ()),
            Err(e) => return self.counters.report_write_error("serialising an alert", &e.into()),
        };
        if !queued {
            let n = self.counters.record_sink_dropped(Sink::Alerts);
            if n.is_power_of_two() {
                tracing::warn!(total = n, "alert output refuses lines and its buffer is full: alert dropped");
            }
        }
        if self.out.due() {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let counters = &self.counters;
        if let Err(e) = self.out.flush(|()| counters.record_alert_written()) {
            self.counters.report_write_error("writing alerts", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::fixture;
    use std::io::Write;

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

    fn lines(w: &mut AlertWriter, s: &Shared) -> Vec<serde_json::Value> {
        w.flush();
        let text = String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn writer(buf: &Shared, max_windows: usize) -> AlertWriter {
        AlertWriter::new(
            Box::new(Stream(buf.clone())),
            Duration::from_secs(10),
            max_windows,
            Arc::new(Counters::default()),
        )
    }

    #[test]
    fn repeats_inside_a_window_give_one_alert_and_one_count() {
        let buf = Shared::default();
        let mut w = writer(&buf, 100);
        let t0 = Instant::now();
        for n in 0..100 {
            w.offer(fixture::candidate(5432, n), t0);
        }
        w.close_expired(t0 + Duration::from_secs(5));
        assert_eq!(lines(&mut w, &buf).len(), 1, "one first line, nothing more inside the window");
        w.close_expired(t0 + Duration::from_secs(10));
        let out = lines(&mut w, &buf);
        assert_eq!(out.len(), 2);
        let summary = &out[1];
        assert_eq!(
            (summary["flow_key"].as_str(), summary["occurrence"].as_str(), summary["count"].as_u64()),
            (out[0]["flow_key"].as_str(), Some("repeats"), Some(99))
        );
        assert_eq!(summary["first_seen"], out[0]["first_seen"]);
        assert_eq!(summary["last_seen"], summary["event"]["time"], "the summary carries the last occurrence");
        assert_eq!(summary["verdict"]["kind"], "lateral_movement");
        assert_eq!(summary["event"]["dst"]["port"], 5432);
        assert!(summary.get("scan").is_none(), "one target: no scan");
        // A new occurrence after the window opens a new one.
        w.offer(fixture::candidate(5432, 200), t0 + Duration::from_secs(11));
        assert_eq!(lines(&mut w, &buf).len(), 3);
    }

    #[test]
    fn a_scan_of_eleven_ports_gives_one_alert_and_one_scan_summary() {
        let buf = Shared::default();
        let mut w = writer(&buf, 100);
        let t0 = Instant::now();
        let ports: Vec<u16> = vec![21, 22, 23, 25, 80, 443, 3306, 5432, 6379, 8080, 9200];
        for (n, port) in ports.iter().enumerate() {
            w.offer(fixture::candidate(*port, n as u64), t0);
        }
        w.offer(fixture::candidate(22, 99), t0);
        w.close_expired(t0 + Duration::from_secs(10));
        let out = lines(&mut w, &buf);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!((out[0]["occurrence"].as_str(), out[0]["event"]["dst"]["port"].as_u64()), (Some("first"), Some(21)));
        let scan = &out[1];
        assert_eq!((scan["occurrence"].as_str(), scan["count"].as_u64()), (Some("scan"), Some(11)));
        let listed: Vec<u64> = scan["scan"]["ports"].as_array().unwrap().iter().filter_map(|p| p.as_u64()).collect();
        assert_eq!(listed, ports.iter().map(|p| u64::from(*p)).collect::<Vec<_>>());
        assert_eq!(scan["scan"]["peers"], serde_json::json!(["node=db"]));
        let hits: u64 = scan["scan"]["targets"].as_array().unwrap().iter().filter_map(|t| t["count"].as_u64()).sum();
        assert_eq!(hits, 12, "every occurrence is in a target's count");
    }

    #[test]
    fn many_sources_keep_the_window_table_within_its_bound_and_count_evictions() {
        let buf = Shared::default();
        let mut w = writer(&buf, 100);
        let t0 = Instant::now();
        for source in 0..1000 {
            let from = format!("src-{source}");
            w.offer(fixture::candidate_from(&from, 5432, 0), t0);
            w.offer(fixture::candidate_from(&from, 5432, 1), t0);
            assert!(w.open_windows() <= 100, "bound held at source {source}");
            w.flush();
        }
        assert_eq!(w.counters.snapshot().alert_windows_evicted, 900);
        let out = lines(&mut w, &buf);
        let firsts = out.iter().filter(|l| l["occurrence"] == "first").count();
        let summaries = out.iter().filter(|l| l["occurrence"] == "repeats").count();
        assert_eq!((firsts, summaries), (1000, 900), "every evicted window wrote its summary, nothing lost");
    }
}
