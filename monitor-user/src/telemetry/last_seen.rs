//! When each flow of the approved DFD was last seen approved on this node, for finding stale
//! approvals (`dfdwatch_dfd_flow_last_seen_timestamp_seconds{flow}`, rule
//! `DfdwatchApprovalUnused`). A flow not seen yet counts from when this node first watched for
//! it. Kept in `--state-dir` (`flows-last-seen.json`, written every minute and at shutdown), so
//! a restart or an upgrade does not make an unused approval look fresh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Flows remembered at most (a DFD holds far fewer; the file is input like any other).
const MAX_FLOWS: usize = 100_000;

/// Flow id -> Unix time last seen approved (or first watched for).
#[derive(Default)]
pub struct LastSeen {
    path: Option<PathBuf>,
    seen: Mutex<BTreeMap<String, i64>>,
}

impl LastSeen {
    /// Loads what `dir` holds (nothing on a first start, or when the file does not parse:
    /// logged).
    pub fn open(dir: Option<&Path>) -> Self {
        let path = dir.map(|d| d.join("flows-last-seen.json"));
        let mut seen = BTreeMap::new();
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, i64>>(&bytes) {
                    Ok(map) => seen = map.into_iter().take(MAX_FLOWS).collect(),
                    Err(e) => tracing::warn!(error = %e, "the flows' last-seen file does not parse: started afresh"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the flows' last-seen file: started afresh"),
            }
        }
        Self { path, seen: Mutex::new(seen) }
    }

    /// The time of each of `flows`, recording `now` for those never watched for before.
    pub fn for_flows<'a>(&self, flows: impl Iterator<Item = &'a str>, now: i64) -> Vec<(String, i64)> {
        let Ok(mut seen) = self.seen.lock() else { return Vec::new() };
        flows
            .map(|f| {
                let at = *seen.entry(f.to_owned()).or_insert(now);
                (f.to_owned(), at)
            })
            .collect()
    }

    /// `flow` was seen approved at `now`.
    pub fn seen(&self, flow: &str, now: i64) {
        if let Ok(mut seen) = self.seen.lock()
            && (seen.contains_key(flow) || seen.len() < MAX_FLOWS)
        {
            seen.insert(flow.to_owned(), now);
        }
    }

    /// Writes the file (aside, then renamed over it).
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let Ok(bytes) = self.seen.lock().map(|s| serde_json::to_vec(&*s)) else { return };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".new");
        let result = bytes
            .map_err(std::io::Error::from)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write the flows' last-seen file");
        }
    }
}
