//! Reads the kernel's socket tables from /proc: `/proc/PID/net/tcp{,6}` lists the TCP sockets of
//! PID's network namespace, `/proc/PID/fd` links name the socket inodes a process holds, and
//! [`process_ctx`] reads a process's context as the probes would have recorded it.
//! Used where the probes cannot see: listeners and connections that existed before the daemon
//! started. All of it is untrusted text; a line that does not parse is skipped.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use monitor_common::ProcCtx;

use crate::cgroupfs;

/// TCP state numbers as /proc prints them.
pub const TCP_ESTABLISHED: u8 = 0x01;
/// See [`TCP_ESTABLISHED`].
pub const TCP_LISTEN: u8 = 0x0A;

/// One line of /proc/net/tcp or tcp6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (unspecified for a listener).
    pub remote: SocketAddr,
    /// TCP state ([`TCP_ESTABLISHED`], [`TCP_LISTEN`], ...).
    pub state: u8,
    /// Owner's uid.
    pub uid: u32,
    /// Socket inode, as in `socket:[INODE]` fd links.
    pub inode: u64,
}

/// An address as /proc prints it: the raw bytes as native-endian 32-bit words in hex, then the
/// port in hex (`0100007F:1F90` is 127.0.0.1:8080 on a little-endian machine).
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(addr.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let raw: [u8; 16] = bytes.try_into().ok()?;
            let v6 = Ipv6Addr::from(raw);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses /proc/net/tcp or tcp6 text (the header line is skipped).
pub fn parse_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some(TcpSocket {
                local: parse_addr(cols.get(1)?)?,
                remote: parse_addr(cols.get(2)?)?,
                state: u8::from_str_radix(cols.get(3)?, 16).ok()?,
                uid: cols.get(7)?.parse().ok()?,
                inode: cols.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The TCP sockets of the network namespace of the process whose /proc directory is `dir`.
pub fn tcp_sockets(dir: &Path) -> Vec<TcpSocket> {
    ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|file| fs::read_to_string(dir.join(file)).ok())
        .flat_map(|text| parse_tcp(&text))
        .collect()
}

/// A process in /proc, with its network namespace.
pub struct Process {
    /// Its pid.
    pub tgid: u32,
    /// `/proc/PID`.
    pub dir: std::path::PathBuf,
    /// Its network namespace's inode.
    pub netns: u64,
}

/// Every process whose network namespace is readable, in /proc order.
pub fn processes() -> std::io::Result<Vec<Process>> {
    Ok(fs::read_dir("/proc")?
        .flatten()
        .filter_map(|entry| {
            let tgid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let dir = entry.path();
            let netns = link_number(&dir.join("ns/net"), "net:[")?;
            Some(Process { tgid, dir, netns })
        })
        .collect())
}

/// The number inside a `/proc` link such as `net:[4026531840]` or `socket:[123]`.
pub fn link_number(path: &Path, prefix: &str) -> Option<u64> {
    let target = fs::read_link(path).ok()?;
    let s = target.to_str()?;
    s.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
}

/// The socket inodes process `dir` holds open.
pub fn socket_inodes(dir: &Path) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(dir.join("fd")) else {
        return Vec::new();
    };
    fds.flatten().filter_map(|fd| link_number(&fd.path(), "socket:[")).collect()
}

/// The context of process `tgid` from its /proc directory.
pub fn process_ctx(dir: &Path, tgid: u32, self_tgid: u32, cgroup_root: Option<&Path>) -> ProcCtx {
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
    // The image it runs was seeded into the exec map at start-up (see probes::execs).
    let exec_ns = monitor_common::event::EXEC_SEEDED;
    ProcCtx { tgid, pid: tgid, uid, ignore: u32::from(tgid == self_tgid), cgroup_id, sk: 0, comm, exec_ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6_lines_and_skips_garbage() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 12346 1 0000000000000000 20 4 30 10 -1\n\
   2: garbage\n";
        let s = parse_tcp(v4);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].local, s[0].state, s[0].inode), ("0.0.0.0:8080".parse().unwrap(), TCP_LISTEN, 12345));
        assert_eq!(
            (s[1].local, s[1].remote, s[1].state, s[1].uid),
            ("127.0.0.1:41394".parse().unwrap(), "127.0.0.1:8080".parse().unwrap(), TCP_ESTABLISHED, 1000)
        );
        let v6 = "header\n   0: 0000000000000000FFFF00000100007F:0050 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        let s = parse_tcp(v6);
        assert_eq!(s[0].local, "127.0.0.1:80".parse().unwrap(), "a v4-mapped address reads as IPv4");
        assert_eq!(s[0].remote, "[::1]:50000".parse().unwrap());
    }
}
