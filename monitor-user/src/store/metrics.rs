//! The flow store's own counters, kept as atomics by the writer and exported when scraped:
//! records by result, failures by kind (closed sets), the bytes the store takes and whether it
//! is writable now.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, Opts};

/// Records for the store, by result.
pub const RECORDS: &str = "dfdwatch_store_records_total";
/// Failures of the store, by kind.
pub const ERRORS: &str = "dfdwatch_store_errors_total";
/// Bytes the store takes on disk.
pub const BYTES: &str = "dfdwatch_store_bytes";
/// 1 while the store takes writes.
pub const UP: &str = "dfdwatch_store_up";

/// Records by what became of them.
pub const RESULTS: [&str; 3] = ["written", "dropped", "expired"];
/// Failures by kind ([`super::sqlite::StoreError::kind`]).
pub const FAILURES: [&str; 4] = ["corrupt", "full", "unwritable", "other"];

/// The store's counters.
#[derive(Debug, Default)]
pub struct StoreCounters {
    records: [AtomicU64; 3],
    failures: [AtomicU64; 4],
    bytes: AtomicI64,
    up: AtomicI64,
}

impl StoreCounters {
    /// Counts `n` records written.
    pub fn written(&self, n: u64) {
        self.records[0].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` records dropped; returns the new total.
    pub fn dropped(&self, n: u64) -> u64 {
        self.records[1].fetch_add(n, Ordering::Relaxed) + n
    }

    /// Counts `n` records removed by retention.
    pub fn expired(&self, n: u64) {
        self.records[2].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one failure of `kind` (one of [`FAILURES`]); returns the new total of that kind.
    pub fn failed(&self, kind: &str) -> u64 {
        let i = FAILURES.iter().position(|k| *k == kind).unwrap_or(FAILURES.len() - 1);
        self.failures[i].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sets the store's size on disk.
    pub fn set_bytes(&self, bytes: u64) {
        self.bytes.store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Says whether the store took the last write.
    pub fn set_up(&self, up: bool) {
        self.up.store(i64::from(up), Ordering::Relaxed);
    }

    /// Records by result, in [`RESULTS`] order.
    pub fn records(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.records[i].load(Ordering::Relaxed))
    }

    /// Failures by kind, in [`FAILURES`] order.
    pub fn failures(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.failures[i].load(Ordering::Relaxed))
    }
}

/// Exports [`StoreCounters`] when scraped.
pub struct StoreCollector {
    counters: Arc<StoreCounters>,
    records: IntCounterVec,
    failures: IntCounterVec,
    bytes: IntGauge,
    up: IntGauge,
}

impl StoreCollector {
    /// A collector for `counters`.
    pub fn new(counters: Arc<StoreCounters>) -> Result<Self, prometheus::Error> {
        let records = IntCounterVec::new(
            Opts::new(
                RECORDS,
                "Records for the flow store, by result: written, dropped (never stored: queue full or failures), expired (removed by retention).",
            ),
            &["result"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                ERRORS,
                "Failures of the flow store, by kind: corrupt (moved aside, a new store started), full, unwritable, other.",
            ),
            &["kind"],
        )?;
        for r in RESULTS {
            records.with_label_values(&[r]);
        }
        for k in FAILURES {
            failures.with_label_values(&[k]);
        }
        let bytes = IntGauge::new(BYTES, "Bytes the flow store takes on disk.")?;
        let up = IntGauge::new(UP, "1 while the flow store takes writes.")?;
        Ok(Self { counters, records, failures, bytes, up })
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.records.desc();
        d.extend(self.failures.desc());
        d.extend(self.bytes.desc());
        d.extend(self.up.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = &self.counters;
        for (r, v) in RESULTS.iter().zip(c.records()) {
            let m = self.records.with_label_values(&[r]);
            m.inc_by(v.saturating_sub(m.get()));
        }
        for (k, v) in FAILURES.iter().zip(c.failures()) {
            let m = self.failures.with_label_values(&[k]);
            m.inc_by(v.saturating_sub(m.get()));
        }
        self.bytes.set(c.bytes.load(Ordering::Relaxed));
        self.up.set(c.up.load(Ordering::Relaxed));
        let mut out = self.records.collect();
        out.extend(self.failures.collect());
        out.extend(self.bytes.collect());
        out.extend(self.up.collect());
        out
    }
}
