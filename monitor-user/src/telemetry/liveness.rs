//! Liveness the daemon proves end to end, instead of assuming it. Every `--heartbeat-interval-ms`
//! the daemon connects to a loopback port it holds bound but never listens on: the kernel refuses
//! the connect at once, and the probes report that one refused connect of the daemon's own
//! (every other connection of the daemon is ignored in the kernel). The ring reader takes it out
//! of the stream before anything judges it and marks the time. No heartbeat for three intervals
//! means the daemon is blind: its probe was detached, its ring is not read, or the kernel stopped
//! calling it. The watchdog ([`Watchdog`]) then fails /readyz, sets `dfdwatch_blind`, logs,
//! and checks the probe's link: a link closed from outside is counted as tampering and attached
//! again.
//!
//! Nothing listens on the port, so nothing is exposed; another process that connects there is
//! refused like the daemon, and its connect is taken as a heartbeat too (it came through the
//! probes all the same), not judged.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use monitor_common::EventKind;

use super::counters::Tampering;
use super::http::Health;
use super::metrics::Metrics;
use crate::probes::Probes;
use crate::source::decode::Connection;

/// Heartbeats that may go missing before the daemon calls itself blind.
const MISSED_BEFORE_BLIND: u32 = 3;

/// The heartbeat's port and when it last came through the probes.
pub struct Liveness {
    port: u16,
    /// Bound to 127.0.0.1:`port` and never listening, so connects to it are refused, and no
    /// other socket can take the port while the daemon runs.
    _reserved: OwnedFd,
    last_seen_ns: AtomicU64,
}

impl Liveness {
    /// Reserves a loopback port for the heartbeat.
    pub fn reserve() -> std::io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut bound: libc::sockaddr_in = addr;
        let mut bound_len = len;
        // SAFETY: `bound` has room for a sockaddr_in; the kernel writes at most `bound_len` bytes.
        if unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut bound).cast(), &raw mut bound_len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let port = u16::from_be(bound.sin_port);
        let now = crate::clock::monotonic_ns();
        Ok(Self { port, _reserved: fd, last_seen_ns: AtomicU64::new(now) })
    }

    /// The heartbeat's port, for the probes.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether `c` is a heartbeat: a refused connect to the port. The process is not checked:
    /// any connect there that came through the probes proves they see connections (and the
    /// probe may have lost the connecting task's context).
    pub fn is_heartbeat(&self, c: &Connection) -> bool {
        c.kind == EventKind::ConnectFailed && c.dst == SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// A heartbeat came through the probes.
    pub fn seen(&self) {
        self.last_seen_ns.store(crate::clock::monotonic_ns(), Ordering::Relaxed);
    }

    /// One heartbeat: a connect the kernel refuses at once.
    fn beat(&self) {
        let to = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        match TcpStream::connect_timeout(&to, Duration::from_millis(100)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => tracing::warn!(error = %e, "heartbeat connect failed in an unexpected way"),
            Ok(_) => tracing::error!(port = self.port, "heartbeat connect was accepted: something listens on its port"),
        }
    }

    /// Time since the last heartbeat came through.
    fn silent_for(&self) -> Duration {
        let last = self.last_seen_ns.load(Ordering::Relaxed);
        Duration::from_nanos(crate::clock::monotonic_ns().saturating_sub(last))
    }
}

/// Beats, watches the heartbeat and the probe's link, and says when the daemon is blind.
pub struct Watchdog {
    liveness: Arc<Liveness>,
    interval: Duration,
    blind: bool,
}

impl Watchdog {
    /// A watchdog beating every `interval`.
    pub fn new(liveness: Arc<Liveness>, interval: Duration) -> Self {
        Self { liveness, interval, blind: false }
    }

    /// How often [`Self::tick`] runs.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Checks the link and the last heartbeat, then beats once.
    pub fn tick(&mut self, probes: &mut Probes, health: &Health, metrics: &Metrics) {
        if probes.link_attached() == Some(false) {
            metrics.record_tampering(Tampering::ProbeDetached);
            tracing::error!(
                attach_point = probes.attach_point.name(),
                "the probe's link was closed from outside the daemon: tampering; attaching again"
            );
            match probes.reattach() {
                Ok(()) => metrics.record_reattached(),
                Err(e) => tracing::error!(error = %e, "attaching the probe again failed: the daemon stays blind"),
            }
        }
        let silent = self.liveness.silent_for();
        let blind = silent > self.interval * MISSED_BEFORE_BLIND;
        if blind != self.blind {
            self.blind = blind;
            health.set_blind(blind);
            metrics.set_blind(blind);
            if blind {
                tracing::error!(
                    silent_s = silent.as_secs(),
                    "blind: no heartbeat came through the probes (detached, or the ring is not read); /readyz fails"
                );
            } else {
                tracing::warn!("the heartbeat comes through the probes again: no longer blind");
            }
        }
        self.liveness.beat();
    }
}
