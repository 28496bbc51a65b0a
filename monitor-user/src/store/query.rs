//! The questions `dfdwatch investigate` asks a store, as SQL that SQLite and ClickHouse both
//! accept (plain comparisons, `AND`/`OR`, `ORDER BY` and `LIMIT`), with the values kept apart as
//! parameters: bound by SQLite, quoted as literals for ClickHouse ([`Param::literal`]). The order
//! is total, so both stores give the same rows in the same order.

use std::net::IpAddr;
use std::str::FromStr;

use super::row::COLUMNS;
use super::schema::TABLE;

/// A workload as an analyst names it: a DFD node, a pod, a cgroup or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A DFD node id (`node:api`, or a bare word).
    Node(String),
    /// A Kubernetes pod (`pod:shop/web-7d9f`, or `NAMESPACE/NAME`).
    Pod(String),
    /// A cgroup path (`cgroup:/kubepods/...`, or anything starting with `/`).
    Cgroup(String),
    /// An IP address (`addr:10.0.0.5`, or an address).
    Addr(IpAddr),
}

/// A workload that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a workload: name a DFD node (node:ID), a pod (pod:NAMESPACE/NAME), a cgroup (cgroup:/PATH) or an address (addr:IP)"
)]
pub struct BadWorkload(pub String);

impl FromStr for Workload {
    type Err = BadWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadWorkload(s.to_owned());
        let valid = |v: &str| !v.is_empty() && v.len() <= 1024 && !v.chars().any(char::is_control);
        let (kind, value) = match s.split_once(':') {
            Some((k @ ("node" | "pod" | "cgroup" | "addr"), v)) => (k, v),
            _ if s.parse::<IpAddr>().is_ok() => ("addr", s),
            _ if s.starts_with('/') => ("cgroup", s),
            _ if s.contains('/') => ("pod", s),
            _ => ("node", s),
        };
        if !valid(value) {
            return Err(bad());
        }
        Ok(match kind {
            "addr" => Workload::Addr(value.parse().map_err(|_| bad())?),
            "pod" if value.split('/').count() == 2 && !value.starts_with('/') && !value.ends_with('/') => {
                Workload::Pod(value.to_owned())
            }
            "pod" => return Err(bad()),
            "cgroup" => Workload::Cgroup(value.to_owned()),
            _ => Workload::Node(value.to_owned()),
        })
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Node(v) => write!(f, "node:{v}"),
            Workload::Pod(v) => write!(f, "pod:{v}"),
            Workload::Cgroup(v) => write!(f, "cgroup:{v}"),
            Workload::Addr(v) => write!(f, "addr:{v}"),
        }
    }
}

impl Workload {
    /// The column pair this workload is matched on, and the value.
    fn columns(&self) -> (&'static str, &'static str, String) {
        match self {
            Workload::Node(v) => ("src_node", "dst_node", v.clone()),
            Workload::Pod(v) => ("src_pod", "dst_pod", v.clone()),
            Workload::Cgroup(v) => ("src_cgroup", "dst_cgroup", v.clone()),
            Workload::Addr(v) => ("src_addr", "dst_addr", v.to_string()),
        }
    }
}

/// A value of a query, kept out of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

impl Param {
    /// The value as a ClickHouse literal: integers as they are; strings quoted, with the
    /// backslash and the quote escaped.
    pub fn literal(&self) -> String {
        match self {
            Param::Int(i) => i.to_string(),
            Param::Text(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }
}

/// Which records a question needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// From this Unix time (ns), inclusive.
    pub from_ns: i64,
    /// To this Unix time (ns), exclusive.
    pub to_ns: i64,
    /// Records with this workload at either end.
    pub workload: Option<Workload>,
    /// Only the connection that raised the alert with this key.
    pub flow_key: Option<String>,
    /// Only records from this DFD node to that one.
    pub between: Option<(String, String)>,
    /// Only records whose verdict calls for an alert.
    pub alerting_only: bool,
    /// Only records with this verdict.
    pub verdict: Option<String>,
    /// Leave out second sightings of a connection already recorded from its other end.
    pub without_duplicates: bool,
    /// Newest first (the order otherwise the same, reversed).
    pub newest_first: bool,
    /// At most this many rows (the oldest first).
    pub limit: u32,
}

impl Query {
    /// The SQL text (`?` for each parameter) and the parameters, in order.
    pub fn sql(&self) -> (String, Vec<Param>) {
        let mut sql = format!("SELECT {} FROM {TABLE} WHERE time_ns >= ? AND time_ns < ?", COLUMNS.join(", "));
        let mut params = vec![Param::Int(self.from_ns), Param::Int(self.to_ns)];
        if let Some(w) = &self.workload {
            let (src, dst, value) = w.columns();
            sql.push_str(&format!(" AND ({src} = ? OR {dst} = ?)"));
            params.extend([Param::Text(value.clone()), Param::Text(value)]);
        }
        if let Some(key) = &self.flow_key {
            // The second condition lets SQLite use its partial index of the keys that are set.
            sql.push_str(" AND flow_key = ? AND flow_key != ''");
            params.push(Param::Text(key.clone()));
        }
        if let Some((src, dst)) = &self.between {
            sql.push_str(" AND src_node = ? AND dst_node = ?");
            params.extend([Param::Text(src.clone()), Param::Text(dst.clone())]);
        }
        if let Some(verdict) = &self.verdict {
            sql.push_str(" AND verdict = ?");
            params.push(Param::Text(verdict.clone()));
        }
        if self.alerting_only {
            sql.push_str(" AND alert = 1");
        }
        if self.without_duplicates {
            sql.push_str(" AND duplicate = 0");
        }
        let order =
            ["time_ns", "reporter", "record", "kind", "src_addr", "src_port", "dst_addr", "dst_port", "last_ns"];
        let dir = if self.newest_first { " DESC" } else { "" };
        let order: Vec<String> = order.iter().map(|c| format!("{c}{dir}")).collect();
        sql.push_str(&format!(" ORDER BY {} LIMIT {}", order.join(", "), self.limit));
        (sql, params)
    }

    /// The SQL with its parameters written in as literals (for ClickHouse).
    pub fn sql_with_literals(&self) -> String {
        let (sql, params) = self.sql();
        let mut out = String::with_capacity(sql.len() + 64);
        let mut params = params.iter();
        for (i, part) in sql.split('?').enumerate() {
            if i > 0
                && let Some(p) = params.next()
            {
                out.push_str(&p.literal());
            }
            out.push_str(part);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_read_by_prefix_or_shape() {
        let w = |s: &str| s.parse::<Workload>().map_err(|e| e.to_string());
        assert_eq!(w("api"), Ok(Workload::Node("api".into())));
        assert_eq!(w("node:a/b"), Ok(Workload::Node("a/b".into())));
        assert_eq!(w("shop/web-1"), Ok(Workload::Pod("shop/web-1".into())));
        assert_eq!(w("/kubepods/x"), Ok(Workload::Cgroup("/kubepods/x".into())));
        assert_eq!(w("10.0.0.5"), Ok(Workload::Addr("10.0.0.5".parse().unwrap())));
        assert_eq!(w("fd00::1"), Ok(Workload::Addr("fd00::1".parse().unwrap())));
        for bad in ["", "addr:nope", "pod:a/b/c", "pod:/x", "node:", "a\nb"] {
            assert!(w(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_stay_out_of_the_sql_and_are_quoted_for_clickhouse() {
        let q = Query {
            from_ns: 1,
            to_ns: 2,
            workload: Some(Workload::Node("x' OR 1=1 --\\".into())),
            without_duplicates: true,
            limit: 10,
            ..Query::default()
        };
        let (sql, params) = q.sql();
        assert!(!sql.contains("OR 1=1"), "{sql}");
        assert_eq!(params.len(), 4);
        let literal = q.sql_with_literals();
        assert!(literal.contains(r"(src_node = 'x\' OR 1=1 --\\' OR dst_node = 'x\' OR 1=1 --\\')"), "{literal}");
        assert!(literal.contains("time_ns >= 1 AND time_ns < 2"), "{literal}");
    }
}
