//! Graphviz DOT output: zones are nested `cluster_` subgraphs with dashed borders.

use std::fmt::Write as _;

use super::{OverlayEnd, View};
use crate::model::{NodeKind, Zone};

fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' | '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn shape(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Process => "ellipse",
        NodeKind::Datastore => "cylinder",
        NodeKind::External => "box",
    }
}

fn zone(v: &View<'_>, z: &Zone, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let label = v.zone_label.get(z.id.as_str()).map_or(z.id.as_str(), String::as_str);
    let _ = writeln!(out, "{pad}subgraph {} {{", q(&format!("cluster_{}", z.id)));
    let _ = writeln!(out, "{pad}  label={}; style=dashed; color=\"gray30\"; penwidth=1.5;", q(label));
    for n in v.dfd.nodes.iter().filter(|n| n.zone.id == z.id) {
        let _ = writeln!(out, "{pad}  {} [label={} shape={}];", q(&n.id), q(&n.name), shape(n.kind));
    }
    if depth < 16 {
        for c in v.children.get(z.id.as_str()).into_iter().flatten() {
            zone(v, c, depth + 1, out);
        }
    }
    let _ = writeln!(out, "{pad}}}");
}

pub(super) fn render(v: &View<'_>) -> String {
    let mut out = String::new();
    let name = v.dfd.documents.first().map_or("dfd", |d| d.metadata.name.as_str());
    let _ = writeln!(out, "digraph {} {{", q(name));
    out.push_str("  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\" fontsize=10];\n");
    for z in &v.roots {
        zone(v, z, 1, &mut out);
    }
    for n in v.dfd.nodes.iter().filter(|n| v.dfd.node_zone(n).is_none()) {
        let _ = writeln!(out, "  {} [label={} shape={}];", q(&n.id), q(&n.name), shape(n.kind));
    }
    for e in &v.edges {
        let mut label = q(&e.line1);
        if let Some(l2) = &e.line2 {
            label.pop();
            label.push_str("\\n");
            label.push_str(&q(l2)[1..]);
        }
        let mut attrs = format!("label={label}");
        if e.violation {
            attrs.push_str(" style=dashed color=\"red\"");
        } else if e.upward {
            attrs.push_str(" color=\"firebrick\" penwidth=2");
        }
        let _ = writeln!(out, "  {} -> {} [{attrs}];", q(&e.flow.from.id), q(&e.flow.to.id));
    }
    let (hops, observed) = v.overlay_hops();
    for label in &observed {
        let id = q(&format!("observed:{label}"));
        let _ = writeln!(
            out,
            "  {id} [label={} shape=box style=\"dashed,bold\" color=\"red\" fontcolor=\"red\"];",
            q(label)
        );
    }
    let end = |e: &OverlayEnd| match e {
        OverlayEnd::Node(id) => q(id),
        OverlayEnd::Observed(label) => q(&format!("observed:{label}")),
    };
    for (a, b, label) in &hops {
        let _ = writeln!(
            out,
            "  {} -> {} [label={} color=\"red\" fontcolor=\"red\" penwidth=3 style=bold];",
            end(a),
            end(b),
            q(label)
        );
    }
    out.push_str("}\n");
    out
}
