//! The cgroup v2 hierarchy: where it is mounted (from /proc/self/mountinfo, never assumed) and
//! the cgroup id (directory inode) of a process.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// The cgroup v2 mount point, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified` on hybrid hosts.
pub fn v2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_v2_mount(&text)
}

fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 path of a process relative to the mount (`0::/path` in /proc/PID/cgroup).
pub fn process_cgroup_path(tgid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned))
}

/// The cgroup id of a process: the inode of its cgroup v2 directory.
pub fn process_cgroup_id(mount: &Path, tgid: u32) -> Option<u64> {
    let rel = process_cgroup_path(tgid)?;
    let dir = mount.join(rel.trim_start_matches('/'));
    fs::metadata(dir).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::parse_v2_mount;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_v2_mount(hybrid).as_deref(), Some(std::path::Path::new("/sys/fs/cgroup/unified")));
        let unified = "28 22 0:25 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_v2_mount(unified).as_deref(), Some(std::path::Path::new("/sys/fs/cgroup")));
        assert_eq!(parse_v2_mount("1 2 3:4 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
