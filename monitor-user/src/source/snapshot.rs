//! Connections the probes could not see: those established before the daemon attached them
//! (while it was down or restarting). At start-up, once the probes are attached, every network
//! namespace's established TCP sockets are read from /proc and turned into [`Connection`]s
//! marked [`Origin::FoundAtStart`], judged like new ones. A connection made between the attach
//! and the snapshot may be seen twice (once by each); none is missed.

use std::collections::{HashMap, HashSet};

use monitor_common::EventKind;

use super::decode::{Connection, LocalProcess, Origin, Route};
use crate::{cgroupfs, procnet};

/// Established connections of every network namespace, with the process that holds each
/// socket (none for a socket no process holds yet, such as one waiting in an accept queue). The
/// daemon's own sockets are left out.
pub fn established(self_tgid: u32) -> Vec<Connection> {
    let Ok(processes) = procnet::processes() else {
        tracing::warn!("cannot read /proc: connections established before start-up are not judged");
        return Vec::new();
    };
    let cgroup_root = cgroupfs::v2_mount();
    let now = crate::clock::monotonic_ns();
    // Socket inode -> connection; filled once per network namespace.
    let mut found: HashMap<u64, Connection> = HashMap::new();
    let mut seen_netns: HashSet<u64> = HashSet::new();
    for p in &processes {
        if !seen_netns.insert(p.netns) {
            continue;
        }
        let netns = p.netns;
        let sockets = procnet::tcp_sockets(&p.dir);
        let listening: HashSet<u16> =
            sockets.iter().filter(|s| s.state == procnet::TCP_LISTEN).map(|s| s.local.port()).collect();
        for s in sockets.into_iter().filter(|s| s.state == procnet::TCP_ESTABLISHED) {
            // A local port that is also listening is the server's end: an accept.
            let accepted = listening.contains(&s.local.port());
            let (kind, src, dst) =
                if accepted { (EventKind::Accept, s.remote, s.local) } else { (EventKind::Connect, s.local, s.remote) };
            found.insert(
                s.inode,
                Connection {
                    kind,
                    error: None,
                    monotonic_ns: now,
                    src,
                    dst,
                    process: None,
                    uid: s.uid,
                    cgroup_id: 0,
                    netns: netns as u32,
                    route: Route::default(),
                    origin: Origin::FoundAtStart,
                },
            );
        }
    }
    // The process that holds each socket (the first found, as the listeners are seeded).
    let mut owned = 0;
    for procnet::Process { tgid, dir, .. } in &processes {
        for inode in procnet::socket_inodes(dir) {
            let Some(conn) = found.get_mut(&inode) else { continue };
            if conn.process.is_some() {
                continue;
            }
            let ctx = procnet::process_ctx(dir, *tgid, self_tgid, cgroup_root.as_deref());
            let end = ctx.comm.iter().position(|&c| c == 0).unwrap_or(ctx.comm.len());
            conn.process =
                Some(LocalProcess { tgid: *tgid, pid: *tgid, comm: ctx.comm[..end].to_vec(), exec_ns: ctx.exec_ns });
            conn.cgroup_id = ctx.cgroup_id;
            owned += 1;
        }
    }
    let connections: Vec<Connection> =
        found.into_values().filter(|c| c.process.as_ref().is_none_or(|p| p.tgid != self_tgid)).collect();
    tracing::info!(
        connections = connections.len(),
        with_process = owned,
        namespaces = seen_netns.len(),
        "connections established before start-up found in /proc; judged like new ones"
    );
    connections
}
