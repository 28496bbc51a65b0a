//! Counters of the daemon's own pipeline (records read, decode errors, events written, write
//! errors, identity misses, alerts, sink queues, Alertmanager delivery), shared by the stages as
//! plain atomics and exported as metrics at scrape time. Every label is a closed enum here. This
//! module is a leaf: every stage may count, and it imports no stage. Kernel-side losses live in
//! the probes' per-CPU map (see [`super::kernel_stats`]).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Declares a closed label set: an enum, its `ALL` list and its label strings.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant,)+ }
        impl $name {
            /// Every value, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// The metric label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }
        }
    };
}

label_set!(
    /// Why a ring-buffer record could not be decoded.
    DecodeFailure {
        /// Wrong record length.
        Length => "length",
        /// Unknown event version.
        Version => "version",
        /// Unknown event kind tag.
        Kind => "kind",
        /// Unknown IP version.
        IpVersion => "ip_version",
    }
);

label_set!(
    /// Identity lookups that found nothing.
    IdentityMiss {
        /// The process was gone or its executable unreadable.
        Exe => "exe",
        /// The cgroup id matched no cgroup directory.
        Cgroup => "cgroup",
        /// Watching a cluster, the local end matched no pod (a host process, or a pod the watch
        /// has not delivered yet).
        Pod => "pod",
    }
);

label_set!(
    /// The sinks after the verdict, each behind its own queue.
    Sink {
        /// The events file or stdout.
        Events => "events",
        /// The alert writer (de-duplication, alert file, Alertmanager).
        Alerts => "alerts",
        /// The flow store's writer.
        Store => "store",
    }
);

label_set!(
    /// Signs that someone works against the monitor.
    Tampering {
        /// The probe's link was closed from outside the daemon.
        ProbeDetached => "probe_detached",
        /// A counter in the probes' stats map went backwards (the map was written from outside).
        KernelCounterReset => "kernel_counter_reset",
    }
);

label_set!(
    /// Why the daemon did not watch for a while.
    GapReason {
        /// It was not running (stopped, crashed, restarted).
        Restart => "restart",
        /// It ran but its probes reported nothing (see [`super::liveness`]).
        Blind => "blind",
    }
);

label_set!(
    /// The outcome of a DFD reload.
    ReloadResult {
        /// The new revision judges from now on.
        Applied => "applied",
        /// Refused; the running revision stays.
        Refused => "refused",
    }
);

label_set!(
    /// What became of alerts for Alertmanager.
    DeliveryResult {
        /// Alertmanager accepted them.
        Sent => "sent",
        /// Queue full, or retries exhausted.
        Dropped => "dropped",
    }
);

fn count<const N: usize>(slots: &[AtomicU64; N], i: usize, n: u64) -> u64 {
    slots.get(i).map_or(0, |c| c.fetch_add(n, Ordering::Relaxed) + n)
}

fn load<const N: usize>(slots: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| slots[i].load(Ordering::Relaxed))
}

/// Pipeline counters.
#[derive(Debug, Default)]
pub struct Counters {
    records_read: AtomicU64,
    decode_errors: [AtomicU64; 4],
    events_written: AtomicU64,
    write_errors: AtomicU64,
    identity_misses: [AtomicU64; 3],
    alerts_written: AtomicU64,
    alert_windows_evicted: AtomicU64,
    sink_waits: [AtomicU64; 3],
    sink_dropped: [AtomicU64; 3],
    pair_table_full: AtomicU64,
    flow_table_full: AtomicU64,
    flow_records: AtomicU64,
    flows_tracked: AtomicU64,
    flow_verdicts_withdrawn: AtomicU64,
    flow_verdicts_refused: AtomicU64,
    unreported: AtomicU64,
    heartbeats: AtomicU64,
    alertmanager_sent: AtomicU64,
    alertmanager_dropped: AtomicU64,
    alertmanager_post_errors: AtomicU64,
}

/// A point-in-time copy of [`Counters`], also logged at shutdown.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Records taken from the ring buffer.
    pub records_read: u64,
    /// Records dropped because they could not be decoded, all kinds.
    pub decode_errors: u64,
    /// Events written to the events sink.
    pub events_written: u64,
    /// Events or alerts that could not be written.
    pub write_errors: u64,
    /// Local ends whose executable could not be read (process gone).
    pub identity_exe_misses: u64,
    /// Local ends whose cgroup id matched no cgroup directory.
    pub identity_cgroup_misses: u64,
    /// Local ends that matched no pod while watching a cluster.
    pub identity_pod_misses: u64,
    /// Alert lines written.
    pub alerts_written: u64,
    /// De-duplication windows closed early because the open-window table was full.
    pub alert_windows_evicted: u64,
    /// Times the fan-out waited for the events queue.
    pub events_queue_waits: u64,
    /// Times the fan-out waited for the alerts queue.
    pub alerts_queue_waits: u64,
    /// Event lines dropped because the events sink was stalled.
    pub events_dropped: u64,
    /// Alert candidates dropped because the alert writer was stalled.
    pub alerts_dropped: u64,
    /// Times the fan-out waited for the flow store's queue.
    pub store_queue_waits: u64,
    /// Records dropped because the flow store's writer was stalled.
    pub store_queue_dropped: u64,
    /// Same-node connections that may be counted twice (pairing table full).
    pub pair_table_full: u64,
    /// Connections sent one by one because the flow table had no room for their key.
    pub flow_table_full: u64,
    /// Flow records (one per key and interval) handed to the events sink.
    pub flow_records: u64,
    /// Flow keys the daemon tracks now.
    pub flows_tracked: u64,
    /// Withdrawals of kernel flow verdicts: each DFD reload and identity change withdraws all at
    /// once, each retired idle flow its own.
    pub flow_verdicts_withdrawn: u64,
    /// Flow verdicts the kernel refused to keep (its map full): those flows' connections keep
    /// coming one by one.
    pub flow_verdicts_refused: u64,
    /// Connections of alerting flows counted but not recorded one by one (over the per-key rate
    /// limit, or the ring buffer was full).
    pub unreported: u64,
    /// Heartbeats that came through the probes (ring records that are not connections).
    pub heartbeats: u64,
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

    /// One decode error; returns the new total of its kind.
    pub fn record_decode_error(&self, why: DecodeFailure) -> u64 {
        count(&self.decode_errors, why as usize, 1)
    }

    /// One event written.
    pub fn record_written(&self) {
        self.events_written.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed write or flush of the sinks and logs it, at the 1st, 2nd, 4th, 8th, ...
    /// failure, so a broken disk cannot flood the log.
    pub fn report_write_error(&self, what: &str, error: &std::io::Error) {
        let n = self.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::error!(%error, total = n, "{what} failed");
        }
    }

    /// One identity lookup that found nothing.
    pub fn record_identity_miss(&self, kind: IdentityMiss) {
        count(&self.identity_misses, kind as usize, 1);
    }

    /// One alert line written.
    pub fn record_alert_written(&self) {
        self.alerts_written.fetch_add(1, Ordering::Relaxed);
    }

    /// One de-duplication window closed early (table full); returns the new total.
    pub fn record_alert_window_evicted(&self) -> u64 {
        self.alert_windows_evicted.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The fan-out found `sink`'s queue full and waited; returns the new total.
    pub fn record_sink_wait(&self, sink: Sink) -> u64 {
        count(&self.sink_waits, sink as usize, 1)
    }

    /// One item dropped because `sink` was stalled; returns the new total.
    pub fn record_sink_dropped(&self, sink: Sink) -> u64 {
        count(&self.sink_dropped, sink as usize, 1)
    }

    /// One same-node connection whose first sighting could not be remembered.
    pub fn record_pair_table_full(&self) {
        self.pair_table_full.fetch_add(1, Ordering::Relaxed);
    }

    /// One connection sent one by one because the flow table had no room; returns the new total.
    pub fn record_flow_table_full(&self) -> u64 {
        self.flow_table_full.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// One flow record handed to the events sink.
    pub fn record_flow_record(&self) {
        self.flow_records.fetch_add(1, Ordering::Relaxed);
    }

    /// The number of flow keys tracked now.
    pub fn set_flows_tracked(&self, n: u64) {
        self.flows_tracked.store(n, Ordering::Relaxed);
    }

    /// `n` withdrawals of kernel flow verdicts.
    pub fn record_verdicts_withdrawn(&self, n: u64) {
        self.flow_verdicts_withdrawn.fetch_add(n, Ordering::Relaxed);
    }

    /// One flow verdict the kernel refused; returns the new total.
    pub fn record_verdict_refused(&self) -> u64 {
        self.flow_verdicts_refused.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// One heartbeat came through the probes.
    pub fn record_heartbeat(&self) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` connections of alerting flows counted but not recorded one by one.
    pub fn record_unreported(&self, n: u64) {
        self.unreported.fetch_add(n, Ordering::Relaxed);
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

    /// Decode errors, in the order of [`DecodeFailure::ALL`].
    pub fn decode_errors(&self) -> [u64; 4] {
        load(&self.decode_errors)
    }

    /// Identity misses, in the order of [`IdentityMiss::ALL`].
    pub fn identity_misses(&self) -> [u64; 3] {
        load(&self.identity_misses)
    }

    /// Queue waits, in the order of [`Sink::ALL`].
    pub fn sink_waits(&self) -> [u64; 3] {
        load(&self.sink_waits)
    }

    /// Drops by stalled sinks, in the order of [`Sink::ALL`].
    pub fn sink_dropped(&self) -> [u64; 3] {
        load(&self.sink_dropped)
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let [identity_exe_misses, identity_cgroup_misses, identity_pod_misses] = self.identity_misses();
        let [events_queue_waits, alerts_queue_waits, store_queue_waits] = self.sink_waits();
        let [events_dropped, alerts_dropped, store_queue_dropped] = self.sink_dropped();
        CountersSnapshot {
            records_read: self.records_read.load(Ordering::Relaxed),
            decode_errors: self.decode_errors().iter().sum(),
            events_written: self.events_written.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            identity_exe_misses,
            identity_cgroup_misses,
            identity_pod_misses,
            alerts_written: self.alerts_written.load(Ordering::Relaxed),
            alert_windows_evicted: self.alert_windows_evicted.load(Ordering::Relaxed),
            events_queue_waits,
            alerts_queue_waits,
            events_dropped,
            alerts_dropped,
            store_queue_waits,
            store_queue_dropped,
            pair_table_full: self.pair_table_full.load(Ordering::Relaxed),
            flow_table_full: self.flow_table_full.load(Ordering::Relaxed),
            flow_records: self.flow_records.load(Ordering::Relaxed),
            flows_tracked: self.flows_tracked.load(Ordering::Relaxed),
            flow_verdicts_withdrawn: self.flow_verdicts_withdrawn.load(Ordering::Relaxed),
            flow_verdicts_refused: self.flow_verdicts_refused.load(Ordering::Relaxed),
            unreported: self.unreported.load(Ordering::Relaxed),
            heartbeats: self.heartbeats.load(Ordering::Relaxed),
            alertmanager_sent: self.alertmanager_sent.load(Ordering::Relaxed),
            alertmanager_dropped: self.alertmanager_dropped.load(Ordering::Relaxed),
            alertmanager_post_errors: self.alertmanager_post_errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_label_sets_index_their_slots() {
        let c = Counters::default();
        assert_eq!(DecodeFailure::ALL.len(), c.decode_errors().len());
        assert_eq!(IdentityMiss::ALL.len(), c.identity_misses().len());
        assert_eq!(Sink::ALL.len(), c.sink_waits().len());
        c.record_decode_error(DecodeFailure::IpVersion);
        c.record_identity_miss(IdentityMiss::Pod);
        c.record_sink_wait(Sink::Alerts);
        assert_eq!(c.decode_errors(), [0, 0, 0, 1]);
        assert_eq!(c.identity_misses(), [0, 0, 1]);
        assert_eq!(c.sink_waits(), [0, 1, 0]);
    }
}
