//! Synthetic inputs: an approved DFD of any size (nodes spread over zones of three tiers, each
//! node a /32, each approved to call the next), and raw kernel records exactly as the probes
//! write them into the ring buffer.

use std::net::Ipv4Addr;
use std::path::Path;

use monitor_common::event::FLAG_PROCESS_KNOWN;
use monitor_common::{ConnEvent, EVENT_VERSION, EventKind};

/// Nodes per zone in the synthetic DFD.
const NODES_PER_ZONE: usize = 100;

/// The address of synthetic node `i`: zone `i / 100` is 10.(zone).0.0/16.
pub fn node_addr(i: usize) -> Ipv4Addr {
    let zone = i / NODES_PER_ZONE;
    let n = i % NODES_PER_ZONE;
    Ipv4Addr::new(10, (zone % 250) as u8 + 1, (zone / 250) as u8, n as u8 + 1)
}

/// A DFD of `nodes` nodes; node i may call node i+1 on TCP 8080 inside its zone (flows between
/// zones of different tiers would need checkpoints to pass `check`).
pub fn dfd_yaml(nodes: usize) -> String {
    let zones = nodes.div_ceil(NODES_PER_ZONE).max(1);
    let mut y = String::with_capacity(nodes * 400);
    y.push_str(
        "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata:\n  name: synthetic\nspec:\n",
    );
    y.push_str("  tiers:\n    - {id: T1, name: Public, level: 1}\n    - {id: T2, name: Internal, level: 2}\n    - {id: T3, name: Restricted, level: 3}\n");
    y.push_str("  dataClasses:\n    - {id: public, level: 0}\n  zones:\n");
    for z in 0..zones {
        let a = node_addr(z * NODES_PER_ZONE);
        let [_, b, c, _] = a.octets();
        y.push_str(&format!(
            "    - {{id: z{z}, name: Zone {z}, tier: T{}, match: {{cidrs: [\"10.{b}.{c}.0/24\"]}}}}\n",
            z % 3 + 1
        ));
    }
    y.push_str("  nodes:\n");
    for i in 0..nodes {
        y.push_str(&format!(
            "    - {{id: n{i}, name: Node {i}, kind: process, zone: z{}, match: {{cidrs: [\"{}/32\"]}}}}\n",
            i / NODES_PER_ZONE,
            node_addr(i)
        ));
    }
    y.push_str("  flows:\n");
    for i in (0..nodes.saturating_sub(1)).filter(|i| approved_from(*i)) {
        y.push_str(&format!(
            "    - {{id: f{i}, from: n{i}, to: n{}, ports: [{{port: 8080, protocol: TCP}}], appProtocol: http, encryption: {{required: tls}}, data: [public]}}\n",
            i + 1
        ));
    }
    y
}

/// Whether node `i` has an approved flow to node `i + 1` (they share a zone).
pub fn approved_from(i: usize) -> bool {
    i % NODES_PER_ZONE != NODES_PER_ZONE - 1
}

/// Writes the synthetic DFD of `nodes` nodes into `dir` and returns its path.
pub fn write_dfd(dir: &Path, nodes: usize) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("synthetic-{nodes}.yaml"));
    std::fs::write(&path, dfd_yaml(nodes))?;
    Ok(path)
}

/// The bytes of one connect record from node `from` to node `to` on `port`, by process `tgid`.
pub fn record(from: usize, to: usize, port: u16, tgid: u32, seq: u64) -> Vec<u8> {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&node_addr(from).octets());
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&node_addr(to).octets());
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"bench");
    let ev = ConnEvent {
        version: EVENT_VERSION,
        kind: EventKind::Connect as u8,
        flags: FLAG_PROCESS_KNOWN,
        ip_version: 4,
        error: 0,
        ts_ns: seq,
        cgroup_id: 1,
        tgid,
        pid: tgid,
        uid: 0,
        netns: 4026531840,
        src_port: 40000 + (seq % 20000) as u16,
        dst_port: port,
        flow: monitor_common::flow::FLOW_UNJUDGED,
        key_mask: 0,
        _pad: 0,
        src_addr: src,
        dst_addr: dst,
        comm,
        exec_ns: 0,
    };
    // SAFETY: ConnEvent is a plain repr(C) value without padding (its size is checked at compile
    // time in monitor-common); reading its bytes is sound.
    unsafe { std::slice::from_raw_parts((&ev as *const ConnEvent).cast::<u8>(), size_of::<ConnEvent>()) }.to_vec()
}
