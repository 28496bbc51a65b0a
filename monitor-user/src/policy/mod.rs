//! The approved DFD as the daemon holds it: loaded and checked like `dfdwatch check` (a DFD with
//! an error-level finding is refused), compiled once into a [`Policy`], and used to place each end
//! of a flow on a DFD node, zone and tier. The verdict on a flow builds on these placements; the
//! verdict stage judges each flow against one whole policy, which the reloader swaps atomically.

pub mod placement;
pub mod reload;
pub mod stage;
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
    #[error("the approved DFD's files changed while they were read; try again")]
    Changed,
}

/// Which DFD revision judged a flow: written in alerts and in `dfdwatch_dfd_info`.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct DfdRef {
    /// Names of its documents, comma-separated.
    pub name: String,
    /// SHA-256 over its files (see [`content_hash`]).
    pub sha256: String,
}

/// One loaded, checked and compiled revision of the approved DFD.
pub struct Policy {
    /// The compiled DFD.
    pub compiled: Arc<Compiled>,
    /// Its names and content hash.
    pub revision: DfdRef,
    /// Its zone ids: the closed set of zone labels in metrics.
    pub zones: Vec<String>,
    /// Unix time it was loaded.
    pub loaded_unix: i64,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("revision", &self.revision)
            .field("loaded_unix", &self.loaded_unix)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Loads, checks and compiles the DFD files under `paths`. The content hash is taken before
    /// and after reading; if they differ, a writer was busy and the load is refused as
    /// [`PolicyError::Changed`], so a half-written file is never taken for the whole DFD.
    pub fn load(paths: &[PathBuf]) -> Result<Self, PolicyError> {
        Self::load_hashed(paths).1
    }

    /// [`Policy::load`], also returning the content hash it read, whatever the outcome (the
    /// reloader remembers a refused content by it).
    pub fn load_hashed(paths: &[PathBuf]) -> (String, Result<Self, PolicyError>) {
        let before = content_hash(paths);
        let result = Self::load_checked(paths, &before);
        (before, result)
    }

    fn load_checked(paths: &[PathBuf], before: &str) -> Result<Self, PolicyError> {
        let compiled = load(paths)?;
        if content_hash(paths) != before {
            return Err(PolicyError::Changed);
        }
        crate::heap::release_freed_memory();
        let documents = compiled.dfd.documents.iter().map(|d| d.metadata.name.as_str()).collect::<Vec<_>>();
        let loaded_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Ok(Self {
            revision: DfdRef { name: documents.join(","), sha256: before.to_owned() },
            zones: compiled.dfd.zones.iter().map(|z| z.id.clone()).collect(),
            compiled,
            loaded_unix,
        })
    }
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
