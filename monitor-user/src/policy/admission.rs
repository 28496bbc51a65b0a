//! Admitting a DFD at run time: the files are read once, hashed as read, parsed from those same
//! bytes, and refused only for what makes the DFD wrong whatever the day (parse errors, dangling
//! references, overlapping selectors, every other error-level lint). The calendar never refuses a
//! DFD: an expired approval is a warning at load, a metric and an alerting rule, so a DaemonSet
//! pod restarted the day after an approval expired still starts and still monitors. `dfdwatch
//! check` keeps the expiry lint (H001) as an error for CI.

use std::path::PathBuf;
use std::sync::Arc;

use dfdwatch_dfd::compile::Compiled;
use dfdwatch_dfd::date::Date;
use dfdwatch_dfd::diag::{Finding, has_errors, sort_findings};
use dfdwatch_dfd::load::Source;
use dfdwatch_dfd::report::Format;
use dfdwatch_dfd::sign::{Bundle, Trust, read_bundle};

use crate::escape::escape_bytes;

/// Why the DFD was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the approved DFD: {0}")]
    Load(#[from] dfdwatch_dfd::load::LoadError),
    #[error("the approved DFD has errors; fix them (`dfdwatch check` shows the same report):\n{0}")]
    Findings(String),
    #[error("the approved DFD does not compile: {0}")]
    Compile(String),
    #[error("the approved DFD is refused: its signatures do not verify: {0}")]
    Signature(#[from] dfdwatch_dfd::sign::SignError),
}

/// Which DFD revision judged a flow: written in alerts and in `dfdwatch_dfd_info`.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct DfdRef {
    /// Names of its documents, comma-separated.
    pub name: String,
    /// SHA-256 over its files as parsed (see [`sources_hash`]).
    pub sha256: String,
}

/// Approvals expiring within this many days are reported as expiring.
pub const EXPIRING_WITHIN_DAYS: i64 = 14;

/// Where an approval stands on a given day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalState {
    /// Valid for more than [`EXPIRING_WITHIN_DAYS`] days.
    Valid,
    /// Its last valid day is within [`EXPIRING_WITHIN_DAYS`] days.
    Expiring,
    /// Its last valid day has passed.
    Expired,
}

impl ApprovalState {
    /// Every state, for metric labels (a closed set).
    pub const ALL: [ApprovalState; 3] = [ApprovalState::Valid, ApprovalState::Expiring, ApprovalState::Expired];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Valid => "valid",
            ApprovalState::Expiring => "expiring",
            ApprovalState::Expired => "expired",
        }
    }
}

/// A flow whose approval carries an `expires` date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalExpiry {
    /// The flow's id.
    pub flow: String,
    /// The approving ticket, if named.
    pub ticket: Option<String>,
    /// The approval's last valid day (UTC).
    pub expires: Date,
}

impl ApprovalExpiry {
    /// Unix time the approval ends: the end of its last valid day, UTC.
    pub fn ends_unix(&self) -> i64 {
        (self.expires.unix_days() + 1) * 86_400
    }

    /// Where the approval stands at `now_unix`.
    pub fn state(&self, now_unix: i64) -> ApprovalState {
        let ends = self.ends_unix();
        if now_unix >= ends {
            ApprovalState::Expired
        } else if now_unix >= ends - EXPIRING_WITHIN_DAYS * 86_400 {
            ApprovalState::Expiring
        } else {
            ApprovalState::Valid
        }
    }
}

/// One admitted and compiled revision of the approved DFD.
pub struct Policy {
    /// The compiled DFD.
    pub compiled: Arc<Compiled>,
    /// Its names and content hash.
    pub revision: Arc<DfdRef>,
    /// Its zone ids: the closed set of zone labels in metrics.
    pub zones: Vec<String>,
    /// Its node, zone and tier ids, shared by every placement.
    pub ids: super::placement::DfdIds,
    /// Its flows' approval expiry dates.
    pub approvals: Vec<ApprovalExpiry>,
    /// Unix time it was loaded.
    pub loaded_unix: i64,
    /// Hash of everything read to admit it, signatures included ([`Bundle::hash`]): the
    /// reloader's change detection starts from it.
    pub read_hash: String,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("revision", &self.revision)
            .field("loaded_unix", &self.loaded_unix)
            .finish_non_exhaustive()
    }
}

/// Unix time now (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Policy {
    /// Reads the DFD under `paths` once and admits it.
    pub fn load(paths: &[PathBuf], trust: Option<&Trust>) -> Result<Self, PolicyError> {
        Self::admit(&read_bundle(paths)?, trust)
    }

    /// Admits the DFD read into `bundle`: with `trust`, only if enough trusted keys signed it
    /// as a whole ([`dfdwatch_dfd::sign`]); then it is parsed, linted and compiled from the very
    /// bytes read.
    pub fn admit(bundle: &Bundle, trust: Option<&Trust>) -> Result<Self, PolicyError> {
        if let Some(trust) = trust {
            for a in dfdwatch_dfd::sign::verify(bundle, trust)? {
                let (key, comment) = (escape_bytes(a.key.as_bytes()), escape_bytes(a.comment.as_bytes()));
                tracing::info!(%key, key_id = %a.key_id, %comment, "approved DFD signed by a trusted key");
            }
        }
        let mut policy = Self::from_sources(&bundle.sources)?;
        policy.read_hash = bundle.hash();
        Ok(policy)
    }

    /// Admits and compiles the DFD held in `sources` (as read by
    /// [`dfdwatch_dfd::load::read_sources`]); the revision's hash is over these very bytes.
    fn from_sources(sources: &[Source]) -> Result<Self, PolicyError> {
        let sha256 = sources_hash(sources);
        let loaded = dfdwatch_dfd::load::parse_sources(sources);
        let mut findings: Vec<Finding> = loaded.findings;
        if !has_errors(&findings) {
            findings.extend(dfdwatch_dfd::lint::lint_undated(&loaded.dfd));
        }
        sort_findings(&mut findings);
        let report = text_report(&findings);
        if has_errors(&findings) {
            return Err(PolicyError::Findings(report));
        }
        for line in report.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!("{}", escape_bytes(line.as_bytes()));
        }
        let dfd = loaded.dfd;
        let approvals = approvals(&dfd);
        let name = dfd.documents.iter().map(|d| d.metadata.name.as_str()).collect::<Vec<_>>().join(",");
        let zones = dfd.zones.iter().map(|z| z.id.clone()).collect();
        let compiled = Compiled::new(dfd).map(Arc::new).map_err(|e| PolicyError::Compile(e.to_string()))?;
        crate::heap::release_freed_memory();
        let ids = super::placement::DfdIds::new(&compiled);
        let revision = Arc::new(DfdRef { name, sha256 });
        let policy =
            Self { compiled, revision, zones, ids, approvals, loaded_unix: unix_now(), read_hash: String::new() };
        policy.warn_expiries(policy.loaded_unix);
        Ok(policy)
    }

    /// Logs a warning for each approval that has expired or expires soon at `now_unix`.
    pub fn warn_expiries(&self, now_unix: i64) {
        for a in &self.approvals {
            // Ids and tickets come from the DFD files: escaped before they reach the log.
            let flow = escape_bytes(a.flow.as_bytes());
            let ticket = escape_bytes(a.ticket.as_deref().unwrap_or("none").as_bytes());
            match a.state(now_unix) {
                ApprovalState::Expired => tracing::warn!(
                    %flow, %ticket, expires = %a.expires,
                    "approval of flow {flow} expired on {}: it still counts as approved; renew or remove it", a.expires
                ),
                ApprovalState::Expiring => tracing::warn!(
                    %flow, %ticket, expires = %a.expires,
                    "approval of flow {flow} expires on {}", a.expires
                ),
                ApprovalState::Valid => {}
            }
        }
    }
}

fn approvals(dfd: &dfdwatch_dfd::model::Dfd) -> Vec<ApprovalExpiry> {
    dfd.flows
        .iter()
        .filter_map(|f| {
            let a = f.approval.as_ref()?;
            Some(ApprovalExpiry { flow: f.id.clone(), ticket: a.ticket.clone(), expires: a.expires? })
        })
        .collect()
}

fn text_report(findings: &[Finding]) -> String {
    let mut report = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = dfdwatch_dfd::report::write(Format::Text, findings, &mut report);
    String::from_utf8_lossy(&report).into_owned()
}

/// SHA-256 (hex) over the DFD sources in load order, each its path then its bytes: identifies the
/// revision in metrics and alerts.
pub fn sources_hash(sources: &[Source]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for s in sources {
        hasher.update(s.path.display().to_string().as_bytes());
        hasher.update(&s.bytes);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry(date: &str) -> ApprovalExpiry {
        ApprovalExpiry { flow: "f".into(), ticket: None, expires: Date::parse(date).unwrap() }
    }

    #[test]
    fn approval_states_follow_the_clock_given() {
        let day = |d: &str| Date::parse(d).unwrap().unix_days() * 86_400;
        let a = expiry("2030-03-31");
        assert_eq!(a.state(day("2030-03-01")), ApprovalState::Valid);
        assert_eq!(a.state(day("2030-03-17") + 3600), ApprovalState::Valid, "15 days before its end");
        assert_eq!(a.state(day("2030-03-18")), ApprovalState::Expiring);
        assert_eq!(a.state(day("2030-03-31") + 86_399), ApprovalState::Expiring, "valid through its last day");
        assert_eq!(a.state(day("2030-04-01")), ApprovalState::Expired);
    }
}
