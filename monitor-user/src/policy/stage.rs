//! The verdict stage: identified connections in, judged connections out, on its own thread
//! between the identity stage and the sinks. Each flow is judged against the policy that is
//! current when it arrives, always one whole revision: the reloader swaps an `Arc`, it never edits
//! a policy in place. A connection between two workloads on this node is seen twice, as a connect
//! and as an accept; the second sighting is marked `other_end_seen`, so that alerts count the
//! connection once, and names the pair's accept, whose flow the flow stage then counts as
//! counted elsewhere (under the connect).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use monitor_common::EventKind;
use monitor_common::flow::FlowKey;
use tokio::sync::{mpsc, watch};

use super::Policy;
use super::judged::{Judged, judge};
use crate::identity::Identified;
use crate::telemetry::counters::Counters;

/// How long a connection's first sighting waits for its other end.
const PAIR_TTL_NS: u64 = 1_000_000_000;
/// Sightings waiting for their other end, at most. Beyond that, a same-node connection may be
/// counted twice; each refused entry is counted as `pair_table_full`.
const PAIR_CAPACITY: usize = 65_536;

/// A first sighting waiting for its other end: when, and its flow key if it was an accept.
struct Waiting {
    seen_ns: u64,
    accept_key: Option<FlowKey>,
}

/// Remembers recent connections by their address pair, to recognise the other end's sighting.
#[derive(Default)]
pub struct Pairs {
    waiting: HashMap<(SocketAddr, SocketAddr), Waiting>,
    last_sweep_ns: u64,
}

impl Pairs {
    /// Whether the other end of this connection was already seen (and, if not, remembers it);
    /// when it was, also the flow key of the pair's accept (this sighting's or the first's).
    pub fn other_end_seen(&mut self, flow: &Identified, counters: &Counters) -> Option<Option<FlowKey>> {
        // A failed connect has no accepting end, and its source port is already gone.
        if flow.conn.kind == EventKind::ConnectFailed {
            return None;
        }
        let now = flow.conn.monotonic_ns;
        if now.saturating_sub(self.last_sweep_ns) >= PAIR_TTL_NS || self.waiting.len() >= PAIR_CAPACITY {
            self.waiting.retain(|_, w| now.saturating_sub(w.seen_ns) < PAIR_TTL_NS);
            self.last_sweep_ns = now;
        }
        let key = (flow.conn.src, flow.conn.dst);
        let this_accept = (flow.conn.kind == EventKind::Accept).then_some(flow.conn.route.key);
        match self.waiting.remove(&key) {
            Some(first) if now.abs_diff(first.seen_ns) < PAIR_TTL_NS => Some(this_accept.or(first.accept_key)),
            _ => {
                if self.waiting.len() < PAIR_CAPACITY {
                    self.waiting.insert(key, Waiting { seen_ns: now, accept_key: this_accept });
                } else {
                    counters.record_pair_table_full();
                }
                None
            }
        }
    }
}

/// The verdict stage. Its output type is the sinks' input, so the stage need not know them.
pub struct VerdictStage<O> {
    policy: watch::Receiver<Arc<Policy>>,
    input: mpsc::Receiver<Identified>,
    output: mpsc::Sender<O>,
    pairs: Pairs,
    counters: Arc<Counters>,
}

impl<O: From<Judged> + Send + 'static> VerdictStage<O> {
    /// A stage judging against whatever `policy` holds when each flow arrives.
    pub fn new(
        policy: watch::Receiver<Arc<Policy>>,
        input: mpsc::Receiver<Identified>,
        output: mpsc::Sender<O>,
        counters: Arc<Counters>,
    ) -> Self {
        Self { policy, input, output, pairs: Pairs::default(), counters }
    }

    /// Judges one flow (the pairing table is this stage's state).
    pub fn judge(&mut self, policy: &Policy, flow: Identified) -> Judged {
        let mut judgement = judge(policy, &flow);
        if let Some(accept) = self.pairs.other_end_seen(&flow, &self.counters) {
            judgement.other_end_seen = true;
            judgement.paired_accept = accept;
        }
        Judged { flow, judgement }
    }

    /// Runs until the input closes and everything is passed on.
    pub fn run(mut self) {
        while let Some(flow) = self.input.blocking_recv() {
            let policy = self.policy.borrow().clone();
            let judged = self.judge(&policy, flow);
            if self.output.blocking_send(O::from(judged)).is_err() {
                tracing::error!("the sinks stopped; verdict stage ends");
                return;
            }
        }
    }
}
