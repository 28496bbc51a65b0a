//! The kernel flow table: decides whether a connection goes to the daemon as an event or is only
//! counted under its flow key. A key the daemon has not judged is always sent; a quiet key is
//! counted; a reported (alerting) key is sent up to the configured rate a second, and counted
//! beyond it or when the ring buffer is full. Counters go to the current epoch, which the daemon
//! switches before it reads the previous one, so no count is lost or raced.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use monitor_common::{
    Stat,
    flow::{
        ACTION_COUNT, ACTION_REPORT, CountsKey, FLOW_COUNTS_FULL, FLOW_REPORTED, FLOW_UNJUDGED, FlowCounts, FlowKey,
        KEY_PROCESS,
    },
};

use crate::maps::{DFDW_FLOW_CONFIG, DFDW_FLOW_COUNTS, DFDW_FLOW_VERDICTS, count};

/// One second, the report window of a reported key.
const WINDOW_NS: u64 = 1_000_000_000;

/// What to do with one connection.
pub enum Route {
    /// Counted under its key: send nothing.
    Counted,
    /// Send an event with these `ConnEvent::flow` bits and key mask; if it cannot be sent,
    /// call [`lost`] with `counts` (when the key has counters to fall back on).
    Send { flow: u8, key_mask: u8, counts: Option<CountsKey> },
}

/// The fields of a connection that a key is built from.
pub struct Observed {
    pub direction: u8,
    pub ip_version: u8,
    pub cgroup_id: u64,
    pub netns: u32,
    pub tgid: u32,
    pub exec_ns: u64,
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub server_port: u16,
    pub failed: bool,
}

/// Routes one connection through the flow table.
#[inline(always)]
pub fn route(o: &Observed) -> Route {
    let Some(config) = DFDW_FLOW_CONFIG.get(0).copied() else {
        return Route::Send { flow: 0, key_mask: 0, counts: None };
    };
    if config.enabled == 0 {
        return Route::Send { flow: 0, key_mask: 0, counts: None };
    }
    let key_mask = config.key_mask as u8;
    let key = FlowKey {
        cgroup_id: o.cgroup_id,
        netns: o.netns,
        tgid: if key_mask & KEY_PROCESS != 0 { o.tgid } else { 0 },
        exec_ns: if key_mask & KEY_PROCESS != 0 { o.exec_ns } else { 0 },
        local_addr: o.local,
        remote_addr: o.remote,
        server_port: o.server_port,
        direction: o.direction,
        ip_version: o.ip_version,
        _pad: 0,
    };
    let Some(verdict) = DFDW_FLOW_VERDICTS.get_ptr_mut(&key) else {
        return Route::Send { flow: FLOW_UNJUDGED, key_mask, counts: None };
    };
    // SAFETY: the map is not preallocated, so an entry the daemon deletes stays valid until this
    // program run ends (RCU); the fields are copied, or updated in place.
    let (id, action, generation) = unsafe { ((*verdict).id, (*verdict).action, (*verdict).generation) };
    if generation != config.generation {
        // Withdrawn (a DFD reload, an identity change): judged again.
        return Route::Send { flow: FLOW_UNJUDGED, key_mask, counts: None };
    }
    let counts = CountsKey { id, epoch: config.epoch };
    match action {
        ACTION_COUNT => {
            if add(&counts, o.failed, false) {
                Route::Counted
            } else {
                count(Stat::FlowCountsFull);
                Route::Send { flow: FLOW_COUNTS_FULL, key_mask, counts: None }
            }
        }
        ACTION_REPORT => {
            // SAFETY: a bpf_ktime_get_ns call has no preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            // SAFETY: as above; the window fields are the probes' own. Two CPUs racing on a
            // window start may send a few more than the limit, never fewer.
            let under_limit = unsafe {
                if now.wrapping_sub((*verdict).window_ns) >= WINDOW_NS {
                    (*verdict).window_ns = now;
                    (*verdict).reported = 0;
                }
                if (*verdict).reported < config.report_limit as u64 {
                    add_one(&raw mut (*verdict).reported);
                    true
                } else {
                    false
                }
            };
            if under_limit || !add(&counts, o.failed, true) {
                Route::Send { flow: FLOW_REPORTED, key_mask, counts: Some(counts) }
            } else {
                Route::Counted
            }
        }
        _ => Route::Send { flow: FLOW_UNJUDGED, key_mask, counts: None },
    }
}

/// A reported connection that could not be sent: counted as unreported under its key instead,
/// so the daemon still learns of it. False when there is no room for that either.
#[inline(always)]
pub fn lost(counts: &CountsKey, failed: bool) -> bool {
    add(counts, failed, true)
}

/// Adds one connection to `key`'s counters, creating them if needed; false when the map is full.
#[inline(always)]
fn add(key: &CountsKey, failed: bool, unreported: bool) -> bool {
    // SAFETY: a bpf_ktime_get_ns call has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut entry = DFDW_FLOW_COUNTS.get_ptr_mut(key);
    if entry.is_none() {
        let fresh = FlowCounts { conns: 0, failed: 0, unreported: 0, first_ns: now, last_ns: now };
        // Another CPU may insert first (EEXIST): either way the entry exists after this.
        let _ = DFDW_FLOW_COUNTS.insert(key, &fresh, BPF_NOEXIST as u64);
        entry = DFDW_FLOW_COUNTS.get_ptr_mut(key);
    }
    let Some(c) = entry else { return false };
    // SAFETY: the entry stays valid for this program run; counters are added atomically because
    // connections of one flow are counted on every CPU at once.
    unsafe {
        add_one(&raw mut (*c).conns);
        if failed {
            add_one(&raw mut (*c).failed);
        }
        if unreported {
            add_one(&raw mut (*c).unreported);
        }
        (*c).last_ns = now;
    }
    true
}

/// An atomic add whose result is not used: the BPF `XADD` instruction, on every kernel. (The BPF
/// target has no compare-and-swap, so `core`'s atomic types offer no `fetch_add` here.)
///
/// # Safety
/// `ptr` must point into a map value valid for this program run.
#[inline(always)]
unsafe fn add_one(ptr: *mut u64) {
    // SAFETY: as the caller promises; the returned old value is discarded.
    let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(ptr, 1) };
}
