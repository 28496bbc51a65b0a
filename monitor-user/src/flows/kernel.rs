//! The daemon's handle on the kernel flow table's verdicts and settings, shared by the flow stage
//! (which records a verdict once it has judged a key) and the reloader (which withdraws them all
//! when the DFD changes). One lock orders the two: a verdict is recorded only if it was reached
//! under the revision and key mask in force, so no verdict of an older DFD can be written after
//! the reload withdrew them.

use std::sync::{Arc, Mutex, PoisonError};

use aya::maps::{Array, HashMap, MapData, MapError};
use monitor_common::flow::{FlowConfig, FlowKey, FlowVerdict};

use crate::policy::reload::ReloadObserver;
use crate::policy::{DfdRef, Policy};
use crate::telemetry::counters::Counters;

/// Connections of an alerting flow sent per second per key, by default; the rest are counted.
pub const DEFAULT_REPORT_LIMIT: u32 = 100;

/// What the flow stage asks the kernel to do with a key's later connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Count them (an approved flow, or any flow when no DFD is loaded).
    Count,
    /// Send each (an alerting flow), up to the report limit a second.
    Report,
}

impl Action {
    fn raw(self) -> u32 {
        match self {
            Action::Count => monitor_common::flow::ACTION_COUNT,
            Action::Report => monitor_common::flow::ACTION_REPORT,
        }
    }
}

/// Why a verdict was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The verdict was reached under an older DFD or key mask: the key stays unjudged in the
    /// kernel, so its next connection is judged again.
    #[error("the verdict is stale")]
    Stale,
    /// The kernel refused the update (the map is full, or another error).
    #[error("the kernel refused the verdict: {0}")]
    Map(#[from] MapError),
}

struct State {
    verdicts: HashMap<MapData, FlowKey, FlowVerdict>,
    config: Array<MapData, FlowConfig>,
    settings: FlowConfig,
    revision: Option<Arc<DfdRef>>,
}

/// The kernel's flow verdicts and settings, behind one lock.
pub struct KernelFlows {
    state: Mutex<State>,
    counters: Arc<Counters>,
}

impl KernelFlows {
    /// Takes the maps and switches the flow table on with `key_mask` for `revision` (the DFD
    /// loaded at start-up, or none).
    pub fn start(
        verdicts: HashMap<MapData, FlowKey, FlowVerdict>,
        config: Array<MapData, FlowConfig>,
        key_mask: u8,
        report_limit: u32,
        revision: Option<Arc<DfdRef>>,
        counters: Arc<Counters>,
    ) -> Result<Self, MapError> {
        let settings = FlowConfig { enabled: 1, key_mask: u32::from(key_mask), epoch: 0, report_limit };
        let mut state = State { verdicts, config, settings, revision };
        state.config.set(0, &settings, 0)?;
        Ok(Self { state: Mutex::new(state), counters })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key mask in force.
    pub fn key_mask(&self) -> u8 {
        self.lock().settings.key_mask as u8
    }

    /// Records the verdict on `key` if it was reached under the revision and key mask in force.
    pub fn record(
        &self,
        key: &FlowKey,
        id: u32,
        action: Action,
        revision: Option<&Arc<DfdRef>>,
        key_mask: u8,
    ) -> Result<(), RecordError> {
        let mut state = self.lock();
        let same_revision = match (&state.revision, revision) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.sha256 == b.sha256,
            _ => false,
        };
        if !same_revision || state.settings.key_mask != u32::from(key_mask) {
            return Err(RecordError::Stale);
        }
        let verdict = FlowVerdict { id, action: action.raw(), window_ns: 0, reported: 0 };
        state.verdicts.insert(key, &verdict, 0)?;
        Ok(())
    }

    /// Forgets the verdict on `key` (the flow stage retires it): its next connection is sent.
    pub fn forget(&self, key: &FlowKey) {
        match self.lock().verdicts.remove(key) {
            Ok(()) => self.counters.record_verdicts_withdrawn(1),
            Err(MapError::KeyNotFound) => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove a flow verdict from the kernel"),
        }
    }

    /// Withdraws every verdict, keeping the revision and key mask in force (an identity change).
    pub fn withdraw_all_in_force(&self) -> usize {
        let (revision, key_mask) = {
            let state = self.lock();
            (state.revision.clone(), state.settings.key_mask as u8)
        };
        self.withdraw_all(revision, key_mask)
    }

    /// Withdraws every verdict, and from now on takes only verdicts reached under `revision` with
    /// `key_mask`: after a DFD reload or an identity change, the next connection of every key is
    /// judged again. Returns how many verdicts were withdrawn.
    pub fn withdraw_all(&self, revision: Option<Arc<DfdRef>>, key_mask: u8) -> usize {
        let mut state = self.lock();
        state.revision = revision;
        if state.settings.key_mask != u32::from(key_mask) {
            state.settings.key_mask = u32::from(key_mask);
            let settings = state.settings;
            if let Err(e) = state.config.set(0, &settings, 0) {
                tracing::error!(error = %e, "cannot set the flow key mask in the kernel");
            }
        }
        let keys: Vec<FlowKey> = state.verdicts.keys().filter_map(Result::ok).collect();
        let mut withdrawn = 0;
        for key in &keys {
            match state.verdicts.remove(key) {
                Ok(()) => withdrawn += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => tracing::error!(error = %e, "cannot withdraw a flow verdict from the kernel"),
            }
        }
        self.counters.record_verdicts_withdrawn(withdrawn as u64);
        withdrawn
    }

    /// Switches the counting epoch; returns the one that ended.
    pub fn next_epoch(&self) -> Result<u32, MapError> {
        let mut state = self.lock();
        let ended = state.settings.epoch;
        state.settings.epoch = ended.wrapping_add(1);
        let settings = state.settings;
        state.config.set(0, &settings, 0)?;
        Ok(ended)
    }
}

/// A new DFD revision withdraws every verdict the old one reached, before the reload is reported
/// as applied; from then on only verdicts of the new revision are taken.
impl ReloadObserver for KernelFlows {
    fn applied(&self, policy: &Policy) {
        let n = self.withdraw_all(Some(policy.revision.clone()), super::key_mask(Some(policy)));
        tracing::info!(withdrawn = n, "flow verdicts of the previous DFD withdrawn");
    }

    fn refused(&self) {}
}
