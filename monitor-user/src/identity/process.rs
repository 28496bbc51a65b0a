//! The executable of a local process. With exec tracking ([`crate::probes::execs`]) the kernel
//! names the program image the process ran when it connected or listened, kept after it exits
//! or execs again; the path is then the one /proc shows while the process still runs that image
//! (resolved, as DFD `executables` are written), else the path given to execve. Without it, the
//! executable is read from /proc while the process lives, cached by tgid and start time, so a
//! recycled pid never inherits another process's answer. The start time is
//! read again at most every [`RECHECK`] per process: reading /proc/PID/stat on every event cost
//! more than the rest of the pipeline together (see BENCHMARKS.md). A pid recycled within that
//! second would need the kernel to hand out every other pid within it (pid_max is 32,768 on the
//! test machine, 4,194,304 on most 64-bit distributions).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use monitor_common::event::ExecKey;

use crate::probes::execs::ExecMaps;
use crate::source::decode::LocalProcess;

/// Most processes remembered; beyond it the cache starts over.
const MAX_ENTRIES: usize = 65_536;
/// How long a process's start time is trusted before it is read again.
const RECHECK: Duration = Duration::from_secs(1);

struct Entry {
    start: u64,
    checked: Instant,
    exe: Option<String>,
}

/// The executable of a connection's local process, and how it is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Executable {
    /// Raw path bytes, lossily decoded (escape before output).
    pub path: Option<String>,
    /// `proc` (read from /proc/PID/exe) or `exec` (the path given to execve, from the kernel).
    pub source: Option<&'static str>,
    /// The process exec'd another program after it connected or listened: `path` is the one
    /// that did, not the one it runs now.
    pub exec_since: bool,
    /// With `exec_since`: the program it runs now, as it was exec'd (from the kernel's record).
    pub now: Option<String>,
}

/// The process cache. Owned by the identity stage.
#[derive(Default)]
pub struct Processes {
    by_tgid: HashMap<u32, Entry>,
    kernel: Option<ExecMaps>,
    /// (tgid, exec time) -> path and source: an image's path never changes.
    images: HashMap<(u32, u64), (Option<String>, &'static str)>,
}

impl Processes {
    /// Also names the program image each connection's process ran, from the kernel.
    pub fn with_exec_maps(mut self, maps: ExecMaps) -> Self {
        self.kernel = Some(maps);
        self
    }

    /// The executable of `p`: the image it ran when it connected or listened, when the kernel
    /// tracks execs; else what /proc shows now.
    pub fn executable(&mut self, p: &LocalProcess) -> Executable {
        let Some(kernel) = &self.kernel else {
            let path = self.exe(p.tgid);
            return Executable { source: path.as_ref().map(|_| "proc"), path, exec_since: false, now: None };
        };
        if p.exec_ns == 0 {
            let path = self.exe(p.tgid);
            return Executable { source: path.as_ref().map(|_| "proc"), path, exec_since: false, now: None };
        }
        let current = kernel.current.get(&p.tgid, 0).ok();
        let exec_since = current.is_some_and(|c| c != p.exec_ns);
        let now = current.filter(|_| exec_since).and_then(|exec_ns| {
            let image = kernel.images.get(&ExecKey { tgid: p.tgid, _pad: 0, exec_ns }, 0).ok()?;
            Some(String::from_utf8_lossy(image.path()).into_owned())
        });
        let key = (p.tgid, p.exec_ns);
        if let Some((path, source)) = self.images.get(&key) {
            return Executable { path: path.clone(), source: path.as_ref().map(|_| *source), exec_since, now };
        }
        // The kernel's record of the exec names the image for sure, as it was exec'd. While the
        // process still runs that image, /proc names it resolved (as DFDs are written): taken
        // only when it resolves to the same file, since the process may exec between the two
        // reads.
        let image = kernel.images.get(&ExecKey { tgid: p.tgid, _pad: 0, exec_ns: p.exec_ns }, 0).ok();
        let execd = image.map(|i| String::from_utf8_lossy(i.path()).into_owned());
        let resolved = execd.as_deref().and_then(|e| same_file_in_proc(p.tgid, e));
        let (path, source) = match (resolved, execd) {
            (Some(path), _) => (Some(path), "proc"),
            (None, path) => (path, "exec"),
        };
        if self.images.len() >= MAX_ENTRIES {
            self.images.clear();
        }
        self.images.insert(key, (path.clone(), source));
        Executable { source: path.as_ref().map(|_| source), path, exec_since, now }
    }

    /// The executable of process `tgid` (raw path bytes, lossily decoded; escape before output),
    /// or `None` when the process is gone or its exe is unreadable.
    pub fn exe(&mut self, tgid: u32) -> Option<String> {
        let now = Instant::now();
        if let Some(e) = self.by_tgid.get(&tgid)
            && now.duration_since(e.checked) < RECHECK
        {
            return e.exe.clone();
        }
        let start = start_time(tgid)?;
        if let Some(e) = self.by_tgid.get_mut(&tgid)
            && e.start == start
        {
            e.checked = now;
            return e.exe.clone();
        }
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe")).ok().map(|p| p.to_string_lossy().into_owned());
        if self.by_tgid.len() >= MAX_ENTRIES {
            self.by_tgid.clear();
        }
        self.by_tgid.insert(tgid, Entry { start, checked: now, exe: exe.clone() });
        exe
    }
}

/// `/proc/PID/exe` when it is the file `execd` (a path as given to execve, in the process's
/// mount namespace) resolves to; `None` when it is not, or either cannot be read.
fn same_file_in_proc(tgid: u32, execd: &str) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{tgid}/exe")).ok()?.to_string_lossy().into_owned();
    if exe == execd {
        return Some(exe);
    }
    // Resolved through the process's root: for a container the result lies under its root
    // filesystem, so it ends with what /proc shows.
    let resolved = std::fs::canonicalize(format!("/proc/{tgid}/root{execd}")).ok()?;
    let resolved = resolved.to_string_lossy();
    (execd.starts_with('/') && resolved.ends_with(exe.as_str())).then_some(exe)
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot).
fn start_time(tgid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{tgid}/stat")).ok()?;
    // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process() {
        let mut p = Processes::default();
        let me = std::process::id();
        let exe = p.exe(me);
        assert_eq!(exe, std::env::current_exe().ok().map(|e| e.to_string_lossy().into_owned()));
        assert_eq!(p.exe(me), exe, "cached answer");
        assert!(start_time(me).is_some());
        assert_eq!(p.exe(u32::MAX), None);
    }
}
