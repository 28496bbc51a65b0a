//! What the store says was there: the workloads at both ends of every stored flow, named by what
//! stays stable (a Kubernetes namespace and service account, never a pod name or hash; on hosts
//! the systemd unit or cgroup, with the executables seen; anything else by its address), and the
//! flows between them with their ports, connection counts and first and last times.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::Value;

use crate::store::row::Row;

/// A workload, by what stays stable about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadId {
    /// A node of the base DFD (with `--base`), by id.
    Base(String),
    /// A Kubernetes workload: namespace and service account.
    K8s { namespace: String, service_account: String },
    /// A host service, by systemd unit.
    Unit(String),
    /// A local process group, by cgroup path.
    Cgroup(String),
    /// Anything else, by address.
    Addr(String),
}

/// What was seen of one workload.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// Addresses it used (loopback left out: every host shares it).
    pub addrs: BTreeSet<String>,
    /// Executables seen running it.
    pub exes: BTreeSet<String>,
    /// Ports it accepted connections on.
    pub served: BTreeSet<i64>,
}

/// What was seen of the flows from one workload to another.
#[derive(Clone, Debug, Default)]
pub struct FlowSeen {
    /// Server ports.
    pub ports: BTreeSet<i64>,
    /// Connections: the more of those seen from the client's side and from the server's (a
    /// daemon without a DFD does not pair the two sightings of a same-node connection).
    pub connections: i64,
    /// Connections seen from the client's side, and from the server's.
    pub by_side: [i64; 2],
    /// First connection (Unix ns).
    pub first_ns: i64,
    /// Last connection (Unix ns).
    pub last_ns: i64,
}

/// Everything learned from the rows.
#[derive(Debug, Default)]
pub struct Observed {
    /// The workloads.
    pub workloads: BTreeMap<WorkloadId, Workload>,
    /// The flows, by (client, server).
    pub flows: BTreeMap<(WorkloadId, WorkloadId), FlowSeen>,
    /// Rows read, and the connections they stand for.
    pub rows: u64,
    /// Connections counted.
    pub connections: i64,
    /// First and last time seen.
    pub first_ns: i64,
    /// Last time seen.
    pub last_ns: i64,
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The workload of one end of a stored record (`end` is its `src` or `dst`; `local` the
/// record's `local`, with the identity fields in it, when this end is the local one). `base`
/// holds the base DFD's node ids.
fn end_id(end: &Value, local: Option<&Value>, base: &BTreeSet<String>) -> WorkloadId {
    if let Some(node) = text(&end["dfd"]["node"]).filter(|n| base.contains(n)) {
        return WorkloadId::Base(node);
    }
    let k8s = &end["k8s"];
    if let (Some(namespace), Some(service_account)) = (text(&k8s["namespace"]), text(&k8s["service_account"])) {
        return WorkloadId::K8s { namespace, service_account };
    }
    if let Some(identity) = local {
        if let Some(unit) = text(&identity["systemd_unit"]) {
            return WorkloadId::Unit(unit);
        }
        if let Some(cgroup) = text(&identity["cgroup_path"]).filter(|p| p != "/") {
            return WorkloadId::Cgroup(cgroup);
        }
    }
    WorkloadId::Addr(text(&end["addr"]).unwrap_or_default())
}

impl Observed {
    /// Learns from `rows` (flow records; the second sightings of same-node connections give the
    /// server's own identity but are not counted twice). With `base` (the base DFD's node ids),
    /// ends the base places on one of its nodes are that node, and approved flows are skipped.
    pub fn from_rows(rows: &[Row], base: Option<&BTreeSet<String>>) -> Self {
        let empty = BTreeSet::new();
        let base_ids = base.unwrap_or(&empty);
        let mut seen = Observed { first_ns: i64::MAX, ..Observed::default() };
        // Each end of each row, by what the record says; then addresses that a local workload
        // used stand for that workload.
        let mut ends: Vec<(WorkloadId, WorkloadId)> = Vec::with_capacity(rows.len());
        let mut owner: BTreeMap<String, WorkloadId> = BTreeMap::new();
        for r in rows {
            let json: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
            let local_is_src = json["local_side"] == "src";
            let local = &json["local"];
            let src = end_id(&json["src"], local_is_src.then_some(local), base_ids);
            let dst = end_id(&json["dst"], (!local_is_src).then_some(local), base_ids);
            for (id, addr, is_local) in [(&src, &r.src_addr, local_is_src), (&dst, &r.dst_addr, !local_is_src)] {
                let w = seen.workloads.entry(id.clone()).or_default();
                if !is_loopback(addr) && !matches!(id, WorkloadId::Addr(_)) {
                    w.addrs.insert(addr.clone());
                    if is_local {
                        owner.entry(addr.clone()).or_insert_with(|| id.clone());
                    }
                }
                if is_local && let Some(exe) = text(&local["exe"]) {
                    w.exes.insert(exe);
                }
            }
            ends.push((src, dst));
        }
        let resolve = |id: WorkloadId| match &id {
            WorkloadId::Addr(a) => owner.get(a).cloned().unwrap_or(id),
            _ => id,
        };
        for (r, (src, dst)) in rows.iter().zip(ends) {
            let (src, dst) = (resolve(src), resolve(dst));
            if r.duplicate == 1 || (base.is_some() && r.verdict == "approved") {
                continue;
            }
            seen.workloads.entry(dst.clone()).or_default().served.insert(r.dst_port);
            seen.workloads.entry(src.clone()).or_default();
            let f = seen.flows.entry((src, dst)).or_insert(FlowSeen { first_ns: i64::MAX, ..FlowSeen::default() });
            f.ports.insert(r.dst_port);
            f.by_side[usize::from(r.kind == "accept")] += r.connections;
            f.connections = f.by_side[0].max(f.by_side[1]);
            f.first_ns = f.first_ns.min(r.time_ns);
            f.last_ns = f.last_ns.max(r.last_ns);
            seen.rows += 1;
            seen.first_ns = seen.first_ns.min(r.time_ns);
            seen.last_ns = seen.last_ns.max(r.last_ns);
        }
        seen.connections = seen.flows.values().map(|f| f.connections).sum();
        // Addresses that turned out to be a local workload's are not workloads of their own.
        seen.workloads.retain(|id, _| !matches!(id, WorkloadId::Addr(a) if owner.contains_key(a)));
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow record's row: `src` connects to `dst`, the local end as `local_side` says.
    fn row(src: Value, dst: Value, local_side: &str, local: Value, port: i64, duplicate: i64) -> Row {
        let json = serde_json::json!({"src": src, "dst": dst, "local_side": local_side, "local": local});
        Row {
            record: "flow".into(),
            kind: if local_side == "src" { "connect" } else { "accept" }.into(),
            src_addr: json["src"]["addr"].as_str().unwrap_or_default().into(),
            dst_addr: json["dst"]["addr"].as_str().unwrap_or_default().into(),
            dst_port: port,
            connections: 2,
            duplicate,
            time_ns: 10,
            last_ns: 20,
            json: json.to_string(),
            ..Row::default()
        }
    }

    #[test]
    fn pods_are_known_by_namespace_and_service_account_and_hosts_by_unit_or_address() {
        let web = serde_json::json!({"addr": "10.1.0.5", "k8s": {"namespace": "shop", "pod": "web-7d9f-x2", "service_account": "web"}});
        let db = serde_json::json!({"addr": "10.1.0.9", "k8s": {"namespace": "data", "pod": "db-0", "service_account": "postgres"}});
        let backup = serde_json::json!({"addr": "10.9.0.1"});
        let rows = vec![
            row(
                web.clone(),
                db.clone(),
                "src",
                serde_json::json!({"exe": "/app/web", "cgroup_path": "/kubepods/pod1"}),
                5432,
                0,
            ),
            // The same connection from the database's side: its identity, not counted again.
            row(web, db.clone(), "dst", serde_json::json!({"exe": "/usr/lib/postgresql/15/bin/postgres"}), 5432, 1),
            row(db, backup.clone(), "src", serde_json::json!({"exe": "/usr/bin/pg_dump"}), 22, 0),
            row(
                serde_json::json!({"addr": "10.9.0.2"}),
                backup,
                "src",
                serde_json::json!({"exe": "/usr/bin/rsync", "systemd_unit": "sync.service", "cgroup_path": "/system.slice/sync.service"}),
                873,
                0,
            ),
        ];
        let seen = Observed::from_rows(&rows, None);
        let k8s = |ns: &str, sa: &str| WorkloadId::K8s { namespace: ns.into(), service_account: sa.into() };
        let ids: Vec<&WorkloadId> = seen.workloads.keys().collect();
        assert_eq!(
            ids,
            [
                &k8s("data", "postgres"),
                &k8s("shop", "web"),
                &WorkloadId::Unit("sync.service".into()),
                &WorkloadId::Addr("10.9.0.1".into())
            ]
        );
        let web_to_db = &seen.flows[&(k8s("shop", "web"), k8s("data", "postgres"))];
        assert_eq!((web_to_db.connections, web_to_db.ports.iter().copied().collect::<Vec<_>>()), (2, vec![5432]));
        assert_eq!(seen.connections, 6);
        let draft = super::super::draft::draft(&seen, "t", None);
        for want in [
            "match: {k8s: {namespace: \"shop\", serviceAccount: \"web\"}}",
            "{id: data, name: \"data\", tier: unreviewed, match: {k8s: {namespace: \"data\"}}}",
            "id: data-postgres",
            "kind: datastore",
            "systemdUnits: [\"sync.service\"]",
            "cidrs: [\"10.9.0.1/32\"]",
        ] {
            assert!(draft.contains(want), "{want:?} missing:\n{draft}");
        }
        assert!(!draft.contains("web-7d9f"), "never a pod name:\n{draft}");
        let (dfd, findings) = dfdwatch_dfd::load::load_str("draft.yaml", &draft);
        assert!(findings.is_empty(), "the draft parses: {findings:?}");
        let lints = dfdwatch_dfd::lint::lint_undated(&dfd);
        assert!(lints.iter().any(|f| f.rule == "L001"), "{lints:?}");
    }
}
