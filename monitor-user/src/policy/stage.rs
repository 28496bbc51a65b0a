//! The verdict stage: identified connections in, judged connections out, on its own thread
//! between the identity stage and the sinks. Each flow is judged against the policy that is
//! current when it arrives, always one whole revision: the reloader swaps an `Arc`, it never edits
//! a policy in place.
//!
//! A connection between two workloads on this node is seen twice, as a connect and as an accept;
//! the second sighting is marked `other_end_seen`, so that alerts count the connection once, and
//! names the pair's accept, whose flow the flow stage then counts as counted elsewhere (under the
//! connect). The two sightings are paired by the client's address and port, which both see:
//! - with the same server address and port on both sides, they are one connection;
//! - with different ones, the connection went through destination NAT on the way (a Kubernetes
//!   Service's ClusterIP, which kube-proxy translates to a backend pod in the client's network
//!   namespace; or a port mapping): the connect saw the address the client asked for, the accept
//!   the backend that answered. They pair when that connect is the only one from that client
//!   address and port waiting, and the second sighting names both destinations ([`Dnat`]).
//!
//! A connection whose client address is rewritten too (SNAT, masquerade) cannot be paired this way
//! and is counted from both ends; docs/identity.md says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use monitor_common::EventKind;
use monitor_common::flow::FlowKey;
use tokio::sync::{mpsc, watch};

use super::judged::{Dnat, DnatEnd, Judged, judge};
use super::{Placement, Policy};
use crate::identity::Identified;
use crate::telemetry::counters::Counters;

/// How long a connection's first sighting waits for its other end.
const PAIR_TTL_NS: u64 = 1_000_000_000;
/// Sightings waiting for their other end, at most. Beyond that, a same-node connection may be
/// counted twice; each refused entry is counted as `pair_table_full`.
const PAIR_CAPACITY: usize = 65_536;

/// A first sighting waiting for its other end.
struct Waiting {
    seen_ns: u64,
    /// A connect or an accept: only the other kind completes it.
    kind: EventKind,
    /// The server end this sighting saw, with its identity, to name both when NAT was on the way.
    dst: DnatEnd,
    /// Its flow key, if it was an accept.
    accept_key: Option<FlowKey>,
}

/// The pairing of a sighting with its other end, when it completed one.
pub struct Paired {
    /// The flow key of the pair's accept (this sighting's or the first's).
    pub accept: Option<FlowKey>,
    /// Both destinations, when the two sightings saw different ones.
    pub dnat: Option<Arc<Dnat>>,
}

/// Remembers recent sightings by their client address and port, to recognise the other end's.
#[derive(Default)]
pub struct Pairs {
    waiting: HashMap<SocketAddr, Vec<Waiting>>,
    len: usize,
    last_sweep_ns: u64,
}

impl Pairs {
    /// Pairs this sighting with its other end's, if that was already seen, or else remembers it.
    pub fn pair(&mut self, flow: &Identified, dst_placement: &Placement, counters: &Counters) -> Option<Paired> {
        let conn = &flow.conn;
        // A failed connect has no accepting end, and its source port is already gone.
        if conn.kind == EventKind::ConnectFailed {
            return None;
        }
        let now = conn.monotonic_ns;
        if now.saturating_sub(self.last_sweep_ns) >= PAIR_TTL_NS || self.len >= PAIR_CAPACITY {
            self.sweep(now);
        }
        let this_accept = (conn.kind == EventKind::Accept).then_some(conn.route.key);
        let this_dst = || DnatEnd { addr: conn.dst, k8s: flow.dst_k8s.clone(), dfd: dst_placement.clone() };
        let waiting = self.waiting.entry(conn.src).or_default();
        let live = |w: &Waiting| w.kind != conn.kind && now.abs_diff(w.seen_ns) < PAIR_TTL_NS;
        let same = waiting.iter().position(|w| live(w) && w.dst.addr == conn.dst);
        // Through NAT only when unambiguous: one other-kind sighting from this client end.
        let translated = || {
            let mut candidates = waiting.iter().enumerate().filter(|(_, w)| live(w));
            match (candidates.next(), candidates.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        };
        if let Some(i) = same.or_else(translated) {
            let first = waiting.swap_remove(i);
            if waiting.is_empty() {
                self.waiting.remove(&conn.src);
            }
            self.len -= 1;
            let dnat = (first.dst.addr != conn.dst).then(|| {
                let (original, backend) =
                    if conn.kind == EventKind::Accept { (first.dst, this_dst()) } else { (this_dst(), first.dst) };
                Arc::new(Dnat { original, backend })
            });
            return Some(Paired { accept: this_accept.or(first.accept_key), dnat });
        }
        if self.len < PAIR_CAPACITY {
            waiting.push(Waiting { seen_ns: now, kind: conn.kind, dst: this_dst(), accept_key: this_accept });
            self.len += 1;
        } else {
            if waiting.is_empty() {
                self.waiting.remove(&conn.src);
            }
            counters.record_pair_table_full();
        }
        None
    }

    /// Forgets sightings older than the pairing window.
    fn sweep(&mut self, now: u64) {
        let mut len = 0;
        self.waiting.retain(|_, list| {
            list.retain(|w| now.saturating_sub(w.seen_ns) < PAIR_TTL_NS);
            len += list.len();
            !list.is_empty()
        });
        self.len = len;
        self.last_sweep_ns = now;
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
        if let Some(paired) = self.pairs.pair(&flow, &judgement.dst, &self.counters) {
            judgement.other_end_seen = true;
            judgement.paired_accept = paired.accept;
            judgement.dnat = paired.dnat;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::LocalIdentity;
    use crate::source::decode::Connection;

    /// A sighting of `src` -> `dst` at `ms` milliseconds; an accept's flow key names its netns.
    fn sighting(kind: EventKind, src: &str, dst: &str, ms: u64) -> Identified {
        let mut route = crate::source::decode::Route::default();
        route.key.netns = if kind == EventKind::Accept { 2 } else { 1 };
        route.key.server_port = dst.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Identified {
            conn: Connection {
                kind,
                error: None,
                monotonic_ns: ms * 1_000_000,
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                process: None,
                uid: 0,
                cgroup_id: 1,
                netns: 1,
                route,
                origin: Default::default(),
            },
            local: LocalIdentity::default(),
            src_name: None,
            dst_name: None,
            src_k8s: None,
            dst_k8s: None,
            identity_generation: 0,
        }
    }

    fn pair(pairs: &mut Pairs, flow: &Identified) -> Option<Paired> {
        pairs.pair(flow, &Placement::default(), &Counters::default())
    }

    use EventKind::{Accept, Connect, ConnectFailed};

    #[test]
    fn a_connect_and_its_accept_pair_in_either_order() {
        for (first, second) in [(Connect, Accept), (Accept, Connect)] {
            let mut pairs = Pairs::default();
            assert!(pair(&mut pairs, &sighting(first, "10.0.0.1:40000", "10.0.0.2:80", 1)).is_none());
            let accept_seen_first = first == Accept;
            let paired = pair(&mut pairs, &sighting(second, "10.0.0.1:40000", "10.0.0.2:80", 2)).expect("paired");
            assert_eq!(paired.accept.map(|k| k.netns), Some(2), "the accept's key, seen first: {accept_seen_first}");
            assert!(paired.dnat.is_none(), "same destination: no NAT");
            assert_eq!(pairs.len, 0);
        }
    }

    #[test]
    fn two_connects_never_pair_and_a_failed_connect_waits_for_nothing() {
        let mut pairs = Pairs::default();
        assert!(pair(&mut pairs, &sighting(Connect, "127.0.0.1:40000", "127.0.0.1:80", 1)).is_none());
        assert!(pair(&mut pairs, &sighting(Connect, "127.0.0.1:40000", "127.0.0.1:80", 2)).is_none());
        assert!(pair(&mut pairs, &sighting(ConnectFailed, "127.0.0.1:40001", "127.0.0.1:80", 3)).is_none());
        assert_eq!(pairs.len, 2);
    }

    #[test]
    fn a_connect_through_dnat_pairs_with_the_backends_accept_and_names_both() {
        for accept_first in [false, true] {
            let mut pairs = Pairs::default();
            let connect = sighting(Connect, "10.0.0.1:40000", "10.96.0.10:5432", 1);
            let accept = sighting(Accept, "10.0.0.1:40000", "10.0.0.3:15432", 2);
            let (a, b) = if accept_first { (&accept, &connect) } else { (&connect, &accept) };
            assert!(pair(&mut pairs, a).is_none());
            let paired = pair(&mut pairs, b).expect("paired through NAT");
            let dnat = paired.dnat.expect("both destinations named");
            assert_eq!(dnat.original.addr, "10.96.0.10:5432".parse().unwrap());
            assert_eq!(dnat.backend.addr, "10.0.0.3:15432".parse().unwrap());
            assert_eq!(paired.accept.map(|k| k.server_port), Some(15432));
        }
    }

    #[test]
    fn nat_pairing_refuses_an_ambiguous_or_stale_other_end() {
        let mut pairs = Pairs::default();
        // Two connects from one client port to two destinations: which one the accept belongs to
        // is unknown, so it pairs with neither.
        pair(&mut pairs, &sighting(Connect, "10.0.0.1:40000", "10.96.0.10:80", 1));
        pair(&mut pairs, &sighting(Connect, "10.0.0.1:40000", "10.96.0.11:80", 2));
        assert!(pair(&mut pairs, &sighting(Accept, "10.0.0.1:40000", "10.0.0.3:8080", 3)).is_none());
        // ...but an exact other end still pairs among them.
        let exact = pair(&mut pairs, &sighting(Accept, "10.0.0.1:40000", "10.96.0.11:80", 4)).expect("exact");
        assert!(exact.dnat.is_none());
        // A sighting older than the pairing window is not the other end.
        let mut pairs = Pairs::default();
        pair(&mut pairs, &sighting(Connect, "10.0.0.1:40001", "10.96.0.10:80", 1));
        assert!(pair(&mut pairs, &sighting(Accept, "10.0.0.1:40001", "10.0.0.3:8080", 1_500)).is_none());
        assert_eq!(pairs.len, 1, "the stale connect was swept, the accept waits");
    }

    #[test]
    fn a_full_table_refuses_and_counts() {
        let mut pairs = Pairs::default();
        let counters = Counters::default();
        for n in 0..PAIR_CAPACITY {
            let flow = sighting(Connect, &format!("10.0.{}.{}:1000", n >> 8, n & 0xff), "10.9.9.9:80", 1);
            pairs.pair(&flow, &Placement::default(), &counters);
        }
        assert_eq!(pairs.len, PAIR_CAPACITY);
        pairs.pair(&sighting(Connect, "10.1.0.1:1", "10.9.9.9:80", 2), &Placement::default(), &counters);
        assert_eq!(pairs.len, PAIR_CAPACITY);
        assert!(!pairs.waiting.contains_key(&"10.1.0.1:1".parse().unwrap()), "no empty list left behind");
    }
}
