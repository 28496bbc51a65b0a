//! The verdict on one observed flow: a pure function of the compiled DFD and the placements of
//! both ends (no I/O, no clock), so unit tests and benchmarks call it directly.
//!
//! Order of questions: is an end ambiguous, or unmodelled? Is the pair approved (on this port)?
//! Is it platform traffic the DFD allows without drawing it? Otherwise it is an unapproved
//! crossing between zones (with the tier direction) or an unapproved flow inside one zone
//! (lateral movement: zero trust counts it too). A failed connect gets the same verdict, marked
//! as an attempt.

use dfdwatch_dfd::compile::Compiled;
use dfdwatch_dfd::model::{PlatformFlow, Protocol, UnapprovedAction, UnmatchedAction};
use serde::Serialize;

use super::Placement;

/// One flow as observed, placed on the DFD.
#[derive(Clone, Copy, Debug)]
pub struct ObservedFlow<'a> {
    /// The initiator's placement.
    pub src: &'a Placement,
    /// The acceptor's placement.
    pub dst: &'a Placement,
    /// The acceptor's port.
    pub dst_port: u16,
    /// The connect failed (refused, reset, timed out): an attempt.
    pub attempt: bool,
}

/// What kind of verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// An approved flow covers it.
    Approved,
    /// Platform traffic the DFD's defaults allow (DNS).
    PlatformFlow,
    /// The nodes have an approved flow, but not on this port or protocol.
    WrongPort,
    /// Different zones, no approved flow.
    UnapprovedCrossing,
    /// Same zone, no approved flow.
    LateralMovement,
    /// An end matches no node (it may still be inside a zone).
    UnmodelledEndpoint,
    /// An end matches more than one node.
    AmbiguousEndpoint,
}

impl VerdictKind {
    /// Every kind, for metric labels (a closed set).
    pub const ALL: [VerdictKind; 7] = [
        VerdictKind::Approved,
        VerdictKind::PlatformFlow,
        VerdictKind::WrongPort,
        VerdictKind::UnapprovedCrossing,
        VerdictKind::LateralMovement,
        VerdictKind::UnmodelledEndpoint,
        VerdictKind::AmbiguousEndpoint,
    ];

    /// The snake_case name used in events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Approved => "approved",
            VerdictKind::PlatformFlow => "platform_flow",
            VerdictKind::WrongPort => "wrong_port",
            VerdictKind::UnapprovedCrossing => "unapproved_crossing",
            VerdictKind::LateralMovement => "lateral_movement",
            VerdictKind::UnmodelledEndpoint => "unmodelled_endpoint",
            VerdictKind::AmbiguousEndpoint => "ambiguous_endpoint",
        }
    }
}

/// Direction of a crossing between tiers (a higher level is more trusted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TierDirection {
    /// Into the next more trusted tier.
    Up,
    /// Into a more trusted tier, skipping at least one in between.
    SkippingUp,
    /// Between zones of the same tier.
    Level,
    /// Toward a less trusted tier.
    Down,
}

impl TierDirection {
    /// The snake_case name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            TierDirection::Up => "up",
            TierDirection::SkippingUp => "skipping_up",
            TierDirection::Level => "level",
            TierDirection::Down => "down",
        }
    }
}

/// Alert severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Recorded, not alerted.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// The snake_case name used in events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Low,
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }
}

/// The verdict on one flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// What was decided.
    pub kind: VerdictKind,
    /// Whether this calls for an alert (not for approved or ignored flows, nor in audit mode).
    pub alert: bool,
    /// The connect failed: an attempt at this flow.
    pub attempt: bool,
    /// Severity (`info` when no alert is due).
    pub severity: Severity,
    /// Tier direction, for crossings between zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_direction: Option<TierDirection>,
    /// The approved flow that covers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Approved flows nearest to this one (same nodes, else from the source, else to the
    /// destination), at most three, for the analyst.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nearest_flows: Vec<String>,
    /// STRIDE categories.
    pub stride: &'static [&'static str],
    /// CAPITALS (zero-trust threat) categories.
    pub capitals: &'static [&'static str],
}

const NONE: &[&str] = &[];

/// Decides on `flow` against `dfd`.
pub fn verdict(dfd: &Compiled, flow: &ObservedFlow<'_>) -> Verdict {
    let defaults = &dfd.dfd.defaults;
    let base = |kind, severity, stride, capitals| Verdict {
        kind,
        alert: severity > Severity::Info,
        attempt: flow.attempt,
        severity,
        tier_direction: None,
        flow: None,
        nearest_flows: Vec::new(),
        stride,
        capitals,
    };

    if !flow.src.ambiguous.is_empty() || !flow.dst.ambiguous.is_empty() {
        return base(VerdictKind::AmbiguousEndpoint, Severity::Medium, &["spoofing"], &["L"]);
    }
    let (Some(src), Some(dst)) = (flow.src.node_ix, flow.dst.node_ix) else {
        if is_platform(dfd, flow.dst_port) {
            return base(VerdictKind::PlatformFlow, Severity::Info, NONE, NONE);
        }
        let severity = match defaults.unmatched_endpoint {
            UnmatchedAction::Alert => Severity::Medium,
            UnmatchedAction::Learn | UnmatchedAction::Ignore => Severity::Info,
        };
        let mut v = base(VerdictKind::UnmodelledEndpoint, severity, &["spoofing"], &["L"]);
        v.tier_direction = direction(dfd, flow.src.zone_ix, flow.dst.zone_ix);
        v.nearest_flows = nearest(dfd, flow.src.node_ix, flow.dst.node_ix);
        return v;
    };
    let mut between = dfd.flows_between_ix(src, dst).peekable();
    let any_between = between.peek().is_some();
    if let Some(f) = between.find(|f| {
        f.ports.is_empty()
            || f.ports
                .iter()
                .any(|p| p.protocol == Protocol::Tcp && (p.port..=p.end_port.max(p.port)).contains(&flow.dst_port))
    }) {
        let mut v = base(VerdictKind::Approved, Severity::Info, NONE, NONE);
        v.flow = Some(f.id.clone());
        return v;
    }
    if is_platform(dfd, flow.dst_port) {
        return base(VerdictKind::PlatformFlow, Severity::Info, NONE, NONE);
    }
    let audit = defaults.unapproved_flow == UnapprovedAction::Log;
    let dst_zone = dfd.node_zone.get(dst).and_then(|z| dfd.dfd.zones.get(*z));
    let sensitive = dst_zone
        .and_then(|z| z.max_data.as_ref())
        .and_then(|d| dfd.dfd.data_class(&d.id))
        .is_some_and(|d| d.level >= 3 || d.personal);
    let mut v = if any_between {
        base(VerdictKind::WrongPort, Severity::Medium, &["elevation_of_privilege"], &["A"])
    } else if dfd.node_zone.get(src) == dfd.node_zone.get(dst) {
        base(VerdictKind::LateralMovement, Severity::Medium, &["elevation_of_privilege"], &["A", "S"])
    } else {
        let dir = direction(dfd, dfd.node_zone.get(src).copied(), dfd.node_zone.get(dst).copied());
        let egress = dst_zone.is_some_and(|z| z.external);
        let (severity, stride, capitals): (_, &'static [&'static str], &'static [&'static str]) = match dir {
            Some(TierDirection::SkippingUp) => (Severity::Critical, &["elevation_of_privilege"], &["S", "A"]),
            Some(TierDirection::Up) => (Severity::High, &["elevation_of_privilege"], &["S", "A"]),
            _ if egress => (Severity::High, &["information_disclosure"], &["I", "S"]),
            _ => (Severity::Medium, &["information_disclosure"], &["S"]),
        };
        let mut v = base(VerdictKind::UnapprovedCrossing, severity, stride, capitals);
        v.tier_direction = dir;
        v
    };
    if sensitive {
        v.severity = v.severity.raised();
    }
    if audit {
        v.alert = false;
    }
    v.nearest_flows = nearest(dfd, Some(src), Some(dst));
    v
}

fn is_platform(dfd: &Compiled, port: u16) -> bool {
    port == 53 && dfd.dfd.defaults.platform_flows.iter().any(|p| matches!(p, PlatformFlow::Dns | PlatformFlow::KubeDns))
}

fn level(dfd: &Compiled, zone: Option<usize>) -> Option<i64> {
    let zone = dfd.dfd.zones.get(zone?)?;
    dfd.dfd.tier(&zone.tier.id).map(|t| t.level)
}

fn direction(dfd: &Compiled, src_zone: Option<usize>, dst_zone: Option<usize>) -> Option<TierDirection> {
    if src_zone == dst_zone {
        return None;
    }
    let (from, to) = (level(dfd, src_zone)?, level(dfd, dst_zone)?);
    // "Skipping" means a declared tier lies strictly between the two levels.
    let skipped = dfd.dfd.tiers.iter().any(|t| t.level > from && t.level < to);
    Some(match to.cmp(&from) {
        std::cmp::Ordering::Greater if skipped => TierDirection::SkippingUp,
        std::cmp::Ordering::Greater => TierDirection::Up,
        std::cmp::Ordering::Equal => TierDirection::Level,
        std::cmp::Ordering::Less => TierDirection::Down,
    })
}

/// Approved flows between the same nodes, then from the source or into the destination, in DFD
/// order, at most three. Walks only the two nodes' edges in the graph, so its cost does not grow
/// with the size of the DFD.
fn nearest(dfd: &Compiled, src: Option<usize>, dst: Option<usize>) -> Vec<String> {
    use petgraph::Direction;
    // Graph node i is DFD node i (the compiler adds them in order).
    let graph_node = |n: Option<usize>| n.filter(|n| *n < dfd.graph.node_count()).map(petgraph::graph::NodeIndex::new);
    let (s, d) = (graph_node(src), graph_node(dst));
    let mut same: Vec<usize> = Vec::new();
    let mut near: Vec<usize> = Vec::new();
    if let Some(s) = s {
        for e in dfd.graph.edges_directed(s, Direction::Outgoing) {
            let target = petgraph::visit::EdgeRef::target(&e);
            if Some(target) == d { same.push(*e.weight()) } else { near.push(*e.weight()) }
        }
    }
    if let Some(d) = d {
        for e in dfd.graph.edges_directed(d, Direction::Incoming) {
            if Some(petgraph::visit::EdgeRef::source(&e)) != s {
                near.push(*e.weight());
            }
        }
    }
    same.sort_unstable();
    near.sort_unstable();
    near.dedup();
    same.into_iter().chain(near).take(3).filter_map(|f| dfd.dfd.flows.get(f).map(|f| f.id.clone())).collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn shipped() -> Compiled {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../approved-dfd");
        let loaded = dfdwatch_dfd::load::load_paths(&[dir]).unwrap();
        Compiled::new(loaded.dfd).unwrap()
    }

    fn at(dfd: &Compiled, node: &str) -> Placement {
        let ix = dfd.dfd.nodes.iter().position(|n| n.id == node).unwrap();
        Placement {
            node: Some(node.into()),
            node_ix: Some(ix),
            zone_ix: dfd.node_zone.get(ix).copied(),
            ..Placement::default()
        }
    }

    fn judge(dfd: &Compiled, src: &Placement, dst: &Placement, port: u16) -> Verdict {
        verdict(dfd, &ObservedFlow { src, dst, dst_port: port, attempt: false })
    }

    #[test]
    fn approved_and_wrong_port() {
        let d = shipped();
        let v = judge(&d, &at(&d, "nginx"), &at(&d, "api"), 8443);
        assert_eq!((v.kind, v.alert, v.flow.as_deref()), (VerdictKind::Approved, false, Some("nginx-to-api")));
        let v = judge(&d, &at(&d, "nginx"), &at(&d, "api"), 5432);
        assert_eq!((v.kind, v.alert), (VerdictKind::WrongPort, true));
        assert_eq!(v.nearest_flows.first().map(String::as_str), Some("nginx-to-api"));
    }

    #[test]
    fn crossings_by_tier_direction() {
        let d = shipped();
        let v = judge(&d, &at(&d, "nginx"), &at(&d, "postgres"), 5432);
        assert_eq!(
            (v.kind, v.tier_direction, v.severity),
            (VerdictKind::UnapprovedCrossing, Some(TierDirection::SkippingUp), Severity::Critical)
        );
        assert_eq!(v.capitals, &["S", "A"]);
        let v = judge(&d, &at(&d, "api"), &at(&d, "nginx"), 80);
        assert_eq!((v.kind, v.tier_direction), (VerdictKind::UnapprovedCrossing, Some(TierDirection::Down)));
        // Down into the edge zone (maxData pii, personal): medium raised to high.
        assert_eq!(v.severity, Severity::High);
        let v = judge(&d, &at(&d, "redis"), &at(&d, "payments"), 443);
        assert_eq!(v.kind, VerdictKind::UnapprovedCrossing);
        assert!(v.capitals.contains(&"I") && v.stride.contains(&"information_disclosure"), "{v:?}");
        assert_eq!(v.severity, Severity::Critical, "egress of a T3 store to an external zone holding financial data");
    }

    #[test]
    fn lateral_movement_inside_a_zone() {
        let d = shipped();
        let v = judge(&d, &at(&d, "postgres"), &at(&d, "redis"), 6379);
        assert_eq!((v.kind, v.alert, v.tier_direction), (VerdictKind::LateralMovement, true, None));
        assert_eq!(v.severity, Severity::High);
    }

    #[test]
    fn unmodelled_ambiguous_platform_and_attempts() {
        let d = shipped();
        let app = d.dfd.zones.iter().position(|z| z.id == "app").unwrap();
        let stranger = Placement { zone: Some("app".into()), zone_ix: Some(app), ..Placement::default() };
        let v = judge(&d, &stranger, &at(&d, "postgres"), 5432);
        assert_eq!(
            (v.kind, v.alert, v.tier_direction),
            (VerdictKind::UnmodelledEndpoint, true, Some(TierDirection::Up))
        );
        let nothing = Placement::default();
        assert_eq!(judge(&d, &nothing, &nothing, 8080).kind, VerdictKind::UnmodelledEndpoint);
        assert_eq!(judge(&d, &nothing, &nothing, 53).kind, VerdictKind::PlatformFlow, "kube-dns is a platform flow");
        let two = Placement { ambiguous: vec!["api".into(), "nginx".into()], ..Placement::default() };
        assert_eq!(judge(&d, &two, &at(&d, "api"), 8443).kind, VerdictKind::AmbiguousEndpoint);
        let (src, dst) = (at(&d, "nginx"), at(&d, "postgres"));
        let v = verdict(&d, &ObservedFlow { src: &src, dst: &dst, dst_port: 5432, attempt: true });
        assert_eq!((v.kind, v.attempt, v.alert), (VerdictKind::UnapprovedCrossing, true, true));
    }
}
