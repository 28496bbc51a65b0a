//! The daemon's handle on the kernel flow table's verdicts and settings, shared by the flow stage
//! (which records a verdict once it has judged a key, and withdraws them all when the identities
//! change) and the reloader (which withdraws them all when the DFD changes). Withdrawing is one
//! write: the verdicts' generation in the config map moves, and the probes treat a verdict of
//! another generation as none. One lock orders recording and withdrawing: a verdict is recorded
//! only if it was reached under the revision, key mask and identities in force, so no verdict of
//! an older DFD or identity can be written after they were withdrawn.

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
    /// The identity cache's generation at the last identity withdrawal.
    identity_generation: u64,
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
        let settings = FlowConfig { enabled: 1, key_mask: u32::from(key_mask), report_limit, ..FlowConfig::default() };
        let mut state = State { verdicts, config, settings, revision, identity_generation: 0 };
        state.config.set(0, &settings, 0)?;
        Ok(Self { state: Mutex::new(state), counters })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the verdict on `key` if it was reached under what is in force: the DFD revision,
    /// the key mask, and identities resolved no earlier than the last identity withdrawal
    /// (`identity_generation` is the identity cache's generation read before the connection was
    /// identified).
    pub fn record(&self, key: &FlowKey, id: u32, action: Action, judged: &JudgedUnder<'_>) -> Result<(), RecordError> {
        let mut state = self.lock();
        let same_revision = match (&state.revision, judged.revision) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.sha256 == b.sha256,
            _ => false,
        };
        if !same_revision
            || state.settings.key_mask != u32::from(judged.key_mask)
            || judged.identity_generation < state.identity_generation
        {
            return Err(RecordError::Stale);
        }
        let verdict =
            FlowVerdict { id, action: action.raw(), generation: state.settings.generation, ..FlowVerdict::default() };
        state.verdicts.insert(key, &verdict, 0)?;
        Ok(())
    }

    /// Forgets the verdict on `key` (the flow stage retires it): its next connection is sent.
    /// Returns the counting epoch in force: the key's counters are all in that epoch or earlier.
    pub fn forget(&self, key: &FlowKey) -> u32 {
        let mut state = self.lock();
        match state.verdicts.remove(key) {
            Ok(()) => self.counters.record_verdicts_withdrawn(1),
            Err(MapError::KeyNotFound) => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove a flow verdict from the kernel"),
        }
        state.settings.epoch
    }

    /// The counting epoch in force.
    pub fn epoch(&self) -> u32 {
        self.lock().settings.epoch
    }

    /// Withdraws every verdict at once (the identities changed): from now on, only verdicts of
    /// connections identified at `identity_generation` or later are taken.
    pub fn withdraw_for_identities(&self, identity_generation: u64) {
        let mut state = self.lock();
        state.identity_generation = identity_generation;
        self.withdraw(&mut state);
    }

    /// Withdraws every verdict at once, and from now on takes only verdicts reached under
    /// `revision` with `key_mask`: after a DFD reload, the next connection of every key is judged
    /// again.
    pub fn withdraw_for_revision(&self, revision: Option<Arc<DfdRef>>, key_mask: u8) {
        let mut state = self.lock();
        state.revision = revision;
        state.settings.key_mask = u32::from(key_mask);
        self.withdraw(&mut state);
    }

    /// Moves the verdicts' generation: the probes take every verdict written before as withdrawn
    /// (one write, however many verdicts; the flow stage rewrites each key's verdict at its next
    /// connection, or retires the key).
    fn withdraw(&self, state: &mut State) {
        state.settings.generation = state.settings.generation.wrapping_add(1);
        let settings = state.settings;
        match state.config.set(0, &settings, 0) {
            Ok(()) => self.counters.record_verdicts_withdrawn(1),
            // Cannot happen for a one-entry array the daemon owns; if it does, say so loudly.
            Err(e) => tracing::error!(error = %e, "cannot withdraw the kernel's flow verdicts"),
        }
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

/// What a verdict was reached under, for [`KernelFlows::record`].
pub struct JudgedUnder<'a> {
    /// The DFD revision (none without a DFD).
    pub revision: Option<&'a Arc<DfdRef>>,
    /// The key mask the probe used.
    pub key_mask: u8,
    /// The identity cache's generation before the connection was identified.
    pub identity_generation: u64,
}

/// A new DFD revision withdraws every verdict the old one reached, before the reload is reported
/// as applied; from then on only verdicts of the new revision are taken.
impl ReloadObserver for KernelFlows {
    fn applied(&self, policy: &Policy) {
        self.withdraw_for_revision(Some(policy.revision.clone()), super::key_mask(Some(policy)));
        tracing::info!("flow verdicts of the previous DFD withdrawn");
    }

    fn refused(&self) {}
}
