//! The JSON flow record, one per flow key and interval (schema `dfdwatch.flow.v1`, documented in
//! docs/events.md): both ends' identities and placements as the flow's first connection showed
//! them, the verdict and the DFD revision that reached it, and what the interval adds up to.

use serde::Serialize;

use super::record::{Address, ConnectionRecord, LocalEnd};
use crate::clock::WallClock;
use crate::flows::FlowSummary;
use crate::policy::DfdRef;
use crate::policy::verdict::Verdict;

/// Schema id written in every flow record.
pub const SCHEMA: &str = "dfdwatch.flow.v1";

/// One flow over one interval.
#[derive(Debug, Serialize)]
pub struct FlowRecord {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The node (host name) that observed it.
    pub node: String,
    /// The daemon's id for the flow key (stable while the daemon runs and the flow is active).
    pub flow_id: u32,
    /// `connect` (the local end is the client) or `accept` (the local end is the server).
    pub kind: &'static str,
    /// 4 or 6.
    pub ip_version: u8,
    /// The client end (no port: it changes with each connection).
    pub src: Address,
    /// The server end.
    pub dst: Address,
    /// Which end is on this node.
    pub local_side: &'static str,
    /// The local end, as the flow's first connection showed it (its process, cgroup, workload).
    pub local: LocalEnd,
    /// The verdict; present when a DFD is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The DFD revision that reached the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dfd: Option<DfdRef>,
    /// Connections in the interval, completed or failed.
    pub connections: u64,
    /// Of those, failed connects.
    pub failed: u64,
    /// Of those, recorded one by one as `dfdwatch.connection.v1` records.
    pub recorded: u64,
    /// Of those, connections of an alerting flow that were only counted (over the per-flow rate
    /// limit, or the ring buffer was full).
    pub unreported: u64,
    /// RFC 3339 UTC time of the interval's first connection.
    pub first_seen: String,
    /// RFC 3339 UTC time of the interval's last connection.
    pub last_seen: String,
    /// Present (true) when these connections are counted under their other end's flow on this node
    /// (an accept of a local client): metrics count them once.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub counted_elsewhere: bool,
}

impl FlowRecord {
    /// Builds the record of one flow's interval.
    pub fn new(summary: &FlowSummary, clock: &WallClock, node: &str) -> Self {
        let first = &summary.first;
        let judgement = first.judgement();
        let c = ConnectionRecord::new(first.flow(), judgement, clock, node);
        let mut src = c.src;
        src.port = None;
        let i = &summary.interval;
        FlowRecord {
            schema: SCHEMA,
            node: c.node,
            flow_id: summary.id,
            kind: if c.kind == "accept" { "accept" } else { "connect" },
            ip_version: c.ip_version,
            src,
            dst: c.dst,
            local_side: c.local_side,
            local: c.local,
            verdict: c.verdict,
            dfd: judgement.map(|j| (*j.dfd).clone()),
            connections: i.conns,
            failed: i.failed,
            recorded: i.recorded,
            unreported: i.unreported,
            first_seen: clock.rfc3339(i.first_ns),
            last_seen: clock.rfc3339(i.last_ns),
            counted_elsewhere: summary.counted_elsewhere,
        }
    }
}
