//! Chooses where to attach at run time: the first attach point in preference order that this
//! kernel supports. Kernels with kprobes or fentry can get variants here without touching the
//! state machine, which every attach point shares in the eBPF crate.

use aya::{
    Ebpf,
    programs::{RawTracePoint, TracePoint, links::FdLink},
};

use super::{ProbeError, tracefs};

/// A place the state-change probe can hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachPoint {
    /// Tracepoint `sock/inet_sock_set_state` (Linux 4.16+, stable ABI, needs tracefs).
    Tracepoint,
    /// Raw tracepoint `inet_sock_set_state` (Linux 4.17+, no tracefs needed).
    RawTracepoint,
}

impl AttachPoint {
    /// In order of preference: the raw tracepoint hands the probe its arguments directly (no
    /// record to copy them from, no tracefs needed), so it costs less per run.
    pub const PREFERENCE: [AttachPoint; 2] = [AttachPoint::RawTracepoint, AttachPoint::Tracepoint];

    /// The eBPF program attached at this point.
    pub fn program_name(self) -> &'static str {
        match self {
            AttachPoint::Tracepoint => "dfdw_tp_state",
            AttachPoint::RawTracepoint => "dfdw_raw_tp_state",
        }
    }

    /// Name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            AttachPoint::Tracepoint => "tracepoint sock/inet_sock_set_state",
            AttachPoint::RawTracepoint => "raw_tracepoint inet_sock_set_state",
        }
    }
}

/// The attach point in use, and the link the daemon holds when the kernel gives one it can
/// check (a bpf_link: always for the raw tracepoint, for the tracepoint since Linux 5.15).
pub struct Attached {
    /// Where the probe is attached.
    pub point: AttachPoint,
    /// The link, to check that it is still attached.
    pub link: Option<FdLink>,
}

/// Attaches at `wanted`, or at the first attach point that works.
pub fn attach(ebpf: &mut Ebpf, wanted: Option<AttachPoint>) -> Result<Attached, ProbeError> {
    let candidates: Vec<AttachPoint> = match wanted {
        Some(p) => vec![p],
        None => AttachPoint::PREFERENCE.to_vec(),
    };
    let mut failures = Vec::new();
    for point in candidates {
        match try_attach(ebpf, point) {
            Ok(link) => {
                tracing::info!(attach_point = point.name(), "probe attached");
                return Ok(Attached { point, link });
            }
            Err(why) => {
                tracing::info!(attach_point = point.name(), reason = %why, "attach point unavailable");
                failures.push(format!("{}: {why}", point.name()));
            }
        }
    }
    Err(ProbeError::Attach(failures.join("; ")))
}

/// Attaches at `point` (loading its program first if needed).
pub fn try_attach(ebpf: &mut Ebpf, point: AttachPoint) -> Result<Option<FdLink>, String> {
    match point {
        AttachPoint::Tracepoint => {
            let fs = tracefs::find().ok_or("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")?;
            tracefs::check_layout(
                &fs,
                "sock",
                "inet_sock_set_state",
                &[("skaddr", 8), ("oldstate", 16), ("newstate", 20)],
            )?;
            let prog: &mut TracePoint = ebpf
                .program_mut(AttachPoint::Tracepoint.program_name())
                .ok_or("program dfdw_tp_state missing")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            if prog.fd().is_err() {
                prog.load().map_err(|e| format!("load: {e}"))?;
            }
            let id = prog.attach("sock", "inet_sock_set_state").map_err(|e| format!("attach: {e}"))?;
            let link = prog.take_link(id).map_err(|e| format!("take link: {e}"))?;
            match FdLink::try_from(link) {
                Ok(link) => Ok(Some(link)),
                // A kernel without perf-event bpf_links: the conversion detached it. Attach again
                // and leave the link with its program; only the heartbeat can watch it.
                Err(_) => {
                    prog.attach("sock", "inet_sock_set_state").map_err(|e| format!("attach: {e}"))?;
                    Ok(None)
                }
            }
        }
        AttachPoint::RawTracepoint => {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(AttachPoint::RawTracepoint.program_name())
                .ok_or("program dfdw_raw_tp_state missing")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            if prog.fd().is_err() {
                prog.load().map_err(|e| format!("load: {e}"))?;
            }
            let id = prog.attach("inet_sock_set_state").map_err(|e| format!("attach: {e}"))?;
            let link = prog.take_link(id).map_err(|e| format!("take link: {e}"))?;
            Ok(Some(FdLink::from(link)))
        }
    }
}
