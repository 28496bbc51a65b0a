//! The JSON DFD change record (schema `dfdwatch.dfd_change.v1`, documented in docs/alerts.md):
//! one per applied reload, with what the change does to the boundaries. Written to the events
//! stream and, when alerts are on, to the alert file.

use serde::Serialize;

use crate::policy::DfdRef;
use crate::policy::changes::DfdChange;

/// Schema id written in every DFD change record.
pub const SCHEMA: &str = "dfdwatch.dfd_change.v1";

/// One applied change of the approved DFD.
#[derive(Debug, Serialize)]
pub struct DfdChangeRecord {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// When it was applied.
    pub time: String,
    /// The node (host name).
    pub node: String,
    /// The revision replaced.
    pub old: DfdRef,
    /// The revision applied.
    pub new: DfdRef,
    /// The most severe change's severity (`none` when nothing a reviewer cares about changed,
    /// such as comments).
    pub highest: &'static str,
    /// Every change, most severe first.
    pub changes: Vec<dfdwatch_dfd::diff::Change>,
}

impl DfdChangeRecord {
    /// The record of `change`.
    pub fn new(change: &DfdChange, node: &str) -> Self {
        Self {
            schema: SCHEMA,
            time: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            node: node.to_owned(),
            old: (*change.old).clone(),
            new: (*change.new).clone(),
            highest: change.changes.first().map_or("none", |c| c.severity.as_str()),
            changes: change.changes.clone(),
        }
    }
}
