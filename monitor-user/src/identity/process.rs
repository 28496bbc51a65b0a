//! Facts about a local process from /proc while it lives: its executable path. Cached by tgid
//! and start time, so a recycled pid never inherits another process's answer. The start time is
//! read again at most every [`RECHECK`] per process: reading /proc/PID/stat on every event cost
//! more than the rest of the pipeline together (see BENCHMARKS.md). A pid recycled within that
//! second would need the kernel to hand out every other pid within it (pid_max is 32,768 on the
//! test machine, 4,194,304 on most 64-bit distributions).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most processes remembered; beyond it the cache starts over.
const MAX_ENTRIES: usize = 65_536;
/// How long a process's start time is trusted before it is read again.
const RECHECK: Duration = Duration::from_secs(1);

struct Entry {
    start: u64,
    checked: Instant,
    exe: Option<String>,
}

/// The process cache. Owned by the identity stage.
#[derive(Default)]
pub struct Processes {
    by_tgid: HashMap<u32, Entry>,
}

impl Processes {
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
