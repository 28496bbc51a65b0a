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
//! Every time the daemon does not watch is marked: a blind spell ends with a gap record
//! (`dfdwatch.gap.v1`, reason `blind`), and the time the daemon last knew it was watching is kept
//! in `--state-dir` (the [`AliveFile`]), so that after a restart a gap record says from when to
//! when nothing was seen (reason `restart`).
//!
//! Nothing listens on the port, so nothing is exposed; another process that connects there is
//! refused like the daemon, and its connect is taken as a heartbeat too (it came through the
//! probes all the same), not judged.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use monitor_common::EventKind;
use tokio::sync::mpsc::WeakSender;

use super::counters::{GapReason, Tampering};
use super::http::Health;
use super::metrics::Metrics;
use crate::flows::FlowOutput;
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

/// A time the daemon did not watch.
#[derive(Clone, Debug)]
pub struct Gap {
    /// Why.
    pub reason: GapReason,
    /// When it last knew it was watching.
    pub from: SystemTime,
    /// When it watched again.
    pub to: SystemTime,
    /// For a restart: connections found established at start-up (judged as they were found).
    pub found_at_start: Option<usize>,
}

/// The file in `--state-dir` that holds the last time the daemon knew it was watching (Unix
/// nanoseconds), written every heartbeat and at shutdown, read at start-up.
pub struct AliveFile {
    path: PathBuf,
    failures: u64,
}

impl AliveFile {
    /// The file in `dir` (created 0700 if missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        Ok(Self { path: dir.join("alive"), failures: 0 })
    }

    /// The time the previous run last knew it was watching; `None` on a first start. The file
    /// is input like any other: a value that does not parse, or lies in the future, is ignored.
    pub fn previous(&self) -> Option<SystemTime> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alive file: no gap record for this start");
                return None;
            }
        };
        let at = text.trim().parse::<u64>().ok().map(|ns| UNIX_EPOCH + Duration::from_nanos(ns));
        match at {
            Some(at) if at <= SystemTime::now() => Some(at),
            _ => {
                tracing::warn!(content = %crate::escape::escape_bytes(text.trim().as_bytes()), "the alive file holds no past time: ignored");
                None
            }
        }
    }

    /// Records that the daemon watches at `at` (written aside, then renamed over the file).
    pub fn touch(&mut self, at: SystemTime) {
        let ns = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".new");
        let result = std::fs::write(&tmp, format!("{ns}\n")).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            self.failures += 1;
            if self.failures.is_power_of_two() {
                tracing::warn!(error = %e, failures = self.failures, "cannot write the alive file: a restart will show no gap record");
            }
        }
    }
}

/// Beats, watches the heartbeat and the probe's link, and says when the daemon is blind.
pub struct Watchdog {
    liveness: Arc<Liveness>,
    interval: Duration,
    /// Since when the daemon is blind (the last heartbeat's time).
    blind_since: Option<SystemTime>,
    alive: Option<AliveFile>,
    gaps: Option<WeakSender<FlowOutput>>,
}

impl Watchdog {
    /// A watchdog beating every `interval`, keeping the time it last watched in `alive`.
    pub fn new(liveness: Arc<Liveness>, interval: Duration, alive: Option<AliveFile>) -> Self {
        Self { liveness, interval, blind_since: None, alive, gaps: None }
    }

    /// Hands gap records to the pipeline's fan-out (a weak handle: it never keeps the pipeline
    /// from ending). Reports the gap since the previous run, if there was one.
    pub fn start(&mut self, gaps: WeakSender<FlowOutput>, watching_since: SystemTime, found_at_start: usize) {
        self.gaps = Some(gaps);
        let Some(previous) = self.alive.as_ref().and_then(AliveFile::previous) else { return };
        self.send(Gap {
            reason: GapReason::Restart,
            from: previous,
            to: watching_since,
            found_at_start: Some(found_at_start),
        });
    }

    /// Records the last moment watched, at shutdown (the probes are about to be detached).
    pub fn stopping(&mut self) {
        if self.blind_since.is_none()
            && let Some(alive) = &mut self.alive
        {
            alive.touch(SystemTime::now());
        }
    }

    fn send(&self, gap: Gap) {
        let seconds = gap.to.duration_since(gap.from).unwrap_or_default().as_secs_f64();
        tracing::warn!(reason = gap.reason.as_str(), seconds, "a time nothing was watched: gap record written");
        let Some(tx) = self.gaps.as_ref().and_then(WeakSender::upgrade) else { return };
        if tx.try_send(FlowOutput::Gap(Box::new(gap))).is_err() {
            tracing::error!("the pipeline is full or gone: a gap record could not be written");
        }
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
                Ok(()) => {
                    metrics.record_reattached();
                    // Nothing was seen from the last heartbeat until now: marked, unless a blind
                    // spell in progress will mark it when it ends.
                    if self.blind_since.is_none() {
                        let now = SystemTime::now();
                        let from = now.checked_sub(self.liveness.silent_for()).unwrap_or(now);
                        self.send(Gap { reason: GapReason::Blind, from, to: now, found_at_start: None });
                    }
                }
                Err(e) => tracing::error!(error = %e, "attaching the probe again failed: the daemon stays blind"),
            }
        }
        let silent = self.liveness.silent_for();
        let now = SystemTime::now();
        let blind = silent > self.interval * MISSED_BEFORE_BLIND;
        match (blind, self.blind_since) {
            (true, None) => {
                self.blind_since = Some(now.checked_sub(silent).unwrap_or(now));
                health.set_blind(true);
                metrics.set_blind(true);
                tracing::error!(
                    silent_s = silent.as_secs(),
                    "blind: no heartbeat came through the probes (detached, or the ring is not read); /readyz fails"
                );
            }
            (false, Some(since)) => {
                self.blind_since = None;
                health.set_blind(false);
                metrics.set_blind(false);
                tracing::warn!("the heartbeat comes through the probes again: no longer blind");
                self.send(Gap { reason: GapReason::Blind, from: since, to: now, found_at_start: None });
            }
            _ => {}
        }
        if !blind && let Some(alive) = &mut self.alive {
            alive.touch(now);
        }
        self.liveness.beat();
    }
}
