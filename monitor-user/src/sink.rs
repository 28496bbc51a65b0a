//! The event sink stage: writes each connection as one JSON line to stdout or an append-only
//! file, on its own thread (blocking I/O stays off the async runtime). Lines are flushed whenever
//! the queue runs empty, so a quiet stream is never held back in a buffer.

use std::{
    fs::OpenOptions,
    io::{BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::Arc,
};

use tokio::sync::mpsc;

use crate::{clock::WallClock, counters::Counters, event::ConnectionRecord, identity::Enriched, metrics::Metrics};

/// Writes connection events as JSON Lines.
pub struct EventWriter {
    out: Box<dyn Write + Send>,
    clock: WallClock,
    node: String,
    counters: Arc<Counters>,
    metrics: Option<Arc<Metrics>>,
    alerts: Option<std::sync::mpsc::SyncSender<crate::alerts::Candidate>>,
}

impl EventWriter {
    /// A writer to stdout.
    pub fn stdout(clock: WallClock, node: String, counters: Arc<Counters>) -> Self {
        Self { out: Box::new(BufWriter::new(std::io::stdout())), clock, node, counters, metrics: None, alerts: None }
    }

    /// A writer appending to `path` (created 0600 if missing).
    pub fn file(path: &Path, clock: WallClock, node: String, counters: Arc<Counters>) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(Self { out: Box::new(BufWriter::new(file)), clock, node, counters, metrics: None, alerts: None })
    }

    /// Also counts every written event in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Also hands every event whose verdict calls for an alert to the alert writer (blocking
    /// when its queue is full: backpressure, never a silent drop).
    pub fn with_alerts(mut self, alerts: std::sync::mpsc::SyncSender<crate::alerts::Candidate>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Writes events until the channel closes, then flushes. Runs on a blocking thread.
    pub fn run(mut self, mut rx: mpsc::Receiver<Enriched>) {
        while let Some(c) = rx.blocking_recv() {
            self.write(&c);
            while let Ok(c) = rx.try_recv() {
                self.write(&c);
            }
            self.flush();
        }
        self.flush();
    }

    fn write(&mut self, c: &Enriched) {
        let record = ConnectionRecord::new(c, &self.clock, &self.node);
        if let Some(alerts) = &self.alerts
            && c.verdict.as_ref().is_some_and(|v| v.alert)
            && !c.other_end_seen
        {
            let candidate = crate::alerts::Candidate {
                key: crate::alerts::flow_key(c),
                time: record.time.clone(),
                event: serde_json::to_value(&record).unwrap_or_default(),
                dfd: c.policy.as_ref().map(|p| p.revision.clone()).unwrap_or_default(),
            };
            if alerts.send(candidate).is_err() {
                tracing::error!("the alert writer stopped; alerts are no longer written");
                self.alerts = None;
            }
        }
        let result = serde_json::to_writer(&mut self.out, &record)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        match result {
            Ok(()) => {
                self.counters.record_written();
                if let Some(m) = &self.metrics {
                    let now = crate::clock::monotonic_ns();
                    m.observe(c, now.saturating_sub(c.conn.monotonic_ns) as f64 / 1e9);
                }
            }
            Err(e) => self.counters.report_write_error("writing an event", &e),
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.counters.report_write_error("flushing events", &e);
        }
    }
}
