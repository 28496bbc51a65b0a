//! Lints over a decoded DFD: references, binding of selectors, security semantics and hygiene.
//! Every lint is a pure function of the model and "today", so results are deterministic.

mod binding;
mod overlap;
mod security;
mod structure;

use std::collections::HashMap;

use crate::date::Date;
use crate::diag::{Finding, sort_findings};
use crate::model::{DataClass, Dfd, Node, Tier, Zone};

pub use overlap::{branch_within, branches_overlap};

/// Runs every lint; findings are sorted by place. `today` decides which approvals have expired.
pub fn lint(dfd: &Dfd, today: Date) -> Vec<Finding> {
    lint_on(dfd, Some(today))
}

/// Runs every lint that does not depend on the calendar: all but the approval expiry (H001). The
/// daemon admits a DFD with these, so that a DFD does not turn invalid on the day an approval
/// expires (it reports expiries as warnings and metrics instead; `dfdwatch check` keeps H001).
pub fn lint_undated(dfd: &Dfd) -> Vec<Finding> {
    lint_on(dfd, None)
}

fn lint_on(dfd: &Dfd, today: Option<Date>) -> Vec<Finding> {
    let ix = Index::new(dfd);
    let mut out = Vec::new();
    structure::check(dfd, &ix, &mut out);
    binding::check(dfd, &ix, &mut out);
    security::check(dfd, &ix, today, &mut out);
    sort_findings(&mut out);
    out
}

/// Findings of a lint that can fire once per item or per pair of items, at most [`Capped::MAX`]
/// listed: the rest are counted in one closing finding, so a report stays small whatever the DFD.
pub(crate) struct Capped {
    code: &'static str,
    what: &'static str,
    listed: usize,
    more: usize,
}

impl Capped {
    /// Findings listed per lint, at most.
    pub const MAX: usize = 1000;

    pub fn new(code: &'static str, what: &'static str) -> Self {
        Self { code, what, listed: 0, more: 0 }
    }

    /// Adds the finding `make` builds, or counts it when enough are listed.
    pub fn push(&mut self, out: &mut Vec<Finding>, make: impl FnOnce() -> Finding) {
        if self.listed < Self::MAX {
            out.push(make());
            self.listed += 1;
        } else {
            self.more += 1;
        }
    }

    /// The closing finding for those not listed, if any.
    pub fn finish(self, out: &mut Vec<Finding>) {
        if self.more > 0 {
            out.push(Finding::new(
                self.code,
                None,
                format!("{} more {} are not listed (the first {} are)", self.more, self.what, Self::MAX),
            ));
        }
    }
}

/// Lookup tables from id to item (first declaration wins when ids are duplicated).
pub(crate) struct Index<'d> {
    pub tiers: HashMap<&'d str, &'d Tier>,
    pub zones: HashMap<&'d str, &'d Zone>,
    pub nodes: HashMap<&'d str, &'d Node>,
    pub data: HashMap<&'d str, &'d DataClass>,
    pub checkpoints: HashMap<&'d str, &'d crate::model::Checkpoint>,
}

fn first_wins<'d, T>(items: &'d [T], id: impl Fn(&'d T) -> &'d str) -> HashMap<&'d str, &'d T> {
    let mut m = HashMap::with_capacity(items.len());
    for i in items {
        m.entry(id(i)).or_insert(i);
    }
    m
}

impl<'d> Index<'d> {
    fn new(dfd: &'d Dfd) -> Self {
        Index {
            tiers: first_wins(&dfd.tiers, |t| t.id.as_str()),
            zones: first_wins(&dfd.zones, |z| z.id.as_str()),
            nodes: first_wins(&dfd.nodes, |n| n.id.as_str()),
            data: first_wins(&dfd.data_classes, |d| d.id.as_str()),
            checkpoints: first_wins(&dfd.checkpoints, |c| c.id.as_str()),
        }
    }

    /// The zone and tier of a node id, when they all resolve.
    pub fn placement(&self, node: &str) -> Option<(&'d Node, &'d Zone, &'d Tier)> {
        let n = self.nodes.get(node)?;
        let z = self.zones.get(n.zone.id.as_str())?;
        let t = self.tiers.get(z.tier.id.as_str())?;
        Some((n, z, t))
    }
}
