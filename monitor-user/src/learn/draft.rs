//! The draft DFD, as YAML in dfdwatch's format, from what was [`Observed`]: a node per workload,
//! a zone per Kubernetes namespace (the rest in one zone, `unassigned`), a flow per pair of
//! workloads with the ports seen and a comment with its connections and first and last times.
//! What only a person can decide is left marked: every zone sits in the tier `unreviewed`, every
//! flow carries the data class `unreviewed` and no encryption or checkpoint, each with a
//! description starting with `TODO`, which the lint L001 reports as an error until it is decided.
//! Every string taken from the store is written as a quoted scalar; every id is made of letters,
//! digits and `-`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use dfdwatch_dfd::model::Dfd;

use super::observed::{FlowSeen, Observed, WorkloadId};

/// Ports of well-known datastores: a workload serving one is drawn as a datastore.
const DATASTORE_PORTS: &[i64] = &[3306, 5432, 5984, 6379, 7000, 8086, 9042, 9200, 11211, 27017];

/// The tier and data class every learned item points at until someone decides.
const UNREVIEWED: &str = "unreviewed";
/// The zone of workloads that are not in a Kubernetes namespace.
const UNASSIGNED: &str = "unassigned";

/// A YAML scalar for an untrusted string: JSON's quoting is valid YAML.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// An id made of `s`: lowercase letters, digits and `-`, starting with a letter or digit.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    let out = if out.is_empty() { "workload" } else { out };
    out.chars().take(100).collect()
}

/// Ids already taken (the base DFD's, and the draft's so far).
struct Ids(BTreeSet<String>);

impl Ids {
    fn unique(&mut self, base: String) -> String {
        let mut id = base.clone();
        let mut n = 2;
        while self.0.contains(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        self.0.insert(id.clone());
        id
    }
}

fn time(ns: i64) -> String {
    let ns = u64::try_from(ns).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)).to_string()
}

fn host_cidr(addr: &str) -> Option<String> {
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(format!("{a}/32")),
        IpAddr::V6(a) => Some(format!("{a}/128")),
    }
}

fn app_protocol(ports: &BTreeSet<i64>) -> Option<&'static str> {
    let known = |p: i64| match p {
        80 | 8080 | 8000 => Some("http"),
        443 | 8443 => Some("https"),
        5432 => Some("postgres"),
        6379 => Some("redis"),
        3306 => Some("mysql"),
        27017 => Some("mongodb"),
        53 => Some("dns"),
        9092 => Some("kafka"),
        _ => None,
    };
    let mut it = ports.iter().map(|p| known(*p));
    let first = it.next()??;
    it.all(|k| k == Some(first)).then_some(first)
}

/// One workload as a node of the draft.
struct NodeOut {
    id: String,
    name: String,
    zone: String,
    kind: &'static str,
    selector: String,
}

/// The draft: a complete DFD, or, with `base`, a fragment holding only what the base lacks (it
/// refers to the base's ids and is reviewed next to it).
pub fn draft(seen: &Observed, name: &str, base: Option<&Dfd>) -> String {
    // Ids are unique per kind of item, the base's included.
    let taken = |ids: Option<Vec<&String>>| Ids(ids.unwrap_or_default().into_iter().cloned().collect());
    let mut tiers = taken(base.map(|b| b.tiers.iter().map(|t| &t.id).collect()));
    let mut classes = taken(base.map(|b| b.data_classes.iter().map(|d| &d.id).collect()));
    let mut zone_ids = taken(base.map(|b| b.zones.iter().map(|z| &z.id).collect()));
    let mut node_ids = taken(base.map(|b| b.nodes.iter().map(|n| &n.id).collect()));
    let mut flow_ids = taken(base.map(|b| b.flows.iter().map(|f| &f.id).collect()));
    let tier = tiers.unique(UNREVIEWED.into());
    let data = classes.unique(UNREVIEWED.into());
    // Zones: one per namespace, one for the rest; only those a new node needs.
    let mut zones: BTreeMap<Option<String>, String> = BTreeMap::new();
    let mut nodes: BTreeMap<WorkloadId, NodeOut> = BTreeMap::new();
    for (id, w) in &seen.workloads {
        let namespace = match id {
            WorkloadId::Base(_) => continue,
            WorkloadId::K8s { namespace, .. } => Some(namespace.clone()),
            _ => None,
        };
        let zone = zones
            .entry(namespace.clone())
            .or_insert_with(|| zone_ids.unique(namespace.as_deref().map_or(UNASSIGNED.into(), slug)))
            .clone();
        let exes: Vec<String> = w.exes.iter().map(|e| q(e)).collect();
        let cidrs: Vec<String> = w.addrs.iter().filter_map(|a| host_cidr(a)).map(|c| q(&c)).collect();
        let with = |mut fields: Vec<String>| {
            if !cidrs.is_empty() {
                fields.push(format!("cidrs: [{}]", cidrs.join(", ")));
            }
            if !exes.is_empty() {
                fields.push(format!("executables: [{}]", exes.join(", ")));
            }
            format!("{{{}}}", fields.join(", "))
        };
        let (base_id, name, selector) = match id {
            WorkloadId::Base(_) => continue,
            WorkloadId::K8s { namespace, service_account } => (
                format!("{}-{}", slug(namespace), slug(service_account)),
                format!("{namespace}/{service_account}"),
                format!("{{k8s: {{namespace: {}, serviceAccount: {}}}}}", q(namespace), q(service_account)),
            ),
            WorkloadId::Unit(unit) => (
                slug(unit.trim_end_matches(".service")),
                unit.clone(),
                with(vec![format!("systemdUnits: [{}]", q(unit))]),
            ),
            WorkloadId::Cgroup(path) => {
                let last = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path);
                (slug(last), path.clone(), with(vec![format!("cgroupPaths: [{}]", q(path))]))
            }
            WorkloadId::Addr(addr) => {
                let Some(cidr) = host_cidr(addr) else { continue };
                (format!("host-{}", slug(addr)), addr.clone(), format!("{{cidrs: [{}]}}", q(&cidr)))
            }
        };
        let kind = if w.served.iter().any(|p| DATASTORE_PORTS.contains(p)) { "datastore" } else { "process" };
        nodes.insert(id.clone(), NodeOut { id: node_ids.unique(base_id), name, zone, kind, selector });
    }
    let node_id = |id: &WorkloadId| -> Option<String> {
        match id {
            WorkloadId::Base(b) => Some(b.clone()),
            other => nodes.get(other).map(|n| n.id.clone()),
        }
    };
    let flows: Vec<(String, String, &FlowSeen)> =
        seen.flows.iter().filter_map(|((a, b), f)| Some((node_id(a)?, node_id(b)?, f))).collect();

    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Drafted by `dfdwatch learn` from {} flow record(s), {} connection(s),",
        seen.rows, seen.connections
    );
    if seen.rows > 0 {
        let _ = writeln!(y, "# seen between {} and {}.", time(seen.first_ns), time(seen.last_ns));
    }
    let _ =
        writeln!(y, "# Every description starting with TODO is a decision left to you (`dfdwatch check` reports each");
    let _ =
        writeln!(y, "# as L001): name the tiers and put each zone in one, classify the data, require encryption and");
    let _ = writeln!(y, "# add checkpoints; then remove the TODO.");
    if base.is_some() {
        let _ = writeln!(y, "# Only what the base DFD lacks: review it next to the base, then add it there.");
    }
    y.push_str("apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata:\n");
    let _ = writeln!(y, "  name: {}", slug(name));
    y.push_str("spec:\n  tiers:\n");
    let _ = writeln!(
        y,
        "    - {{id: {tier}, name: \"TODO tier\", level: 1, description: \"TODO: name the trust tiers and put each learned zone in one\"}}"
    );
    y.push_str("  dataClasses:\n");
    let _ = writeln!(
        y,
        "    - {{id: {data}, level: 0, description: \"TODO: classify the data each learned flow carries\"}}"
    );
    y.push_str("  zones:");
    if zones.is_empty() {
        y.push_str(" []");
    }
    y.push('\n');
    for (namespace, id) in &zones {
        match namespace {
            Some(ns) => {
                let _ = writeln!(
                    y,
                    "    - {{id: {id}, name: {}, tier: {tier}, match: {{k8s: {{namespace: {}}}}}}}",
                    q(ns),
                    q(ns)
                );
            }
            None => {
                let _ = writeln!(
                    y,
                    "    - {{id: {id}, name: \"Unassigned\", tier: {tier}, description: \"Workloads outside any Kubernetes namespace: split them into zones\"}}"
                );
            }
        }
    }
    y.push_str("  nodes:");
    if nodes.is_empty() {
        y.push_str(" []");
    }
    y.push('\n');
    for n in nodes.values() {
        let _ = writeln!(
            y,
            "    - id: {}\n      name: {}\n      kind: {}\n      zone: {}\n      match: {}",
            n.id,
            q(&n.name),
            n.kind,
            n.zone,
            n.selector
        );
    }
    y.push_str("  flows:");
    if flows.is_empty() {
        y.push_str(" []");
    }
    y.push('\n');
    for (from, to, f) in &flows {
        let id = flow_ids.unique(format!("{from}-to-{to}"));
        let ports: Vec<String> = f.ports.iter().map(|p| format!("{{port: {p}, protocol: TCP}}")).collect();
        let _ = writeln!(
            y,
            "    # {} connection(s), first seen {}, last seen {}",
            f.connections,
            time(f.first_ns),
            time(f.last_ns)
        );
        let _ = writeln!(y, "    - id: {id}\n      from: {from}\n      to: {to}\n      ports: [{}]", ports.join(", "));
        if let Some(p) = app_protocol(&f.ports) {
            let _ = writeln!(y, "      appProtocol: {p}");
        }
        let _ = writeln!(y, "      encryption: {{required: none}}\n      data: [{data}]");
        let _ =
            writeln!(y, "      description: \"TODO: decide encryption, data and checkpoints for this learned flow\"");
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugs_and_unique() {
        assert_eq!(slug("Shop/Web_1.service"), "shop-web-1-service");
        assert_eq!(slug("--"), "workload");
        let mut ids = Ids(BTreeSet::from(["api".to_owned()]));
        assert_eq!(ids.unique("api".into()), "api-2");
        assert_eq!(ids.unique("api".into()), "api-3");
    }

    #[test]
    fn untrusted_strings_are_quoted() {
        assert_eq!(q("a\"b\nc: [x]"), r#""a\"b\nc: [x]""#);
    }
}
