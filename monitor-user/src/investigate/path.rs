//! `investigate path ALERT|WORKLOAD`: the lateral-movement chain around an alert. The records
//! within `--window` of the start become a graph (petgraph) whose vertices are addresses and
//! whose edges are hops that connected (failed attempts carry no one anywhere), each at its time.
//! From the start hop (A reached B at t0), the chain is followed:
//! - forward, by earliest arrival: from B, hops that left B at or after the time B was reached,
//!   up to t0 + window; each address reached once, by the hop that reached it first;
//! - backward, by latest departure: into A, hops that arrived at or before the time A left, down
//!   to t0 - window; each address once, by the hop that left it last.
//!
//! By default only hops the DFD does not approve are followed, so the approved traffic around an
//! attack is never shown as part of it; `--include-approved` follows approved hops too (an
//! attacker may use a workload's approved flows).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::str::FromStr;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;

use super::view::{EndView, table, time};
use crate::store::query::{BadWorkload, Query, Workload};
use crate::store::row::Row;

/// Records within the window a search reads, at most.
pub const MAX_ROWS: u32 = 2_000_000;

/// Where a path starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// An alert, by its `flow_key` (`alert:KEY`, or the 16 hex digits alone).
    Alert(String),
    /// A workload's first alert in the time asked for.
    Workload(Workload),
}

impl FromStr for Start {
    type Err = BadWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.strip_prefix("alert:").unwrap_or(s);
        let hex = key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit());
        if hex {
            return Ok(Start::Alert(key.to_ascii_lowercase()));
        }
        if s.starts_with("alert:") {
            return Err(BadWorkload(s.to_owned()));
        }
        s.parse().map(Start::Workload)
    }
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::Alert(k) => write!(f, "alert:{k}"),
            Start::Workload(w) => write!(f, "{w}"),
        }
    }
}

/// The query that finds the start hop between two Unix times (ns).
pub fn start_query(start: &Start, from_ns: i64, to_ns: i64) -> Query {
    let mut q = Query { from_ns, to_ns, without_duplicates: true, limit: 1, ..Query::default() };
    match start {
        Start::Alert(key) => q.flow_key = Some(key.clone()),
        Start::Workload(w) => {
            q.workload = Some(w.clone());
            q.alerting_only = true;
        }
    }
    q
}

/// The query for the records around the start hop.
pub fn window_query(start: &Row, window_ns: i64, include_approved: bool) -> Query {
    Query {
        from_ns: start.time_ns.saturating_sub(window_ns),
        to_ns: start.time_ns.saturating_add(window_ns).saturating_add(1),
        alerting_only: !include_approved,
        without_duplicates: true,
        limit: MAX_ROWS,
        ..Query::default()
    }
}

/// Which part of the chain a hop is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Before the start: how the attacker got to the start hop's client.
    Before,
    /// The start hop (the alert).
    Start,
    /// After the start: where the attacker went from the start hop's server.
    After,
}

/// One hop of the chain.
#[derive(Debug, Serialize)]
pub struct Hop {
    /// Its number, by time (1 is the earliest).
    pub n: usize,
    /// Before, at, or after the start.
    pub part: Part,
    /// When.
    pub time: String,
    /// The client end.
    pub src: EndView,
    /// The server end.
    pub dst: EndView,
    /// The verdict kind.
    pub verdict: String,
    /// Its severity.
    pub severity: String,
    /// Whether it calls for an alert.
    pub alert: bool,
    /// Between tiers: `up`, `skipping_up`, `level`, `down` (absent within a zone).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tier_direction: String,
    /// Whether it crossed a zone boundary.
    pub crossed_boundary: bool,
    /// The alert's key, for a connection that raised one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub flow_key: String,
    /// The host whose daemon reported it.
    pub reporter: String,
}

/// The chain.
#[derive(Debug, Serialize)]
pub struct Path {
    /// Where it started, as asked.
    pub start: String,
    /// The window around the start hop, in seconds.
    pub window_seconds: u64,
    /// Whether approved hops were followed.
    pub include_approved: bool,
    /// The hops, by time.
    pub hops: Vec<Hop>,
    /// True when the window held more records than a search reads.
    pub truncated: bool,
}

fn same_hop(a: &Row, b: &Row) -> bool {
    (a.time_ns, &a.reporter, &a.record, &a.kind, &a.src_addr, a.src_port, &a.dst_addr, a.dst_port)
        == (b.time_ns, &b.reporter, &b.record, &b.kind, &b.src_addr, b.src_port, &b.dst_addr, b.dst_port)
}

/// The graph of hops that connected: addresses, and an edge per record (its index in `rows`).
fn graph<'r>(rows: &'r [Row], start: &Row) -> (DiGraph<(), usize>, HashMap<&'r str, NodeIndex>) {
    let mut graph = DiGraph::new();
    let mut at: HashMap<&str, NodeIndex> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.kind == "connect_failed" || same_hop(r, start) {
            continue;
        }
        let a = *at.entry(r.src_addr.as_str()).or_insert_with(|| graph.add_node(()));
        let b = *at.entry(r.dst_addr.as_str()).or_insert_with(|| graph.add_node(()));
        graph.add_edge(a, b, i);
    }
    (graph, at)
}

/// Forward from `from` at `t0` (earliest arrival) or backward into it (latest departure), within
/// `window_ns`: the records used, by index.
fn follow(
    graph: &DiGraph<(), usize>,
    rows: &[Row],
    from: NodeIndex,
    t0: i64,
    window_ns: i64,
    forward: bool,
) -> Vec<usize> {
    // Keyed so that the heap pops the earliest arrival forward, the latest departure backward.
    let order = |t: i64| if forward { Reverse(t) } else { Reverse(-t) };
    let mut best: HashMap<NodeIndex, (i64, Option<usize>)> = HashMap::from([(from, (t0, None))]);
    let mut heap = BinaryHeap::from([(order(t0), from)]);
    let (direction, limit) = if forward {
        (Direction::Outgoing, t0.saturating_add(window_ns))
    } else {
        (Direction::Incoming, t0.saturating_sub(window_ns))
    };
    while let Some((Reverse(key), n)) = heap.pop() {
        let t = if forward { key } else { -key };
        if best.get(&n).is_some_and(|(b, _)| *b != t) {
            continue;
        }
        for e in graph.edges_directed(n, direction) {
            let r = &rows[*e.weight()];
            let usable =
                if forward { r.time_ns >= t && r.time_ns <= limit } else { r.time_ns <= t && r.time_ns >= limit };
            if !usable {
                continue;
            }
            let next = if forward { e.target() } else { e.source() };
            let better = best.get(&next).is_none_or(|(b, _)| if forward { r.time_ns < *b } else { r.time_ns > *b });
            if better && next != from {
                best.insert(next, (r.time_ns, Some(*e.weight())));
                heap.push((order(r.time_ns), next));
            }
        }
    }
    best.into_values().filter_map(|(_, used)| used).collect()
}

/// The chain around `start` among `rows` (the records [`window_query`] selected).
pub fn chain(start_asked: &Start, start: &Row, rows: &[Row], window_ns: i64, include_approved: bool) -> Path {
    let (graph, at) = graph(rows, start);
    let mut used: Vec<(&Row, Part)> = vec![(start, Part::Start)];
    if let Some(&b) = at.get(start.dst_addr.as_str()) {
        used.extend(
            follow(&graph, rows, b, start.time_ns, window_ns, true).into_iter().map(|i| (&rows[i], Part::After)),
        );
    }
    if let Some(&a) = at.get(start.src_addr.as_str()) {
        used.extend(
            follow(&graph, rows, a, start.time_ns, window_ns, false).into_iter().map(|i| (&rows[i], Part::Before)),
        );
    }
    used.sort_by(|(a, pa), (b, pb)| {
        (a.time_ns, *pa as u8, &a.src_addr, &a.dst_addr, a.dst_port).cmp(&(
            b.time_ns,
            *pb as u8,
            &b.src_addr,
            &b.dst_addr,
            b.dst_port,
        ))
    });
    let hops = used
        .into_iter()
        .enumerate()
        .map(|(i, (r, part))| Hop {
            n: i + 1,
            part,
            time: time(r.time_ns),
            src: EndView::src(r),
            dst: EndView::dst(r),
            verdict: r.verdict.clone(),
            severity: r.severity.clone(),
            alert: r.alert == 1,
            tier_direction: r.tier_direction.clone(),
            crossed_boundary: r.src_zone != r.dst_zone,
            flow_key: r.flow_key.clone(),
            reporter: r.reporter.clone(),
        })
        .collect();
    Path {
        start: start_asked.to_string(),
        window_seconds: u64::try_from(window_ns / 1_000_000_000).unwrap_or(0),
        include_approved,
        hops,
        truncated: rows.len() >= MAX_ROWS as usize,
    }
}

/// The chain as a table.
pub fn text(p: &Path) -> String {
    let mut out = format!(
        "Lateral-movement path from {} (window {} s{})\n\n",
        p.start,
        p.window_seconds,
        if p.include_approved { ", approved hops included" } else { ", unapproved hops only" }
    );
    let rows: Vec<Vec<String>> = p
        .hops
        .iter()
        .map(|h| {
            vec![
                h.n.to_string(),
                h.time.clone(),
                h.src.label(),
                h.dst.label(),
                h.dst.port.map_or(String::new(), |p| p.to_string()),
                h.verdict.clone(),
                if h.tier_direction.is_empty() { "-".into() } else { h.tier_direction.clone() },
                if h.crossed_boundary { "yes".into() } else { "no".into() },
                match h.part {
                    Part::Before => "before",
                    Part::Start => "START",
                    Part::After => "after",
                }
                .into(),
            ]
        })
        .collect();
    out.push_str(&table(&["#", "TIME", "FROM", "TO", "PORT", "VERDICT", "TIER", "CROSSES", ""], &rows));
    if p.truncated {
        out.push_str("(the window holds more records than one search reads: narrow it with --window)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(t: i64, src: &str, dst: &str, verdict: &str) -> Row {
        Row {
            time_ns: t,
            last_ns: t,
            record: "connection".into(),
            kind: "connect".into(),
            src_addr: src.into(),
            dst_addr: dst.into(),
            dst_port: 80,
            verdict: verdict.into(),
            alert: i64::from(verdict != "approved"),
            ..Row::default()
        }
    }

    fn addrs(p: &Path) -> Vec<(String, String, Part)> {
        p.hops.iter().map(|h| (h.src.addr.clone(), h.dst.addr.clone(), h.part)).collect()
    }

    #[test]
    fn hops_are_followed_in_time_order_both_ways() {
        let start = hop(100, "edge", "cache", "lateral_movement");
        let rows = vec![
            hop(50, "outside", "edge", "unmodelled_endpoint"),
            start.clone(),
            // Left the cache before the attacker got there: not part of the chain.
            hop(90, "cache", "mail", "lateral_movement"),
            hop(150, "cache", "db", "lateral_movement"),
            hop(170, "db", "vault", "lateral_movement"),
            // Arrived at the edge after the start: not how the attacker got there.
            hop(120, "other", "edge", "lateral_movement"),
            // Out of the window.
            hop(10_000, "vault", "backup", "lateral_movement"),
        ];
        let p = chain(&Start::Workload(Workload::Node("edge".into())), &start, &rows, 1_000, false);
        let s = |a: &str, b: &str, p: Part| (a.to_owned(), b.to_owned(), p);
        assert_eq!(
            addrs(&p),
            [
                s("outside", "edge", Part::Before),
                s("edge", "cache", Part::Start),
                s("cache", "db", Part::After),
                s("db", "vault", Part::After)
            ]
        );
        assert_eq!(p.hops.iter().map(|h| h.n).collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn each_address_is_reached_once_by_its_earliest_hop_and_failed_attempts_lead_nowhere() {
        let start = hop(100, "edge", "cache", "lateral_movement");
        let mut failed = hop(105, "cache", "secrets", "lateral_movement");
        failed.kind = "connect_failed".into();
        let rows = vec![
            start.clone(),
            hop(130, "cache", "db", "lateral_movement"),
            hop(110, "cache", "db", "lateral_movement"),
            failed,
            hop(140, "secrets", "vault", "lateral_movement"),
        ];
        let p = chain(&Start::Alert("0123456789abcdef".into()), &start, &rows, 1_000, false);
        assert_eq!(p.hops.len(), 2, "{:?}", addrs(&p));
        assert_eq!(p.hops[1].time, time(110));
    }

    #[test]
    fn starts_are_alert_keys_or_workloads() {
        assert_eq!("0123456789ABCDEF".parse::<Start>().ok(), Some(Start::Alert("0123456789abcdef".into())));
        assert_eq!("alert:0123456789abcdef".parse::<Start>().ok(), Some(Start::Alert("0123456789abcdef".into())));
        assert!("alert:xyz".parse::<Start>().is_err());
        assert_eq!("api".parse::<Start>().ok(), Some(Start::Workload(Workload::Node("api".into()))));
    }
}
