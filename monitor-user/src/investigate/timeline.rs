//! `investigate timeline WORKLOAD`: every flow and alerting connection with the workload at
//! either end, both directions, in time order, with verdicts. A connection two workloads of one
//! node reported from both ends shows once; an alerting flow shows as its connections, each at its
//! time (its flow record only when some were counted without being recorded).

use serde::Serialize;

use super::view::{EndView, table, time};
use crate::store::query::{Query, Workload};
use crate::store::row::Row;

/// One entry of a timeline.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// When (the first connection it stands for).
    pub time: String,
    /// When the last connection it stands for was (a flow interval).
    pub last: String,
    /// `out` when the workload connected, `in` when it was connected to.
    pub direction: &'static str,
    /// `flow` (an interval of a flow) or `connection` (one connection of an alerting flow).
    pub record: String,
    /// `connect`, `connect_failed` or `accept`: which side reported it.
    pub kind: String,
    /// The client end.
    pub src: EndView,
    /// The server end.
    pub dst: EndView,
    /// The verdict kind (absent without a DFD).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub verdict: String,
    /// Its severity.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub severity: String,
    /// Whether it calls for an alert.
    pub alert: bool,
    /// Connections it stands for.
    pub connections: i64,
    /// The alert's key, for a connection that raised one (`investigate path KEY`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub flow_key: String,
    /// The host whose daemon reported it.
    pub reporter: String,
}

/// A workload's timeline.
#[derive(Debug, Serialize)]
pub struct Timeline {
    /// The workload asked for.
    pub workload: String,
    /// From (RFC 3339).
    pub from: String,
    /// To (RFC 3339).
    pub to: String,
    /// The entries, oldest first.
    pub entries: Vec<Entry>,
    /// True when the limit cut the list short.
    pub truncated: bool,
}

/// The query for `workload` between two Unix times (ns).
pub fn query(workload: &Workload, from_ns: i64, to_ns: i64, limit: u32) -> Query {
    Query {
        from_ns,
        to_ns,
        workload: Some(workload.clone()),
        without_duplicates: true,
        limit: limit.saturating_add(1),
        ..Query::default()
    }
}

/// The timeline from the rows [`query`] selected.
pub fn timeline(workload: &Workload, from_ns: i64, to_ns: i64, limit: u32, mut rows: Vec<Row>) -> Timeline {
    let truncated = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    // A daemon without a DFD does not pair a same-node connection's two sightings: its connect's
    // row stands for both.
    let unpaired_connects: std::collections::HashSet<(&str, &str, &str, i64, i64)> = rows
        .iter()
        .filter(|r| r.verdict.is_empty() && r.kind == "connect")
        .map(|r| (r.reporter.as_str(), r.src_addr.as_str(), r.dst_addr.as_str(), r.dst_port, r.time_ns / MINUTE_NS))
        .collect();
    let seen_from_the_client = |r: &Row| {
        r.verdict.is_empty()
            && r.kind == "accept"
            && unpaired_connects.contains(&(
                r.reporter.as_str(),
                r.src_addr.as_str(),
                r.dst_addr.as_str(),
                r.dst_port,
                r.time_ns / MINUTE_NS,
            ))
    };
    let entries = rows
        .iter()
        .filter(|r| !told_one_by_one(r) && !seen_from_the_client(r))
        .map(|r| {
            let src = EndView::src(r);
            Entry {
                time: time(r.time_ns),
                last: time(r.last_ns),
                direction: if is_workload(workload, &src) { "out" } else { "in" },
                record: r.record.clone(),
                kind: r.kind.clone(),
                src,
                dst: EndView::dst(r),
                verdict: r.verdict.clone(),
                severity: r.severity.clone(),
                alert: r.alert == 1,
                connections: r.connections,
                flow_key: r.flow_key.clone(),
                reporter: r.reporter.clone(),
            }
        })
        .collect();
    Timeline { workload: workload.to_string(), from: time(from_ns), to: time(to_ns), entries, truncated }
}

/// The store sums flows a minute at a time.
const MINUTE_NS: i64 = 60_000_000_000;

/// Whether `r` is the flow record of an alerting flow whose connections were all recorded one by
/// one: they are in the timeline already, each with its own time.
fn told_one_by_one(r: &Row) -> bool {
    r.record == "flow"
        && r.alert == 1
        && serde_json::from_str::<serde_json::Value>(&r.json).is_ok_and(|j| j["unreported"].as_u64() == Some(0))
}

/// Whether `end` is the workload.
pub fn is_workload(w: &Workload, end: &EndView) -> bool {
    match w {
        Workload::Node(n) => &end.node == n,
        Workload::Pod(p) => &end.pod == p,
        Workload::Addr(a) => end.addr == a.to_string(),
        Workload::Cgroup(c) => &end.cgroup == c,
    }
}

/// The timeline as a table.
pub fn text(t: &Timeline) -> String {
    let mut out = format!("Timeline of {} from {} to {}\n\n", t.workload, t.from, t.to);
    let rows: Vec<Vec<String>> = t
        .entries
        .iter()
        .map(|e| {
            let peer = if e.direction == "out" { &e.dst } else { &e.src };
            vec![
                e.time.clone(),
                e.direction.to_owned(),
                peer.label(),
                e.dst.port.map_or(String::new(), |p| p.to_string()),
                if e.verdict.is_empty() { "-".into() } else { e.verdict.clone() },
                if e.alert { "ALERT".into() } else { String::new() },
                e.connections.to_string(),
                e.reporter.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("nothing recorded for this workload in this time\n");
    } else {
        out.push_str(&table(&["TIME", "DIR", "PEER", "PORT", "VERDICT", "", "CONNS", "SEEN BY"], &rows));
    }
    if t.truncated {
        out.push_str("(more entries than --limit: narrow the time with --since/--until)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, verdict: &str, t: i64) -> Row {
        Row {
            time_ns: t,
            last_ns: t,
            reporter: "n1".into(),
            record: "flow".into(),
            kind: kind.into(),
            src_addr: "10.0.0.1".into(),
            dst_addr: "10.0.0.2".into(),
            dst_port: 80,
            verdict: verdict.into(),
            connections: 3,
            json: "{}".into(),
            ..Row::default()
        }
    }

    #[test]
    fn a_connection_seen_from_both_ends_shows_once() {
        let w: Workload = "addr:10.0.0.2".parse().unwrap();
        // Without a DFD nothing is paired: the accept's row is the same connections again.
        let t = timeline(&w, 0, i64::MAX, 10, vec![row("connect", "", 5), row("accept", "", 6)]);
        assert_eq!(t.entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["connect"]);
        // An accept of a client on another node (no connect row) stays.
        let t = timeline(&w, 0, i64::MAX, 10, vec![row("accept", "", 6)]);
        assert_eq!(t.entries.len(), 1);
        // With a DFD the daemon pairs them itself (the query leaves out the marked duplicate).
        let t = timeline(&w, 0, i64::MAX, 10, vec![row("connect", "approved", 5), row("accept", "approved", 6)]);
        assert_eq!(t.entries.len(), 2);
    }
}
