//! The fan-out after the verdict, on its own thread. For each connection it first records the
//! metrics itself (atomic counters, never queued, so they stay exact whatever a sink does: a full
//! disk stops event lines, not `dfdwatch_flows_total`), then builds the event record once and
//! hands it to each sink's bounded queue.
//!
//! Overflow policy, per queue: the events and alerts queues apply backpressure (the fan-out waits,
//! so the kernel ring absorbs the burst and counts its own losses) and each wait is counted in
//! `dfdwatch_sink_queue_waits_total{sink}`; the Alertmanager queue behind the alert writer never
//! waits: it drops, counted in `dfdwatch_alertmanager_alerts_total{result="dropped"}`.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use tokio::sync::mpsc;

use super::Observation;
use super::alerts::{AlertCandidate, flow_key};
use super::events::EventLine;
use super::record::ConnectionRecord;
use crate::clock::WallClock;
use crate::telemetry::counters::{Counters, Sink};
use crate::telemetry::metrics::{Metrics, Violation};

/// The fan-out stage.
pub struct FanOut {
    clock: WallClock,
    node: String,
    metrics: Arc<Metrics>,
    counters: Arc<Counters>,
    events: Option<SyncSender<EventLine>>,
    alerts: Option<SyncSender<AlertCandidate>>,
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
        alerts: Option<SyncSender<AlertCandidate>>,
    ) -> Self {
        Self { clock, node, metrics, counters, events: Some(events), alerts }
    }

    /// Runs until the input closes; the sinks' queues close when it returns.
    pub fn run(mut self, mut input: mpsc::Receiver<Observation>) {
        while let Some(observation) = input.blocking_recv() {
            self.take(observation);
        }
    }

    /// Records, then dispatches, one observation.
    pub fn take(&mut self, observation: Observation) {
        self.record_metrics(&observation);
        let flow = observation.flow();
        let judgement = observation.judgement();
        let record = Arc::new(ConnectionRecord::new(flow, judgement, &self.clock, &self.node));
        if let Observation::Judged(j) = &observation
            && j.judgement.raises_alert()
        {
            let candidate = AlertCandidate {
                key: flow_key(j),
                event: record.clone(),
                verdict: j.judgement.verdict.clone(),
                dfd: j.judgement.dfd.clone(),
            };
            send(&mut self.alerts, candidate, Sink::Alerts, &self.counters);
        }
        let line = EventLine { record, monotonic_ns: flow.conn.monotonic_ns };
        send(&mut self.events, line, Sink::Events, &self.counters);
    }

    fn record_metrics(&self, observation: &Observation) {
        let Some(j) = observation.judgement() else { return };
        if j.other_end_seen {
            return;
        }
        let violation = j.verdict.alert.then_some(Violation {
            src_zone: j.src.zone.as_deref(),
            dst_zone: j.dst.zone.as_deref(),
            severity: j.verdict.severity,
        });
        self.metrics.observe_verdict(j.verdict.kind, violation);
    }
}

/// Sends to a sink's queue, waiting (and counting the wait) when it is full; a sink that stopped
/// is logged once and no longer fed.
fn send<T>(queue: &mut Option<SyncSender<T>>, item: T, sink: Sink, counters: &Counters) {
    let Some(tx) = queue else { return };
    let sent = match tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(item)) => {
            counters.record_sink_wait(sink);
            tx.send(item).map_err(|_| ())
        }
        Err(TrySendError::Disconnected(_)) => Err(()),
    };
    if sent.is_err() {
        tracing::error!(sink = sink.as_str(), "a sink stopped; it is no longer fed");
        *queue = None;
    }
}
