//! Exports the pipeline [`Counters`] as Prometheus counters when scraped: each counter is read
//! from its atomic at scrape time, labelled from the closed sets in [`super::counters`].

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::counters::{Counters, DecodeFailure, DeliveryResult, IdentityMiss, Sink};

/// Exports the pipeline [`Counters`] as Prometheus counters when scraped.
pub(super) struct PipelineCollector {
    counters: Arc<Counters>,
    records: IntCounter,
    written: IntCounter,
    write_errors: IntCounter,
    alerts: IntCounter,
    decode_errors: IntCounterVec,
    identity_misses: IntCounterVec,
    pair_table_full: IntCounter,
    windows_evicted: IntCounter,
    sink_waits: IntCounterVec,
    sink_dropped: IntCounterVec,
    alertmanager: IntCounterVec,
    alertmanager_errors: IntCounter,
    flow_table_full: IntCounter,
    flow_records: IntCounter,
    flows_tracked: IntGauge,
    verdicts_withdrawn: IntCounter,
    verdicts_refused: IntCounter,
    unreported: IntCounter,
    heartbeats: IntCounter,
}

impl PipelineCollector {
    pub(super) fn new(counters: Arc<Counters>) -> Result<Self, prometheus::Error> {
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
            windows_evicted: IntCounter::new(
                "dfdwatch_alert_windows_evicted_total",
                "Alert de-duplication windows closed early because the open-window table was full (a scan).",
            )?,
            sink_waits: IntCounterVec::new(
                Opts::new(
                    "dfdwatch_sink_queue_waits_total",
                    "Times the fan-out found a sink's queue full and waited for it (backpressure), by sink.",
                ),
                &["sink"],
            )?,
            sink_dropped: IntCounterVec::new(
                Opts::new(
                    "dfdwatch_sink_dropped_total",
                    "Lines a sink never got because it took nothing for a second (a stalled disk or pipe), by sink.",
                ),
                &["sink"],
            )?,
            pair_table_full: IntCounter::new(
                "dfdwatch_pair_table_full_total",
                "Same-node connections that may be counted twice because the table pairing their two ends was full.",
            )?,
            flow_table_full: IntCounter::new(
                "dfdwatch_flow_table_full_total",
                "Connections sent and recorded one by one because the flow table had no room for their flow key.",
            )?,
            flow_records: IntCounter::new(
                "dfdwatch_flow_records_total",
                "Flow records (one per flow key and interval) handed to the events sink.",
            )?,
            flows_tracked: IntGauge::new("dfdwatch_flows_tracked", "Flow keys the daemon tracks now.")?,
            verdicts_withdrawn: IntCounter::new(
                "dfdwatch_flow_verdicts_withdrawn_total",
                "Withdrawals of kernel flow verdicts, so that their flows are judged again: each DFD reload and identity change withdraws all at once, each retired idle flow its own.",
            )?,
            verdicts_refused: IntCounter::new(
                "dfdwatch_flow_verdicts_refused_total",
                "Flow verdicts the kernel refused to keep (its map full): those flows' connections keep coming one by one, counted in their flow records.",
            )?,
            heartbeats: IntCounter::new(
                "dfdwatch_heartbeats_total",
                "Heartbeats (the daemon's own refused loopback connects) that came through the probes.",
            )?,
            unreported: IntCounter::new(
                "dfdwatch_unreported_connections_total",
                "Connections of alerting flows counted but not recorded one by one (over the per-flow rate limit, or the ring buffer was full).",
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
        d.extend(self.windows_evicted.desc());
        d.extend(self.sink_waits.desc());
        d.extend(self.sink_dropped.desc());
        d.extend(self.alertmanager.desc());
        d.extend(self.alertmanager_errors.desc());
        d.extend(self.flow_table_full.desc());
        d.extend(self.flow_records.desc());
        d.extend(self.flows_tracked.desc());
        d.extend(self.verdicts_withdrawn.desc());
        d.extend(self.verdicts_refused.desc());
        d.extend(self.unreported.desc());
        d.extend(self.heartbeats.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.counters.snapshot();
        let set = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        set(&self.records, s.records_read);
        set(&self.written, s.events_written);
        set(&self.write_errors, s.write_errors);
        set(&self.alerts, s.alerts_written);
        for (why, v) in DecodeFailure::ALL.iter().zip(self.counters.decode_errors()) {
            set(&self.decode_errors.with_label_values(&[why.as_str()]), v);
        }
        for (kind, v) in IdentityMiss::ALL.iter().zip(self.counters.identity_misses()) {
            set(&self.identity_misses.with_label_values(&[kind.as_str()]), v);
        }
        for (sink, v) in Sink::ALL.iter().zip(self.counters.sink_waits()) {
            set(&self.sink_waits.with_label_values(&[sink.as_str()]), v);
        }
        for (sink, v) in Sink::ALL.iter().zip(self.counters.sink_dropped()) {
            set(&self.sink_dropped.with_label_values(&[sink.as_str()]), v);
        }
        set(&self.windows_evicted, s.alert_windows_evicted);
        set(&self.pair_table_full, s.pair_table_full);
        set(&self.alertmanager.with_label_values(&[DeliveryResult::Sent.as_str()]), s.alertmanager_sent);
        set(&self.alertmanager.with_label_values(&[DeliveryResult::Dropped.as_str()]), s.alertmanager_dropped);
        set(&self.alertmanager_errors, s.alertmanager_post_errors);
        set(&self.flow_table_full, s.flow_table_full);
        set(&self.flow_records, s.flow_records);
        self.flows_tracked.set(i64::try_from(s.flows_tracked).unwrap_or(i64::MAX));
        set(&self.verdicts_withdrawn, s.flow_verdicts_withdrawn);
        set(&self.verdicts_refused, s.flow_verdicts_refused);
        set(&self.unreported, s.unreported);
        set(&self.heartbeats, s.heartbeats);
        let mut out = Vec::new();
        out.extend(self.records.collect());
        out.extend(self.written.collect());
        out.extend(self.write_errors.collect());
        out.extend(self.alerts.collect());
        out.extend(self.decode_errors.collect());
        out.extend(self.identity_misses.collect());
        out.extend(self.pair_table_full.collect());
        out.extend(self.windows_evicted.collect());
        out.extend(self.sink_waits.collect());
        out.extend(self.sink_dropped.collect());
        out.extend(self.alertmanager.collect());
        out.extend(self.alertmanager_errors.collect());
        out.extend(self.flow_table_full.collect());
        out.extend(self.flow_records.collect());
        out.extend(self.flows_tracked.collect());
        out.extend(self.verdicts_withdrawn.collect());
        out.extend(self.verdicts_refused.collect());
        out.extend(self.unreported.collect());
        out.extend(self.heartbeats.collect());
        out
    }
}
