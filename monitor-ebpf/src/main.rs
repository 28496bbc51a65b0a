//! dfdwatch's eBPF programs. Each attach point is a thin entry that extracts
//! `(sock, oldstate, newstate)` and hands it to [`state::on_state_change`]; the daemon picks, at
//! run time, the first attach point this kernel supports.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features, reason = "atomic_xadd: the BPF target has no atomic types with fetch_add")]

mod exec;
mod flows;
mod maps;
mod sock;
mod state;

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

/// Attach point: tracepoint `sock/inet_sock_set_state` (Linux 4.16+, needs tracefs).
/// Record layout after the 8-byte common header: `const void *skaddr` at 8, `int oldstate` at 16,
/// `int newstate` at 20 (stable since 4.16; the daemon checks the format file before attaching).
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn dfdw_tp_state(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets checked against the tracepoint's format file by the daemon.
    let args = unsafe { (ctx.read_at::<u64>(8), ctx.read_at::<i32>(16), ctx.read_at::<i32>(20)) };
    if let (Ok(sk), Ok(old), Ok(new)) = args {
        state::on_state_change(&ctx, sk as *const u8, old, new);
    }
    0
}

/// Attach point: raw tracepoint `inet_sock_set_state` (Linux 4.17+, no tracefs needed).
/// `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn dfdw_raw_tp_state(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let old: u64 = ctx.arg(1);
    let new: u64 = ctx.arg(2);
    state::on_state_change(&ctx, sk as *const u8, old as i32, new as i32);
    0
}

/// Exec tracking: tracepoint `sched/sched_process_exec` (needs tracefs; optional). Record
/// layout after the 8-byte common header: `__data_loc char[] filename` at 8.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn dfdw_tp_exec(ctx: TracePointContext) -> u32 {
    exec::on_exec(&ctx);
    0
}

/// Exec tracking: tracepoint `sched/sched_process_fork`: `pid_t child_pid` at 20.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn dfdw_tp_fork(ctx: TracePointContext) -> u32 {
    exec::on_fork(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
