//! Which program image each process runs: on every exec (`sched:sched_process_exec`), the path
//! given to execve is kept under (tgid, time of the exec), and the process's current image is
//! noted; a forked child (`sched:sched_process_fork`) runs its parent's until it execs. A connect or listen records the image of its process at that moment, so the daemon
//! judges the program that made the connection, even when it has exited or exec'd since.

use aya_ebpf::{
    EbpfContext, helpers::bpf_ktime_get_ns, helpers::bpf_probe_read_kernel_str_bytes, programs::TracePointContext,
};
use monitor_common::event::ExecKey;

use crate::maps::{DFDW_EXEC_SCRATCH, DFDW_EXECS, DFDW_TASK_EXEC};

/// `__data_loc char[] filename` of the tracepoint record, after the 8-byte common header (the
/// daemon checks the format file before attaching).
const FILENAME_LOC: usize = 8;

/// Notes one exec: the new image's path and that the process runs it now.
pub fn on_exec(ctx: &TracePointContext) {
    let tgid = ctx.tgid();
    // SAFETY: offset checked against the tracepoint's format file by the daemon.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(FILENAME_LOC) }) else { return };
    let Some(image) = DFDW_EXEC_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU scratch slot, no other user while this program runs on this CPU.
    let image = unsafe { &mut *image };
    // The low 16 bits of a data_loc are the string's offset from the start of the record.
    let src = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
    // SAFETY: bpf_probe_read_kernel_str copes with any address; it stops at the buffer's end.
    let Ok(path) = (unsafe { bpf_probe_read_kernel_str_bytes(src, &mut image.path) }) else { return };
    image.len = path.len() as u32;
    image._pad = 0;
    // SAFETY: helper without preconditions.
    let exec_ns = unsafe { bpf_ktime_get_ns() };
    let key = ExecKey { tgid, _pad: 0, exec_ns };
    if DFDW_EXECS.insert(&key, image, 0).is_ok() {
        let _ = DFDW_TASK_EXEC.insert(&tgid, &exec_ns, 0);
    }
}

/// `pid_t child_pid` of the `sched_process_fork` record (checked by the daemon).
const CHILD_PID: usize = 20;

/// Notes that a forked child runs its parent's image (until it execs). A thread gets an entry
/// too, under its thread id, which nothing looks up: the tracepoint does not tell them apart.
pub fn on_fork(ctx: &TracePointContext) {
    let parent = current_exec(ctx.tgid());
    if parent == 0 {
        return;
    }
    // SAFETY: offset checked against the tracepoint's format file by the daemon.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(CHILD_PID) }) else { return };
    let _ = DFDW_TASK_EXEC.insert(&(child as u32), &parent, 0);
}

/// The image process `tgid` runs now, 0 when unknown.
#[inline(always)]
pub fn current_exec(tgid: u32) -> u64 {
    // SAFETY: the value is copied out at once.
    unsafe { DFDW_TASK_EXEC.get(&tgid) }.copied().unwrap_or(0)
}
