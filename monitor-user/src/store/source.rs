//! A store to read: the local SQLite file, or ClickHouse (with `--clickhouse-url`). What
//! `investigate`, `learn` and `drift` ask, they ask either the same way.

use std::path::Path;

use super::clickhouse::{ClickHouse, ClickHouseArgs};
use super::query::Query;
use super::row::Row;
use super::sqlite::SqliteStore;

/// Where rows come from.
pub enum Source {
    /// The local SQLite store.
    Sqlite(SqliteStore),
    /// The cluster store, with a runtime for its requests.
    ClickHouse(ClickHouse, tokio::runtime::Runtime),
}

/// Why a store cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The options are wrong.
    #[error("{0}")]
    Usage(String),
    /// The store cannot be opened or read.
    #[error("cannot read the flow store: {0}")]
    Unreadable(String),
}

impl Source {
    /// ClickHouse when `clickhouse` names it, else the SQLite file at `path` (read-only).
    pub fn open(path: &Path, clickhouse: &ClickHouseArgs) -> Result<Self, SourceError> {
        match ClickHouse::from_args(clickhouse).map_err(|e| SourceError::Usage(e.to_string()))? {
            Some(server) => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| SourceError::Unreadable(format!("cannot start the runtime: {e}")))?;
                Ok(Source::ClickHouse(server, runtime))
            }
            None => SqliteStore::open_read_only(path)
                .map(Source::Sqlite)
                .map_err(|e| SourceError::Unreadable(e.to_string())),
        }
    }

    /// The rows `query` selects.
    pub fn rows(&self, query: &Query) -> Result<Vec<Row>, SourceError> {
        let rows = match self {
            Source::Sqlite(s) => s.select(query).map_err(|e| e.to_string()),
            Source::ClickHouse(server, runtime) => runtime.block_on(server.select(query)).map_err(|e| e.to_string()),
        };
        rows.map_err(SourceError::Unreadable)
    }
}
