//! Decodes raw ring-buffer records into [`Connection`]s, defensively: length, version, tag and
//! address family are checked before any field is trusted. Errors are typed; the caller counts
//! them and never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use monitor_common::{
    ConnEvent, EventKind,
    event::FLAG_PROCESS_KNOWN,
    flow::{DIRECTION_IN, DIRECTION_OUT, FlowKey, KEY_PROCESS},
};

use crate::telemetry::counters::DecodeFailure;

/// Why a record could not be decoded.
pub use monitor_common::event::RecordError as DecodeError;

/// A closed-set label for counters.
pub fn failure(e: &DecodeError) -> DecodeFailure {
    match e {
        DecodeError::Length { .. } => DecodeFailure::Length,
        DecodeError::Version(_) => DecodeFailure::Version,
        DecodeError::Kind(_) => DecodeFailure::Kind,
        DecodeError::IpVersion(_) => DecodeFailure::IpVersion,
    }
}

/// The local process of a connection, when the kernel knew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalProcess {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// `task->comm`, raw bytes up to the first NUL (may be any bytes: escape before output).
    pub comm: Vec<u8>,
    /// The program image it ran when it connected or listened (`ExecKey::exec_ns`), 0 unknown.
    pub exec_ns: u64,
}

/// One decoded connection event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// What happened.
    pub kind: EventKind,
    /// Socket error (positive errno) of a failed connect.
    pub error: Option<i32>,
    /// CLOCK_MONOTONIC nanoseconds when the kernel recorded it.
    pub monotonic_ns: u64,
    /// Initiator (client) address and port; IPv4-mapped IPv6 reported as IPv4.
    pub src: SocketAddr,
    /// Acceptor (server) address and port; IPv4-mapped IPv6 reported as IPv4.
    pub dst: SocketAddr,
    /// The local process, if known.
    pub process: Option<LocalProcess>,
    /// uid of the local end.
    pub uid: u32,
    /// cgroup v2 id of the local end.
    pub cgroup_id: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// How the probe routed it through the kernel flow table.
    pub route: Route,
    /// Where the daemon learnt of it.
    pub origin: Origin,
}

/// Where the daemon learnt of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// The probes saw it happen.
    #[default]
    Probe,
    /// It was already established when the daemon started ([`super::snapshot`]).
    FoundAtStart,
}

/// How the probe routed a connection through the kernel flow table: the very key it looked up
/// (rebuilt from the record with the key mask the probe used) and why it sent the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The flow key.
    pub key: FlowKey,
    /// `monitor_common::flow::FLOW_*` bits (0: the flow table was off).
    pub bits: u8,
    /// The key mask the probe used.
    pub key_mask: u8,
}

impl Connection {
    /// True when the local end is the initiator (a connect, failed or not).
    pub fn local_is_src(&self) -> bool {
        !matches!(self.kind, EventKind::Accept)
    }
}

fn ip(version: u8, raw: [u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        let v6 = Ipv6Addr::from(raw);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Connection, DecodeError> {
    let ev = ConnEvent::from_record(bytes)?;
    let kind = EventKind::from_tag(ev.kind).ok_or(DecodeError::Kind(ev.kind))?;
    let route = Route { key: flow_key(&ev, kind), bits: ev.flow, key_mask: ev.key_mask };
    let process = (ev.flags & FLAG_PROCESS_KNOWN != 0).then(|| {
        let end = ev.comm.iter().position(|&c| c == 0).unwrap_or(ev.comm.len());
        LocalProcess { tgid: ev.tgid, pid: ev.pid, comm: ev.comm[..end].to_vec(), exec_ns: ev.exec_ns }
    });
    Ok(Connection {
        kind,
        error: matches!(kind, EventKind::ConnectFailed).then_some(ev.error),
        monotonic_ns: ev.ts_ns,
        src: SocketAddr::new(ip(ev.ip_version, ev.src_addr), ev.src_port),
        dst: SocketAddr::new(ip(ev.ip_version, ev.dst_addr), ev.dst_port),
        process,
        uid: ev.uid,
        cgroup_id: ev.cgroup_id,
        netns: ev.netns,
        route,
        origin: Origin::Probe,
    })
}

/// The flow key the probe built for `ev` (same fields, same mask).
fn flow_key(ev: &ConnEvent, kind: EventKind) -> FlowKey {
    let outgoing = !matches!(kind, EventKind::Accept);
    let (local, remote) = if outgoing { (ev.src_addr, ev.dst_addr) } else { (ev.dst_addr, ev.src_addr) };
    FlowKey {
        cgroup_id: ev.cgroup_id,
        netns: ev.netns,
        tgid: if ev.key_mask & KEY_PROCESS != 0 { ev.tgid } else { 0 },
        exec_ns: if ev.key_mask & KEY_PROCESS != 0 { ev.exec_ns } else { 0 },
        local_addr: local,
        remote_addr: remote,
        server_port: ev.dst_port,
        direction: if outgoing { DIRECTION_OUT } else { DIRECTION_IN },
        ip_version: ev.ip_version,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::EVENT_VERSION;

    fn raw(ev: &ConnEvent) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value with no padding.
        unsafe { std::slice::from_raw_parts((ev as *const ConnEvent).cast::<u8>(), std::mem::size_of::<ConnEvent>()) }
            .to_vec()
    }

    fn sample() -> ConnEvent {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        ConnEvent {
            version: EVENT_VERSION,
            kind: EventKind::Connect as u8,
            flags: FLAG_PROCESS_KNOWN,
            ip_version: 4,
            error: 0,
            ts_ns: 42,
            cgroup_id: 7,
            tgid: 100,
            pid: 101,
            uid: 1000,
            netns: 4026531840,
            src_port: 40000,
            dst_port: 80,
            flow: 0,
            key_mask: 0,
            _pad: 0,
            src_addr: src,
            dst_addr: dst,
            comm,
            exec_ns: 9,
        }
    }

    #[test]
    fn decodes_a_connect() {
        let c = decode(&raw(&sample())).unwrap();
        assert_eq!(c.kind, EventKind::Connect);
        assert_eq!(c.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(c.dst, "10.0.0.2:80".parse().unwrap());
        assert_eq!(c.process, Some(LocalProcess { tgid: 100, pid: 101, comm: b"curl".to_vec(), exec_ns: 9 }));
        assert_eq!(c.error, None);
        assert!(c.local_is_src());
    }

    #[test]
    fn maps_ipv4_mapped_ipv6_to_ipv4() {
        let mut ev = sample();
        ev.ip_version = 6;
        ev.src_addr = "::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets();
        ev.dst_addr = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let c = decode(&raw(&ev)).unwrap();
        assert_eq!(c.src.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.dst.ip(), "2001:db8::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rejects_bad_records() {
        let good = raw(&sample());
        assert!(matches!(decode(&good[..50]), Err(DecodeError::Length { actual: 50, .. })));
        let mut ev = sample();
        ev.version = 9;
        assert_eq!(decode(&raw(&ev)), Err(DecodeError::Version(9)));
        let mut ev = sample();
        ev.kind = 77;
        assert_eq!(decode(&raw(&ev)), Err(DecodeError::Kind(77)));
        let mut ev = sample();
        ev.ip_version = 5;
        assert_eq!(decode(&raw(&ev)), Err(DecodeError::IpVersion(5)));
    }

    #[test]
    fn unknown_process_and_failed_connect() {
        let mut ev = sample();
        ev.flags = 0;
        ev.kind = EventKind::ConnectFailed as u8;
        ev.error = 111;
        let c = decode(&raw(&ev)).unwrap();
        assert_eq!(c.process, None);
        assert_eq!(c.error, Some(111));
    }
}
