//! Fills [`KernelOffsets`] from the running kernel's BTF, checking each member's size.

use monitor_common::KernelOffsets;

use super::btf::{Btf, BtfError};

/// Reads every offset the probes need; fails with the first member this kernel lacks.
pub fn from_btf(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let sock = |path: &str, size: u32| btf.member_offset("sock", path, size);
    let mut offsets = KernelOffsets {
        ready: 1,
        sk_family: sock("__sk_common.skc_family", 2)?,
        sk_num: sock("__sk_common.skc_num", 2)?,
        sk_dport: sock("__sk_common.skc_dport", 2)?,
        sk_rcv_saddr: sock("__sk_common.skc_rcv_saddr", 4)?,
        sk_daddr: sock("__sk_common.skc_daddr", 4)?,
        sk_v6_rcv_saddr: sock("__sk_common.skc_v6_rcv_saddr", 16)?,
        sk_v6_daddr: sock("__sk_common.skc_v6_daddr", 16)?,
        sk_net: sock("__sk_common.skc_net.net", 8)?,
        sk_protocol: sock("sk_protocol", 2)?,
        sk_err: sock("sk_err", 4)?,
        sk_uid: sock("sk_uid", 4)?,
        sk_cgroup: sock("sk_cgrp_data.cgroup", 8)?,
        cgroup_kn: btf.member_offset("cgroup", "kn", 8)?,
        kn_id: btf.member_offset("kernfs_node", "id", 8)?,
        net_inum: btf.member_offset("net", "ns.inum", 4)?,
        common_block: 0,
    };
    offsets.common_block = u32::from(offsets.has_common_block());
    Ok(offsets)
}
