//! The fan-out after the flow stage, on its own thread. For each flow interval, and each
//! connection the flow table could not track, it first records the metrics itself (atomic
//! counters, never queued, so they stay exact whatever a sink does: a full disk stops event
//! lines, not `dfdwatch_flows_total`); then it builds the connection or flow record once and
//! hands it to each sink's bounded queue (alerts: connections only).
//!
//! Overflow policy, per queue ([`SinkQueue`]): the events and alerts queues apply backpressure
//! (the fan-out waits, so the kernel ring absorbs a burst and counts its own losses), each wait
//! counted in `dfdwatch_sink_queue_waits_total{sink}`; a sink that takes nothing for a second is
//! stalled, and its lines are dropped, counted in `dfdwatch_sink_dropped_total{sink}`, until it
//! takes again, so it cannot stop the other sink or the metrics. The Alertmanager queue behind the
//! alert writer never waits: it drops, counted in `dfdwatch_alertmanager_alerts_total{result="dropped"}`.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::alerts;
use super::alerts::AlertInput;
use super::dfd_change_record::DfdChangeRecord;
use super::events::{EventLine, EventRecord};
use super::flow_record::FlowRecord;
use super::gap_record::GapRecord;
use super::record::ConnectionRecord;
use crate::clock::WallClock;
use crate::flows::{FlowOutput, FlowSummary, Observation, Role};
use crate::policy::Judgement;
use crate::policy::changes::DfdChange;
use crate::policy::verdict::VerdictKind;
use crate::store::StoreInput;
use crate::telemetry::counters::{Counters, Sink};
use crate::telemetry::liveness::Gap;
use crate::telemetry::metrics::{Metrics, Violation};

/// The fan-out stage.
pub struct FanOut {
    clock: WallClock,
    node: String,
    metrics: Arc<Metrics>,
    counters: Arc<Counters>,
    events: SinkQueue<EventLine>,
    alerts: Option<SinkQueue<AlertInput>>,
    store: Option<SinkQueue<StoreInput>>,
}

impl FanOut {
    /// A fan-out naming `node` in every record, feeding the events queue and, when alerts are
    /// on, the alerts queue.
    pub fn new(
        clock: WallClock,
        node: String,
        metrics: Arc<Metrics>,
        counters: Arc<Counters>,
        events: SyncSender<EventLine>,
        alerts: Option<SyncSender<AlertInput>>,
    ) -> Self {
        let events = SinkQueue::new(events, Sink::Events);
        let alerts = alerts.map(|tx| SinkQueue::new(tx, Sink::Alerts));
        Self { clock, node, metrics, counters, events, alerts, store: None }
    }

    /// Also hands every flow record, and each connection record of an alerting flow, to the flow
    /// store's writer.
    pub fn with_store(mut self, store: SyncSender<StoreInput>) -> Self {
        self.store = Some(SinkQueue::new(store, Sink::Store));
        self
    }

    /// Runs until the input closes; the sinks' queues close when it returns.
    pub fn run(mut self, mut input: mpsc::Receiver<FlowOutput>) {
        while let Some(output) = input.blocking_recv() {
            self.take(output);
        }
    }

    /// Records, then dispatches, one connection or flow interval.
    pub fn take(&mut self, output: FlowOutput) {
        match output {
            FlowOutput::Connection { observation, role } => self.connection(&observation, role),
            FlowOutput::Flow(summary) => self.flow(&summary),
            FlowOutput::Gap(gap) => self.gap(&gap),
            FlowOutput::DfdChange(change) => self.dfd_change(&change),
        }
    }

    fn connection(&mut self, observation: &Observation, role: Role) {
        // Metrics count a tracked flow's connections in its interval; an untracked one only here.
        if matches!(role, Role::Untracked | Role::FoundAtStart)
            && let Some(j) = observation.judgement()
            && !j.other_end_seen
        {
            self.record_metrics(j, 1);
        }
        let flow = observation.flow();
        let mut record = ConnectionRecord::new(flow, observation.judgement(), &self.clock, &self.node);
        record.recorded = match role {
            Role::First => "first",
            Role::Reported => "reported",
            Role::Untracked => "untracked",
            Role::FoundAtStart => "found_at_start",
        };
        let record = Arc::new(record);
        if let Observation::Judged(j) = observation
            && j.judgement.raises_alert()
            && let Some(alerts) = &mut self.alerts
        {
            alerts.send(AlertInput::Candidate(alerts::candidate(j, record.clone())), &self.counters);
        }
        if let Observation::Judged(j) = observation
            && j.judgement.verdict.alert
            && let Some(store) = &mut self.store
        {
            let flow_key = j.judgement.raises_alert().then(|| alerts::flow_key(j));
            let time_ns = self.clock.unix_ns(flow.conn.monotonic_ns);
            store.send(StoreInput::Connection { record: record.clone(), time_ns, flow_key }, &self.counters);
        }
        let line = EventLine { record: EventRecord::Connection(record), monotonic_ns: Some(flow.conn.monotonic_ns) };
        self.events.send(line, &self.counters);
    }

    fn flow(&mut self, summary: &FlowSummary) {
        if !summary.counted_elsewhere
            && let Some(j) = summary.first.judgement()
        {
            self.record_metrics(j, summary.interval.conns);
        }
        let record = Arc::new(FlowRecord::new(summary, &self.clock, &self.node));
        self.counters.record_flow_record();
        if let Some(store) = &mut self.store {
            let (first_ns, last_ns) = (summary.interval.first_ns, summary.interval.last_ns);
            let (first_ns, last_ns) = (self.clock.unix_ns(first_ns), self.clock.unix_ns(last_ns));
            store.send(StoreInput::Flow { record: record.clone(), first_ns, last_ns }, &self.counters);
        }
        let line = EventLine { record: EventRecord::Flow(record), monotonic_ns: None };
        self.events.send(line, &self.counters);
    }

    fn gap(&mut self, gap: &Gap) {
        let record = GapRecord::new(gap, &self.node);
        self.metrics.add_unwatched(gap.reason, record.seconds);
        let line = EventLine { record: EventRecord::Gap(Box::new(record)), monotonic_ns: None };
        self.events.send(line, &self.counters);
    }

    fn dfd_change(&mut self, change: &DfdChange) {
        for c in &change.changes {
            self.metrics.record_dfd_change(c.severity);
        }
        let record = Arc::new(DfdChangeRecord::new(change, &self.node));
        if let Some(alerts) = &mut self.alerts {
            alerts.send(AlertInput::DfdChange(record.clone()), &self.counters);
        }
        let line = EventLine { record: EventRecord::DfdChange(record), monotonic_ns: None };
        self.events.send(line, &self.counters);
    }

    fn record_metrics(&self, j: &Judgement, connections: u64) {
        let violation = j.verdict.alert.then_some(Violation {
            src_zone: j.src.zone.as_deref(),
            dst_zone: j.dst.zone.as_deref(),
            severity: j.verdict.severity,
        });
        let approved_by = (j.verdict.kind == VerdictKind::Approved).then_some(j.verdict.flow.as_deref()).flatten();
        self.metrics.observe_verdict(j.verdict.kind, violation, approved_by, connections);
    }
}

/// How long the fan-out waits for a full sink queue before it takes the sink as stalled.
const STALL_AFTER: Duration = Duration::from_secs(1);
/// How often a full queue is tried again while waiting.
const RETRY_EVERY: Duration = Duration::from_millis(1);

/// One sink's queue, with its overflow policy: a full queue is waited for (backpressure, counted),
/// at most [`STALL_AFTER`]; then the sink is taken as stalled (a hung disk or pipe) and what it
/// cannot take is dropped and counted, without waiting, until its queue has room again. So a slow
/// sink slows the pipeline, and a stalled one cannot stop the others or the metrics.
pub struct SinkQueue<T> {
    tx: Option<SyncSender<T>>,
    sink: Sink,
    stalled: bool,
}

impl<T> SinkQueue<T> {
    /// The queue feeding `sink`.
    pub fn new(tx: SyncSender<T>, sink: Sink) -> Self {
        Self { tx: Some(tx), sink, stalled: false }
    }

    /// Hands `item` to the sink, per the overflow policy.
    pub fn send(&mut self, item: T, counters: &Counters) {
        let Some(tx) = &self.tx else { return };
        let mut item = match tx.try_send(item) {
            Ok(()) => {
                self.stalled = false;
                return;
            }
            Err(TrySendError::Disconnected(_)) => return self.stopped(),
            Err(TrySendError::Full(item)) => item,
        };
        if !self.stalled {
            counters.record_sink_wait(self.sink);
            let deadline = Instant::now() + STALL_AFTER;
            while Instant::now() < deadline {
                std::thread::sleep(RETRY_EVERY);
                item = match tx.try_send(item) {
                    Ok(()) => return,
                    Err(TrySendError::Disconnected(_)) => return self.stopped(),
                    Err(TrySendError::Full(item)) => item,
                };
            }
            self.stalled = true;
            tracing::error!(
                sink = self.sink.as_str(),
                "a sink took nothing for {STALL_AFTER:?}: its lines are dropped (counted) until it recovers"
            );
        }
        let n = counters.record_sink_dropped(self.sink);
        if n.is_power_of_two() {
            tracing::warn!(sink = self.sink.as_str(), total = n, "stalled sink: line dropped");
        }
    }

    fn stopped(&mut self) {
        tracing::error!(sink = self.sink.as_str(), "a sink stopped; it is no longer fed");
        self.tx = None;
    }
}
