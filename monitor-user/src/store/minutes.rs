//! Flow records a minute at a time. The daemon writes a record per active flow every flow
//! interval (a second by default): right for metrics, far too many rows to keep for a week. The
//! store keeps one row per flow and minute instead: the minute's first connection time, its last,
//! and the connections summed (the row's `json` is the minute's first record). Connections of
//! alerting flows are not summed: each keeps its own row and time. At most 65,536 flows are summed
//! at once; beyond that a minute is closed early.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::row::Row;

/// How long a flow's records are summed into one row.
pub const MINUTE: Duration = Duration::from_secs(60);
/// Flows summed at once, at most.
const MAX_OPEN: usize = 65_536;

/// What makes two flow records the same flow.
type Key = (String, String, String, String, i64, String, String, String, i64);

fn key(r: &Row) -> Key {
    (
        r.reporter.clone(),
        r.kind.clone(),
        r.src_addr.clone(),
        r.dst_addr.clone(),
        r.dst_port,
        r.src_node.clone(),
        r.dst_node.clone(),
        format!("{}|{}", r.verdict, r.dfd_sha256),
        r.duplicate,
    )
}

/// The flows of the minute being summed.
pub struct Minutes {
    open: HashMap<Key, Row>,
    started: Instant,
}

impl Default for Minutes {
    fn default() -> Self {
        Self { open: HashMap::new(), started: Instant::now() }
    }
}

impl Minutes {
    /// Adds one flow record's row; returns the minute's rows when it had to be closed early.
    pub fn add(&mut self, row: Row) -> Option<Vec<Row>> {
        let k = key(&row);
        if let Some(sum) = self.open.get_mut(&k) {
            sum.connections = sum.connections.saturating_add(row.connections);
            sum.time_ns = sum.time_ns.min(row.time_ns);
            sum.last_ns = sum.last_ns.max(row.last_ns);
            return None;
        }
        let full = (self.open.len() >= MAX_OPEN).then(|| self.close(Instant::now()));
        self.open.insert(k, row);
        full
    }

    /// Whether the minute is over.
    pub fn due(&self, now: Instant) -> bool {
        !self.open.is_empty() && now.duration_since(self.started) >= MINUTE
    }

    /// Closes the minute: its rows, oldest first.
    pub fn close(&mut self, now: Instant) -> Vec<Row> {
        self.started = now;
        let mut rows: Vec<Row> = self.open.drain().map(|(_, r)| r).collect();
        rows.sort_by_key(|r| r.time_ns);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(t: i64, dst: &str, n: i64) -> Row {
        Row {
            time_ns: t,
            last_ns: t + 5,
            record: "flow".into(),
            dst_addr: dst.into(),
            connections: n,
            ..Row::default()
        }
    }

    #[test]
    fn a_flows_records_become_one_row_a_minute() {
        let mut m = Minutes::default();
        for (t, dst, n) in [(10, "a", 2), (20, "a", 3), (15, "b", 1), (5, "a", 1)] {
            assert!(m.add(flow(t, dst, n)).is_none());
        }
        assert!(!m.due(Instant::now()));
        assert!(m.due(Instant::now() + MINUTE));
        let rows = m.close(Instant::now());
        let summed: Vec<(&str, i64, i64, i64)> =
            rows.iter().map(|r| (r.dst_addr.as_str(), r.time_ns, r.last_ns, r.connections)).collect();
        assert_eq!(summed, [("a", 5, 25, 6), ("b", 15, 20, 1)]);
        assert!(m.close(Instant::now()).is_empty());
    }
}
