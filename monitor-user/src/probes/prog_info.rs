//! What the kernel itself counts about the attached program: `recursion_misses`, the runs it
//! skipped because the program was already running on that CPU (a softirq's state change that
//! interrupted the probe in task context). Such a state change never reaches the probe, so if it
//! was a connect or an accept its event is lost without any of the probe's own counters seeing
//! it; the daemon reports the count as the kernel stat `skipped_recursion` (an upper bound: most
//! skipped changes are ones the probe ignores). Read with BPF_OBJ_GET_INFO_BY_FD, which aya does not expose for
//! this field.

use std::os::fd::{AsFd, AsRawFd};

use aya::programs::ProgramFd;
use aya_obj::generated::bpf_prog_info;

/// The bpf(2) command number of BPF_OBJ_GET_INFO_BY_FD.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The attached program's kernel-side counters.
pub struct ProgInfo {
    fd: ProgramFd,
}

impl ProgInfo {
    /// Watches the program behind `fd` (a duplicate the caller owns).
    pub fn new(fd: ProgramFd) -> Self {
        Self { fd }
    }

    /// Runs the kernel skipped because the program was already active on that CPU.
    pub fn recursion_misses(&self) -> std::io::Result<u64> {
        // SAFETY: bpf_prog_info is a plain C struct of integers and arrays; all zeros is valid.
        let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
        let attr = InfoAttr {
            bpf_fd: self.fd.as_fd().as_raw_fd() as u32,
            info_len: size_of::<bpf_prog_info>() as u32,
            info: (&raw mut info) as u64,
        };
        // SAFETY: `attr` is a valid BPF_OBJ_GET_INFO_BY_FD attribute whose `info` points at a
        // writable buffer of `info_len` bytes that outlives the call.
        let rc =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &raw const attr, size_of::<InfoAttr>()) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(info.recursion_misses)
    }
}
