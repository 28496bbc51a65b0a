//! Exec tracking, optional: attaches `sched:sched_process_exec` and `sched_process_fork` (needs
//! tracefs) and seeds the
//! exec maps with every process already running, its executable read from /proc, so that the
//! probes record an image for every connect and listen (see the eBPF crate's `exec.rs`).

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::TracePoint,
};
use monitor_common::{
    EXECS_MAP, TASK_EXEC_MAP,
    event::{EXEC_PATH_LEN, EXEC_SEEDED, ExecImage, ExecKey},
};

use super::tracefs;
use crate::procnet;

/// The exec maps as the daemon reads them.
pub struct ExecMaps {
    /// (tgid, exec time) -> the image's path.
    pub images: HashMap<MapData, ExecKey, ExecImage>,
    /// tgid -> the exec time of the image it runs now.
    pub current: HashMap<MapData, u32, u64>,
}

/// Attaches the exec tracepoint and seeds the maps; `None` (logged) where the kernel or tracefs
/// does not allow it: executables are then read from /proc after the fact.
pub fn attach(ebpf: &mut Ebpf) -> Option<ExecMaps> {
    if let Err(why) = try_attach(ebpf) {
        tracing::warn!(reason = %why, "exec tracking unavailable: executables are read from /proc, and a process that exits or execs soon after connecting may be reported without its executable");
        return None;
    }
    let images: HashMap<MapData, ExecKey, ExecImage> =
        ebpf.take_map(EXECS_MAP).and_then(|m| HashMap::try_from(m).ok())?;
    let current: HashMap<MapData, u32, u64> = ebpf.take_map(TASK_EXEC_MAP).and_then(|m| HashMap::try_from(m).ok())?;
    let mut maps = ExecMaps { images, current };
    let seeded = seed(&mut maps);
    tracing::info!(processes = seeded, "exec tracking on; running processes seeded from /proc");
    Some(maps)
}

fn try_attach(ebpf: &mut Ebpf) -> Result<(), String> {
    let fs = tracefs::find().ok_or("tracefs is not mounted")?;
    tracefs::check_layout(&fs, "sched", "sched_process_exec", &[("filename", 8)])?;
    tracefs::check_layout(&fs, "sched", "sched_process_fork", &[("child_pid", 20)])?;
    for (program, name) in [("dfdw_tp_fork", "sched_process_fork"), ("dfdw_tp_exec", "sched_process_exec")] {
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(format!("program {program} missing"))?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        prog.load().map_err(|e| format!("load: {e}"))?;
        prog.attach("sched", name).map_err(|e| format!("attach {name}: {e}"))?;
    }
    Ok(())
}

/// Every running process's image, from /proc, unless the probe saw it exec meanwhile.
fn seed(maps: &mut ExecMaps) -> usize {
    let Ok(processes) = procnet::processes() else { return 0 };
    let mut seeded = 0;
    for p in processes {
        let Ok(exe) = std::fs::read_link(p.dir.join("exe")) else { continue };
        let bytes = exe.as_os_str().as_encoded_bytes();
        let mut image = ExecImage { len: 0, _pad: 0, path: [0; EXEC_PATH_LEN] };
        let n = bytes.len().min(EXEC_PATH_LEN - 1);
        image.path[..n].copy_from_slice(&bytes[..n]);
        image.len = n as u32;
        let key = ExecKey { tgid: p.tgid, _pad: 0, exec_ns: EXEC_SEEDED };
        // BPF_NOEXIST: an exec the probe recorded since it was attached wins.
        if maps.images.insert(&key, &image, 0).is_ok() && maps.current.insert(&p.tgid, &EXEC_SEEDED, 1).is_ok() {
            seeded += 1;
        }
    }
    seeded
}
