//! Seeds the kernel's listener map from /proc at start-up. The probes learn a listener when it
//! calls listen(); servers that were already listening before the daemon started would otherwise
//! have their accepts reported without a process.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use aya::{Ebpf, maps::HashMap as BpfHashMap};
use monitor_common::{LISTENERS_MAP, ListenKey, ProcCtx};

use crate::cgroupfs;

/// TCP state number of LISTEN in /proc/net/tcp.
const TCP_LISTEN_HEX: &str = "0A";

/// One listening socket found in /proc/PID/net/tcp{,6}.
#[derive(Debug, PartialEq, Eq)]
struct ListenSocket {
    port: u16,
    inode: u64,
}

/// Parses /proc/net/tcp or tcp6 text, returning the sockets in LISTEN state.
fn parse_proc_net_tcp(text: &str) -> Vec<ListenSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local = cols.get(1)?;
            if *cols.get(3)? != TCP_LISTEN_HEX {
                return None;
            }
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            let inode = cols.get(9)?.parse().ok()?;
            Some(ListenSocket { port, inode })
        })
        .collect()
}

/// The number inside a `/proc` link such as `net:[4026531840]` or `socket:[123]`.
fn link_number(path: &Path, prefix: &str) -> Option<u64> {
    let target = fs::read_link(path).ok()?;
    let s = target.to_str()?;
    s.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
}

/// Scans /proc and inserts one listener entry per (netns, port). Returns how many were added.
/// Failures are logged and counted in the returned number only; the daemon works without them.
pub fn seed(ebpf: &mut Ebpf, self_tgid: u32) -> usize {
    let Some(map) = ebpf.map_mut(LISTENERS_MAP) else {
        tracing::warn!("listener map missing; pre-existing listeners are not seeded");
        return 0;
    };
    let mut map: BpfHashMap<_, ListenKey, ProcCtx> = match BpfHashMap::try_from(map) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "listener map has an unexpected type");
            return 0;
        }
    };
    let cgroup_root = cgroupfs::v2_mount();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return 0;
    };
    // socket inode -> (netns, port), filled once per network namespace.
    let mut listening: HashMap<u64, ListenKey> = HashMap::new();
    let mut seen_netns: HashSet<u64> = HashSet::new();
    let mut added = 0;
    let mut failed = 0usize;
    for entry in proc_dir.flatten() {
        let Some(tgid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = entry.path();
        let Some(netns) = link_number(&dir.join("ns/net"), "net:[") else {
            continue;
        };
        if seen_netns.insert(netns) {
            for file in ["net/tcp", "net/tcp6"] {
                let Ok(text) = fs::read_to_string(dir.join(file)) else {
                    continue;
                };
                for s in parse_proc_net_tcp(&text) {
                    let key = ListenKey { netns: netns as u32, port: s.port, _pad: 0 };
                    listening.insert(s.inode, key);
                }
            }
        }
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(inode) = link_number(&fd.path(), "socket:[") else {
                continue;
            };
            let Some(key) = listening.remove(&inode) else {
                continue;
            };
            let ctx = proc_ctx(&dir, tgid, self_tgid, cgroup_root.as_deref());
            match map.insert(&key, &ctx, 0) {
                Ok(()) => added += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(error = %e, port = key.port, "seeding a listener failed: accepts on this port will carry no process");
                }
            }
        }
    }
    tracing::info!(listeners = added, failed, "listeners seeded from /proc");
    added
}

/// The context of process `tgid` from its /proc directory.
fn proc_ctx(dir: &Path, tgid: u32, self_tgid: u32, cgroup_root: Option<&Path>) -> ProcCtx {
    let mut comm = [0u8; 16];
    if let Ok(c) = fs::read(dir.join("comm")) {
        let c = c.strip_suffix(b"\n").unwrap_or(&c);
        let n = c.len().min(15);
        comm[..n].copy_from_slice(&c[..n]);
    }
    let uid = fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0);
    let cgroup_id = cgroup_root.and_then(|root| cgroupfs::process_cgroup_id(root, tgid)).unwrap_or(0);
    ProcCtx { tgid, pid: tgid, uid, ignore: u32::from(tgid == self_tgid), cgroup_id, sk: 0, comm }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets_only() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(parse_proc_net_tcp(text), vec![ListenSocket { port: 8080, inode: 12345 }]);
        assert!(parse_proc_net_tcp("header only\n  0: garbage").is_empty());
    }
}
