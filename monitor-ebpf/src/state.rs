//! The TCP state machine the probes follow. Every attach point funnels into
//! [`on_state_change`]:
//! - CLOSE -> SYN_SENT runs in the connecting task: remember its context for the socket.
//! - SYN_SENT -> ESTABLISHED / CLOSE (often in softirq): route a connect / failed connect with the
//!   remembered context and the now complete 4-tuple through the flow table ([`crate::flows`]):
//!   sent as an event, or only counted under its flow key. The daemon's own connects are dropped
//!   here, but for its heartbeat (a refused connect to its loopback heartbeat port), which always
//!   goes to the ring.
//! - CLOSE -> LISTEN runs in the listening task: remember it per (netns, port).
//! - SYN_RECV -> ESTABLISHED runs in softirq, where the current task is usually the CLIENT:
//!   attribute the accept to the recorded listener and the socket's own cgroup, never to the
//!   current task.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_ktime_get_ns},
    maps::ring_buf::RingBufEntry,
};
use aya_log_ebpf::warn;
use monitor_common::{
    AF_INET, ConnEvent, EVENT_VERSION, EventKind, IPPROTO_TCP, KernelOffsets, ListenKey, ProcCtx, Stat,
    event::FLAG_PROCESS_KNOWN,
    flow::{CountsKey, DIRECTION_IN, DIRECTION_OUT},
    tcp_state,
};

use crate::{
    flows::{self, Route},
    maps::{self, DFDW_CONNECTING, DFDW_EVENTS, DFDW_LISTENERS, DFDW_WAKEUP, count},
    sock,
};

/// Entry point shared by every attach point.
#[inline(always)]
pub fn on_state_change<C: EbpfContext>(ctx: &C, sk: *const u8, old: i32, new: i32) {
    // The state pair first: most runs are transitions the probe ignores (closes, FIN states), and
    // they should cost no more than this comparison.
    let interesting = matches!(
        (old, new),
        (tcp_state::CLOSE, tcp_state::SYN_SENT)
            | (tcp_state::SYN_SENT, tcp_state::ESTABLISHED)
            | (tcp_state::SYN_SENT, tcp_state::CLOSE)
            | (tcp_state::CLOSE, tcp_state::LISTEN)
            | (tcp_state::LISTEN, tcp_state::CLOSE)
            | (tcp_state::SYN_RECV, tcp_state::ESTABLISHED)
    );
    if !interesting || sk.is_null() {
        return;
    }
    let o = maps::offsets();
    if o.ready == 0 {
        return;
    }
    let Some(c) = sock::common(&o, sk) else { return };
    match sock::protocol(&o, sk) {
        Ok(p) if p == IPPROTO_TCP => {}
        _ => return,
    }
    match (old, new) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) => remember_connecting(ctx, sk),
        (tcp_state::SYN_SENT, tcp_state::ESTABLISHED) => finish_connect(&o, sk, &c, EventKind::Connect),
        (tcp_state::SYN_SENT, tcp_state::CLOSE) => finish_connect(&o, sk, &c, EventKind::ConnectFailed),
        (tcp_state::CLOSE, tcp_state::LISTEN) => remember_listener(ctx, &o, sk, c.local_port),
        (tcp_state::LISTEN, tcp_state::CLOSE) => forget_listener(&o, sk, c.local_port),
        _ => emit_accept(&o, sk, &c),
    }
}

/// The context of the task running now.
#[inline(always)]
fn current_ctx<C: EbpfContext>(ctx: &C, ignore: bool, sk: *const u8) -> ProcCtx {
    ProcCtx {
        tgid: ctx.tgid(),
        pid: ctx.pid(),
        uid: ctx.uid(),
        ignore: ignore as u32,
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        sk: sk as u64,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        exec_ns: crate::exec::current_exec(ctx.tgid()),
    }
}

fn remember_connecting<C: EbpfContext>(ctx: &C, sk: *const u8) {
    let ignore = ctx.tgid() == maps::self_tgid();
    let pc = current_ctx(ctx, ignore, sk);
    if DFDW_CONNECTING.insert(&(sk as u64), &pc, 0).is_err() {
        count(Stat::ConnectingMapFull);
    }
}

fn finish_connect(o: &KernelOffsets, sk: *const u8, c: &sock::Common, kind: EventKind) {
    let key = sk as u64;
    // Copy the fields out at once: an `Option<ProcCtx>` kept across helper calls leaves an
    // undefined payload that the verifier rejects ("R9 !read_ok").
    // SAFETY: the fields are copied before the entry is removed.
    let recorded = unsafe { DFDW_CONNECTING.get(&key) }
        .map(|pc| (pc.ignore, pc.tgid, pc.pid, pc.uid, pc.cgroup_id, pc.comm, pc.exec_ns));
    let _ = DFDW_CONNECTING.remove(&key);
    let failed = matches!(kind, EventKind::ConnectFailed);
    // The daemon's own connections are not reported, but for its heartbeat.
    let heartbeat = failed && is_heartbeat(c);
    let (flags, tgid, pid, uid, cgroup_id, comm, exec_ns) = match recorded {
        Some((ignore, _, _, _, _, _, _)) if ignore != 0 && !heartbeat => return,
        Some((_, tgid, pid, uid, cgroup_id, comm, exec_ns)) => {
            (FLAG_PROCESS_KNOWN, tgid, pid, uid, cgroup_id, comm, exec_ns)
        }
        None => {
            count(Stat::ConnectNoContext);
            (0, 0, 0, sock::uid(o, sk), sock::cgroup_id(o, sk), [0u8; 16], 0)
        }
    };
    let Ok(a) = sock::addrs(o, sk, c) else { return };
    let netns = sock::netns(o, sk);
    let observed = flows::Observed {
        direction: DIRECTION_OUT,
        ip_version: a.ip_version,
        cgroup_id,
        netns,
        tgid,
        exec_ns,
        local: a.local,
        remote: a.remote,
        server_port: a.remote_port,
        failed,
    };
    // The heartbeat bypasses the flow table: it must reach the daemon every time.
    let route = if heartbeat { Route::Send { flow: 0, key_mask: 0, counts: None } } else { flows::route(&observed) };
    let Route::Send { flow, key_mask, counts } = route else { return };
    let lost = if failed { Stat::LostConnectFailed } else { Stat::LostConnect };
    let Some(mut entry) = reserve(counts, failed, lost) else { return };
    entry.write(ConnEvent {
        version: EVENT_VERSION,
        kind: kind as u8,
        flags,
        ip_version: a.ip_version,
        error: if failed { sock::error(o, sk) } else { 0 },
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        tgid,
        pid,
        uid,
        netns,
        src_port: a.local_port,
        dst_port: a.remote_port,
        flow,
        key_mask,
        _pad: 0,
        src_addr: a.local,
        dst_addr: a.remote,
        comm,
        exec_ns,
    });
    entry.submit(wakeup_flags());
}

/// A connect to 127.0.0.1 on the daemon's heartbeat port.
#[inline(always)]
fn is_heartbeat(c: &sock::Common) -> bool {
    let port = maps::heartbeat_port();
    port != 0 && u32::from(c.remote_port) == port && c.family == AF_INET && c.remote4 == [127, 0, 0, 1]
}

fn remember_listener<C: EbpfContext>(ctx: &C, o: &KernelOffsets, sk: *const u8, port: u16) {
    let key = ListenKey { netns: sock::netns(o, sk), port, _pad: 0 };
    let ignore = ctx.tgid() == maps::self_tgid();
    let pc = current_ctx(ctx, ignore, sk);
    if DFDW_LISTENERS.insert(&key, &pc, 0).is_err() {
        count(Stat::ListenerMapFull);
        warn!(ctx, "dfdwatch: listener map full, accepts on port {} lose their pid", port);
    }
}

fn forget_listener(o: &KernelOffsets, sk: *const u8, port: u16) {
    let key = ListenKey { netns: sock::netns(o, sk), port, _pad: 0 };
    // SAFETY: the value is only compared, then the entry removed.
    let same = unsafe { DFDW_LISTENERS.get(&key) }.map(|pc| pc.sk == sk as u64);
    if same == Some(true) {
        let _ = DFDW_LISTENERS.remove(&key);
    }
}

fn emit_accept(o: &KernelOffsets, sk: *const u8, c: &sock::Common) {
    let Ok(a) = sock::addrs(o, sk, c) else { return };
    let netns = sock::netns(o, sk);
    let key = ListenKey { netns, port: a.local_port, _pad: 0 };
    // SAFETY: the fields are copied out at once.
    let (flags, tgid, pid, comm, exec_ns) = match unsafe { DFDW_LISTENERS.get(&key) } {
        Some(l) if l.ignore != 0 => return,
        Some(l) => (FLAG_PROCESS_KNOWN, l.tgid, l.pid, l.comm, l.exec_ns),
        None => {
            count(Stat::AcceptNoListener);
            (0, 0, 0, [0; 16], 0)
        }
    };
    let cgroup_id = sock::cgroup_id(o, sk);
    let observed = flows::Observed {
        direction: DIRECTION_IN,
        ip_version: a.ip_version,
        cgroup_id,
        netns,
        tgid,
        exec_ns,
        local: a.local,
        remote: a.remote,
        server_port: a.local_port,
        failed: false,
    };
    let Route::Send { flow, key_mask, counts } = flows::route(&observed) else { return };
    let Some(mut entry) = reserve(counts, false, Stat::LostAccept) else { return };
    entry.write(ConnEvent {
        version: EVENT_VERSION,
        kind: EventKind::Accept as u8,
        flags,
        ip_version: a.ip_version,
        error: 0,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        tgid,
        pid,
        uid: sock::uid(o, sk),
        netns,
        src_port: a.remote_port,
        dst_port: a.local_port,
        flow,
        key_mask,
        _pad: 0,
        src_addr: a.remote,
        dst_addr: a.local,
        comm,
        exec_ns,
    });
    entry.submit(wakeup_flags());
}

/// Room for one event in the ring buffer; when there is none, the connection is counted under
/// its flow (`counts`, a reported flow) or, failing that, as `lost`.
#[inline(always)]
fn reserve(counts: Option<CountsKey>, failed: bool, lost: Stat) -> Option<RingBufEntry<ConnEvent>> {
    let entry = DFDW_EVENTS.reserve::<ConnEvent>(0);
    if entry.is_none() && !counts.is_some_and(|c| flows::lost(&c, failed)) {
        count(lost);
    }
    entry
}

/// Batched wakeups: wake the reader only when enough bytes wait or this CPU has not woken it
/// for a while; otherwise leave the record for the next wakeup or the reader's flush tick.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let (bytes, ns) = maps::wakeup_thresholds();
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(last) = DFDW_WAKEUP.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    // SAFETY: per-CPU slot.
    let due = now.wrapping_sub(unsafe { *last }) >= ns;
    if due || DFDW_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= bytes {
        // SAFETY: per-CPU slot.
        unsafe { *last = now };
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
