//! The kernel flow table's wire types: the key a connection is counted under, the verdict the
//! daemon writes back for a key, the per-interval counters the probes keep, and the one-entry
//! configuration the daemon sets. A connection whose key has no verdict yet goes to the daemon as
//! a [`crate::ConnEvent`]; the daemon judges it and records a [`FlowVerdict`]; later connections of
//! a quiet key only add to its [`FlowCounts`], which the daemon reads and clears every interval by
//! switching the counting epoch.

/// `FlowConfig::key_mask` bit: the key holds the local process id (the DFD binds nodes to
/// executables, so two processes in one cgroup may be judged apart).
pub const KEY_PROCESS: u8 = 1;
/// Every defined key-mask bit.
pub const KEY_MASK_ALL: u8 = KEY_PROCESS;

/// `FlowKey::direction` of a connect (the local end is the client).
pub const DIRECTION_OUT: u8 = 1;
/// `FlowKey::direction` of an accept (the local end is the server).
pub const DIRECTION_IN: u8 = 2;

/// What the verdict stage decided about a key: count its connections in the kernel only.
pub const ACTION_COUNT: u32 = 1;
/// What the verdict stage decided about a key: send every connection (an alerting flow), at most
/// `FlowConfig::report_limit` a second, counting the rest.
pub const ACTION_REPORT: u32 = 2;

/// `ConnEvent::flow` bit: the key had no verdict in force (its first connection, one the table
/// had no room for, or one after the daemon withdrew the verdicts).
pub const FLOW_UNJUDGED: u8 = 1;
/// `ConnEvent::flow` bit: the key's verdict asks for every connection.
pub const FLOW_REPORTED: u8 = 2;
/// `ConnEvent::flow` bit: the key is quiet, but its counters had no room: sent instead.
pub const FLOW_COUNTS_FULL: u8 = 4;

/// What a connection's verdict depends on. Fields the key mask leaves out are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// cgroup v2 id of the local end.
    pub cgroup_id: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// Local process id when the mask holds [`KEY_PROCESS`], else 0.
    pub tgid: u32,
    /// When that process last exec'd ([`crate::ExecKey::exec_ns`]) when the mask holds
    /// [`KEY_PROCESS`], else 0: a process that execs another program makes new keys, judged anew.
    pub exec_ns: u64,
    /// Local address (IPv4 in the first 4 bytes).
    pub local_addr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes).
    pub remote_addr: [u8; 16],
    /// The server's port (remote for a connect, local for an accept).
    pub server_port: u16,
    /// [`DIRECTION_OUT`] or [`DIRECTION_IN`].
    pub direction: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

/// The daemon's verdict on a key. The daemon writes `id`, `action` and `generation`; the probes
/// keep the rate-limit window of reported keys in the last two fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowVerdict {
    /// The daemon's id for this key; counters are kept under it.
    pub id: u32,
    /// [`ACTION_COUNT`] or [`ACTION_REPORT`].
    pub action: u32,
    /// `FlowConfig::generation` when the verdict was written; a verdict of another generation
    /// was withdrawn, and the probes treat its key as unjudged.
    pub generation: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// Probes: start of the current one-second report window (ns, CLOCK_MONOTONIC).
    pub window_ns: u64,
    /// Probes: connections reported in that window.
    pub reported: u64,
}

/// Key of the counters map: a flow id in one counting epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CountsKey {
    /// [`FlowVerdict::id`].
    pub id: u32,
    /// `FlowConfig::epoch` when the connection was counted.
    pub epoch: u32,
}

/// What the probes counted for one flow id in one epoch instead of sending events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCounts {
    /// Connections (completed or failed) counted here.
    pub conns: u64,
    /// Of those, failed connects.
    pub failed: u64,
    /// Of those, connections of a reported key that were not sent (over the rate limit, or the
    /// ring buffer was full).
    pub unreported: u64,
    /// First connection counted in this epoch (ns, CLOCK_MONOTONIC).
    pub first_ns: u64,
    /// Last connection counted in this epoch (ns, CLOCK_MONOTONIC).
    pub last_ns: u64,
}

/// The flow table's settings, the single entry of the config map; written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowConfig {
    /// Non-zero: look connections up in the flow table. Zero: send every connection.
    pub enabled: u32,
    /// `KEY_*` bits: which optional fields the key holds.
    pub key_mask: u32,
    /// The counting epoch; the daemon switches it to read the last one's counters unraced.
    pub epoch: u32,
    /// Connections of a reported key sent per second at most; the rest are counted.
    pub report_limit: u32,
    /// The verdicts' generation: the daemon withdraws every verdict at once by moving it.
    pub generation: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 64);
const _: () = assert!(core::mem::size_of::<FlowVerdict>() == 32);
const _: () = assert!(core::mem::size_of::<CountsKey>() == 8);
const _: () = assert!(core::mem::size_of::<FlowCounts>() == 40);
const _: () = assert!(core::mem::size_of::<FlowConfig>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no implicit padding (sizes asserted above), every bit pattern valid.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CountsKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowConfig {}
}
