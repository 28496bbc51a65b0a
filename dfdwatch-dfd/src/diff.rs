//! What a DFD change does to the boundaries: the changes between two revisions that widen or
//! narrow what is approved, each with a severity. The daemon reports every applied reload with
//! it (a change record and a metric that a shipped rule alerts on), so a DFD that was widened
//! does not pass unnoticed; the reviewer of a pull request reads the same analysis.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{Dfd, EncryptionKind, Flow, Node, UnapprovedAction, UnmatchedAction};
use crate::selector::Selector;

/// How much a change widens what is approved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Narrows, or changes nothing an attacker could use (a flow removed, a node added).
    Low,
    /// Widens within what the boundaries already allowed (more ports, a crossing between zones
    /// of one tier, a changed selector).
    Medium,
    /// Opens a boundary: an upward or tier-skipping crossing, egress, an encryption downgrade, a
    /// selector that matches everything, alerts switched off.
    High,
}

impl Severity {
    /// Every severity, for metric labels.
    pub const ALL: [Severity; 3] = [Severity::Low, Severity::Medium, Severity::High];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// One change between two revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What changed: `flow_added`, `flow_removed`, `ports_widened`, `encryption_downgraded`,
    /// `checkpoint_removed`, `data_added`, `node_added`, `node_removed`, `node_moved`, `selector_changed`,
    /// `selector_matches_everything`, `zone_tier_changed`, `alerts_switched_off`.
    pub kind: &'static str,
    /// How much it widens.
    pub severity: Severity,
    /// The flow, node, zone or setting it is about.
    pub subject: String,
    /// What changed, in words.
    pub detail: String,
    /// Where the subject is written in the new revision (the old one for a removal).
    #[serde(skip)]
    pub loc: Option<crate::diag::Loc>,
}

/// Where a flow goes, for its severity: its ends' zones and tier levels.
struct Ends<'d> {
    dfd: &'d Dfd,
}

impl<'d> Ends<'d> {
    fn node(&self, id: &str) -> Option<&'d Node> {
        self.dfd.nodes.iter().find(|n| n.id == id)
    }

    fn zone_of(&self, node: &str) -> Option<&'d crate::model::Zone> {
        let zone = &self.node(node)?.zone.id;
        self.dfd.zones.iter().find(|z| z.id == *zone)
    }

    fn level(&self, node: &str) -> Option<i64> {
        let tier = &self.zone_of(node)?.tier.id;
        self.dfd.tiers.iter().find(|t| t.id == *tier).map(|t| t.level)
    }

    /// The severity of approving `flow` and why.
    fn crossing(&self, flow: &Flow) -> (Severity, String) {
        let (from, to) = (flow.from.id.as_str(), flow.to.id.as_str());
        let (fz, tz) = (self.zone_of(from), self.zone_of(to));
        let (fl, tl) = (self.level(from), self.level(to));
        let zone = |z: Option<&crate::model::Zone>| z.map_or("?", |z| z.id.as_str()).to_owned();
        if tz.is_some_and(|z| z.external) && !fz.is_some_and(|z| z.external) {
            return (Severity::High, format!("egress from zone {} to external zone {}", zone(fz), zone(tz)));
        }
        match (fl, tl) {
            (Some(a), Some(b)) if b > a + 1 => (
                Severity::High,
                format!("crossing from zone {} up {} tiers to zone {}, skipping a tier", zone(fz), b - a, zone(tz)),
            ),
            (Some(a), Some(b)) if b > a => {
                (Severity::High, format!("upward crossing from zone {} to zone {}", zone(fz), zone(tz)))
            }
            _ if fz.map(|z| &z.id) != tz.map(|z| &z.id) => {
                (Severity::Medium, format!("crossing from zone {} to zone {}", zone(fz), zone(tz)))
            }
            _ => (Severity::Low, format!("within zone {}", zone(fz))),
        }
    }
}

fn ports(flow: &Flow) -> BTreeSet<(u16, u16, String)> {
    flow.ports.iter().map(|p| (p.port, p.end_port, format!("{:?}", p.protocol))).collect()
}

/// How many ports `flow` approves.
fn port_count(flow: &Flow) -> u64 {
    flow.ports.iter().map(|p| u64::from(p.end_port.saturating_sub(p.port)) + 1).sum()
}

fn strength(kind: EncryptionKind) -> u8 {
    match kind {
        EncryptionKind::None => 0,
        EncryptionKind::Any | EncryptionKind::Tls => 1,
        EncryptionKind::Wireguard | EncryptionKind::Ipsec => 2,
        EncryptionKind::Mtls => 3,
    }
}

fn matches_everything(sel: Option<&Selector>) -> bool {
    sel.is_some_and(|s| s.cidrs.iter().any(|n| n.prefix_len() == 0) && s.except_cidrs.is_empty())
}

/// The changes from `old` to `new`, most severe first.
pub fn changes(old: &Dfd, new: &Dfd) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |kind, severity, subject: &str, detail: String, loc: Option<&crate::diag::Loc>| {
        out.push(Change { kind, severity, subject: subject.to_owned(), detail, loc: loc.cloned() });
    };
    // The most sensitive data class: a flow that starts carrying it is a high-severity change.
    let top = new.data_classes.iter().map(|c| c.level).max();
    let new_ends = Ends { dfd: new };

    let old_flows: BTreeMap<&str, &Flow> = old.flows.iter().map(|f| (f.id.as_str(), f)).collect();
    let new_flows: BTreeMap<&str, &Flow> = new.flows.iter().map(|f| (f.id.as_str(), f)).collect();
    for (id, f) in &new_flows {
        let Some(was) = old_flows.get(id) else {
            let (severity, why) = new_ends.crossing(f);
            push("flow_added", severity, id, format!("{} -> {} approved ({why})", f.from.id, f.to.id), Some(&f.loc));
            continue;
        };
        if (was.from.id.as_str(), was.to.id.as_str()) != (f.from.id.as_str(), f.to.id.as_str()) {
            let (severity, why) = new_ends.crossing(f);
            push(
                "flow_added",
                severity,
                id,
                format!("now {} -> {}, was {} -> {} ({why})", f.from.id, f.to.id, was.from.id, was.to.id),
                Some(&f.loc),
            );
        }
        if !ports(f).is_subset(&ports(was)) {
            let severity = if port_count(f) >= u64::from(u16::MAX) { Severity::High } else { Severity::Medium };
            push(
                "ports_widened",
                severity,
                id,
                format!("{} ports approved, were {}", port_count(f), port_count(was)),
                Some(&f.loc),
            );
        }
        if strength(f.encryption.required) < strength(was.encryption.required) {
            push(
                "encryption_downgraded",
                Severity::High,
                id,
                format!("encryption {:?}, was {:?}", f.encryption.required, was.encryption.required).to_lowercase(),
                Some(&f.loc),
            );
        }
        let kept: BTreeSet<&str> = f.checkpoints.iter().map(|c| c.id.as_str()).collect();
        for c in was.checkpoints.iter().filter(|c| !kept.contains(c.id.as_str())) {
            push("checkpoint_removed", Severity::Medium, id, format!("checkpoint {} removed", c.id), Some(&f.loc));
        }
        let carried: BTreeSet<&str> = was.data.iter().map(|d| d.id.as_str()).collect();
        for d in f.data.iter().filter(|d| !carried.contains(d.id.as_str())) {
            let level = new.data_classes.iter().find(|c| c.id == d.id).map(|c| c.level);
            let severity = if level.is_some() && level == top { Severity::High } else { Severity::Medium };
            push("data_added", severity, id, format!("now carries {}", d.id), Some(&f.loc));
        }
    }
    for id in old_flows.keys().filter(|id| !new_flows.contains_key(*id)) {
        push("flow_removed", Severity::Low, id, "no longer approved".into(), Some(&old_flows[id].loc));
    }

    let old_nodes: BTreeMap<&str, &Node> = old.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for n in &new.nodes {
        let everything = matches_everything(n.selector.as_ref());
        let external = new_ends.zone_of(&n.id).is_some_and(|z| z.external);
        match old_nodes.get(n.id.as_str()) {
            None => push("node_added", Severity::Low, &n.id, format!("in zone {}", n.zone.id), Some(&n.loc)),
            Some(was) => {
                if was.zone.id != n.zone.id {
                    push(
                        "node_moved",
                        Severity::High,
                        &n.id,
                        format!("moved from zone {} to zone {}", was.zone.id, n.zone.id),
                        Some(&n.loc),
                    );
                }
                let same = was.selector.as_ref().and_then(Selector::branches)
                    == n.selector.as_ref().and_then(Selector::branches);
                if !same && !(everything && !external) {
                    push(
                        "selector_changed",
                        Severity::Medium,
                        &n.id,
                        "its `match` selector changed".into(),
                        Some(&n.loc),
                    );
                }
            }
        }
        if everything
            && !external
            && !matches_everything(old_nodes.get(n.id.as_str()).and_then(|o| o.selector.as_ref()))
        {
            push(
                "selector_matches_everything",
                Severity::High,
                &n.id,
                "now matches every address, outside an external zone".into(),
                Some(&n.loc),
            );
        }
    }
    let new_nodes: BTreeSet<&str> = new.nodes.iter().map(|n| n.id.as_str()).collect();
    for id in old_nodes.keys().filter(|id| !new_nodes.contains(*id)) {
        push("node_removed", Severity::Low, id, "removed".into(), Some(&old_nodes[id].loc));
    }

    for z in &new.zones {
        if let Some(was) = old.zones.iter().find(|o| o.id == z.id)
            && was.tier.id != z.tier.id
        {
            push(
                "zone_tier_changed",
                Severity::Medium,
                &z.id,
                format!("tier {}, was {}", z.tier.id, was.tier.id),
                Some(&z.loc),
            );
        }
    }

    let (od, nd) = (&old.defaults, &new.defaults);
    if od.unapproved_flow == UnapprovedAction::Alert && nd.unapproved_flow != UnapprovedAction::Alert {
        push(
            "alerts_switched_off",
            Severity::High,
            "defaults.unapprovedFlow",
            "unapproved flows are only logged now: no alert".into(),
            nd.loc.as_ref(),
        );
    }
    if od.unmatched_endpoint == UnmatchedAction::Alert && nd.unmatched_endpoint != UnmatchedAction::Alert {
        push(
            "alerts_switched_off",
            Severity::High,
            "defaults.unmatchedEndpoint",
            format!("unmodelled endpoints are {:?} now: no alert", nd.unmatched_endpoint).to_lowercase(),
            nd.loc.as_ref(),
        );
    }
    out.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| a.kind.cmp(b.kind)).then_with(|| a.subject.cmp(&b.subject))
    });
    out
}

/// Writes `changes` in `format` (`dfdwatch diff`).
pub fn write(format: crate::cli::DiffFormat, changes: &[Change], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use crate::cli::DiffFormat;
    let esc = |s: &str| crate::escape::escape_bytes(s.as_bytes());
    let count = |s: Severity| changes.iter().filter(|c| c.severity == s).count();
    let summary = format!(
        "{} change(s): {} high, {} medium, {} low",
        changes.len(),
        count(Severity::High),
        count(Severity::Medium),
        count(Severity::Low)
    );
    match format {
        DiffFormat::Text => {
            for c in changes {
                let at = c.loc.as_ref().map(|l| format!("{l}: ")).unwrap_or_default();
                writeln!(out, "{at}{}: {} {}: {}", c.severity.as_str(), c.kind, esc(&c.subject), esc(&c.detail))?;
            }
            writeln!(out, "{summary}")
        }
        DiffFormat::Markdown => {
            // Table cells: no pipes or line breaks from the DFD can break the table.
            let cell = |s: &str| esc(s).replace('|', "\\|");
            writeln!(out, "### DFD changes\n\n{summary}\n")?;
            if changes.is_empty() {
                return Ok(());
            }
            writeln!(out, "| severity | change | subject | detail |\n|---|---|---|---|")?;
            for c in changes {
                let mark = if c.severity == Severity::High { "**high**" } else { c.severity.as_str() };
                writeln!(out, "| {mark} | `{}` | `{}` | {} |", c.kind, cell(&c.subject), cell(&c.detail))?;
            }
            Ok(())
        }
        DiffFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &serde_json::json!({"changes": changes, "summary": summary}))?;
            writeln!(out)
        }
        DiffFormat::Sarif => {
            let results: Vec<crate::report::SarifResult<'_>> = changes
                .iter()
                .map(|c| crate::report::SarifResult {
                    rule: c.kind,
                    level: match c.severity {
                        Severity::High => "error",
                        Severity::Medium => "warning",
                        Severity::Low => "note",
                    },
                    message: format!("{}: {}", c.subject, c.detail),
                    loc: c.loc.as_ref(),
                })
                .collect();
            let sarif = crate::report::sarif_log("dfdwatch diff", &results);
            serde_json::to_writer_pretty(&mut *out, &sarif)?;
            writeln!(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_str;

    const BASE: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata: {name: t}
spec:
  tiers:
    - {id: T1, level: 1}
    - {id: T2, level: 2}
    - {id: T3, level: 3}
  zones:
    - {id: edge, tier: T1, match: {cidrs: ["10.1.0.0/16"]}}
    - {id: app, tier: T2, match: {cidrs: ["10.2.0.0/16"]}}
    - {id: data, tier: T3, match: {cidrs: ["10.3.0.0/16"]}}
    - {id: internet, tier: T1, external: true, match: {cidrs: ["0.0.0.0/0"], exceptCidrs: ["10.0.0.0/8"]}}
  nodes:
    - {id: web, kind: process, zone: edge, match: {cidrs: ["10.1.0.1/32"]}}
    - {id: api, kind: process, zone: app, match: {cidrs: ["10.2.0.1/32"]}}
    - {id: db, kind: datastore, zone: data, match: {cidrs: ["10.3.0.1/32"]}}
    - {id: saas, kind: external, zone: internet, match: {cidrs: ["0.0.0.0/0"]}}
  flows:
    - {id: web-to-api, from: web, to: api, ports: [{port: 443}], encryption: {required: mtls}, checkpoints: []}
"#;

    fn dfd(src: &str) -> Dfd {
        let (dfd, findings) = load_str("t.yaml", src);
        assert!(findings.iter().all(|f| f.severity != crate::diag::Severity::Error), "{findings:#?}");
        dfd
    }

    fn kinds(c: &[Change]) -> Vec<(&'static str, Severity, &str)> {
        c.iter().map(|c| (c.kind, c.severity, c.subject.as_str())).collect()
    }

    #[test]
    fn nothing_changed_is_no_change() {
        assert!(changes(&dfd(BASE), &dfd(BASE)).is_empty());
    }

    #[test]
    fn each_widening_has_its_kind_and_severity() {
        let new = BASE.replace(
            "{port: 443}], encryption: {required: mtls}",
            "{port: 443}, {port: 80}], encryption: {required: none}",
        ) + "    - {id: web-to-db, from: web, to: db, ports: [{port: 5432}], encryption: {required: tls}}\n"
            + "    - {id: api-to-saas, from: api, to: saas, ports: [{port: 443}], encryption: {required: tls}}\n"
            + "  defaults: {unapprovedFlow: log}\n";
        let new = new.replace(
            "{id: api, kind: process, zone: app, match: {cidrs: [\"10.2.0.1/32\"]}}",
            "{id: api, kind: process, zone: app, match: {cidrs: [\"0.0.0.0/0\"]}}",
        );
        let c = changes(&dfd(BASE), &dfd(&new));
        assert_eq!(
            kinds(&c),
            [
                ("alerts_switched_off", Severity::High, "defaults.unapprovedFlow"),
                ("encryption_downgraded", Severity::High, "web-to-api"),
                ("flow_added", Severity::High, "api-to-saas"),
                ("flow_added", Severity::High, "web-to-db"),
                ("selector_matches_everything", Severity::High, "api"),
                ("ports_widened", Severity::Medium, "web-to-api"),
            ]
        );
        assert!(c[3].detail.contains("skipping a tier"), "{c:#?}");
        assert!(c[2].detail.contains("egress"), "{c:#?}");
    }

    #[test]
    fn narrowing_is_low() {
        let new = BASE.replace("    - {id: web-to-api, from: web, to: api, ports: [{port: 443}], encryption: {required: mtls}, checkpoints: []}\n", "");
        assert_eq!(kinds(&changes(&dfd(BASE), &dfd(&new))), [("flow_removed", Severity::Low, "web-to-api")]);
    }
}
