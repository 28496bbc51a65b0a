//! The maps and read-only globals the probes share with the daemon (names in monitor-common).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    CONNECTING_ENTRIES, DEFAULT_RING_BYTES, EXEC_ENTRIES, FLOW_COUNTS_ENTRIES, FLOW_ENTRIES, KernelOffsets,
    LISTENER_ENTRIES, ListenKey, ProcCtx, Stat, TASK_EXEC_ENTRIES,
    event::{ExecImage, ExecKey},
    flow::{CountsKey, FlowConfig, FlowCounts, FlowKey, FlowVerdict},
    stats::STAT_COUNT,
};

#[map]
pub static DFDW_EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
pub static DFDW_CONNECTING: LruHashMap<u64, ProcCtx> = LruHashMap::with_max_entries(CONNECTING_ENTRIES, 0);

#[map]
pub static DFDW_LISTENERS: HashMap<ListenKey, ProcCtx> = HashMap::with_max_entries(LISTENER_ENTRIES, 0);

#[map]
pub static DFDW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[map]
pub static DFDW_FLOW_VERDICTS: HashMap<FlowKey, FlowVerdict> =
    HashMap::with_max_entries(FLOW_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static DFDW_FLOW_COUNTS: HashMap<CountsKey, FlowCounts> = HashMap::with_max_entries(FLOW_COUNTS_ENTRIES, 0);

#[map]
pub static DFDW_FLOW_CONFIG: Array<FlowConfig> = Array::with_max_entries(1, 0);

#[map]
pub static DFDW_WAKEUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static DFDW_EXECS: LruHashMap<ExecKey, ExecImage> = LruHashMap::with_max_entries(EXEC_ENTRIES, 0);

#[map]
pub static DFDW_TASK_EXEC: LruHashMap<u32, u64> = LruHashMap::with_max_entries(TASK_EXEC_ENTRIES, 0);

/// Scratch space for one [`ExecImage`] (too large for the BPF stack).
#[map]
pub static DFDW_EXEC_SCRATCH: PerCpuArray<ExecImage> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static DFDW_OFFSETS: KernelOffsets = KernelOffsets {
    ready: 0,
    sk_family: 0,
    sk_num: 0,
    sk_dport: 0,
    sk_rcv_saddr: 0,
    sk_daddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_v6_daddr: 0,
    sk_net: 0,
    sk_protocol: 0,
    sk_err: 0,
    sk_uid: 0,
    sk_cgroup: 0,
    cgroup_kn: 0,
    kn_id: 0,
    net_inum: 0,
    common_block: 0,
};

#[unsafe(no_mangle)]
static DFDW_SELF_TGID: u32 = 0;

#[unsafe(no_mangle)]
static DFDW_HEARTBEAT_PORT: u32 = 0;

#[unsafe(no_mangle)]
static DFDW_WAKEUP_BYTES: u64 = 256 * 1024;

#[unsafe(no_mangle)]
static DFDW_WAKEUP_NS: u64 = 1_000_000;

/// The kernel offsets the daemon filled in at load time.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a read-only global; volatile so the compiler does not fold the
    // compile-time zero value that the loader replaces.
    unsafe { core::ptr::read_volatile(&DFDW_OFFSETS) }
}

/// The daemon's own tgid.
#[inline(always)]
pub fn self_tgid() -> u32 {
    // SAFETY: as in `offsets`.
    unsafe { core::ptr::read_volatile(&DFDW_SELF_TGID) }
}

/// The loopback port of the daemon's heartbeat, 0 when it has none.
#[inline(always)]
pub fn heartbeat_port() -> u32 {
    // SAFETY: as in `offsets`.
    unsafe { core::ptr::read_volatile(&DFDW_HEARTBEAT_PORT) }
}

/// Ring-buffer wakeup thresholds: (bytes waiting, ns since the last wakeup on this CPU).
#[inline(always)]
pub fn wakeup_thresholds() -> (u64, u64) {
    // SAFETY: as in `offsets`.
    unsafe { (core::ptr::read_volatile(&DFDW_WAKEUP_BYTES), core::ptr::read_volatile(&DFDW_WAKEUP_NS)) }
}

/// Adds one to a loss or anomaly counter.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(slot) = DFDW_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}
