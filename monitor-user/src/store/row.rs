//! One stored record as the flow store's columns: the flow and connection records the daemon
//! writes, flattened to plain columns (text and integers, never NULL, `''` or 0 when absent) that
//! SQLite and ClickHouse both hold and both query with the same SQL, plus the whole record as
//! JSON. The column list is the one place both backends' schemas and queries take names from.

use serde::{Deserialize, Serialize};

use crate::sinks::flow_record::FlowRecord;
use crate::sinks::record::{Address, ConnectionRecord, LocalEnd};

/// Declares [`Row`] and, from the same list, its column names and its SQLite conversions, so
/// that the struct, the schema and every statement always agree.
macro_rules! row {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)*) => {
        /// One stored record.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Row {
            $($(#[$doc])* pub $name: $ty,)*
        }

        /// The columns, in table order (docs/store.md describes each).
        pub const COLUMNS: &[&str] = &[$(stringify!($name)),*];

        impl Row {
            /// The values of [`COLUMNS`], in order, for an SQLite statement.
            pub fn sql_values(&self) -> Vec<&dyn rusqlite::ToSql> {
                vec![$(&self.$name),*]
            }

            /// The row an SQLite query returned (by column name).
            pub fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(Self { $($name: r.get(stringify!($name))?),* })
            }
        }
    };
}

row! {
    /// Unix time (ns) of the first connection it stands for.
    time_ns: i64,
    /// Unix time (ns) of the last (equal to `time_ns` for a connection).
    last_ns: i64,
    /// The host whose daemon saw it.
    reporter: String,
    /// `flow` (a `dfdwatch.flow.v1` interval) or `connection` (a `dfdwatch.connection.v1`).
    record: String,
    /// `connect`, `connect_failed` or `accept`.
    kind: String,
    /// Connections it stands for.
    connections: i64,
    /// The client end: IP address.
    src_addr: String,
    /// The client end: port (0: a flow record's client, whose port changes with each connection).
    src_port: i64,
    /// The client end: DFD node id.
    src_node: String,
    /// The client end: DFD zone id.
    src_zone: String,
    /// The client end: tier id of the zone.
    src_tier: String,
    /// The client end: Kubernetes pod `namespace/name`.
    src_pod: String,
    /// The client end: cgroup path (the local end only).
    src_cgroup: String,
    /// The client end: executable (the local end only).
    src_exe: String,
    /// The server end: IP address.
    dst_addr: String,
    /// The server end: port.
    dst_port: i64,
    /// The server end: DFD node id.
    dst_node: String,
    /// The server end: DFD zone id.
    dst_zone: String,
    /// The server end: tier id of the zone.
    dst_tier: String,
    /// The server end: Kubernetes pod `namespace/name`.
    dst_pod: String,
    /// The server end: cgroup path (the local end only).
    dst_cgroup: String,
    /// The server end: executable (the local end only).
    dst_exe: String,
    /// Verdict kind (`''` without a DFD).
    verdict: String,
    /// Severity (`''` without a DFD).
    severity: String,
    /// `up`, `skipping_up`, `level`, `down`, or `''` (not a crossing between zones).
    tier_direction: String,
    /// 1 when the verdict calls for an alert.
    alert: i64,
    /// 1 when this record raised an alert (alerting, and not the second sighting of a connection).
    raises_alert: i64,
    /// 1 when it is the second sighting of a connection seen from both ends on this node (counted
    /// under the other): queries that count connections leave it out.
    duplicate: i64,
    /// For a connection that raised an alert: the alert's `flow_key`.
    flow_key: String,
    /// The DFD revision that judged it.
    dfd_sha256: String,
    /// The whole record.
    json: String,
}

/// One end of a stored record, while it is built.
#[derive(Default)]
struct End {
    addr: String,
    port: i64,
    node: String,
    zone: String,
    tier: String,
    pod: String,
    cgroup: String,
    exe: String,
}

fn end(a: &Address, local: Option<&LocalEnd>) -> End {
    let dfd = a.dfd.as_ref();
    let text = |s: Option<&std::sync::Arc<str>>| s.map(ToString::to_string).unwrap_or_default();
    let k8s = a.k8s.as_ref();
    End {
        addr: a.addr.clone(),
        port: a.port.map_or(0, i64::from),
        node: text(dfd.and_then(|p| p.node.as_ref())),
        zone: text(dfd.and_then(|p| p.zone.as_ref())),
        tier: text(dfd.and_then(|p| p.tier.as_ref())),
        pod: k8s.and_then(|k| Some(format!("{}/{}", k.namespace.as_deref()?, k.pod.as_deref()?))).unwrap_or_default(),
        cgroup: local.and_then(|l| l.identity.cgroup_path.clone()).unwrap_or_default(),
        exe: local.and_then(|l| l.identity.exe.clone()).unwrap_or_default(),
    }
}

fn ends(src: &Address, dst: &Address, local_side: &str, local: &LocalEnd) -> (End, End) {
    let local_is_src = local_side == "src";
    (end(src, local_is_src.then_some(local)), end(dst, (!local_is_src).then_some(local)))
}

impl Row {
    fn with_ends(mut self, src: End, dst: End) -> Self {
        (self.src_addr, self.src_port, self.src_node, self.src_zone) = (src.addr, src.port, src.node, src.zone);
        (self.src_tier, self.src_pod, self.src_cgroup, self.src_exe) = (src.tier, src.pod, src.cgroup, src.exe);
        (self.dst_addr, self.dst_port, self.dst_node, self.dst_zone) = (dst.addr, dst.port, dst.node, dst.zone);
        (self.dst_tier, self.dst_pod, self.dst_cgroup, self.dst_exe) = (dst.tier, dst.pod, dst.cgroup, dst.exe);
        self
    }

    /// The row of one flow interval, whose first and last connections were at these Unix times.
    pub fn flow(r: &FlowRecord, first_ns: i64, last_ns: i64) -> Self {
        let (src, dst) = ends(&r.src, &r.dst, r.local_side, &r.local);
        let v = r.verdict.as_ref();
        Row {
            time_ns: first_ns,
            last_ns,
            reporter: r.node.clone(),
            record: "flow".into(),
            kind: r.kind.into(),
            connections: i64::try_from(r.connections).unwrap_or(i64::MAX),
            verdict: v.map(|v| v.kind.as_str().to_owned()).unwrap_or_default(),
            severity: v.map(|v| v.severity.as_str().to_owned()).unwrap_or_default(),
            tier_direction: v.and_then(|v| v.tier_direction).map(|t| t.as_str().to_owned()).unwrap_or_default(),
            alert: i64::from(v.is_some_and(|v| v.alert)),
            raises_alert: i64::from(v.is_some_and(|v| v.alert) && !r.counted_elsewhere),
            duplicate: i64::from(r.counted_elsewhere),
            flow_key: String::new(),
            dfd_sha256: r.dfd.as_ref().map(|d| d.sha256.clone()).unwrap_or_default(),
            json: serde_json::to_string(r).unwrap_or_default(),
            ..Row::default()
        }
        .with_ends(src, dst)
    }

    /// The row of one connection at Unix time `time_ns`; `flow_key` is its alert's key when it
    /// raised one.
    pub fn connection(r: &ConnectionRecord, time_ns: i64, flow_key: Option<&str>) -> Self {
        let (src, dst) = ends(&r.src, &r.dst, r.local_side, &r.local);
        let v = r.verdict.as_ref();
        let alert = v.is_some_and(|v| v.alert);
        Row {
            time_ns,
            last_ns: time_ns,
            reporter: r.node.clone(),
            record: "connection".into(),
            kind: r.kind.into(),
            connections: 1,
            verdict: v.map(|v| v.kind.as_str().to_owned()).unwrap_or_default(),
            severity: v.map(|v| v.severity.as_str().to_owned()).unwrap_or_default(),
            tier_direction: v.and_then(|v| v.tier_direction).map(|t| t.as_str().to_owned()).unwrap_or_default(),
            alert: i64::from(alert),
            raises_alert: i64::from(alert && !r.other_end_seen),
            duplicate: i64::from(r.other_end_seen),
            flow_key: flow_key.unwrap_or_default().to_owned(),
            dfd_sha256: String::new(),
            json: serde_json::to_string(r).unwrap_or_default(),
            ..Row::default()
        }
        .with_ends(src, dst)
    }
}
