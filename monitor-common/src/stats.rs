//! Loss and anomaly counters the probes keep in a per-CPU array, so nothing is lost silently.

/// Index of each counter in the per-CPU stats map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// A connect event could not be reserved in the ring buffer (lost).
    LostConnect = 0,
    /// A failed-connect event could not be reserved in the ring buffer (lost).
    LostConnectFailed = 1,
    /// An accept event could not be reserved in the ring buffer (lost).
    LostAccept = 2,
    /// A socket reached ESTABLISHED or CLOSE from SYN_SENT with no recorded context (its
    /// connect started before the daemon, or the context map was full): reported with pid 0.
    ConnectNoContext = 3,
    /// An accept whose listener was not recorded: reported with pid 0 and the socket's cgroup.
    AcceptNoListener = 4,
    /// Inserting into the connecting-socket map failed.
    ConnectingMapFull = 5,
    /// Inserting into the listener map failed.
    ListenerMapFull = 6,
    /// Reading a kernel struct field failed.
    ReadFailed = 7,
    /// A connection of a quiet flow could not be counted (the counters map was full): it was
    /// sent as an event instead.
    FlowCountsFull = 8,
}

/// Number of counters in the stats map.
pub const STAT_COUNT: u32 = 9;

impl Stat {
    /// Every counter, in index order.
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::LostConnect,
        Stat::LostConnectFailed,
        Stat::LostAccept,
        Stat::ConnectNoContext,
        Stat::AcceptNoListener,
        Stat::ConnectingMapFull,
        Stat::ListenerMapFull,
        Stat::ReadFailed,
        Stat::FlowCountsFull,
    ];

    /// A stable snake_case name, used in logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::LostConnect => "lost_connect",
            Stat::LostConnectFailed => "lost_connect_failed",
            Stat::LostAccept => "lost_accept",
            Stat::ConnectNoContext => "connect_no_context",
            Stat::AcceptNoListener => "accept_no_listener",
            Stat::ConnectingMapFull => "connecting_map_full",
            Stat::ListenerMapFull => "listener_map_full",
            Stat::ReadFailed => "read_failed",
            Stat::FlowCountsFull => "flow_counts_full",
        }
    }
}
