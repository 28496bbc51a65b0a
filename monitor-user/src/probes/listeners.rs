//! Seeds the kernel's listener map from /proc at start-up. The probes learn a listener when it
//! calls listen(); servers that were already listening before the daemon started would otherwise
//! have their accepts reported without a process.

use std::collections::{HashMap, HashSet};

use aya::{Ebpf, maps::HashMap as BpfHashMap};
use monitor_common::{LISTENERS_MAP, ListenKey, ProcCtx};

use crate::{cgroupfs, procnet};

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
    let Ok(processes) = procnet::processes() else {
        return 0;
    };
    // socket inode -> (netns, port), filled once per network namespace.
    let mut listening: HashMap<u64, ListenKey> = HashMap::new();
    let mut seen_netns: HashSet<u64> = HashSet::new();
    let mut added = 0;
    let mut failed = 0usize;
    for procnet::Process { tgid, dir, netns } in processes {
        if seen_netns.insert(netns) {
            for s in procnet::tcp_sockets(&dir).into_iter().filter(|s| s.state == procnet::TCP_LISTEN) {
                let key = ListenKey { netns: netns as u32, port: s.local.port(), _pad: 0 };
                listening.insert(s.inode, key);
            }
        }
        for inode in procnet::socket_inodes(&dir) {
            let Some(key) = listening.remove(&inode) else {
                continue;
            };
            let ctx = procnet::process_ctx(&dir, tgid, self_tgid, cgroup_root.as_deref());
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
