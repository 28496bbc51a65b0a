//! Health of the watcher (connected, synced, last error, last event) and counters over closed
//! label sets, for the daemon's log, metrics and /readyz.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The kinds of object watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// core/v1 Pod (all namespaces, all nodes).
    Pods,
    /// core/v1 Namespace.
    Namespaces,
    /// core/v1 Service.
    Services,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlices,
}

impl ResourceKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ResourceKind; 4] = [Self::Pods, Self::Namespaces, Self::Services, Self::EndpointSlices];

    /// A stable name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::Namespaces => "namespaces",
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why an object (or part of one) from the API server was refused. A closed set: usable as a
/// metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// No name, namespace or UID where one is required.
    MissingField,
    /// A name, namespace, UID or service account longer than the limit.
    NameTooLong,
    /// More labels than the limit.
    TooManyLabels,
    /// A label key or value longer than the limit.
    LabelTooLong,
    /// More containers than the limit.
    TooManyContainers,
    /// More IPs, endpoints or ports than the limit.
    TooManyEntries,
    /// The kind already holds its maximum number of objects.
    CapacityReached,
    /// An IP that does not parse (the address is skipped, the object kept).
    InvalidAddress,
    /// Names that cannot form a SPIFFE ID (the pod is kept without one).
    SpiffeRejected,
}

impl RefusalReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RefusalReason; 9] = [
        Self::MissingField,
        Self::NameTooLong,
        Self::TooManyLabels,
        Self::LabelTooLong,
        Self::TooManyContainers,
        Self::TooManyEntries,
        Self::CapacityReached,
        Self::InvalidAddress,
        Self::SpiffeRejected,
    ];

    /// A stable name, usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingField => "missing_field",
            Self::NameTooLong => "name_too_long",
            Self::TooManyLabels => "too_many_labels",
            Self::LabelTooLong => "label_too_long",
            Self::TooManyContainers => "too_many_containers",
            Self::TooManyEntries => "too_many_entries",
            Self::CapacityReached => "capacity_reached",
            Self::InvalidAddress => "invalid_address",
            Self::SpiffeRejected => "spiffe_rejected",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Health of one watched kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceHealth {
    /// The kind.
    pub kind: ResourceKind,
    /// A full list has completed at least once (the cache is complete as of then).
    pub synced: bool,
    /// Objects currently held.
    pub objects: usize,
    /// Completed lists, the first included (so relists = `lists - 1`).
    pub lists: u64,
    /// Watch or list errors seen.
    pub errors: u64,
}

/// A snapshot of the watcher's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The API server answered the most recent request (watch, list or `/version` probe).
    /// While false, lookups answer from the cache as it was.
    pub connected: bool,
    /// Every kind has completed a full list at least once.
    pub synced: bool,
    /// Per kind, in [`ResourceKind::ALL`] order.
    pub resources: Vec<ResourceHealth>,
    /// The most recent error, as text.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// When an event (list item, watch event or list end) was last applied.
    pub last_event_at: Option<SystemTime>,
    /// Refusals by reason, in [`RefusalReason::ALL`] order (reasons never seen included, at 0).
    pub refused: Vec<(RefusalReason, u64)>,
    /// Pod IP claims decided between two pods (an IP reused before the old pod's removal arrived).
    pub ip_conflicts: u64,
}

impl Health {
    /// The health of one kind.
    pub fn resource(&self, kind: ResourceKind) -> Option<&ResourceHealth> {
        self.resources.iter().find(|r| r.kind == kind)
    }

    /// Refusals counted for one reason.
    pub fn refused_for(&self, reason: RefusalReason) -> u64 {
        self.refused.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }
}

#[derive(Debug, Default)]
struct Status {
    connected: bool,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    last_event_at: Option<SystemTime>,
    synced: [bool; 4],
    lists: [u64; 4],
    errors: [u64; 4],
}

/// Health state written by the watcher task and read by any handle.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    status: Mutex<Status>,
    refused: [AtomicU64; 9],
    ip_conflicts: AtomicU64,
}

impl HealthState {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        // A panic while holding this lock cannot leave it inconsistent (plain field stores).
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn refuse(&self, reason: RefusalReason) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ip_conflict(&self) {
        self.ip_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the API server as answering; returns true if this ends an outage.
    fn mark_connected(s: &mut Status) -> bool {
        let reconnected = !s.connected && s.last_error_at.is_some();
        s.connected = true;
        reconnected
    }

    /// An event was applied; returns true if this ends an outage.
    pub(crate) fn event(&self) -> bool {
        let mut s = self.status();
        s.last_event_at = Some(SystemTime::now());
        Self::mark_connected(&mut s)
    }

    /// A list completed; returns true if this ends an outage.
    pub(crate) fn listed(&self, kind: ResourceKind) -> bool {
        let mut s = self.status();
        s.last_event_at = Some(SystemTime::now());
        s.synced[kind.index()] = true;
        s.lists[kind.index()] += 1;
        Self::mark_connected(&mut s)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.status().connected
    }

    /// The probe got an answer; returns true if this ends an outage.
    pub(crate) fn reachable(&self) -> bool {
        Self::mark_connected(&mut self.status())
    }

    /// Records an error; `reachable` tells whether the API server did answer (an error status)
    /// or could not be reached at all.
    pub(crate) fn error(&self, kind: Option<ResourceKind>, message: String, reachable: bool) {
        let mut s = self.status();
        s.connected = reachable;
        s.last_error = Some(message);
        s.last_error_at = Some(SystemTime::now());
        if let Some(kind) = kind {
            s.errors[kind.index()] += 1;
        }
    }

    pub(crate) fn snapshot(&self, objects: [usize; 4]) -> Health {
        let s = self.status();
        Health {
            connected: s.connected,
            synced: s.synced.iter().all(|x| *x),
            resources: ResourceKind::ALL
                .iter()
                .map(|k| ResourceHealth {
                    kind: *k,
                    synced: s.synced[k.index()],
                    objects: objects[k.index()],
                    lists: s.lists[k.index()],
                    errors: s.errors[k.index()],
                })
                .collect(),
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_at,
            last_event_at: s.last_event_at,
            refused: RefusalReason::ALL.iter().map(|r| (*r, self.refused[r.index()].load(Ordering::Relaxed))).collect(),
            ip_conflicts: self.ip_conflicts.load(Ordering::Relaxed),
        }
    }
}
