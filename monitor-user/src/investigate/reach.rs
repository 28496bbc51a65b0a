//! `investigate reach WORKLOAD`: the blast radius the DFD allows. From the workload's DFD node,
//! approved flows are followed (breadth first, petgraph) up to `--hops`: which nodes and zones an
//! attacker holding the workload could reach without a single alert, which of those zones are of
//! the highest tier (restricted), and which hops of that tree were actually used in the time
//! asked (so the analyst sees which approved doors are open in practice).

use std::collections::HashMap;

use dfdwatch_dfd::model::Dfd;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, EdgeRef, Walker};
use serde::Serialize;

use super::view::table;
use crate::store::query::Query;

/// One node within reach.
#[derive(Debug, Serialize)]
pub struct Reached {
    /// DFD node id.
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The zone's tier.
    pub tier: String,
    /// Approved flows needed to get there.
    pub hops: usize,
    /// Those flows, in order.
    pub via: Vec<String>,
    /// In a zone of the highest tier.
    pub restricted: bool,
}

/// One approved flow of the reach tree.
#[derive(Debug, Serialize)]
pub struct TreeHop {
    /// The DFD flow id.
    pub flow: String,
    /// From node.
    pub from: String,
    /// To node.
    pub to: String,
    /// Hops from the workload to `to`.
    pub depth: usize,
    /// When it was first seen approved in the time asked (absent: not seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
}

/// What the workload can reach.
#[derive(Debug, Serialize)]
pub struct Reach {
    /// The workload asked for.
    pub workload: String,
    /// Its DFD node.
    pub node: String,
    /// The hop limit.
    pub max_hops: usize,
    /// The nodes within reach (the workload's own node excluded), nearest first.
    pub reached: Vec<Reached>,
    /// The zones within reach.
    pub zones: Vec<String>,
    /// Of those, the zones of the highest tier.
    pub restricted_zones: Vec<String>,
    /// The flows of the reach tree, with whether each was seen.
    pub tree: Vec<TreeHop>,
}

/// The reach of `node` in `dfd` within `max_hops`; `seen` fills each tree hop's first sighting.
pub fn reach(dfd: &Dfd, workload: &str, node: &str, max_hops: usize) -> Reach {
    let mut graph: DiGraph<&str, usize> = DiGraph::new();
    let ix: HashMap<&str, NodeIndex> =
        dfd.nodes.iter().map(|n| (n.id.as_str(), graph.add_node(n.id.as_str()))).collect();
    for (i, f) in dfd.flows.iter().enumerate() {
        if let (Some(&a), Some(&b)) = (ix.get(f.from.id.as_str()), ix.get(f.to.id.as_str())) {
            graph.add_edge(a, b, i);
        }
    }
    let top = dfd.tiers.iter().map(|t| t.level).max();
    let level = |zone: &str| dfd.zones.iter().find(|z| z.id == zone).and_then(|z| dfd.zone_tier(z)).map(|t| t.level);
    let mut reached = Vec::new();
    let mut tree = Vec::new();
    if let Some(&start) = ix.get(node) {
        // Breadth first: the first flow into each node is on a shortest path.
        let mut parent: HashMap<NodeIndex, (NodeIndex, usize)> = HashMap::new();
        let mut depth: HashMap<NodeIndex, usize> = HashMap::from([(start, 0)]);
        for n in Bfs::new(&graph, start).iter(&graph) {
            let Some(&d) = depth.get(&n) else { continue };
            if d >= max_hops {
                continue;
            }
            for e in graph.edges(n) {
                if let std::collections::hash_map::Entry::Vacant(v) = depth.entry(e.target()) {
                    v.insert(d + 1);
                    parent.insert(e.target(), (n, *e.weight()));
                }
            }
        }
        let mut order: Vec<(usize, NodeIndex)> =
            depth.iter().filter(|(n, _)| **n != start).map(|(n, d)| (*d, *n)).collect();
        order.sort_by_key(|(d, n)| (*d, graph[*n]));
        for (d, n) in order {
            let mut via = Vec::new();
            let mut at = n;
            while let Some((p, flow)) = parent.get(&at) {
                via.push(dfd.flows[*flow].id.clone());
                at = *p;
            }
            via.reverse();
            let Some(model) = dfd.node(graph[n]) else { continue };
            let zone = model.zone.id.clone();
            let tier = dfd.node_zone(model).map(|z| z.tier.id.clone()).unwrap_or_default();
            let restricted = top.is_some() && level(&zone) == top;
            if let Some((p, flow)) = parent.get(&n) {
                tree.push(TreeHop {
                    flow: dfd.flows[*flow].id.clone(),
                    from: graph[*p].to_owned(),
                    to: graph[n].to_owned(),
                    depth: d,
                    seen: None,
                });
            }
            reached.push(Reached {
                node: graph[n].to_owned(),
                name: model.name.clone(),
                zone,
                tier,
                hops: d,
                via,
                restricted,
            });
        }
    }
    let mut zones: Vec<String> = reached.iter().map(|r| r.zone.clone()).collect();
    zones.sort();
    zones.dedup();
    let restricted_zones = zones.iter().filter(|z| top.is_some() && level(z) == top).cloned().collect();
    Reach { workload: workload.to_owned(), node: node.to_owned(), max_hops, reached, zones, restricted_zones, tree }
}

/// The query that finds a tree hop's first approved sighting between two Unix times (ns).
pub fn seen_query(hop: &TreeHop, from_ns: i64, to_ns: i64) -> Query {
    Query {
        from_ns,
        to_ns,
        between: Some((hop.from.clone(), hop.to.clone())),
        verdict: Some("approved".into()),
        without_duplicates: true,
        limit: 1,
        ..Query::default()
    }
}

/// The reach as text.
pub fn text(r: &Reach) -> String {
    let mut out = format!(
        "Reach of {} (DFD node {}) through approved flows, at most {} hops\n\n",
        r.workload, r.node, r.max_hops
    );
    let rows: Vec<Vec<String>> = r
        .reached
        .iter()
        .map(|n| {
            let seen = r.tree.iter().find(|h| h.to == n.node).and_then(|h| h.seen.clone());
            vec![
                n.hops.to_string(),
                n.node.clone(),
                format!("{} ({})", n.zone, n.tier),
                if n.restricted { "RESTRICTED".into() } else { String::new() },
                n.via.join(" > "),
                seen.unwrap_or_else(|| "not seen".into()),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no approved flow leaves this node\n");
    } else {
        out.push_str(&table(&["HOPS", "NODE", "ZONE", "", "VIA", "LAST HOP FIRST SEEN"], &rows));
    }
    out.push_str(&format!(
        "\nzones within reach: {}\nrestricted (highest tier): {}\n",
        if r.zones.is_empty() { "none".into() } else { r.zones.join(", ") },
        if r.restricted_zones.is_empty() { "none".into() } else { r.restricted_zones.join(", ") }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata: {name: reach}
spec:
  tiers:
    - {id: T1, name: Public, level: 1}
    - {id: T2, name: App, level: 2}
    - {id: T3, name: Restricted, level: 3}
  dataClasses: [{id: public, level: 0}]
  zones:
    - {id: edge, name: Edge, tier: T1, match: {cidrs: ["10.0.1.0/24"]}}
    - {id: app, name: App, tier: T2, match: {cidrs: ["10.0.2.0/24"]}}
    - {id: data, name: Data, tier: T3, match: {cidrs: ["10.0.3.0/24"]}}
  nodes:
    - {id: web, name: Web, kind: process, zone: edge, match: {cidrs: ["10.0.1.1/32"]}}
    - {id: api, name: API, kind: process, zone: app, match: {cidrs: ["10.0.2.1/32"]}}
    - {id: db, name: DB, kind: datastore, zone: data, match: {cidrs: ["10.0.3.1/32"]}}
  flows:
    - {id: web-api, from: web, to: api, ports: [{port: 80}], appProtocol: http, encryption: {required: none}, data: [public]}
    - {id: api-db, from: api, to: db, ports: [{port: 5432}], appProtocol: postgres, encryption: {required: none}, data: [public]}
"#;

    #[test]
    fn approved_flows_are_followed_to_the_hop_limit() {
        let (dfd, _) = dfdwatch_dfd::load::load_str("reach.yaml", DFD);
        let r = reach(&dfd, "web", "web", 3);
        let nodes: Vec<(&str, usize, bool)> =
            r.reached.iter().map(|n| (n.node.as_str(), n.hops, n.restricted)).collect();
        assert_eq!(nodes, [("api", 1, false), ("db", 2, true)]);
        assert_eq!(r.reached[1].via, ["web-api", "api-db"]);
        assert_eq!(r.restricted_zones, ["data"]);
        let one = reach(&dfd, "web", "web", 1);
        assert_eq!(one.reached.len(), 1);
        assert!(one.restricted_zones.is_empty());
        assert!(reach(&dfd, "db", "db", 3).reached.is_empty(), "nothing leaves the database");
    }
}
