//! Mermaid `flowchart LR` output: zones are nested subgraphs with dashed borders; ids are
//! sanitized (`n_`/`z_` prefixes, non-alphanumerics become `_`) so no id clashes with keywords.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::{OverlayEnd, View};
use crate::model::{NodeKind, Zone};

fn label(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("#quot;"),
            '<' => o.push_str("#lt;"),
            '>' => o.push_str("#gt;"),
            '#' => o.push_str("#35;"),
            '`' => o.push_str("#96;"),
            '\n' | '\r' => o.push(' '),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Assigns each DFD id a unique Mermaid id with the given prefix.
struct Ids<'d> {
    map: HashMap<&'d str, String>,
    taken: HashSet<String>,
}

impl<'d> Ids<'d> {
    fn new() -> Self {
        Ids { map: HashMap::new(), taken: HashSet::new() }
    }
    fn add(&mut self, prefix: &str, id: &'d str) {
        let base: String = format!(
            "{prefix}{}",
            id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect::<String>()
        );
        let mut cand = base.clone();
        let mut i = 2;
        while self.taken.contains(&cand) {
            cand = format!("{base}_{i}");
            i += 1;
        }
        self.taken.insert(cand.clone());
        self.map.entry(id).or_insert(cand);
    }
    fn get(&self, id: &str) -> &str {
        self.map.get(id).map_or("n_unknown", String::as_str)
    }
}

fn node_line(id: &str, name: &str, kind: NodeKind) -> String {
    let l = label(name);
    match kind {
        NodeKind::Process => format!("{id}([{l}])"),
        NodeKind::Datastore => format!("{id}[({l})]"),
        NodeKind::External => format!("{id}[{l}]"),
    }
}

fn zone(
    v: &View<'_>,
    z: &Zone,
    zones: &Ids<'_>,
    nodes: &Ids<'_>,
    depth: usize,
    out: &mut String,
    styles: &mut Vec<String>,
) {
    let pad = "  ".repeat(depth);
    let zid = zones.get(&z.id);
    let l = v.zone_label.get(z.id.as_str()).map_or(z.id.as_str(), String::as_str);
    let _ = writeln!(out, "{pad}subgraph {zid}[{}]", label(l));
    for n in v.dfd.nodes.iter().filter(|n| n.zone.id == z.id) {
        let _ = writeln!(out, "{pad}  {}", node_line(nodes.get(&n.id), &n.name, n.kind));
    }
    if depth < 16 {
        for c in v.children.get(z.id.as_str()).into_iter().flatten() {
            zone(v, c, zones, nodes, depth + 1, out, styles);
        }
    }
    let _ = writeln!(out, "{pad}end");
    styles.push(format!("  style {zid} stroke-dasharray: 5 5"));
}

pub(super) fn render(v: &View<'_>) -> String {
    let mut zones = Ids::new();
    let mut nodes = Ids::new();
    for z in &v.dfd.zones {
        zones.add("z_", &z.id);
    }
    for n in &v.dfd.nodes {
        nodes.add("n_", &n.id);
    }
    let mut out = String::from("flowchart LR\n");
    let mut styles = Vec::new();
    for z in &v.roots {
        zone(v, z, &zones, &nodes, 1, &mut out, &mut styles);
    }
    for n in v.dfd.nodes.iter().filter(|n| v.dfd.node_zone(n).is_none()) {
        let _ = writeln!(out, "  {}", node_line(nodes.get(&n.id), &n.name, n.kind));
    }
    let (mut up, mut bad) = (Vec::new(), Vec::new());
    for (i, e) in v.edges.iter().enumerate() {
        let mut l = label(&e.line1);
        if let Some(l2) = &e.line2 {
            l.pop();
            l.push_str("<br/>");
            l.push_str(&label(l2)[1..]);
        }
        let (a, b) = (nodes.get(&e.flow.from.id), nodes.get(&e.flow.to.id));
        if e.violation {
            let _ = writeln!(out, "  {a} -. {l} .-> {b}");
            bad.push(i.to_string());
        } else {
            let _ = writeln!(out, "  {a} -- {l} --> {b}");
            if e.upward {
                up.push(i.to_string());
            }
        }
    }
    let (hops, observed) = v.overlay_hops();
    let mut seen = Ids::new();
    for end in &observed {
        seen.add("o_", end);
        let _ = writeln!(out, "  {}[{}]", seen.get(end), label(end));
        styles.push(format!("  style {} stroke:#ff0000,stroke-dasharray: 5 5", seen.get(end)));
    }
    let mut path = Vec::new();
    for (i, (a, b, l)) in hops.iter().enumerate() {
        let end = |e: &OverlayEnd| match e {
            OverlayEnd::Node(id) => nodes.get(id).to_owned(),
            OverlayEnd::Observed(o) => seen.get(o).to_owned(),
        };
        let _ = writeln!(out, "  {} == {} ==> {}", end(a), label(l), end(b));
        path.push((v.edges.len() + i).to_string());
    }
    for s in styles {
        out.push_str(&s);
        out.push('\n');
    }
    if !path.is_empty() {
        let _ = writeln!(out, "  linkStyle {} stroke:#ff0000,stroke-width:4px,color:#ff0000", path.join(","));
    }
    if !up.is_empty() {
        let _ = writeln!(out, "  linkStyle {} stroke:#b22222,stroke-width:2px", up.join(","));
    }
    if !bad.is_empty() {
        let _ = writeln!(out, "  linkStyle {} stroke:#ff0000,stroke-width:2px", bad.join(","));
    }
    out
}
