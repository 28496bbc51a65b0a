//! Facts about a local process from /proc while it lives: its executable path. Cached by tgid
//! and start time, so a recycled pid never inherits another process's answer.

use std::collections::HashMap;

/// Most processes remembered; beyond it the cache starts over.
const MAX_ENTRIES: usize = 65_536;

/// The process cache. Owned by the identity stage.
#[derive(Default)]
pub struct Processes {
    by_tgid: HashMap<u32, (u64, Option<String>)>,
}

impl Processes {
    /// The executable of process `tgid` (raw path bytes, lossily decoded; escape before output),
    /// or `None` when the process is gone or its exe is unreadable.
    pub fn exe(&mut self, tgid: u32) -> Option<String> {
        let start = start_time(tgid)?;
        if let Some((cached_start, exe)) = self.by_tgid.get(&tgid)
            && *cached_start == start
        {
            return exe.clone();
        }
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe")).ok().map(|p| p.to_string_lossy().into_owned());
        if self.by_tgid.len() >= MAX_ENTRIES {
            self.by_tgid.clear();
        }
        self.by_tgid.insert(tgid, (start, exe.clone()));
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
