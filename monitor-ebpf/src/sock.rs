//! Reads the fields of a `struct sock` through the BTF offsets the daemon supplied.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use monitor_common::{AF_INET, AF_INET6, KernelOffsets, Stat, offsets::block};

use crate::maps::count;

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
fn read<T>(base: *const u8, off: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one returns an error.
    let value = unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) };
    if value.is_err() {
        count(Stat::ReadFailed);
    }
    value
}

/// The addressing of one TCP socket, local and remote, as the kernel holds it.
pub struct SockAddrs {
    /// 4 or 6.
    pub ip_version: u8,
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order.
    pub remote_port: u16,
    /// Local address (IPv4 in the first 4 bytes).
    pub local: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes).
    pub remote: [u8; 16],
}

/// The fields of `struct sock_common` every interesting transition needs: the family, both
/// ports, and both IPv4 addresses. Read in one go where the kernel lays them out as usual
/// (`KernelOffsets::common_block`), else field by field.
pub struct Common {
    /// AF_INET or AF_INET6 (anything else was refused).
    pub family: u16,
    /// Local port, host order.
    pub local_port: u16,
    /// Remote port, host order.
    pub remote_port: u16,
    /// Local IPv4 address (meaningless for IPv6).
    pub local4: [u8; 4],
    /// Remote IPv4 address (meaningless for IPv6).
    pub remote4: [u8; 4],
}

/// The common fields of `sk`, or `None` for a family other than IPv4 and IPv6 or a failed read.
#[inline(always)]
pub fn common(o: &KernelOffsets, sk: *const u8) -> Option<Common> {
    let c = if o.common_block != 0 {
        let b = read::<[u8; block::LEN]>(sk, o.sk_daddr).ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Common {
            family: u16_at(block::FAMILY),
            local_port: u16_at(block::NUM),
            remote_port: u16::from_be(u16_at(block::DPORT)),
            local4: [b[block::RCV_SADDR], b[block::RCV_SADDR + 1], b[block::RCV_SADDR + 2], b[block::RCV_SADDR + 3]],
            remote4: [b[block::DADDR], b[block::DADDR + 1], b[block::DADDR + 2], b[block::DADDR + 3]],
        }
    } else {
        Common {
            family: read::<u16>(sk, o.sk_family).ok()?,
            local_port: read::<u16>(sk, o.sk_num).ok()?,
            remote_port: u16::from_be(read::<u16>(sk, o.sk_dport).ok()?),
            local4: read::<[u8; 4]>(sk, o.sk_rcv_saddr).ok()?,
            remote4: read::<[u8; 4]>(sk, o.sk_daddr).ok()?,
        }
    };
    (c.family == AF_INET || c.family == AF_INET6).then_some(c)
}

/// The IP protocol of `sk`.
#[inline(always)]
pub fn protocol(o: &KernelOffsets, sk: *const u8) -> Result<u16, i32> {
    read::<u16>(sk, o.sk_protocol)
}

/// Local and remote addresses and ports of `sk`, from its common fields (IPv6 addresses are
/// read on their own).
#[inline(always)]
pub fn addrs(o: &KernelOffsets, sk: *const u8, c: &Common) -> Result<SockAddrs, i32> {
    let mut local = [0u8; 16];
    let mut remote = [0u8; 16];
    let ip_version = if c.family == AF_INET {
        local[..4].copy_from_slice(&c.local4);
        remote[..4].copy_from_slice(&c.remote4);
        4
    } else {
        local = read::<[u8; 16]>(sk, o.sk_v6_rcv_saddr)?;
        remote = read::<[u8; 16]>(sk, o.sk_v6_daddr)?;
        6
    };
    Ok(SockAddrs { ip_version, local_port: c.local_port, remote_port: c.remote_port, local, remote })
}

/// The pending socket error (positive errno), 0 when none.
#[inline(always)]
pub fn error(o: &KernelOffsets, sk: *const u8) -> i32 {
    read::<i32>(sk, o.sk_err).unwrap_or(0)
}

/// The uid that owns the socket.
#[inline(always)]
pub fn uid(o: &KernelOffsets, sk: *const u8) -> u32 {
    read::<u32>(sk, o.sk_uid).unwrap_or(0)
}

/// The inode number of the socket's network namespace.
#[inline(always)]
pub fn netns(o: &KernelOffsets, sk: *const u8) -> u32 {
    match read::<u64>(sk, o.sk_net) {
        Ok(net) if net != 0 => read::<u32>(net as *const u8, o.net_inum).unwrap_or(0),
        _ => 0,
    }
}

/// The cgroup v2 id the socket belongs to (set when the socket was created, and inherited by
/// accepted sockets from their listener), 0 when unknown.
#[inline(always)]
pub fn cgroup_id(o: &KernelOffsets, sk: *const u8) -> u64 {
    let Ok(cgroup) = read::<u64>(sk, o.sk_cgroup) else { return 0 };
    if cgroup == 0 {
        return 0;
    }
    let Ok(kn) = read::<u64>(cgroup as *const u8, o.cgroup_kn) else { return 0 };
    if kn == 0 {
        return 0;
    }
    read::<u64>(kn as *const u8, o.kn_id).unwrap_or(0)
}
