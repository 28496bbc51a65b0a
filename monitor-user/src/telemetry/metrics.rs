//! Prometheus metrics: one registry built at start-up and passed down. Metric names are the
//! constants below; every label comes from a closed set (verdict kinds, severities, the DFD's own
//! zone ids, kernel counter names). Workload names, pids and addresses belong in events, never in
//! labels. Pipeline counters are read from [`Counters`] at scrape time.

use std::sync::Arc;

use prometheus::{
    CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::collector::PipelineCollector;
use super::counters::{Counters, GapReason, ReloadResult, Tampering};
use crate::policy::reload::ReloadObserver;
use crate::policy::verdict::{Severity, VerdictKind};
use crate::policy::{ApprovalExpiry, ApprovalState, Policy};
use crate::store::clickhouse::{ShipCollector, ShipCounters};
use crate::store::metrics::{StoreCollector, StoreCounters};

/// Flows judged, by verdict kind.
pub const FLOWS: &str = "dfdwatch_flows_total";
/// Flows that call for an alert, by source zone, destination zone and severity.
pub const VIOLATIONS: &str = "dfdwatch_violations_total";
/// The probes' per-CPU counters (losses and anomalies), by counter name.
pub const KERNEL: &str = "dfdwatch_kernel_stats_total";
/// Time from the kernel's state change to the event being written.
pub const LATENCY: &str = "dfdwatch_processing_latency_seconds";
/// The approved DFD in use (value 1), labelled with its name and content hash.
pub const DFD_INFO: &str = "dfdwatch_dfd_info";
/// Unix time the approved DFD was loaded.
pub const DFD_LOADED: &str = "dfdwatch_dfd_loaded_timestamp_seconds";

/// DFD reloads, by result (`applied`, `refused`).
pub const DFD_RELOADS: &str = "dfdwatch_dfd_reloads_total";
/// Approvals in the DFD in use that carry an expiry date, by state (`valid`, `expiring` within 14
/// days, `expired`), as of the last check (at load, then every minute).
pub const DFD_APPROVALS: &str = "dfdwatch_dfd_approvals";
/// Unix time each dated approval ends (the end of its `expires` day, UTC), by DFD flow id.
pub const DFD_APPROVAL_EXPIRY: &str = "dfdwatch_dfd_approval_expiry_timestamp_seconds";

/// Connections to the metrics endpoint closed unserved because `MAX_CONNECTIONS` were open.
pub const HTTP_REFUSED: &str = "dfdwatch_http_connections_refused_total";

/// 1 while no heartbeat has come through the probes for three intervals (the daemon is blind).
pub const BLIND: &str = "dfdwatch_blind";
/// Signs of tampering with the monitor, by what was found.
pub const TAMPERING: &str = "dfdwatch_tampering_detected_total";
/// Seconds the daemon did not watch, by reason (`restart`, `blind`).
pub const UNWATCHED: &str = "dfdwatch_unwatched_seconds_total";
/// Unix time each DFD flow was last seen approved on this node (or first watched for), by flow id.
pub const DFD_FLOW_LAST_SEEN: &str = "dfdwatch_dfd_flow_last_seen_timestamp_seconds";
/// Changes of applied DFD reloads, by severity (`low`, `medium`, `high`).
pub const DFD_CHANGES: &str = "dfdwatch_dfd_changes_total";
/// Times the probe was attached again after its link was found gone.
pub const REATTACHED: &str = "dfdwatch_probe_reattached_total";

/// One flow that calls for an alert, for `dfdwatch_violations_total`.
#[derive(Clone, Copy, Debug)]
pub struct Violation<'a> {
    /// The source's DFD zone id, if it is in one.
    pub src_zone: Option<&'a str>,
    /// The destination's DFD zone id, if it is in one.
    pub dst_zone: Option<&'a str>,
    /// The verdict's severity.
    pub severity: Severity,
}

/// Zone label for an end that is in no zone.
pub const NO_ZONE: &str = "none";

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    flows: IntCounterVec,
    violations: IntCounterVec,
    kernel: IntCounterVec,
    latency: Histogram,
    dfd_info: IntGaugeVec,
    dfd_loaded: IntGaugeVec,
    dfd_reloads: IntCounterVec,
    dfd_approvals: IntGaugeVec,
    dfd_approval_expiry: IntGaugeVec,
    http_refused: IntCounter,
    blind: IntGauge,
    tampering: IntCounterVec,
    reattached: IntCounter,
    unwatched: CounterVec,
    dfd_changes: IntCounterVec,
    flow_last_seen: IntGaugeVec,
    last_seen: super::last_seen::LastSeen,
    /// The DFD flows in use: the closed set of `flow` labels of the last-seen gauge.
    dfd_flows: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The dated approvals of the DFD in use, re-counted against the clock every minute.
    approvals: std::sync::Mutex<Vec<ApprovalExpiry>>,
    /// The flow store's counters (its writer counts, scrapes read).
    store: Arc<StoreCounters>,
    /// The ClickHouse shipper's counters.
    ship: Arc<ShipCounters>,
}

/// Why the metrics could not be set up (a programming error in names or labels).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Builds the registry; `counters` are exported at scrape time.
    pub fn new(counters: Arc<Counters>) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let flows =
            IntCounterVec::new(Opts::new(FLOWS, "Flows judged against the approved DFD, by verdict."), &["verdict"])?;
        let violations = IntCounterVec::new(
            Opts::new(VIOLATIONS, "Flows that call for an alert, by source zone, destination zone and severity."),
            &["src_zone", "dst_zone", "severity"],
        )?;
        let kernel = IntCounterVec::new(
            Opts::new(KERNEL, "The probes' counters: events lost in the kernel (lost_*) and anomalies."),
            &["stat"],
        )?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(LATENCY, "Seconds from the kernel's state change to the event being written.")
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0]),
        )?;
        let dfd_info = IntGaugeVec::new(Opts::new(DFD_INFO, "The approved DFD in use (1)."), &["name", "sha256"])?;
        let dfd_loaded = IntGaugeVec::new(Opts::new(DFD_LOADED, "Unix time the approved DFD was loaded."), &["name"])?;
        let dfd_reloads = IntCounterVec::new(
            Opts::new(
                DFD_RELOADS,
                "Reloads of the approved DFD (SIGHUP or file change), by result: applied, or refused (the running DFD stays).",
            ),
            &["result"],
        )?;
        let dfd_approvals = IntGaugeVec::new(
            Opts::new(
                DFD_APPROVALS,
                "Dated approvals in the DFD in use, by state: valid, expiring (within 14 days), expired.",
            ),
            &["state"],
        )?;
        let dfd_approval_expiry = IntGaugeVec::new(
            Opts::new(
                DFD_APPROVAL_EXPIRY,
                "Unix time each dated approval ends (end of its expires day, UTC), by DFD flow id.",
            ),
            &["flow"],
        )?;
        let http_refused = IntCounter::new(
            HTTP_REFUSED,
            "Connections to the metrics endpoint closed unserved because too many were open.",
        )?;
        let blind = IntGauge::new(BLIND, "1 while no heartbeat has come through the probes for three intervals.")?;
        let tampering = IntCounterVec::new(
            Opts::new(TAMPERING, "Signs of tampering with the monitor, by what was found."),
            &["what"],
        )?;
        for what in Tampering::ALL {
            tampering.with_label_values(&[what.as_str()]);
        }
        let reattached =
            IntCounter::new(REATTACHED, "Times the probe was attached again after its link was found gone.")?;
        let unwatched = CounterVec::new(
            Opts::new(UNWATCHED, "Seconds the daemon did not watch, by reason: restart (not running), blind."),
            &["reason"],
        )?;
        let dfd_changes = IntCounterVec::new(
            Opts::new(DFD_CHANGES, "Changes of applied DFD reloads, by how much they widen: low, medium, high."),
            &["severity"],
        )?;
        for severity in dfdwatch_dfd::diff::Severity::ALL {
            dfd_changes.with_label_values(&[severity.as_str()]);
        }
        let flow_last_seen = IntGaugeVec::new(
            Opts::new(
                DFD_FLOW_LAST_SEEN,
                "Unix time each DFD flow was last seen approved on this node (or first watched for), by flow id.",
            ),
            &["flow"],
        )?;
        for reason in GapReason::ALL {
            unwatched.with_label_values(&[reason.as_str()]);
        }
        for state in ApprovalState::ALL {
            dfd_approvals.with_label_values(&[state.as_str()]);
        }
        for result in ReloadResult::ALL {
            dfd_reloads.with_label_values(&[result.as_str()]);
        }
        for kind in VerdictKind::ALL {
            flows.with_label_values(&[kind.as_str()]);
        }
        for s in monitor_common::Stat::ALL {
            kernel.with_label_values(&[s.name()]);
        }
        kernel.with_label_values(&[crate::telemetry::kernel_stats::SKIPPED_RECURSION]);
        registry.register(Box::new(flows.clone()))?;
        registry.register(Box::new(violations.clone()))?;
        registry.register(Box::new(kernel.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(dfd_info.clone()))?;
        registry.register(Box::new(dfd_loaded.clone()))?;
        registry.register(Box::new(dfd_reloads.clone()))?;
        registry.register(Box::new(dfd_approvals.clone()))?;
        registry.register(Box::new(dfd_approval_expiry.clone()))?;
        registry.register(Box::new(http_refused.clone()))?;
        registry.register(Box::new(blind.clone()))?;
        registry.register(Box::new(tampering.clone()))?;
        registry.register(Box::new(reattached.clone()))?;
        registry.register(Box::new(unwatched.clone()))?;
        registry.register(Box::new(dfd_changes.clone()))?;
        registry.register(Box::new(flow_last_seen.clone()))?;
        registry.register(Box::new(PipelineCollector::new(counters)?))?;
        let store = Arc::new(StoreCounters::default());
        registry.register(Box::new(StoreCollector::new(store.clone())?))?;
        let ship = Arc::new(ShipCounters::default());
        registry.register(Box::new(ShipCollector::new(ship.clone())?))?;
        Ok(Self {
            registry,
            flows,
            violations,
            kernel,
            latency,
            dfd_info,
            dfd_loaded,
            dfd_reloads,
            dfd_approvals,
            dfd_approval_expiry,
            http_refused,
            blind,
            tampering,
            reattached,
            unwatched,
            dfd_changes,
            flow_last_seen,
            last_seen: super::last_seen::LastSeen::default(),
            dfd_flows: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            approvals: std::sync::Mutex::new(Vec::new()),
            store,
            ship,
        })
    }

    /// The ClickHouse shipper's counters.
    pub fn ship_counters(&self) -> Arc<ShipCounters> {
        self.ship.clone()
    }

    /// The flow store's counters, for its writer.
    pub fn store_counters(&self) -> Arc<StoreCounters> {
        self.store.clone()
    }

    /// Keeps the flows' last-seen times in `dir` (`--state-dir`) across restarts; call before
    /// the first [`Self::set_dfd`].
    pub fn keep_last_seen(&mut self, dir: Option<&std::path::Path>) {
        self.last_seen = super::last_seen::LastSeen::open(dir);
    }

    /// Writes the flows' last-seen times (every minute and at shutdown).
    pub fn save_last_seen(&self) {
        self.last_seen.save();
    }

    /// Records the DFD in use (at start-up and after each applied reload).
    pub fn set_dfd(&self, policy: &Policy) {
        let now = crate::policy::admission::unix_now();
        let flows = policy.compiled.dfd.flows.iter().map(|f| f.id.as_str());
        self.flow_last_seen.reset();
        for (flow, at) in self.last_seen.for_flows(flows, now) {
            self.flow_last_seen.with_label_values(&[flow.as_str()]).set(at);
        }
        if let Ok(mut ids) = self.dfd_flows.lock() {
            *ids = policy.compiled.dfd.flows.iter().map(|f| f.id.clone()).collect();
        }
        let r = &policy.revision;
        self.dfd_info.reset();
        self.dfd_info.with_label_values(&[r.name.as_str(), r.sha256.as_str()]).set(1);
        self.dfd_loaded.reset();
        self.dfd_loaded.with_label_values(&[r.name.as_str()]).set(policy.loaded_unix);
        self.dfd_approval_expiry.reset();
        for a in &policy.approvals {
            self.dfd_approval_expiry.with_label_values(&[a.flow.as_str()]).set(a.ends_unix());
        }
        if let Ok(mut approvals) = self.approvals.lock() {
            approvals.clone_from(&policy.approvals);
        }
        self.refresh_approval_states();
    }

    /// Re-counts the DFD's dated approvals by state against the clock (at load, then every
    /// minute), so an approval that expires while the daemon runs shows without a reload.
    pub fn refresh_approval_states(&self) {
        let now = crate::policy::admission::unix_now();
        let Ok(approvals) = self.approvals.lock() else { return };
        let mut counts = [0i64; 3];
        for a in approvals.iter() {
            let i = ApprovalState::ALL.iter().position(|s| *s == a.state(now)).unwrap_or(0);
            counts[i] += 1;
        }
        for (state, n) in ApprovalState::ALL.iter().zip(counts) {
            self.dfd_approvals.with_label_values(&[state.as_str()]).set(n);
        }
    }

    /// Counts one reload, applied or refused.
    pub fn record_reload(&self, result: ReloadResult) {
        self.dfd_reloads.with_label_values(&[result.as_str()]).inc();
    }

    /// Observes the time from the kernel's state change to the event being written.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Counts one judged connection (once per connection: the caller skips the second sighting
    /// of a same-node connection), and its violation if it calls for an alert. Zone labels are
    /// DFD zone ids (a closed set per DFD revision) or `none`.
    pub fn observe_verdict(
        &self,
        kind: VerdictKind,
        violation: Option<Violation<'_>>,
        approved_by: Option<&str>,
        connections: u64,
    ) {
        self.flows.with_label_values(&[kind.as_str()]).inc_by(connections);
        // Only ids of the DFD in use become labels (a closed set per revision).
        if let Some(flow) = approved_by
            && self.dfd_flows.lock().is_ok_and(|ids| ids.contains(flow))
        {
            let now = crate::policy::admission::unix_now();
            self.last_seen.seen(flow, now);
            self.flow_last_seen.with_label_values(&[flow]).set(now);
        }
        if let Some(v) = violation {
            let (src, dst) = (v.src_zone.unwrap_or(NO_ZONE), v.dst_zone.unwrap_or(NO_ZONE));
            self.violations.with_label_values(&[src, dst, v.severity.as_str()]).inc_by(connections);
        }
    }

    /// Counts one connection to the metrics endpoint closed unserved; returns the new total.
    pub fn record_http_refused(&self) -> u64 {
        self.http_refused.inc();
        self.http_refused.get()
    }

    /// Says whether the daemon is blind.
    pub fn set_blind(&self, blind: bool) {
        self.blind.set(i64::from(blind));
    }

    /// Counts one sign of tampering.
    pub fn record_tampering(&self, what: Tampering) {
        self.tampering.with_label_values(&[what.as_str()]).inc();
    }

    /// Adds a time the daemon did not watch.
    pub fn add_unwatched(&self, reason: GapReason, seconds: f64) {
        self.unwatched.with_label_values(&[reason.as_str()]).inc_by(seconds.max(0.0));
    }

    /// Counts one change of an applied DFD reload.
    pub fn record_dfd_change(&self, severity: dfdwatch_dfd::diff::Severity) {
        self.dfd_changes.with_label_values(&[severity.as_str()]).inc();
    }

    /// Counts one re-attach of the probe.
    pub fn record_reattached(&self) {
        self.reattached.inc();
    }

    /// Adds growth of a kernel counter.
    pub fn add_kernel(&self, counter: &'static str, delta: u64) {
        self.kernel.with_label_values(&[counter]).inc_by(delta);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl ReloadObserver for Metrics {
    fn applied(&self, policy: &Policy) {
        self.set_dfd(policy);
        self.record_reload(ReloadResult::Applied);
    }

    fn refused(&self) {
        self.record_reload(ReloadResult::Refused);
    }
}
