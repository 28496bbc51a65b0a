//! The flow store: every node keeps what it saw, so that an analyst can ask what a workload
//! talked to before and after an alert (`dfdwatch investigate`). The fan-out hands the store
//! writer ([`writer`]) each flow record, and each connection record of an alerting flow (those
//! that raised an alert carry the alert's `flow_key`), through a bounded queue; the writer turns
//! them into rows ([`row`]), sums each flow's records into one row a minute ([`minutes`]), and
//! writes them in batches to an embedded SQLite file ([`sqlite`]) and to ClickHouse
//! ([`clickhouse`]), off the hot path. The store is trimmed by age and by size. A store that is damaged, full or
//! unwritable is logged, counted ([`metrics`]) and alerted on; the daemon goes on judging without
//! it. docs/store.md describes the schema and the queries ([`query`]).

pub mod cli;
pub mod clickhouse;
pub mod metrics;
pub mod minutes;
pub mod query;
pub mod row;
pub mod schema;
pub mod source;
pub mod sqlite;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::sinks::flow_record::FlowRecord;
use crate::sinks::record::ConnectionRecord;

/// What the fan-out hands the store writer.
#[derive(Debug)]
pub enum StoreInput {
    /// One flow's interval, with the Unix times (ns) of its first and last connection.
    Flow { record: Arc<FlowRecord>, first_ns: i64, last_ns: i64 },
    /// One connection of an alerting flow at a Unix time (ns), with its alert's key when it
    /// raised one.
    Connection { record: Arc<ConnectionRecord>, time_ns: i64, flow_key: Option<String> },
}

/// Where the store is and how much it keeps.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// Records older than this are deleted.
    pub retention: Duration,
    /// The store is trimmed (oldest first) to at most this many bytes on disk.
    pub max_bytes: u64,
}
