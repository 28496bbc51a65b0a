//! Maps a cgroup id (the inode of a cgroup v2 directory) to its path. A hit is a hash lookup; a
//! miss is filled from /proc/PID/cgroup when the process is known (one small read), else from a
//! walk of the hierarchy, at most once per `rescan_every`, so a burst of misses cannot turn into a
//! burst of walks.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most entries kept; beyond it the cache starts over (rare: one entry per cgroup seen).
const MAX_ENTRIES: usize = 65_536;
/// Deepest directory level walked (kubepods paths are 4 or 5 levels deep).
const MAX_DEPTH: usize = 12;

/// The cgroup id -> path cache. Owned by the identity stage.
pub struct CgroupPaths {
    mount: PathBuf,
    paths: HashMap<u64, String>,
    last_walk: Option<Instant>,
    rescan_every: Duration,
}

impl CgroupPaths {
    /// A cache over the cgroup v2 hierarchy mounted at `mount`.
    pub fn new(mount: PathBuf, rescan_every: Duration) -> Self {
        Self { mount, paths: HashMap::new(), last_walk: None, rescan_every }
    }

    /// The path (relative to the mount, starting with `/`) of cgroup `id`; `tgid` is a process
    /// believed to be in it, if any.
    pub fn path(&mut self, id: u64, tgid: Option<u32>) -> Option<&str> {
        if !self.paths.contains_key(&id) {
            self.fill(id, tgid);
        }
        self.paths.get(&id).map(String::as_str)
    }

    fn fill(&mut self, id: u64, tgid: Option<u32>) {
        if self.paths.len() >= MAX_ENTRIES {
            self.paths.clear();
        }
        if let Some(tgid) = tgid
            && let Some(rel) = crate::cgroupfs::process_cgroup_path(tgid)
            && inode(&self.mount.join(rel.trim_start_matches('/'))) == Some(id)
        {
            self.paths.insert(id, rel);
            return;
        }
        let due = self.last_walk.is_none_or(|t| t.elapsed() >= self.rescan_every);
        if due {
            self.last_walk = Some(Instant::now());
            let mount = self.mount.clone();
            walk(&mount, &mount, 0, &mut self.paths);
        }
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn walk(mount: &Path, dir: &Path, depth: usize, out: &mut HashMap<u64, String>) {
    if let (Some(ino), Ok(rel)) = (inode(dir), dir.strip_prefix(mount))
        && out.len() < MAX_ENTRIES
    {
        out.insert(ino, format!("/{}", rel.to_string_lossy()));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(mount, &entry.path(), depth + 1, out);
        }
    }
}
