//! The connection event record (kernel -> daemon) and the per-socket context the probes keep.

/// Version of the [`ConnEvent`] layout; the daemon refuses records of another version.
pub const EVENT_VERSION: u8 = 3;

/// What a [`ConnEvent`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An active open completed (SYN_SENT -> ESTABLISHED); the local end is the client.
    Connect = 1,
    /// An active open failed (SYN_SENT -> CLOSE); `error` holds the socket error.
    ConnectFailed = 2,
    /// A passive open completed (SYN_RECV -> ESTABLISHED); the local end is the server.
    Accept = 3,
}

impl EventKind {
    /// The kind for a raw tag, or `None` for an unknown tag.
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::Connect),
            2 => Some(Self::ConnectFailed),
            3 => Some(Self::Accept),
            _ => None,
        }
    }
}

/// `ConnEvent::flags`: the process fields were copied from a recorded context (task or listener).
pub const FLAG_PROCESS_KNOWN: u8 = 1;

/// One TCP connection seen by the kernel. Addresses are in network byte order, ports in host
/// byte order. `src` is always the initiator (client) and `dst` the acceptor (server); the
/// process fields describe the local end (the client for connects, the server for accepts).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    /// [`EVENT_VERSION`].
    pub version: u8,
    /// [`EventKind`] tag.
    pub kind: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// 4 for IPv4, 6 for IPv6.
    pub ip_version: u8,
    /// Socket error (positive errno) for failed connects, else 0.
    pub error: i32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event was recorded.
    pub ts_ns: u64,
    /// cgroup v2 id of the local end (inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// Process (thread-group) id of the local end, 0 when unknown.
    pub tgid: u32,
    /// Thread id of the local end, 0 when unknown.
    pub pid: u32,
    /// uid of the local end.
    pub uid: u32,
    /// Network namespace inode number of the socket.
    pub netns: u32,
    /// Initiator port.
    pub src_port: u16,
    /// Acceptor port.
    pub dst_port: u16,
    /// `crate::flow::FLOW_*` bits: why this connection was sent rather than counted (0 when the
    /// flow table is off).
    pub flow: u8,
    /// The flow-key mask the probe used (`crate::flow::KEY_*` bits), so the daemon rebuilds the
    /// very key the probe looked up.
    pub key_mask: u8,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// Initiator address (first 4 bytes for IPv4).
    pub src_addr: [u8; 16],
    /// Acceptor address (first 4 bytes for IPv4).
    pub dst_addr: [u8; 16],
    /// Command name of the local end (`task->comm`), NUL padded.
    pub comm: [u8; 16],
    /// When the local process last exec'd before this connection ([`ExecKey::exec_ns`]), 0 when
    /// unknown: the key of the program image that made the connection.
    pub exec_ns: u64,
}

/// Why a ring-buffer record is not a [`ConnEvent`] this daemon reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Wrong length.
    Length {
        /// Bytes received.
        actual: usize,
        /// `size_of::<ConnEvent>()`.
        expected: usize,
    },
    /// Another [`EVENT_VERSION`].
    Version(u8),
    /// An unknown [`EventKind`] tag.
    Kind(u8),
    /// Neither IPv4 nor IPv6.
    IpVersion(u8),
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecordError::Length { actual, expected } => write!(f, "record is {actual} bytes, expected {expected}"),
            RecordError::Version(v) => write!(f, "record version {v}, this daemon reads version {EVENT_VERSION}"),
            RecordError::Kind(k) => write!(f, "unknown event kind tag {k}"),
            RecordError::IpVersion(v) => write!(f, "unknown IP version {v}"),
        }
    }
}

impl core::error::Error for RecordError {}

impl ConnEvent {
    /// Reads a record from the ring buffer, defensively: its length, version, kind tag and IP
    /// version are checked before any other field is trusted. Any bytes give a value or an
    /// error, never undefined behaviour (fuzzed: `cargo xtask fuzz`).
    pub fn from_record(bytes: &[u8]) -> Result<ConnEvent, RecordError> {
        let expected = core::mem::size_of::<ConnEvent>();
        if bytes.len() != expected {
            return Err(RecordError::Length { actual: bytes.len(), expected });
        }
        // SAFETY: the length is checked; ConnEvent is repr(C) plain data, valid for any bit
        // pattern; read_unaligned copes with the ring buffer's 8-byte alignment or any other.
        let ev: ConnEvent = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) };
        if ev.version != EVENT_VERSION {
            return Err(RecordError::Version(ev.version));
        }
        if EventKind::from_tag(ev.kind).is_none() {
            return Err(RecordError::Kind(ev.kind));
        }
        if ev.ip_version != 4 && ev.ip_version != 6 {
            return Err(RecordError::IpVersion(ev.ip_version));
        }
        Ok(ev)
    }
}

/// The process context remembered for a socket: the connecting task at SYN_SENT, or the listening
/// task at LISTEN.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcCtx {
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// uid.
    pub uid: u32,
    /// Non-zero: a connection of the daemon itself; drop it.
    pub ignore: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Kernel address of the socket that recorded this context (listeners only; identity check
    /// on close, never sent to user space in events).
    pub sk: u64,
    /// Command name.
    pub comm: [u8; 16],
    /// When the task's process last exec'd ([`ExecKey::exec_ns`]), 0 when unknown.
    pub exec_ns: u64,
}

/// Longest executable path kept per exec (bytes, with the terminating NUL).
pub const EXEC_PATH_LEN: usize = 256;

/// Key of the exec map: one program image a process ran.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExecKey {
    /// Process id.
    pub tgid: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` at the exec ([`EXEC_SEEDED`] for a process found at start-up).
    pub exec_ns: u64,
}

/// `exec_ns` of an image the daemon seeded from /proc at start-up (the exec itself was missed).
pub const EXEC_SEEDED: u64 = 1;

/// The program image of one exec: the path given to execve, as the `sched_process_exec`
/// tracepoint reports it (not resolved: `/bin/sh` stays `/bin/sh`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecImage {
    /// Bytes of `path` before its NUL.
    pub len: u32,
    /// Explicit padding, always zero.
    pub _pad: u32,
    /// The path, NUL terminated.
    pub path: [u8; EXEC_PATH_LEN],
}

impl ExecImage {
    /// The path's bytes (empty when `len` is out of range).
    pub fn path(&self) -> &[u8] {
        self.path.get(..self.len as usize).unwrap_or(&[])
    }
}

/// Key of the listener map: a listening port in one network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenKey {
    /// Network namespace inode number.
    pub netns: u32,
    /// Listening port, host byte order.
    pub port: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<ConnEvent>() == 104);
const _: () = assert!(core::mem::size_of::<ProcCtx>() == 56);
const _: () = assert!(core::mem::size_of::<ListenKey>() == 8);
const _: () = assert!(core::mem::size_of::<ExecKey>() == 16);
const _: () = assert!(core::mem::size_of::<ExecImage>() == 8 + EXEC_PATH_LEN);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no implicit padding (sizes asserted above), every bit pattern valid.
    unsafe impl aya::Pod for super::ConnEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcCtx {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecImage {}
}
