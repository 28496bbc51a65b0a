//! Structure lints: dangling references (S001), duplicate ids (S002), overlapping flows (S003),
//! zone nesting (S004), orphans (H002), and what a learned draft leaves to review (L001).

use std::collections::{HashMap, HashSet};

use super::Index;
use crate::diag::{Finding, Loc, Severity};
use crate::model::{Dfd, Ref};

pub(super) fn check(dfd: &Dfd, ix: &Index<'_>, out: &mut Vec<Finding>) {
    duplicates(dfd, out);
    dangling(dfd, ix, out);
    overlapping_flows(dfd, out);
    nesting(dfd, ix, out);
    orphans(dfd, out);
    left_to_review(dfd, out);
}

/// L001: `dfdwatch learn` marks what only a person can decide (tiers, data classes, encryption,
/// checkpoints) with a description starting with `TODO`; a draft is not a DFD until each is
/// decided.
fn left_to_review(dfd: &Dfd, out: &mut Vec<Finding>) {
    let mut listed = super::Capped::new("L001", "items left to review");
    let items = dfd
        .tiers
        .iter()
        .map(|t| ("tier", &t.id, &t.description, &t.loc))
        .chain(dfd.data_classes.iter().map(|t| ("data class", &t.id, &t.description, &t.loc)))
        .chain(dfd.checkpoints.iter().map(|t| ("checkpoint", &t.id, &t.description, &t.loc)))
        .chain(dfd.zones.iter().map(|t| ("zone", &t.id, &t.description, &t.loc)))
        .chain(dfd.nodes.iter().map(|t| ("node", &t.id, &t.description, &t.loc)))
        .chain(dfd.flows.iter().map(|t| ("flow", &t.id, &t.description, &t.loc)));
    for (what, id, description, loc) in items {
        if let Some(todo) = description.as_deref().filter(|d| d.trim_start().starts_with("TODO")) {
            listed.push(out, || {
                Finding::new(
                    "L001",
                    Some(loc),
                    format!("{what} `{id}` is left to review: {todo}; decide, then change the description"),
                )
            });
        }
    }
    listed.finish(out);
}

fn dup<'a>(
    what: &str,
    items: impl Iterator<Item = (&'a str, &'a Loc)>,
    listed: &mut super::Capped,
    out: &mut Vec<Finding>,
) {
    let mut seen: HashMap<&str, &Loc> = HashMap::new();
    for (id, loc) in items {
        if let Some(first) = seen.get(id) {
            listed.push(out, || {
                Finding::new(
                    "S002",
                    Some(loc),
                    format!(
                        "duplicate {what} id `{id}` (first declared at {first}); ids are global across files, rename one"
                    ),
                )
            });
        } else {
            seen.insert(id, loc);
        }
    }
}

fn duplicates(dfd: &Dfd, out: &mut Vec<Finding>) {
    let mut listed = super::Capped::new("S002", "duplicate ids");
    dup("tier", dfd.tiers.iter().map(|t| (t.id.as_str(), &t.loc)), &mut listed, out);
    dup("data class", dfd.data_classes.iter().map(|t| (t.id.as_str(), &t.loc)), &mut listed, out);
    dup("checkpoint", dfd.checkpoints.iter().map(|t| (t.id.as_str(), &t.loc)), &mut listed, out);
    dup("zone", dfd.zones.iter().map(|t| (t.id.as_str(), &t.loc)), &mut listed, out);
    dup("node", dfd.nodes.iter().map(|t| (t.id.as_str(), &t.loc)), &mut listed, out);
    dup("flow", dfd.flows.iter().map(|t| (t.id.as_str(), &t.loc)), &mut listed, out);
    listed.finish(out);
}

fn missing<T>(r: &Ref, map: &HashMap<&str, T>, what: &str, field: &str, owner: &str, out: &mut Vec<Finding>) {
    if !map.contains_key(r.id.as_str()) {
        // Suggestions cost an edit distance per known id: offer them for DFDs of human size.
        let known: Vec<&str> = if map.len() <= 2000 { map.keys().copied().collect() } else { Vec::new() };
        let hint = match crate::decode::closest(&r.id, &known) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("declare it under `spec.{what}` or fix the id"),
        };
        out.push(Finding::new(
            "S001",
            Some(&r.loc),
            format!("{owner} `{field}` refers to unknown {what} `{}`; {hint}", r.id),
        ));
    }
}

fn dangling(dfd: &Dfd, ix: &Index<'_>, out: &mut Vec<Finding>) {
    for z in &dfd.zones {
        let owner = format!("zone {}", z.id);
        missing(&z.tier, &ix.tiers, "tiers", "tier", &owner, out);
        if let Some(p) = &z.parent {
            missing(p, &ix.zones, "zones", "parent", &owner, out);
        }
        if let Some(m) = &z.max_data {
            missing(m, &ix.data, "dataClasses", "maxData", &owner, out);
        }
    }
    for n in &dfd.nodes {
        let owner = format!("node {}", n.id);
        missing(&n.zone, &ix.zones, "zones", "zone", &owner, out);
        if let Some(m) = &n.max_data {
            missing(m, &ix.data, "dataClasses", "maxData", &owner, out);
        }
    }
    for c in &dfd.checkpoints {
        if let Some(e) = &c.enforced_by {
            missing(e, &ix.nodes, "nodes", "enforcedBy", &format!("checkpoint {}", c.id), out);
        }
    }
    for f in &dfd.flows {
        let owner = format!("flow {}", f.id);
        missing(&f.from, &ix.nodes, "nodes", "from", &owner, out);
        missing(&f.to, &ix.nodes, "nodes", "to", &owner, out);
        for d in &f.data {
            missing(d, &ix.data, "dataClasses", "data", &owner, out);
        }
        for c in &f.checkpoints {
            missing(c, &ix.checkpoints, "checkpoints", "checkpoints", &owner, out);
        }
    }
}

fn overlapping_flows(dfd: &Dfd, out: &mut Vec<Finding>) {
    // Each flow id once: copies under a duplicate id are S002 already (see binding's B002).
    let mut ids = HashSet::new();
    let flows: Vec<&crate::model::Flow> = dfd.flows.iter().filter(|f| ids.insert(f.id.as_str())).collect();
    let mut by_pair: HashMap<(&str, &str), Vec<&crate::model::Flow>> = HashMap::new();
    for f in &flows {
        by_pair.entry((f.from.id.as_str(), f.to.id.as_str())).or_default().push(f);
    }
    let mut listed = super::Capped::new("S003", "pairs of overlapping flows");
    for f in flows.iter().copied() {
        let Some(peers) = by_pair.get(&(f.from.id.as_str(), f.to.id.as_str())) else {
            continue;
        };
        for g in peers.iter().take_while(|g| !std::ptr::eq(**g, f)) {
            let clash = f.ports.iter().find_map(|p| {
                g.ports
                    .iter()
                    .find(|q| p.protocol == q.protocol && p.port <= q.end_port && q.port <= p.end_port)
                    .map(|q| (p, q))
            });
            if let Some((p, q)) = clash {
                listed.push(out, || {
                    Finding::new(
                        "S003",
                        Some(&p.loc),
                        format!(
                            "flow {} ({p}) overlaps flow {} ({q}) between {} and {}; merge them or make the port ranges disjoint",
                            f.id, g.id, f.from.id, f.to.id
                        ),
                    )
                });
            }
        }
    }
    listed.finish(out);
}

fn nesting(dfd: &Dfd, ix: &Index<'_>, out: &mut Vec<Finding>) {
    for z in &dfd.zones {
        let mut seen = HashSet::new();
        let mut cur = z;
        while let Some(p) = cur.parent.as_ref().and_then(|p| ix.zones.get(p.id.as_str())) {
            if std::ptr::eq(*p, z) || !seen.insert(p.id.as_str()) {
                out.push(Finding::new(
                    "S004",
                    Some(&z.loc),
                    format!(
                        "zone {} is its own ancestor through `parent`; remove one `parent` link to break the cycle",
                        z.id
                    ),
                ));
                break;
            }
            cur = p;
        }
        let tier_of = |id: &str| ix.zones.get(id).and_then(|z| ix.tiers.get(z.tier.id.as_str())).map(|t| t.level);
        if let (Some(p), Some(own)) = (&z.parent, tier_of(&z.id))
            && let Some(pl) = tier_of(&p.id)
            && own < pl
        {
            out.push(
                Finding::new(
                    "S004",
                    Some(&p.loc),
                    format!(
                        "zone {} has a lower tier than its parent {}; a nested zone should be at least as trusted",
                        z.id, p.id
                    ),
                )
                .with_severity(Severity::Warning),
            );
        }
    }
}

fn orphans(dfd: &Dfd, out: &mut Vec<Finding>) {
    let mut used: HashSet<&str> = HashSet::new();
    for f in &dfd.flows {
        used.insert(f.from.id.as_str());
        used.insert(f.to.id.as_str());
    }
    for n in &dfd.nodes {
        if !used.contains(n.id.as_str()) {
            out.push(Finding::new(
                "H002",
                Some(&n.loc),
                format!("node {} has no flows; add its flows or remove it", n.id),
            ));
        }
    }
    let zones_used: HashSet<&str> = dfd
        .nodes
        .iter()
        .map(|n| n.zone.id.as_str())
        .chain(dfd.zones.iter().filter_map(|z| z.parent.as_ref().map(|p| p.id.as_str())))
        .collect();
    for z in &dfd.zones {
        if !zones_used.contains(z.id.as_str()) {
            out.push(Finding::new(
                "H002",
                Some(&z.loc),
                format!("zone {} holds no node; add nodes to it or remove it", z.id),
            ));
        }
    }
    let tiers_used: HashSet<&str> = dfd.zones.iter().map(|z| z.tier.id.as_str()).collect();
    for t in &dfd.tiers {
        if !tiers_used.contains(t.id.as_str()) {
            out.push(
                Finding::new(
                    "H002",
                    Some(&t.loc),
                    format!("tier {} is used by no zone; remove it if it is not planned", t.id),
                )
                .with_severity(Severity::Info),
            );
        }
    }
    let data_used: HashSet<&str> = dfd
        .flows
        .iter()
        .flat_map(|f| f.data.iter())
        .chain(dfd.zones.iter().filter_map(|z| z.max_data.as_ref()))
        .chain(dfd.nodes.iter().filter_map(|n| n.max_data.as_ref()))
        .map(|r| r.id.as_str())
        .collect();
    for d in &dfd.data_classes {
        if !data_used.contains(d.id.as_str()) {
            out.push(Finding::new(
                "H002",
                Some(&d.loc),
                format!("data class {} is used nowhere; remove it or list it on a flow", d.id),
            ));
        }
    }
    let cp_used: HashSet<&str> = dfd.flows.iter().flat_map(|f| f.checkpoints.iter()).map(|r| r.id.as_str()).collect();
    for c in &dfd.checkpoints {
        if !cp_used.contains(c.id.as_str()) {
            out.push(Finding::new(
                "H002",
                Some(&c.loc),
                format!("checkpoint {} is on no flow; list it under a flow's `checkpoints` or remove it", c.id),
            ));
        }
    }
}
