//! Draws the DFD as Graphviz DOT or Mermaid: one dashed boundary per zone labelled with its tier,
//! one edge per flow labelled `PROTO ports / encryption | data` plus its checkpoints, crossings
//! toward a more trusted tier in red, flows with error-level security findings dashed red.

mod dot;
mod mermaid;

use std::collections::{HashMap, HashSet};

use crate::diag::{Finding, Severity};
use crate::model::{Dfd, Flow, Zone};

/// Drawing formats of `dfdwatch render`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RenderFormat {
    /// Graphviz DOT (`dot -Tsvg`).
    #[default]
    Dot,
    /// A Mermaid `flowchart LR`.
    Mermaid,
}

/// Draws `dfd` in `format`. `lints` (from [`crate::lint::lint`]) mark flows with security errors.
/// The output depends only on the model and the lints, so it is stable for golden tests.
pub fn render(dfd: &Dfd, lints: &[Finding], format: RenderFormat) -> String {
    render_with_overlay(dfd, lints, format, &Overlay::default())
}

/// Draws `dfd` as [`render`] does, with `overlay` drawn over it in red.
pub fn render_with_overlay(dfd: &Dfd, lints: &[Finding], format: RenderFormat, overlay: &Overlay) -> String {
    let mut view = View::new(dfd, lints);
    view.overlay = overlay;
    match format {
        RenderFormat::Dot => dot::render(&view),
        RenderFormat::Mermaid => mermaid::render(&view),
    }
}

/// Observed connections drawn over the DFD (`dfdwatch investigate path`): each hop a bold red
/// edge labelled with its number and what it was; an end on no DFD node a dashed red box.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// The hops, in the order to number them.
    pub hops: Vec<OverlayHop>,
}

/// One observed hop.
#[derive(Clone, Debug)]
pub struct OverlayHop {
    /// Where it came from.
    pub from: OverlayEnd,
    /// Where it went.
    pub to: OverlayEnd,
    /// Its label (`1: 10:02:03 lateral_movement :6379`).
    pub label: String,
}

/// An end of an observed hop.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OverlayEnd {
    /// A DFD node, by id.
    Node(String),
    /// Something no DFD node holds: an address or a pod, by its label.
    Observed(String),
}

impl OverlayEnd {
    /// The end as drawn: a DFD node of `dfd`, else an observed box.
    fn resolved(&self, dfd: &Dfd) -> Self {
        match self {
            OverlayEnd::Node(id) if dfd.node(id).is_none() => OverlayEnd::Observed(id.clone()),
            other => other.clone(),
        }
    }
}

/// How one flow is drawn.
pub(crate) struct EdgeView<'d> {
    pub flow: &'d Flow,
    /// First label line: `HTTPS 8443/TCP / mTLS 1.3+ | pii`.
    pub line1: String,
    /// Second label line (`checks: AuthN, Schema`), if the flow lists checkpoints.
    pub line2: Option<String>,
    /// Toward a more trusted tier.
    pub upward: bool,
    /// Has an error-level X-series finding.
    pub violation: bool,
}

/// The DFD prepared for drawing: zone tree, zone labels and edge labels.
pub(crate) struct View<'d> {
    pub dfd: &'d Dfd,
    /// Zone ids whose parent is absent or unknown, in declaration order.
    pub roots: Vec<&'d Zone>,
    /// Children of each zone id, in declaration order.
    pub children: HashMap<&'d str, Vec<&'d Zone>>,
    /// Zone label: `T2 Authenticated: app`.
    pub zone_label: HashMap<&'d str, String>,
    /// The edges, in declaration order.
    pub edges: Vec<EdgeView<'d>>,
    /// Observed hops drawn over the DFD.
    pub overlay: &'d Overlay,
}

impl View<'_> {
    /// The overlay's hops with ends resolved against the DFD, and the observed ends (each once,
    /// in order of appearance).
    pub fn overlay_hops(&self) -> (Vec<(OverlayEnd, OverlayEnd, &str)>, Vec<String>) {
        let mut observed: Vec<String> = Vec::new();
        let hops = self
            .overlay
            .hops
            .iter()
            .map(|h| {
                let (a, b) = (h.from.resolved(self.dfd), h.to.resolved(self.dfd));
                for end in [&a, &b] {
                    if let OverlayEnd::Observed(label) = end
                        && !observed.contains(label)
                    {
                        observed.push(label.clone());
                    }
                }
                (a, b, h.label.as_str())
            })
            .collect();
        (hops, observed)
    }
}

impl<'d> View<'d> {
    fn new(dfd: &'d Dfd, lints: &[Finding]) -> Self {
        let zone_ids: HashSet<&str> = dfd.zones.iter().map(|z| z.id.as_str()).collect();
        let mut roots = Vec::new();
        let mut children: HashMap<&str, Vec<&Zone>> = HashMap::new();
        let mut zone_label = HashMap::new();
        for z in &dfd.zones {
            match z.parent.as_ref().filter(|p| zone_ids.contains(p.id.as_str()) && p.id != z.id) {
                Some(p) => children.entry(p.id.as_str()).or_default().push(z),
                None => roots.push(z),
            }
            let tier = dfd.tier(&z.tier.id);
            let mut label = match tier {
                Some(t) if t.name != t.id => format!("{} {}: {}", t.id, t.name, z.name),
                Some(t) => format!("{}: {}", t.id, z.name),
                None => z.name.clone(),
            };
            if z.external {
                label.push_str(" (external)");
            }
            zone_label.insert(z.id.as_str(), label);
        }
        let violating: HashSet<_> = lints
            .iter()
            .filter(|f| f.severity == Severity::Error && f.rule.starts_with('X'))
            .filter_map(|f| f.loc.clone())
            .collect();
        let level =
            |node: &str| dfd.node(node).and_then(|n| dfd.node_zone(n)).and_then(|z| dfd.zone_tier(z)).map(|t| t.level);
        let edges = dfd
            .flows
            .iter()
            .map(|f| EdgeView {
                flow: f,
                line1: line1(f),
                line2: line2(dfd, f),
                upward: matches!((level(&f.from.id), level(&f.to.id)), (Some(a), Some(b)) if b > a),
                violation: violating.contains(&f.loc),
            })
            .collect();
        static NONE: Overlay = Overlay { hops: Vec::new() };
        View { dfd, roots, children, zone_label, edges, overlay: &NONE }
    }
}

fn line1(f: &Flow) -> String {
    let mut s = String::new();
    if let Some(p) = &f.app_protocol {
        s.push_str(&p.to_uppercase());
        s.push(' ');
    }
    let ports: Vec<String> = f.ports.iter().map(ToString::to_string).collect();
    s.push_str(&ports.join(", "));
    s.push_str(" / ");
    s.push_str(f.encryption.required.label());
    if let Some(v) = &f.encryption.min_tls {
        s.push_str(&format!(" {v}+"));
    }
    if !f.data.is_empty() {
        let data: Vec<&str> = f.data.iter().map(|d| d.id.as_str()).collect();
        s.push_str(" | ");
        s.push_str(&data.join(", "));
    }
    s
}

fn line2(dfd: &Dfd, f: &Flow) -> Option<String> {
    if f.checkpoints.is_empty() {
        return None;
    }
    let names: Vec<&str> =
        f.checkpoints.iter().map(|c| dfd.checkpoint(&c.id).map_or(c.id.as_str(), |cp| cp.kind.label())).collect();
    Some(format!("checks: {}", names.join(", ")))
}
