//! Binding lints: nodes without a selector (B001), node selectors that overlap (B002), a node
//! selector outside its zone's (B003), nodes bound only by local-end identities (B005), and
//! catch-all approvals (B006): a node outside an external zone that matches every address, or a
//! flow on every port, which would approve everything unless a person said why in the file.

use super::Index;
use super::overlap::{branch_within, branches_overlap};
use crate::diag::Finding;
use crate::model::Dfd;
use crate::selector::{Branch, Dim};

pub(super) fn check(dfd: &Dfd, ix: &Index<'_>, out: &mut Vec<Finding>) {
    let mut bound: Vec<(&crate::model::Node, Vec<Branch>)> = Vec::new();
    for n in &dfd.nodes {
        let Some(sel) = n.selector.as_ref().filter(|s| !s.is_empty()) else {
            out.push(Finding::new(
                "B001",
                Some(&n.loc),
                format!("node {} has no `match` selector, so no runtime endpoint can be bound to it; add e.g. `match: {{k8s: {{namespace: ..., labels: {{app: ...}}}}}}`", n.id),
            ));
            continue;
        };
        let Some(branches) = sel.branches() else {
            out.push(Finding::new(
                "P007",
                sel.loc.as_ref(),
                format!("node {}'s selector expands into too many `anyOf` alternatives; simplify it", n.id),
            ));
            continue;
        };
        if branches.iter().all(|b| b.dims().all(Dim::local_only)) {
            out.push(Finding::new(
                "B005",
                sel.loc.as_ref(),
                format!("node {} is bound only by images, executables, cgroup paths or systemd units, which identify only the local end of a socket; add k8s, spiffe, cidrs or hosts so it can be recognised as a remote peer", n.id),
            ));
        }
        outside_zone(n, &branches, ix, out);
        bound.push((n, branches));
    }
    external_overlaps_internal(dfd, ix, out);
    catch_all(dfd, ix, out);
    // Pairs of nodes, each id once: copies of a node under a duplicate id are S002 already, and
    // comparing them with everything again would make the report grow with the square of the copies.
    bound.retain(|(n, _)| ix.nodes.get(n.id.as_str()).is_some_and(|first| std::ptr::eq(*first, *n)));
    let mut listed = super::Capped::new("B002", "pairs of nodes with overlapping selectors");
    for (i, (a, ab)) in bound.iter().enumerate() {
        for (b, bb) in bound.iter().skip(i + 1) {
            if ab.iter().any(|x| bb.iter().any(|y| branches_overlap(x, y))) {
                listed.push(out, || Finding::new(
                    "B002",
                    b.selector.as_ref().and_then(|s| s.loc.as_ref()),
                    format!("nodes {} and {} have selectors that can match the same endpoint; make them disjoint (e.g. different labels, service accounts or CIDRs)", a.id, b.id),
                ));
            }
        }
    }
    listed.finish(out);
}

/// B006: approvals that match everything, unless acknowledged with `acknowledgeCatchAll`.
fn catch_all(dfd: &Dfd, ix: &Index<'_>, out: &mut Vec<Finding>) {
    let mut listed = super::Capped::new("B006", "catch-all nodes and flows");
    for n in dfd.nodes.iter().filter(|n| n.acknowledge_catch_all.is_none()) {
        if ix.zones.get(n.zone.id.as_str()).is_some_and(|z| z.external) {
            continue;
        }
        let everything = cidr_sets(n.selector.as_ref())
            .into_iter()
            .flat_map(|(include, _)| include)
            .find(|net| net.prefix_len() == 0);
        if let Some(net) = everything {
            listed.push(out, || Finding::new(
                "B006",
                n.selector.as_ref().and_then(|s| s.loc.as_ref()).or(Some(&n.loc)),
                format!("node {} matches every address ({net}) but is not in an external zone, so any peer becomes this node; narrow its CIDRs, or say why in `acknowledgeCatchAll: \"...\"`", n.id),
            ));
        }
    }
    for f in dfd.flows.iter().filter(|f| f.acknowledge_catch_all.is_none()) {
        if let Some(p) = f.ports.iter().find(|p| p.port <= 1 && p.end_port == u16::MAX) {
            listed.push(out, || Finding::new(
                "B006",
                Some(&p.loc),
                format!("flow {} approves every port (1-65535); list the acceptor's ports, or say why in `acknowledgeCatchAll: \"...\"`", f.id),
            ));
        }
    }
    listed.finish(out);
}

/// The CIDR constraints (include, except) of each branch of a selector.
fn cidr_sets(sel: Option<&crate::selector::Selector>) -> Vec<(Vec<ipnet::IpNet>, Vec<ipnet::IpNet>)> {
    sel.and_then(crate::selector::Selector::branches)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|b| b.constraints)
        .filter_map(|c| match c {
            crate::selector::Constraint::Cidrs { include, except } => Some((include, except)),
            _ => None,
        })
        .collect()
}

/// B004: an external zone's or node's networks overlap an internal zone's networks.
fn external_overlaps_internal(dfd: &Dfd, ix: &Index<'_>, out: &mut Vec<Finding>) {
    let internal: Vec<_> = dfd
        .zones
        .iter()
        .filter(|z| !z.external)
        .map(|z| (z, cidr_sets(z.selector.as_ref())))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if internal.is_empty() {
        return;
    }
    let externals = dfd
        .zones
        .iter()
        .filter(|z| z.external)
        .map(|z| (format!("external zone {}", z.id), z.selector.as_ref()))
        .chain(
            dfd.nodes
                .iter()
                .filter(|n| ix.zones.get(n.zone.id.as_str()).is_some_and(|z| z.external))
                .map(|n| (format!("node {} (in an external zone)", n.id), n.selector.as_ref())),
        );
    for (what, sel) in externals {
        let ext = cidr_sets(sel);
        for (zone, int) in &internal {
            let hit = ext.iter().any(|(ei, ee)| int.iter().any(|(ii, ie)| super::overlap::cidrs_meet(ei, ee, ii, ie)));
            if hit {
                out.push(Finding::new(
                    "B004",
                    sel.and_then(|s| s.loc.as_ref()),
                    format!(
                        "{what} has CIDRs that overlap internal zone {}'s; carve them out with `exceptCidrs`",
                        zone.id
                    ),
                ));
            }
        }
    }
}

fn outside_zone(n: &crate::model::Node, branches: &[Branch], ix: &Index<'_>, out: &mut Vec<Finding>) {
    let Some(zone) = ix.zones.get(n.zone.id.as_str()) else {
        return;
    };
    let Some(zsel) = zone.selector.as_ref().filter(|s| !s.is_empty()) else {
        return;
    };
    let Some(zb) = zsel.branches() else { return };
    for b in branches {
        if !zb.iter().any(|z| branch_within(z, b)) {
            out.push(Finding::new(
                "B003",
                n.selector.as_ref().and_then(|s| s.loc.as_ref()),
                format!("node {}'s selector can match endpoints outside its zone {}; narrow the node's `match` to the zone's namespaces, CIDRs or hosts, or move the node", n.id, zone.id),
            ));
            return;
        }
    }
}
