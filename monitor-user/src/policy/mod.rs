//! The approved DFD as the daemon holds it: loaded and checked like `dfdwatch check` (a DFD with
//! an error-level finding is refused), compiled once, and used to place each end of a flow on a
//! DFD node, zone and tier. The verdict on a flow builds on these placements.

pub mod placement;
pub mod verdict;

use std::path::PathBuf;
use std::sync::Arc;

use dfdwatch_dfd::compile::Compiled;
use dfdwatch_dfd::date::Date;
use dfdwatch_dfd::diag::has_errors;
use dfdwatch_dfd::report::Format;

pub use placement::{Placement, place};

/// Why the DFD was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot load the approved DFD: {0}")]
    Load(String),
    #[error("the approved DFD has errors; fix them (`dfdwatch check` shows the same report):\n{0}")]
    Findings(String),
    #[error("the approved DFD does not compile: {0}")]
    Compile(String),
}

/// SHA-256 (hex) over the DFD files under `paths`, in load order: identifies the revision in
/// metrics and alerts.
pub fn content_hash(paths: &[PathBuf]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for file in dfdwatch_dfd::load::expand(paths).unwrap_or_default() {
        hasher.update(file.display().to_string().as_bytes());
        hasher.update(std::fs::read(&file).unwrap_or_default());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads, checks and compiles the DFD files under `paths` (files or directories).
pub fn load(paths: &[PathBuf]) -> Result<Arc<Compiled>, PolicyError> {
    let loaded = dfdwatch_dfd::load::load_paths(paths).map_err(|e| PolicyError::Load(e.to_string()))?;
    let dfd = loaded.dfd.clone();
    let findings = dfdwatch_dfd::cli::all_findings(loaded, Date::today_utc());
    let mut report = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = dfdwatch_dfd::report::write(Format::Text, &findings, &mut report);
    let report = String::from_utf8_lossy(&report).into_owned();
    if has_errors(&findings) {
        return Err(PolicyError::Findings(report));
    }
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!(target: "dfdwatch::policy", "{line}");
    }
    Compiled::new(dfd).map(Arc::new).map_err(|e| PolicyError::Compile(e.to_string()))
}
