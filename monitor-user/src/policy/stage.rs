//! The verdict stage: identified connections in, judged connections out, on its own thread
//! between the identity stage and the sinks. Each flow is judged against the policy that is
//! current when it arrives, always one whole revision: the reloader swaps an `Arc`, it never edits
//! a policy in place. A connection between two workloads on this node is seen twice, as a connect
//! and as an accept; the second sighting is marked `other_end_seen`, so that metrics and alerts
//! count the connection once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use monitor_common::EventKind;
use tokio::sync::{mpsc, watch};

use super::verdict::{ObservedFlow, verdict};
use super::{Policy, place};
use crate::counters::Counters;
use crate::identity::Enriched;

/// How long a connection's first sighting waits for its other end.
const PAIR_TTL_NS: u64 = 1_000_000_000;
/// Sightings waiting for their other end, at most. Beyond that, a same-node connection may be
/// counted twice; each refused entry is counted as `pair_table_full`.
const PAIR_CAPACITY: usize = 65_536;

/// Places both ends of `e` and judges the flow against `policy`.
pub fn judge(policy: &Arc<Policy>, e: &mut Enriched) {
    let dfd = &policy.compiled;
    let local_is_src = e.conn.local_is_src();
    let src = place(dfd, e.conn.src.ip(), local_is_src.then_some(&e.local), e.src_k8s.as_ref());
    let dst = place(dfd, e.conn.dst.ip(), (!local_is_src).then_some(&e.local), e.dst_k8s.as_ref());
    let flow = ObservedFlow {
        src: &src,
        dst: &dst,
        dst_port: e.conn.dst.port(),
        attempt: e.conn.kind == EventKind::ConnectFailed,
    };
    e.verdict = Some(verdict(dfd, &flow));
    e.src_dfd = Some(src);
    e.dst_dfd = Some(dst);
    e.policy = Some(policy.clone());
}

/// Remembers recent connections by their address pair, to recognise the other end's sighting.
#[derive(Default)]
pub struct Pairs {
    waiting: HashMap<(SocketAddr, SocketAddr), u64>,
    last_sweep_ns: u64,
}

impl Pairs {
    /// Whether the other end of this connection was already seen (and, if not, remembers it).
    pub fn other_end_seen(&mut self, e: &Enriched, counters: &Counters) -> bool {
        // A failed connect has no accepting end, and its source port is already gone.
        if e.conn.kind == EventKind::ConnectFailed {
            return false;
        }
        let now = e.conn.monotonic_ns;
        if now.saturating_sub(self.last_sweep_ns) >= PAIR_TTL_NS || self.waiting.len() >= PAIR_CAPACITY {
            self.waiting.retain(|_, seen| now.saturating_sub(*seen) < PAIR_TTL_NS);
            self.last_sweep_ns = now;
        }
        let key = (e.conn.src, e.conn.dst);
        match self.waiting.remove(&key) {
            Some(seen) if now.abs_diff(seen) < PAIR_TTL_NS => true,
            _ => {
                if self.waiting.len() < PAIR_CAPACITY {
                    self.waiting.insert(key, now);
                } else {
                    counters.record_pair_table_full();
                }
                false
            }
        }
    }
}

/// The verdict stage.
pub struct VerdictStage {
    policy: watch::Receiver<Arc<Policy>>,
    input: mpsc::Receiver<Enriched>,
    output: mpsc::Sender<Enriched>,
    pairs: Pairs,
    counters: Arc<Counters>,
}

impl VerdictStage {
    /// A stage judging against whatever `policy` holds when each flow arrives.
    pub fn new(
        policy: watch::Receiver<Arc<Policy>>,
        input: mpsc::Receiver<Enriched>,
        output: mpsc::Sender<Enriched>,
        counters: Arc<Counters>,
    ) -> Self {
        Self { policy, input, output, pairs: Pairs::default(), counters }
    }

    /// Runs until the input closes and everything is passed on.
    pub fn run(mut self) {
        while let Some(mut e) = self.input.blocking_recv() {
            let policy = self.policy.borrow().clone();
            judge(&policy, &mut e);
            e.other_end_seen = self.pairs.other_end_seen(&e, &self.counters);
            if self.output.blocking_send(e).is_err() {
                tracing::error!("the event writer stopped; verdict stage ends");
                return;
            }
        }
    }
}
