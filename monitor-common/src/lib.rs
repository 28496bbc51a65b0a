//! Wire types shared by the eBPF programs and the daemon: map and global names, the connection
//! event record, the per-socket process context, the kernel struct offsets and the loss counters.
//!
//! Every type here is `#[repr(C)]`, `Copy`, and has no implicit padding; sizes are checked at
//! compile time so that a change on one side cannot silently misread the other.
#![no_std]

pub mod event;
pub mod flow;
pub mod offsets;
pub mod stats;

pub use event::{ConnEvent, EVENT_VERSION, EventKind, ListenKey, ProcCtx};
pub use offsets::KernelOffsets;
pub use stats::Stat;

/// Ring buffer carrying [`ConnEvent`] records from the kernel to the daemon.
pub const EVENTS_MAP: &str = "DFDW_EVENTS";
/// LRU hash: socket address -> [`ProcCtx`] of the task that started an active open.
pub const CONNECTING_MAP: &str = "DFDW_CONNECTING";
/// Hash: [`ListenKey`] -> [`ProcCtx`] of the process listening on that port.
pub const LISTENERS_MAP: &str = "DFDW_LISTENERS";
/// Per-CPU array of `u64` counters indexed by [`Stat`].
pub const STATS_MAP: &str = "DFDW_STATS";
/// LRU hash: [`event::ExecKey`] -> [`event::ExecImage`], one entry per exec (and per process
/// seeded at start-up): the path of each program image, kept after the process exits.
pub const EXECS_MAP: &str = "DFDW_EXECS";
/// LRU hash: tgid -> `exec_ns` of the image the process runs now.
pub const TASK_EXEC_MAP: &str = "DFDW_TASK_EXEC";
/// Per-CPU array holding the last ring-buffer wakeup time (ns) of each CPU.
pub const WAKEUP_MAP: &str = "DFDW_WAKEUP";

/// Hash: [`flow::FlowKey`] -> [`flow::FlowVerdict`], written by the daemon once it judged a key.
pub const FLOW_VERDICTS_MAP: &str = "DFDW_FLOW_VERDICTS";
/// Hash: [`flow::CountsKey`] -> [`flow::FlowCounts`], kept by the probes, read and cleared by the
/// daemon every interval.
pub const FLOW_COUNTS_MAP: &str = "DFDW_FLOW_COUNTS";
/// Array of one [`flow::FlowConfig`], written by the daemon.
pub const FLOW_CONFIG_MAP: &str = "DFDW_FLOW_CONFIG";

/// Read-only global: [`KernelOffsets`] computed from BTF at start-up.
pub const OFFSETS_GLOBAL: &str = "DFDW_OFFSETS";
/// Read-only global: the daemon's own tgid; its connections are not reported.
pub const SELF_TGID_GLOBAL: &str = "DFDW_SELF_TGID";
/// Read-only global: the loopback port of the daemon's heartbeat (0: none). A failed connect of
/// the daemon's own to 127.0.0.1 on this port is reported although the daemon's connections are
/// not: it proves end to end that the probes still see connections.
pub const HEARTBEAT_PORT_GLOBAL: &str = "DFDW_HEARTBEAT_PORT";
/// Read-only global: wake the reader once this many bytes wait in the ring buffer.
pub const WAKEUP_BYTES_GLOBAL: &str = "DFDW_WAKEUP_BYTES";
/// Read-only global: wake the reader if the last wakeup on this CPU is older than this (ns).
pub const WAKEUP_NS_GLOBAL: &str = "DFDW_WAKEUP_NS";

/// Default ring-buffer size in bytes (16 MiB lost nothing in a 20,000-connection storm here).
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;
/// Entries in the connecting-socket map (sockets between SYN_SENT and its outcome).
pub const CONNECTING_ENTRIES: u32 = 65_536;
/// Program images remembered ([`EXECS_MAP`]): 16,384 execs of 264 bytes, about 4 MiB.
pub const EXEC_ENTRIES: u32 = 16_384;
/// Processes whose current image is remembered ([`TASK_EXEC_MAP`]).
pub const TASK_EXEC_ENTRIES: u32 = 65_536;
/// Entries in the flow-verdict map: flow keys judged at once (the daemon's flow table holds as
/// many; a key beyond them is reported connection by connection, counted).
pub const FLOW_ENTRIES: u32 = 65_536;
/// Entries in the flow-counters map: two epochs of every flow.
pub const FLOW_COUNTS_ENTRIES: u32 = 2 * FLOW_ENTRIES;
/// Entries in the listener map.
pub const LISTENER_ENTRIES: u32 = 16_384;

/// Linux address family numbers as the kernel reports them.
pub const AF_INET: u16 = 2;
/// Linux address family number for IPv6.
pub const AF_INET6: u16 = 10;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u16 = 6;

/// TCP states (include/net/tcp_states.h) that the probes look at.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const CLOSE: i32 = 7;
    pub const LISTEN: i32 = 10;
}
