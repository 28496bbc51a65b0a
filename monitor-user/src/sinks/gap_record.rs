//! The JSON gap record (schema `dfdwatch.gap.v1`, documented in docs/events.md): from when to
//! when the daemon did not watch, and why, so that an analyst reading the events knows what they
//! cannot show.

use serde::Serialize;

use crate::telemetry::liveness::Gap;

/// Schema id written in every gap record.
pub const SCHEMA: &str = "dfdwatch.gap.v1";

/// One time the daemon did not watch.
#[derive(Debug, Serialize)]
pub struct GapRecord {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// The node (host name).
    pub node: String,
    /// When the record was written.
    pub time: String,
    /// `restart` (the daemon was not running) or `blind` (it ran, its probes reported nothing).
    pub reason: &'static str,
    /// When the daemon last knew it was watching.
    pub from: String,
    /// When it watched again.
    pub to: String,
    /// `to` minus `from`.
    pub seconds: f64,
    /// For a restart: connections found established at start-up, recorded with
    /// `recorded: found_at_start` (connections opened and closed within the gap are not seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_at_start: Option<usize>,
}

impl GapRecord {
    /// The record of `gap`.
    pub fn new(gap: &Gap, node: &str) -> Self {
        let time = |t| humantime::format_rfc3339_nanos(t).to_string();
        Self {
            schema: SCHEMA,
            node: node.to_owned(),
            time: time(std::time::SystemTime::now()),
            reason: gap.reason.as_str(),
            from: time(gap.from),
            to: time(gap.to),
            seconds: gap.to.duration_since(gap.from).unwrap_or_default().as_secs_f64(),
            found_at_start: gap.found_at_start,
        }
    }
}
