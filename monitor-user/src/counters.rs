//! Counters of the daemon's own pipeline (records read, decode errors by kind, events written,
//! write errors, identity misses, alerts written and delivered), shared by the stages and reported in the log. Kernel-side losses live in the
//! probes' per-CPU map (see [`crate::kernel_stats`]).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The closed set of decode error labels.
pub const DECODE_ERROR_LABELS: [&str; 4] = ["length", "version", "kind", "ip_version"];

/// Pipeline counters.
#[derive(Debug, Default)]
pub struct Counters {
    records_read: AtomicU64,
    decode_errors: [AtomicU64; DECODE_ERROR_LABELS.len()],
    events_written: AtomicU64,
    write_errors: AtomicU64,
    identity_misses: [AtomicU64; IDENTITY_MISS_LABELS.len()],
    alerts_written: AtomicU64,
    pair_table_full: AtomicU64,
    alertmanager_sent: AtomicU64,
    alertmanager_dropped: AtomicU64,
    alertmanager_post_errors: AtomicU64,
}

/// The closed set of identity miss labels: `exe` (the process was gone or unreadable),
/// `cgroup` (the cgroup id matched no directory) and `pod` (watching a cluster, the local end
/// matched no pod: a host process, or a pod the watch has not delivered yet).
pub const IDENTITY_MISS_LABELS: [&str; 3] = ["exe", "cgroup", "pod"];

/// A point-in-time copy of [`Counters`].
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Records taken from the ring buffer.
    pub records_read: u64,
    /// Records dropped because they could not be decoded, all kinds.
    pub decode_errors: u64,
    /// Events written to the events sink.
    pub events_written: u64,
    /// Events that could not be written.
    pub write_errors: u64,
    /// Local ends whose executable could not be read (process gone).
    pub identity_exe_misses: u64,
    /// Local ends whose cgroup id matched no cgroup directory.
    pub identity_cgroup_misses: u64,
    /// Local ends that matched no pod while watching a cluster.
    pub identity_pod_misses: u64,
    /// Alert lines written.
    pub alerts_written: u64,
    /// Same-node connections that may be counted twice (pairing table full).
    pub pair_table_full: u64,
    /// Alerts Alertmanager accepted.
    pub alertmanager_sent: u64,
    /// Alerts never delivered to Alertmanager (queue full, or retries exhausted).
    pub alertmanager_dropped: u64,
    /// Failed POSTs to Alertmanager (each retry counts).
    pub alertmanager_post_errors: u64,
}

impl Counters {
    /// One record read.
    pub fn record_read(&self) {
        self.records_read.fetch_add(1, Ordering::Relaxed);
    }

    /// One decode error of kind `label`; returns the new total of that kind.
    pub fn record_decode_error(&self, label: &str) -> u64 {
        let i = DECODE_ERROR_LABELS.iter().position(|l| *l == label).unwrap_or(0);
        self.decode_errors[i].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// One event written.
    pub fn record_written(&self) {
        self.events_written.fetch_add(1, Ordering::Relaxed);
    }

    /// One write error; returns the new total.
    fn record_write_error(&self) -> u64 {
        self.write_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a failed write or flush of the sinks and logs it, at the 1st, 2nd, 4th, 8th, ...
    /// failure, so a broken disk cannot flood the log.
    pub fn report_write_error(&self, what: &str, error: &std::io::Error) {
        let n = self.record_write_error();
        if n.is_power_of_two() {
            tracing::error!(%error, total = n, "{what} failed");
        }
    }

    /// One identity lookup that found nothing, of kind `label` (see [`IDENTITY_MISS_LABELS`]).
    pub fn record_identity_miss(&self, label: &str) {
        let i = IDENTITY_MISS_LABELS.iter().position(|l| *l == label).unwrap_or(0);
        self.identity_misses[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One alert line written.
    pub fn record_alert_written(&self) {
        self.alerts_written.fetch_add(1, Ordering::Relaxed);
    }

    /// One same-node connection whose first sighting could not be remembered.
    pub fn record_pair_table_full(&self) {
        self.pair_table_full.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` alerts accepted by Alertmanager.
    pub fn record_alertmanager_sent(&self, n: u64) {
        self.alertmanager_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` alerts that will never reach Alertmanager; returns the new total.
    pub fn record_alertmanager_dropped(&self, n: u64) -> u64 {
        self.alertmanager_dropped.fetch_add(n, Ordering::Relaxed) + n
    }

    /// One failed POST to Alertmanager; returns the new total.
    pub fn record_alertmanager_post_error(&self) -> u64 {
        self.alertmanager_post_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Decode errors by label, in the order of [`DECODE_ERROR_LABELS`].
    pub fn decode_errors_by_label(&self) -> [u64; DECODE_ERROR_LABELS.len()] {
        std::array::from_fn(|i| self.decode_errors[i].load(Ordering::Relaxed))
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            records_read: self.records_read.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
            events_written: self.events_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            identity_exe_misses: self.identity_misses[0].load(Ordering::Relaxed),
            identity_cgroup_misses: self.identity_misses[1].load(Ordering::Relaxed),
            identity_pod_misses: self.identity_misses[2].load(Ordering::Relaxed),
            alerts_written: self.alerts_written.load(Ordering::Relaxed),
            pair_table_full: self.pair_table_full.load(Ordering::Relaxed),
            alertmanager_sent: self.alertmanager_sent.load(Ordering::Relaxed),
            alertmanager_dropped: self.alertmanager_dropped.load(Ordering::Relaxed),
            alertmanager_post_errors: self.alertmanager_post_errors.load(Ordering::Relaxed),
        }
    }
}
