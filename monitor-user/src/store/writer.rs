//! The store writer, on its own thread: takes records from the fan-out's queue, sums each flow's
//! records into one row a minute ([`super::minutes`]), keeps the rows in a bounded batch, and
//! writes the batch once a second (or at 2,000 rows) in one transaction; trims the store every
//! minute. Every row also goes to the cluster store's queue, when there is one. Failures never reach the pipeline:
//! - a damaged store (or one of another schema) is moved aside as `PATH.damaged-UNIXTIME`, kept
//!   for forensics, and a new one is started at once, so nothing more is lost;
//! - a full or unwritable store keeps the batch in memory, up to 100,000 rows, and tries again
//!   every 5 seconds; what does not fit is dropped, counted in
//!   `dfdwatch_store_records_total{result="dropped"}`.
//!
//! Every failure is logged (the first of a kind, then at each power of two) and counted in
//! `dfdwatch_store_errors_total{kind}`; `dfdwatch_store_up` says whether writes go through.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::clickhouse::ShipQueue;
use super::metrics::StoreCounters;
use super::minutes::Minutes;
use super::row::Row;
use super::sqlite::{SqliteStore, StoreError, move_aside};
use super::{StoreInput, StoreOptions};
use crate::escape::escape_bytes;

/// Rows written in one transaction, at most.
const BATCH: usize = 2_000;
/// A batch is written at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Rows kept in memory while the store refuses them.
const MAX_PENDING: usize = 100_000;
/// How long a refusing store is left alone before it is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// How often the store is trimmed by age and size.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// The store writer.
pub struct StoreWriter {
    /// The local store, unless --no-store.
    options: Option<StoreOptions>,
    /// The cluster store's queue, with --clickhouse-url.
    cluster: Option<ShipQueue>,
    store: Option<SqliteStore>,
    minutes: Minutes,
    pending: Vec<Row>,
    max_pending: usize,
    counters: Arc<StoreCounters>,
    retry_at: Instant,
    trim_at: Instant,
    flushed_at: Instant,
}

impl StoreWriter {
    /// A writer for the local store `options` names (none: rows only go to the cluster store);
    /// it opens the store on its own thread.
    pub fn new(options: Option<StoreOptions>, counters: Arc<StoreCounters>) -> Self {
        let now = Instant::now();
        Self {
            options,
            cluster: None,
            store: None,
            minutes: Minutes::default(),
            pending: Vec::new(),
            max_pending: MAX_PENDING,
            counters,
            retry_at: now,
            trim_at: now,
            flushed_at: now,
        }
    }

    /// Also offers every row to the cluster store's queue.
    pub fn with_cluster(mut self, queue: ShipQueue) -> Self {
        self.cluster = Some(queue);
        self
    }

    /// Runs until the fan-out closes the queue, then writes what is left and trims once more.
    pub fn run(mut self, rx: Receiver<StoreInput>) {
        self.open();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(input) => self.take(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while self.pending.len() < BATCH {
                let Ok(input) = rx.try_recv() else { break };
                self.take(input);
            }
            let now = Instant::now();
            if self.minutes.due(now) {
                self.close_minute(now);
            }
            if self.pending.len() >= BATCH || now.duration_since(self.flushed_at) >= FLUSH_EVERY {
                self.flush(now);
            }
            if now >= self.trim_at {
                self.trim(now);
            }
        }
        let now = Instant::now();
        self.close_minute(now);
        self.retry_at = now;
        self.flush(now);
        self.trim(now);
    }

    fn take(&mut self, input: StoreInput) {
        match input {
            StoreInput::Flow { record, first_ns, last_ns } => {
                if let Some(rows) = self.minutes.add(Row::flow(&record, first_ns, last_ns)) {
                    rows.into_iter().for_each(|r| self.keep(r));
                }
            }
            StoreInput::Connection { record, time_ns, flow_key } => {
                self.keep(Row::connection(&record, time_ns, flow_key.as_deref()));
            }
        }
    }

    /// Closes the minute of summed flow records.
    fn close_minute(&mut self, now: Instant) {
        for row in self.minutes.close(now) {
            self.keep(row);
        }
    }

    /// Hands one row to the cluster store and the local store's batch.
    fn keep(&mut self, row: Row) {
        if let Some(cluster) = &self.cluster {
            cluster.offer(row.clone());
        }
        if self.options.is_none() {
            return;
        }
        if self.pending.len() >= self.max_pending {
            let n = self.counters.dropped(1);
            if n.is_power_of_two() {
                tracing::warn!(total = n, "the flow store refuses writes and its batch is full: record dropped");
            }
            return;
        }
        self.pending.push(row);
    }

    /// Opens (or creates) the store; a damaged one is moved aside and a new one started.
    fn open(&mut self) -> bool {
        if self.store.is_some() {
            return true;
        }
        let Some(path) = self.options.as_ref().map(|o| o.path.clone()) else { return false };
        for attempt in 0..2 {
            match SqliteStore::open(&path) {
                Ok(store) => {
                    if attempt == 0 {
                        tracing::info!(path = %shown(&path), "flow store open");
                    }
                    self.store = Some(store);
                    self.counters.set_up(true);
                    return true;
                }
                Err(e @ (StoreError::Corrupt { .. } | StoreError::Version { .. })) if attempt == 0 => {
                    self.failed(&e);
                    self.set_aside();
                }
                Err(e) => {
                    self.failed(&e);
                    break;
                }
            }
        }
        self.retry_at = Instant::now() + RETRY_EVERY;
        false
    }

    /// Moves a damaged store aside, keeping it.
    fn set_aside(&mut self) {
        self.store = None;
        let Some(options) = &self.options else { return };
        match move_aside(&options.path) {
            Ok(aside) => tracing::error!(
                kept = %shown(&aside),
                "the flow store is damaged: kept aside, a new one is started"
            ),
            Err(e) => tracing::error!(error = %e, "the flow store is damaged and cannot be moved aside"),
        }
    }

    fn failed(&self, e: &StoreError) {
        self.counters.set_up(false);
        let n = self.counters.failed(e.kind());
        if n.is_power_of_two() {
            tracing::error!(error = %e, kind = e.kind(), total = n, "flow store failure; the daemon goes on without it");
        }
    }

    fn flush(&mut self, now: Instant) {
        self.flushed_at = now;
        if self.pending.is_empty() || now < self.retry_at || !self.open() {
            return;
        }
        let Some(store) = &mut self.store else { return };
        match store.insert(&self.pending) {
            Ok(()) => {
                self.counters.written(self.pending.len() as u64);
                self.counters.set_up(true);
                self.pending.clear();
            }
            Err(e) => {
                self.failed(&e);
                if matches!(e, StoreError::Corrupt { .. }) {
                    // A new store takes the batch at once.
                    self.set_aside();
                    self.retry_at = now;
                    if self.open() {
                        self.flush(now);
                    }
                } else {
                    self.retry_at = now + RETRY_EVERY;
                }
            }
        }
    }

    fn trim(&mut self, now: Instant) {
        self.trim_at = now + TRIM_EVERY;
        let (Some(store), Some(options)) = (&mut self.store, &self.options) else { return };
        let before = unix_ns().saturating_sub(i64::try_from(options.retention.as_nanos()).unwrap_or(i64::MAX));
        let trimmed = store.trim(before, options.max_bytes);
        if let Ok(bytes) = store.bytes() {
            self.counters.set_bytes(bytes);
        }
        match trimmed {
            Ok(n) => {
                self.counters.expired(n);
                if n > 0 {
                    tracing::debug!(rows = n, "flow store trimmed");
                }
            }
            Err(e) => self.failed(&e),
        }
    }
}

/// Now, in Unix nanoseconds.
pub fn unix_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn shown(path: &std::path::Path) -> String {
    escape_bytes(path.as_os_str().as_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;
    use crate::clock::WallClock;
    use crate::sinks::fixture;
    use crate::sinks::record::ConnectionRecord;
    use crate::store::query::Query;
    use crate::store::sqlite::tests::Scratch;

    fn connection(time_ns: i64) -> StoreInput {
        let j = fixture::judged(80, 1);
        let record = Arc::new(ConnectionRecord::new(&j.flow, Some(&j.judgement), &WallClock::new(), "n1"));
        StoreInput::Connection { record, time_ns, flow_key: Some("0123456789abcdef".into()) }
    }

    fn run(writer: StoreWriter, inputs: Vec<StoreInput>) {
        let (tx, rx) = sync_channel(16);
        let thread = std::thread::spawn(move || writer.run(rx));
        for input in inputs {
            tx.send(input).unwrap();
        }
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn records_are_stored_and_the_expired_ones_trimmed_at_the_end() {
        let dir = Scratch::new("writer");
        let path = dir.0.join("flows.db");
        let counters = Arc::new(StoreCounters::default());
        let options = StoreOptions { path: path.clone(), retention: Duration::from_secs(3600), max_bytes: 1 << 30 };
        let now = unix_ns();
        let old = now - 2 * 3_600_000_000_000;
        run(
            StoreWriter::new(Some(options), counters.clone()),
            vec![connection(old), connection(now), connection(now + 1)],
        );
        assert_eq!(counters.records(), [3, 0, 1], "written, dropped, expired");
        let store = SqliteStore::open_read_only(&path).unwrap();
        let rows = store.select(&Query { from_ns: 0, to_ns: i64::MAX, limit: 10, ..Query::default() }).unwrap();
        assert_eq!(rows.iter().map(|r| r.time_ns).collect::<Vec<_>>(), [now, now + 1]);
        assert_eq!(
            (rows[0].flow_key.as_str(), rows[0].raises_alert, rows[0].verdict.as_str()),
            ("0123456789abcdef", 1, "lateral_movement")
        );
    }

    #[test]
    fn an_unwritable_store_keeps_a_bounded_batch_and_counts_the_rest() {
        let dir = Scratch::new("unwritable");
        std::fs::create_dir_all(&dir.0).unwrap();
        // Its directory is a file: the store can never be created.
        std::fs::write(dir.0.join("not-a-dir"), b"").unwrap();
        let counters = Arc::new(StoreCounters::default());
        let options = StoreOptions {
            path: dir.0.join("not-a-dir/flows.db"),
            retention: Duration::from_secs(60),
            max_bytes: 1 << 20,
        };
        let mut writer = StoreWriter::new(Some(options), counters.clone());
        writer.max_pending = 5;
        run(writer, (0..8).map(|i| connection(unix_ns() + i)).collect());
        assert_eq!(counters.records()[1], 3, "what the batch cannot hold is dropped and counted");
        assert!(counters.failures()[2] >= 1, "counted as unwritable: {:?}", counters.failures());
    }
}
