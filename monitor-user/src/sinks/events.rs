//! The events sink: writes each connection and flow record as one JSON line to stdout or an
//! append-only file, on its own thread (blocking I/O stays off the async runtime). Lines are
//! written whenever the queue runs empty, so a quiet stream is never held back in a buffer. Only
//! whole lines reach the file ([`super::line_file`]); a line counts as written once it is there.
//! A failed write is counted and logged, and the lines wait (bounded) to be tried again; it never
//! stops the other sinks (metrics are recorded before this queue).

use std::{
    path::Path,
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use super::flow_record::FlowRecord;
use super::gap_record::GapRecord;
use super::line_file::{FsyncPolicy, LineFile, LineOutput, LineSink, PENDING_BYTES, Stream};
use super::record::ConnectionRecord;
use crate::telemetry::counters::{Counters, Sink};
use crate::telemetry::metrics::Metrics;

/// How often lines the output refused are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A record for the events sink.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum EventRecord {
    /// A connection recorded one by one (shared with the alert writer).
    Connection(Arc<ConnectionRecord>),
    /// A flow's interval.
    Flow(Arc<FlowRecord>),
    /// A time the daemon did not watch.
    Gap(Box<GapRecord>),
    /// An applied change of the approved DFD (shared with the alert writer).
    DfdChange(Arc<super::dfd_change_record::DfdChangeRecord>),
}

impl EventRecord {
    /// The record as an OCSF event.
    pub fn ocsf(&self) -> serde_json::Value {
        match self {
            EventRecord::Connection(r) => super::ocsf::connection(r),
            EventRecord::Flow(r) => super::ocsf::flow(r),
            EventRecord::Gap(r) => super::ocsf::gap(r),
            EventRecord::DfdChange(r) => super::ocsf::dfd_change(r),
        }
    }
}

/// One line for the events sink: the record, and for a connection when the kernel saw it (for
/// the detection latency).
#[derive(Debug)]
pub struct EventLine {
    /// The record.
    pub record: EventRecord,
    /// CLOCK_MONOTONIC nanoseconds of the kernel's state change, for a connection.
    pub monotonic_ns: Option<u64>,
}

/// Writes connection events as JSON Lines.
pub struct EventWriter {
    out: LineSink<Option<u64>>,
    format: super::ocsf::Format,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
}

impl EventWriter {
    /// A writer to `out`.
    pub fn new(out: Box<dyn LineOutput>, counters: Arc<Counters>, metrics: Arc<Metrics>) -> Self {
        Self { out: LineSink::new(out, PENDING_BYTES), format: super::ocsf::Format::Json, counters, metrics }
    }

    /// Writes the records in `format` (dfdwatch's JSON by default, or OCSF).
    pub fn with_format(mut self, format: super::ocsf::Format) -> Self {
        self.format = format;
        self
    }

    /// A writer to stdout.
    pub fn stdout(counters: Arc<Counters>, metrics: Arc<Metrics>) -> Self {
        Self::new(Box::new(Stream(std::io::stdout())), counters, metrics)
    }

    /// A writer appending to `path` (created 0600 if missing; a symbolic link is refused).
    pub fn file(path: &Path, counters: Arc<Counters>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let file = LineFile::open(path, 0, 0, FsyncPolicy::Never)?;
        Ok(Self::new(Box::new(file), counters, metrics))
    }

    /// Writes events until the queue closes, then flushes. Runs on its own thread. While the
    /// output refuses lines, they are retried every second.
    pub fn run(mut self, rx: Receiver<EventLine>) {
        loop {
            let first = if self.out.pending_lines() == 0 {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(RETRY_EVERY)
            };
            match first {
                Ok(line) => self.push(&line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(line) = rx.try_recv() {
                self.push(&line);
            }
            self.flush();
        }
        self.flush();
    }

    fn push(&mut self, line: &EventLine) {
        let bytes = match self.format {
            super::ocsf::Format::Json => serde_json::to_vec(&line.record),
            super::ocsf::Format::Ocsf => serde_json::to_vec(&line.record.ocsf()),
        };
        let queued = match bytes {
            Ok(bytes) => self.out.push(&bytes, line.monotonic_ns),
            Err(e) => {
                self.counters.report_write_error("serialising an event", &e.into());
                return;
            }
        };
        if !queued {
            let n = self.counters.record_sink_dropped(Sink::Events);
            if n.is_power_of_two() {
                tracing::warn!(total = n, "events output refuses lines and its buffer is full: line dropped");
            }
        }
        if self.out.due() {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let (counters, metrics) = (&self.counters, &self.metrics);
        let result = self.out.flush(|seen| {
            counters.record_written();
            if let Some(seen) = seen {
                let now = crate::clock::monotonic_ns();
                metrics.observe_latency(now.saturating_sub(seen) as f64 / 1e9);
            }
        });
        if let Err(e) = result {
            self.counters.report_write_error("writing events", &e);
        }
    }
}
