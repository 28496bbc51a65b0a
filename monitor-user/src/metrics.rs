//! Prometheus metrics: one registry built at start-up and passed down. Metric names are the
//! constants below; every label comes from a closed set (verdict kinds, severities, the DFD's own
//! zone ids, kernel counter names). Workload names, pids and addresses belong in events, never in
//! labels. Pipeline counters are read from [`Counters`] at scrape time.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::counters::{Counters, DECODE_ERROR_LABELS};
use crate::identity::Enriched;
use crate::policy::Policy;
use crate::policy::verdict::VerdictKind;

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
        for result in ["applied", "refused"] {
            dfd_reloads.with_label_values(&[result]);
        }
        for kind in VerdictKind::ALL {
            flows.with_label_values(&[kind.as_str()]);
        }
        for s in monitor_common::Stat::ALL {
            kernel.with_label_values(&[s.name()]);
        }
        kernel.with_label_values(&[crate::kernel_stats::SKIPPED_RECURSION]);
        registry.register(Box::new(flows.clone()))?;
        registry.register(Box::new(violations.clone()))?;
        registry.register(Box::new(kernel.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(dfd_info.clone()))?;
        registry.register(Box::new(dfd_loaded.clone()))?;
        registry.register(Box::new(dfd_reloads.clone()))?;
        registry.register(Box::new(PipelineCollector::new(counters)?))?;
        Ok(Self { registry, flows, violations, kernel, latency, dfd_info, dfd_loaded, dfd_reloads })
    }

    /// Records the DFD in use (at start-up and after each applied reload).
    pub fn set_dfd(&self, policy: &Policy) {
        let r = &policy.revision;
        self.dfd_info.reset();
        self.dfd_info.with_label_values(&[r.name.as_str(), r.sha256.as_str()]).set(1);
        self.dfd_loaded.reset();
        self.dfd_loaded.with_label_values(&[r.name.as_str()]).set(policy.loaded_unix);
    }

    /// Counts one reload, applied or refused.
    pub fn record_reload(&self, applied: bool) {
        self.dfd_reloads.with_label_values(&[if applied { "applied" } else { "refused" }]).inc();
    }

    /// Counts one written event: its latency and, unless its connection was already counted from
    /// its other end, its verdict and violation. Zone labels come from the judging policy's zones.
    pub fn observe(&self, e: &Enriched, latency_seconds: f64) {
        self.latency.observe(latency_seconds);
        let (Some(v), Some(policy)) = (&e.verdict, &e.policy) else {
            return;
        };
        if e.other_end_seen {
            return;
        }
        self.flows.with_label_values(&[v.kind.as_str()]).inc();
        if v.alert {
            let zone = |p: &Option<crate::policy::Placement>| {
                p.as_ref()
                    .and_then(|p| p.zone.as_deref())
                    .filter(|z| policy.zones.iter().any(|known| known == z))
                    .unwrap_or(NO_ZONE)
                    .to_owned()
            };
            let (src, dst) = (zone(&e.src_dfd), zone(&e.dst_dfd));
            self.violations.with_label_values(&[src.as_str(), dst.as_str(), v.severity.as_str()]).inc();
        }
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

/// Exports the pipeline [`Counters`] as Prometheus counters when scraped.
struct PipelineCollector {
    counters: Arc<Counters>,
    records: IntCounter,
    written: IntCounter,
    write_errors: IntCounter,
    alerts: IntCounter,
    decode_errors: IntCounterVec,
    identity_misses: IntCounterVec,
    pair_table_full: IntCounter,
    alertmanager: IntCounterVec,
    alertmanager_errors: IntCounter,
}

impl PipelineCollector {
    fn new(counters: Arc<Counters>) -> Result<Self, prometheus::Error> {
        Ok(Self {
            counters,
            records: IntCounter::new("dfdwatch_records_read_total", "Records taken from the kernel ring buffer.")?,
            written: IntCounter::new("dfdwatch_events_written_total", "Events written to the events sink.")?,
            write_errors: IntCounter::new(
                "dfdwatch_write_errors_total",
                "Events or alerts that could not be written.",
            )?,
            alerts: IntCounter::new(
                "dfdwatch_alerts_written_total",
                "Alert lines written (first occurrences and repeat summaries).",
            )?,
            decode_errors: IntCounterVec::new(
                Opts::new(
                    "dfdwatch_decode_errors_total",
                    "Records dropped because they could not be decoded, by reason.",
                ),
                &["reason"],
            )?,
            identity_misses: IntCounterVec::new(
                Opts::new("dfdwatch_identity_misses_total", "Identity lookups that found nothing, by kind."),
                &["kind"],
            )?,
            alertmanager: IntCounterVec::new(
                Opts::new(
                    "dfdwatch_alertmanager_alerts_total",
                    "Alerts for Alertmanager, by result: sent (accepted), dropped (queue full or retries exhausted).",
                ),
                &["result"],
            )?,
            alertmanager_errors: IntCounter::new(
                "dfdwatch_alertmanager_post_errors_total",
                "Failed POSTs to Alertmanager's API (each retry counts).",
            )?,
            pair_table_full: IntCounter::new(
                "dfdwatch_pair_table_full_total",
                "Same-node connections that may be counted twice because the table pairing their two ends was full.",
            )?,
        })
    }
}

impl Collector for PipelineCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = Vec::new();
        d.extend(self.records.desc());
        d.extend(self.written.desc());
        d.extend(self.write_errors.desc());
        d.extend(self.alerts.desc());
        d.extend(self.decode_errors.desc());
        d.extend(self.identity_misses.desc());
        d.extend(self.pair_table_full.desc());
        d.extend(self.alertmanager.desc());
        d.extend(self.alertmanager_errors.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.counters.snapshot();
        let set = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        set(&self.records, s.records_read);
        set(&self.written, s.events_written);
        set(&self.write_errors, s.write_errors);
        set(&self.alerts, s.alerts_written);
        for (label, v) in DECODE_ERROR_LABELS.iter().zip(self.counters.decode_errors_by_label()) {
            set(&self.decode_errors.with_label_values(&[label]), v);
        }
        set(&self.identity_misses.with_label_values(&["exe"]), s.identity_exe_misses);
        set(&self.identity_misses.with_label_values(&["cgroup"]), s.identity_cgroup_misses);
        set(&self.identity_misses.with_label_values(&["pod"]), s.identity_pod_misses);
        set(&self.pair_table_full, s.pair_table_full);
        set(&self.alertmanager.with_label_values(&["sent"]), s.alertmanager_sent);
        set(&self.alertmanager.with_label_values(&["dropped"]), s.alertmanager_dropped);
        set(&self.alertmanager_errors, s.alertmanager_post_errors);
        let mut out = Vec::new();
        out.extend(self.records.collect());
        out.extend(self.written.collect());
        out.extend(self.write_errors.collect());
        out.extend(self.alerts.collect());
        out.extend(self.decode_errors.collect());
        out.extend(self.identity_misses.collect());
        out.extend(self.pair_table_full.collect());
        out.extend(self.alertmanager.collect());
        out.extend(self.alertmanager_errors.collect());
        out
    }
}
