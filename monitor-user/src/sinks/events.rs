//! The events sink: writes each connection and flow record as one JSON line to stdout or an append-only
//! file, on its own thread (blocking I/O stays off the async runtime). Lines are flushed whenever
//! the queue runs empty, so a quiet stream is never held back in a buffer. A failed write is
//! counted and logged; it never stops the other sinks (metrics are recorded before this queue).

use std::{
    io::{BufWriter, Write},
    path::Path,
    sync::{Arc, mpsc::Receiver},
};

use super::flow_record::FlowRecord;
use super::record::ConnectionRecord;
use crate::telemetry::counters::Counters;
use crate::telemetry::metrics::Metrics;

/// A record for the events sink.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum EventRecord {
    /// A connection recorded one by one (shared with the alert writer).
    Connection(Arc<ConnectionRecord>),
    /// A flow's interval.
    Flow(Box<FlowRecord>),
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
    out: Box<dyn Write + Send>,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
}

impl EventWriter {
    /// A writer to `out`.
    pub fn new(out: Box<dyn Write + Send>, counters: Arc<Counters>, metrics: Arc<Metrics>) -> Self {
        Self { out, counters, metrics }
    }

    /// A writer to stdout.
    pub fn stdout(counters: Arc<Counters>, metrics: Arc<Metrics>) -> Self {
        Self::new(Box::new(BufWriter::new(std::io::stdout())), counters, metrics)
    }

    /// A writer appending to `path` (created 0600 if missing; a symbolic link is refused).
    pub fn file(path: &Path, counters: Arc<Counters>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let file = super::rotate::open_for_append(path)?;
        Ok(Self::new(Box::new(BufWriter::new(file)), counters, metrics))
    }

    /// Writes events until the queue closes, then flushes. Runs on its own thread.
    pub fn run(mut self, rx: Receiver<EventLine>) {
        while let Ok(line) = rx.recv() {
            self.write(&line);
            while let Ok(line) = rx.try_recv() {
                self.write(&line);
            }
            self.flush();
        }
        self.flush();
    }

    fn write(&mut self, line: &EventLine) {
        // The whole line is serialised first and handed over in one write, so a failing disk
        // never leaves half a line in the buffer to be glued to the next one.
        let result = serde_json::to_vec(&line.record).map_err(std::io::Error::from).and_then(|mut bytes| {
            bytes.push(b'\n');
            self.out.write_all(&bytes)
        });
        match result {
            Ok(()) => {
                self.counters.record_written();
                if let Some(seen) = line.monotonic_ns {
                    let now = crate::clock::monotonic_ns();
                    self.metrics.observe_latency(now.saturating_sub(seen) as f64 / 1e9);
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
