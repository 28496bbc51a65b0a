//! Byte offsets into kernel structs, read from the running kernel's BTF by the daemon at start-up
//! and handed to the probes as a read-only global (Rust eBPF gets no CO-RE relocations today).

/// Offsets of the fields the probes read. All are byte offsets from the start of the named
/// struct; `ready` is non-zero once the daemon filled them in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// Non-zero when filled in; probes do nothing until then.
    pub ready: u32,
    /// `struct sock` -> `__sk_common.skc_family` (u16).
    pub sk_family: u32,
    /// `struct sock` -> `__sk_common.skc_num` (u16, local port, host order).
    pub sk_num: u32,
    /// `struct sock` -> `__sk_common.skc_dport` (u16, remote port, network order).
    pub sk_dport: u32,
    /// `struct sock` -> `__sk_common.skc_rcv_saddr` (IPv4 local address).
    pub sk_rcv_saddr: u32,
    /// `struct sock` -> `__sk_common.skc_daddr` (IPv4 remote address).
    pub sk_daddr: u32,
    /// `struct sock` -> `__sk_common.skc_v6_rcv_saddr` (IPv6 local address).
    pub sk_v6_rcv_saddr: u32,
    /// `struct sock` -> `__sk_common.skc_v6_daddr` (IPv6 remote address).
    pub sk_v6_daddr: u32,
    /// `struct sock` -> `__sk_common.skc_net` (pointer to `struct net`).
    pub sk_net: u32,
    /// `struct sock` -> `sk_protocol` (u16).
    pub sk_protocol: u32,
    /// `struct sock` -> `sk_err` (int).
    pub sk_err: u32,
    /// `struct sock` -> `sk_uid` (kuid_t, u32).
    pub sk_uid: u32,
    /// `struct sock` -> `sk_cgrp_data.cgroup` (pointer to `struct cgroup`).
    pub sk_cgroup: u32,
    /// `struct cgroup` -> `kn` (pointer to `struct kernfs_node`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node` -> `id` (u64, the cgroup id).
    pub kn_id: u32,
    /// `struct net` -> `ns.inum` (u32).
    pub net_inum: u32,
    /// Non-zero when the IPv4 addresses, ports and family lie in the usual layout from
    /// `sk_daddr` ([`COMMON_BLOCK`]): the probes then read them in one go.
    pub common_block: u32,
}

/// The usual layout of `struct sock_common` from `skc_daddr`: the remote and local IPv4 address,
/// the hash, the remote and local port, the family. Offsets within the block read at `sk_daddr`.
pub mod block {
    /// `skc_daddr`.
    pub const DADDR: usize = 0;
    /// `skc_rcv_saddr`.
    pub const RCV_SADDR: usize = 4;
    /// `skc_dport`.
    pub const DPORT: usize = 12;
    /// `skc_num`.
    pub const NUM: usize = 14;
    /// `skc_family`.
    pub const FAMILY: usize = 16;
    /// Bytes read.
    pub const LEN: usize = 18;
}

impl KernelOffsets {
    /// Whether this kernel lays the block out as [`block`] says.
    pub const fn has_common_block(&self) -> bool {
        let base = self.sk_daddr;
        self.sk_rcv_saddr == base + block::RCV_SADDR as u32
            && self.sk_dport == base + block::DPORT as u32
            && self.sk_num == base + block::NUM as u32
            && self.sk_family == base + block::FAMILY as u32
    }
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 68);

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, only u32 fields, no padding.
unsafe impl aya::Pod for KernelOffsets {}
