//! Flows, not lines: the stage between the verdict and the sinks that keeps the flow table.
//! Nearly every connection on a node repeats a flow (the same workload calling the same peer on
//! the same port), and a flow's verdict depends only on its key ([`monitor_common::flow::FlowKey`]:
//! direction, the local end's cgroup, network namespace, both addresses, the server port, and the
//! process when the DFD binds nodes to executables), not on the client's port. So:
//!
//! - the first connection of a key reaches the daemon as an event, is identified and judged as
//!   always, written as a connection record, and its verdict goes back into the kernel
//!   ([`kernel`]): an approved key is counted there from then on, an alerting key keeps sending
//!   each connection (rate-limited per key, the rest counted);
//! - every interval, [`drain`] reads the kernel's counters without a race (epoch switch), and this
//!   stage ([`table`]) writes one flow record per active key, which is also where the flow and
//!   violation metrics are counted, exactly once per connection;
//! - a DFD reload or an identity change withdraws every kernel verdict, so no stale "approved"
//!   outlives the revision or identity that earned it;
//! - a key the table has no room for is sent connection by connection, counted.

pub mod drain;
pub mod kernel;
pub mod table;

use std::sync::Arc;

use monitor_common::flow::{FlowCounts, KEY_PROCESS};

use crate::identity::Identified;
use crate::policy::{Judged, Judgement, Policy};

/// A connection as it leaves the identity stage (no DFD) or the verdict stage: judged when a DFD
/// is loaded. Without a DFD there is no verdict, by type.
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a daemon sends only one variant (a DFD is loaded or not); boxing would allocate once per connection"
)]
pub enum Observation {
    /// Identified, not judged (no DFD loaded).
    Identified(Identified),
    /// Judged against the DFD.
    Judged(Judged),
}

impl Observation {
    /// The connection and its ends' identity.
    pub fn flow(&self) -> &Identified {
        match self {
            Observation::Identified(flow) => flow,
            Observation::Judged(j) => &j.flow,
        }
    }

    /// The judgement, when a DFD judged it.
    pub fn judgement(&self) -> Option<&Judgement> {
        match self {
            Observation::Identified(_) => None,
            Observation::Judged(j) => Some(&j.judgement),
        }
    }
}

/// The kernel counters of one interval, by flow id.
#[derive(Debug, Default)]
pub struct Tally {
    /// Counters per flow id.
    pub counts: Vec<(u32, FlowCounts)>,
    /// The counting epoch they were read from: every count of that epoch and before is in.
    pub epoch: u32,
    /// The last read, after the probes were detached: every count is in.
    pub final_read: bool,
}

/// What the flow stage takes in: connections from the stage before it, tallies from the drain.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "tallies come once an interval; boxing connections would allocate once per connection"
)]
pub enum FlowInput {
    /// One connection the kernel sent.
    Observed(Observation),
    /// One interval's kernel counters.
    Tally(Tally),
}

impl From<Identified> for FlowInput {
    fn from(flow: Identified) -> Self {
        FlowInput::Observed(Observation::Identified(flow))
    }
}

impl From<Judged> for FlowInput {
    fn from(judged: Judged) -> Self {
        FlowInput::Observed(Observation::Judged(judged))
    }
}

/// What one interval of a flow adds up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// Connections, completed or failed.
    pub conns: u64,
    /// Of those, failed connects.
    pub failed: u64,
    /// Of those, recorded one by one (connection records).
    pub recorded: u64,
    /// Of those, connections of an alerting flow that were only counted (rate limit, full ring).
    pub unreported: u64,
    /// First connection (ns, CLOCK_MONOTONIC).
    pub first_ns: u64,
    /// Last connection (ns, CLOCK_MONOTONIC).
    pub last_ns: u64,
}

impl Interval {
    /// Adds `other` into this one.
    pub fn add(&mut self, other: &Interval) {
        if other.conns == 0 {
            return;
        }
        self.first_ns = if self.conns == 0 { other.first_ns } else { self.first_ns.min(other.first_ns) };
        self.last_ns = self.last_ns.max(other.last_ns);
        self.conns += other.conns;
        self.failed += other.failed;
        self.recorded += other.recorded;
        self.unreported += other.unreported;
    }
}

/// One flow over one interval: its first connection's identities and judgement, and its counts.
#[derive(Clone, Debug)]
pub struct FlowSummary {
    /// The daemon's id for the flow key.
    pub id: u32,
    /// The connection that opened the key (or the last one judged differently).
    pub first: Arc<Observation>,
    /// What the interval adds up to.
    pub interval: Interval,
    /// The same connections are counted under the key of their other end on this node (an
    /// accept of a local client): kept out of the metrics, which count them once.
    pub counted_elsewhere: bool,
}

/// Why a connection is recorded one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The first connection of its key (or of a new verdict on it).
    First,
    /// A connection of an alerting flow: every one is recorded.
    Reported,
    /// The flow table had no room for its key: recorded, and counted in the metrics, on its own.
    Untracked,
    /// Established before the daemon started (found in /proc, not seen by the probes): recorded,
    /// and counted in the metrics, on its own; it has no kernel flow key.
    FoundAtStart,
}

/// What the flow stage hands to the sinks.
#[derive(Clone, Debug)]
pub enum FlowOutput {
    /// A time the daemon did not watch (from the watchdog, not from the stages before).
    Gap(Box<crate::telemetry::liveness::Gap>),
    /// An applied change of the approved DFD (from the reloader).
    DfdChange(Box<crate::policy::changes::DfdChange>),
    /// A connection to record one by one.
    Connection {
        /// The connection.
        observation: Arc<Observation>,
        /// Why it is recorded.
        role: Role,
    },
    /// A flow's interval.
    Flow(FlowSummary),
}

/// The key fields a policy needs: the process too when any node is bound by executables.
pub fn key_mask(policy: Option<&Policy>) -> u8 {
    let by_executable = policy.is_some_and(|p| {
        p.compiled.dfd.nodes.iter().any(|n| n.selector.as_ref().is_some_and(|s| !s.executables.is_empty()))
    });
    if by_executable { KEY_PROCESS } else { 0 }
}
