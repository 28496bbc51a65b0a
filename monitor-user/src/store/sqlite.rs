//! The embedded flow store: one SQLite file (`--store`, created 0600, never through a symlink) in
//! WAL mode with incremental vacuum, written in one transaction per batch, trimmed by age and by
//! size. Its own failures are typed ([`StoreError`]) so that the writer can tell a damaged file
//! (moved aside, a new one started) from a full or unwritable disk (retried).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags, params_from_iter};

use super::query::{Param, Query};
use super::row::{COLUMNS, Row};
use super::schema::{self, TABLE, VERSION};
use crate::escape::escape_bytes;

/// Rows deleted per statement while trimming, so that no one transaction grows without bound.
const DELETE_CHUNK: i64 = 20_000;

/// What went wrong with a store, by what the writer does about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not a SQLite database, or a damaged one: moved aside, a new one started.
    #[error("{path}: damaged or not a flow store: {source}")]
    Corrupt { path: String, source: rusqlite::Error },
    /// The disk is full: kept in memory (bounded) and tried again.
    #[error("{path}: the disk is full: {source}")]
    Full { path: String, source: rusqlite::Error },
    /// Read-only, no permission, or cannot be created: tried again.
    #[error("{path}: cannot open or write: {source}")]
    Unwritable { path: String, source: rusqlite::Error },
    /// Written by a dfdwatch with another schema: refused, never rewritten.
    #[error("{path}: flow store schema version {found}; this dfdwatch uses version {VERSION}")]
    Version { path: String, found: i64 },
    /// Anything else.
    #[error("{path}: {source}")]
    Other { path: String, source: rusqlite::Error },
    /// The file could not be created.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl StoreError {
    fn from_sqlite(path: &Path, source: rusqlite::Error) -> Self {
        let path = shown(path);
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Corrupt { path, source },
            Some(ErrorCode::DiskFull) => Self::Full { path, source },
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                Self::Unwritable { path, source }
            }
            _ => Self::Other { path, source },
        }
    }

    /// The metric label of this failure (a closed set).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Corrupt { .. } | Self::Version { .. } => "corrupt",
            Self::Full { .. } => "full",
            Self::Unwritable { .. } | Self::Io { .. } => "unwritable",
            Self::Other { .. } => "other",
        }
    }
}

/// A path as it may appear in a message (escaped).
fn shown(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_encoded_bytes())
}

/// One open SQLite flow store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the store at `path` for writing, creating it (and its directory, 0700) if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io { path: shown(path), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        // Created here, 0600 and not through a symlink; SQLite gives its -wal and -shm files the
        // same mode.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io)?;
        let flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::from_sqlite(path, e))?;
        let store = Self { conn, path: path.to_owned() };
        store.prepare()?;
        Ok(store)
    }

    /// Opens an existing store read-only (for `dfdwatch investigate`).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NOFOLLOW | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::from_sqlite(path, e))?;
        let store = Self { conn, path: path.to_owned() };
        match store.version()? {
            VERSION => Ok(store),
            found => Err(StoreError::Version { path: shown(path), found }),
        }
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(&self.path, e)
    }

    fn version(&self) -> Result<i64, StoreError> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// Sets the pragmas and creates the schema of a new store; refuses another version.
    fn prepare(&self) -> Result<(), StoreError> {
        let version = self.version()?;
        if version != 0 && version != VERSION {
            return Err(StoreError::Version { path: shown(&self.path), found: version });
        }
        // auto_vacuum takes effect only before the first table: a new store gets it.
        let setup = format!(
            "PRAGMA auto_vacuum = INCREMENTAL;\nPRAGMA journal_mode = WAL;\nPRAGMA synchronous = NORMAL;\n\
             PRAGMA journal_size_limit = 16777216;\nPRAGMA busy_timeout = 5000;\nPRAGMA cache_size = -8192;\nBEGIN;\n{}PRAGMA user_version = {VERSION};\nCOMMIT;",
            schema::sqlite()
        );
        self.conn.execute_batch(&setup).map_err(|e| self.err(e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `rows` in one transaction.
    pub fn insert(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| StoreError::from_sqlite(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let placeholders = vec!["?"; COLUMNS.len()].join(", ");
            let sql = format!("INSERT INTO {TABLE} ({}) VALUES ({placeholders})", COLUMNS.join(", "));
            let mut insert = tx.prepare_cached(&sql).map_err(err)?;
            for r in rows {
                insert.execute(r.sql_values().as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Bytes the store takes on disk: its pages in use and its write-ahead log.
    pub fn bytes(&self) -> Result<u64, StoreError> {
        let pragma = |name: &str| -> Result<i64, StoreError> {
            self.conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).map_err(|e| self.err(e))
        };
        let pages = pragma("page_count")? - pragma("freelist_count")?;
        let wal = std::fs::metadata(wal_path(&self.path)).map_or(0, |m| m.len());
        Ok(u64::try_from(pages * pragma("page_size")?).unwrap_or(0) + wal)
    }

    /// Rows held.
    pub fn rows(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn.query_row(&format!("SELECT count(*) FROM {TABLE}"), [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes rows older than `before_ns`, then the oldest until the store holds at most
    /// `max_bytes`, and gives the freed pages back to the file system. Returns the rows deleted.
    pub fn trim(&mut self, before_ns: i64, max_bytes: u64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let n = self.delete_oldest(Some(before_ns), DELETE_CHUNK)?;
            deleted += n;
            if n < DELETE_CHUNK as u64 {
                break;
            }
        }
        if deleted > 0 {
            self.compact()?;
        }
        while self.bytes()? > max_bytes {
            // A tenth of what is left at a time (at least 1,000 rows): few passes, little excess.
            let rows = i64::try_from(self.rows()?).unwrap_or(i64::MAX);
            let n = self.delete_oldest(None, (rows / 10).max(1_000))?;
            if n == 0 {
                break;
            }
            deleted += n;
            self.compact()?;
        }
        Ok(deleted)
    }

    fn delete_oldest(&mut self, before_ns: Option<i64>, limit: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {TABLE} WHERE rowid IN (SELECT rowid FROM {TABLE} WHERE time_ns < ?1 ORDER BY time_ns LIMIT ?2)"
        );
        let n = self
            .conn
            .execute(&sql, rusqlite::params![before_ns.unwrap_or(i64::MAX), limit])
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    /// Returns free pages to the file system and empties the write-ahead log.
    fn compact(&mut self) -> Result<(), StoreError> {
        // Each step of incremental_vacuum frees one page: step it to the end.
        for pragma in ["PRAGMA incremental_vacuum", "PRAGMA wal_checkpoint(TRUNCATE)"] {
            let mut stmt = self.conn.prepare(pragma).map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while rows.next().map_err(|e| self.err(e))?.is_some() {}
        }
        Ok(())
    }

    /// The rows `query` selects, in its order.
    pub fn select(&self, query: &Query) -> Result<Vec<Row>, StoreError> {
        let (sql, params) = query.sql();
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let values = params.iter().map(|p| match p {
            Param::Int(i) => rusqlite::types::Value::Integer(*i),
            Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
        });
        let rows = stmt.query_map(params_from_iter(values), Row::from_sql).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

/// The write-ahead log beside `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Moves a damaged store (and its -wal and -shm files) aside, keeping it for forensics as
/// `PATH.damaged-UNIXTIME`; returns the new name.
pub fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = aside.as_os_str().to_owned();
        to.push(suffix);
        let _ = std::fs::rename(PathBuf::from(from), PathBuf::from(to));
    }
    Ok(aside)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("dfdwatch-store-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn row(time_ns: i64, json_bytes: usize) -> Row {
        Row {
            time_ns,
            last_ns: time_ns,
            record: "flow".into(),
            kind: "connect".into(),
            src_addr: "10.0.0.1".into(),
            dst_addr: "10.0.0.2".into(),
            dst_port: 80,
            json: "x".repeat(json_bytes),
            ..Row::default()
        }
    }

    fn on_disk(path: &Path) -> u64 {
        let len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        len(path.to_owned()) + len(wal_path(path))
    }

    #[test]
    fn rows_older_than_the_retention_are_deleted_and_the_rest_kept() {
        let dir = Scratch::new("retention");
        let path = dir.0.join("flows.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let rows: Vec<Row> = (0..100).map(|i| row(i * 1_000, 10)).collect();
        store.insert(&rows).unwrap();
        assert_eq!(store.trim(50_000, u64::MAX).unwrap(), 50);
        let kept = store.select(&Query { from_ns: 0, to_ns: i64::MAX, limit: 1_000, ..Query::default() }).unwrap();
        assert_eq!(kept.len(), 50);
        assert!(kept.iter().all(|r| r.time_ns >= 50_000));
        assert_eq!(kept[0], rows[50], "a row reads back as written");
    }

    #[test]
    fn the_size_cap_holds_on_disk_and_the_newest_rows_stay() {
        let dir = Scratch::new("size");
        let path = dir.0.join("flows.db");
        let mut store = SqliteStore::open(&path).unwrap();
        for batch in 0..20 {
            let rows: Vec<Row> = (0..1_000).map(|i| row(batch * 1_000 + i, 500)).collect();
            store.insert(&rows).unwrap();
        }
        let before = on_disk(&path);
        let cap = 2 << 20;
        assert!(before > 4 * cap, "the test writes well over the cap: {before}");
        let deleted = store.trim(0, cap).unwrap();
        let after = on_disk(&path);
        assert!(after <= cap, "{after} bytes on disk, cap {cap}");
        assert!(deleted > 0 && store.rows().unwrap() > 0);
        let newest = store.select(&Query { from_ns: 19_999, to_ns: i64::MAX, limit: 10, ..Query::default() }).unwrap();
        assert_eq!(newest.len(), 1, "the newest row is kept");
    }

    #[test]
    fn a_file_that_is_no_store_is_refused_as_damaged_and_moved_aside_whole() {
        let dir = Scratch::new("damaged");
        let path = dir.0.join("flows.db");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(&path, b"this is not a database, it is evidence").unwrap();
        let e = SqliteStore::open(&path).err().unwrap();
        assert_eq!(e.kind(), "corrupt", "{e}");
        let aside = move_aside(&path).unwrap();
        assert_eq!(std::fs::read(&aside).unwrap(), b"this is not a database, it is evidence");
        assert!(SqliteStore::open(&path).is_ok(), "a new store starts where it was");
    }

    #[test]
    fn a_store_of_another_schema_version_is_refused() {
        let dir = Scratch::new("version");
        let path = dir.0.join("flows.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
        assert!(matches!(SqliteStore::open(&path), Err(StoreError::Version { found: 99, .. })));
        assert!(matches!(SqliteStore::open_read_only(&path), Err(StoreError::Version { found: 99, .. })));
    }

    #[test]
    fn the_store_is_private_and_never_opened_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Scratch::new("private");
        let path = dir.0.join("flows.db");
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let link = dir.0.join("link.db");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(SqliteStore::open(&link).is_err());
    }
}
