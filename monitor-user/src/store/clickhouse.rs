//! The cluster store: ClickHouse, over its HTTP interface only (the one Debian's 18.16 and current
//! releases both speak). The daemon ships the rows its store writer builds in batches of
//! JSONEachRow; `dfdwatch investigate --clickhouse-url` runs the same queries as on the local store
//! ([`super::query`]); `dfdwatch store init` creates the table ([`super::schema::clickhouse`]).
//!
//! Shipping never holds the pipeline back: the writer offers each row to a bounded queue (100,000
//! rows) without waiting; a task on the runtime inserts up to 10,000 at a time. While ClickHouse is
//! down, the batch in hand is retried with backoff (1 s doubling to 30 s) and the queue holds what
//! comes meanwhile: the backlog is sent once it is back. What finds the queue full is dropped and
//! counted (`dfdwatch_clickhouse_rows_total{result="dropped"}`, rule `DfdwatchClickHouseDropping`).
//!
//! Credentials never come from the command line: the user from `--clickhouse-user` or
//! `DFDWATCH_CLICKHOUSE_USER`, the password from `--clickhouse-password-file` or
//! `DFDWATCH_CLICKHOUSE_PASSWORD`; they go in ClickHouse's `X-ClickHouse-User` / `X-ClickHouse-Key`
//! headers. Only `http://` URLs are taken (put TLS in a proxy beside ClickHouse, as for
//! Alertmanager).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::sync::mpsc;

use super::query::Query;
use super::row::{COLUMNS, Row};
use super::schema::{self, TABLE};
use crate::escape::escape_bytes;

/// Rows waiting to be shipped, at most.
const QUEUE: usize = 100_000;
/// Rows per INSERT, at most.
const BATCH: usize = 10_000;
/// Time allowed for one request.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between two tries while ClickHouse is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Tries per batch once the daemon stops (it does not wait for ClickHouse for ever).
const ATTEMPTS_AT_EXIT: u32 = 3;
/// The largest answer read from ClickHouse (a query's rows).
const MAX_ANSWER: usize = 1 << 30;

/// Where the cluster store is and how to log in (`dfdwatch run`, `investigate`, `store init`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClickHouseArgs {
    /// Also ship every stored record to ClickHouse (its HTTP interface, http://HOST:8123); with
    /// `investigate` and `store init`: use that cluster store (docs/store.md).
    #[arg(long, value_name = "URL")]
    pub clickhouse_url: Option<String>,
    /// The ClickHouse database.
    #[arg(long, default_value = "dfdwatch", value_name = "NAME")]
    pub clickhouse_database: String,
    /// The ClickHouse user (else DFDWATCH_CLICKHOUSE_USER, else ClickHouse's default user).
    #[arg(long, value_name = "USER")]
    pub clickhouse_user: Option<String>,
    /// A file holding the ClickHouse password (else DFDWATCH_CLICKHOUSE_PASSWORD; never on the
    /// command line).
    #[arg(long, value_name = "FILE")]
    pub clickhouse_password_file: Option<PathBuf>,
}

/// Why ClickHouse cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--clickhouse-url {0}: not a URL ({1})")]
    Invalid(String, String),
    #[error("--clickhouse-url {0}: only http:// is supported (terminate TLS in a proxy beside ClickHouse)")]
    Scheme(String),
    #[error("--clickhouse-database {0:?}: use letters, digits and _ (at most 64)")]
    Database(String),
    #[error("--clickhouse-password-file {0}: {1}")]
    PasswordFile(String, std::io::Error),
    #[error("the ClickHouse user or password holds a character an HTTP header cannot carry")]
    Credentials,
}

/// A ClickHouse server, ready for requests.
#[derive(Clone)]
pub struct ClickHouse {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    database: String,
    user: Option<hyper::header::HeaderValue>,
    key: Option<hyper::header::HeaderValue>,
}

impl std::fmt::Debug for ClickHouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouse").field("base", &self.base).field("database", &self.database).finish_non_exhaustive()
    }
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
#[error("ClickHouse at {base}: {message}")]
pub struct RequestError {
    base: String,
    message: String,
}

impl ClickHouse {
    /// The server `args` names, if any.
    pub fn from_args(args: &ClickHouseArgs) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &args.clickhouse_url else { return Ok(None) };
        let uri: hyper::Uri =
            url.parse().map_err(|e: hyper::http::uri::InvalidUri| ConfigError::Invalid(url.clone(), e.to_string()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(ConfigError::Scheme(url.clone()));
        }
        let db = &args.clickhouse_database;
        if db.is_empty() || db.len() > 64 || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::Database(db.clone()));
        }
        let user = args.clickhouse_user.clone().or_else(|| std::env::var("DFDWATCH_CLICKHOUSE_USER").ok());
        let password = match &args.clickhouse_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::PasswordFile(escape_bytes(path.as_os_str().as_encoded_bytes()), e))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => std::env::var("DFDWATCH_CLICKHOUSE_PASSWORD").ok(),
        };
        let header = |v: Option<String>| -> Result<Option<hyper::header::HeaderValue>, ConfigError> {
            v.map(|v| {
                let mut h = hyper::header::HeaderValue::from_str(&v).map_err(|_| ConfigError::Credentials)?;
                h.set_sensitive(true);
                Ok(h)
            })
            .transpose()
        };
        Ok(Some(Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: url.trim_end_matches('/').to_owned(),
            database: db.clone(),
            user: header(user)?,
            key: header(password)?,
        }))
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `DATABASE.flow_records`.
    pub fn table(&self) -> String {
        format!("{}.{TABLE}", self.database)
    }

    /// Drops the table's days (partitions) older than `days` days; returns the days dropped.
    pub async fn drop_days_before(&self, days: u32) -> Result<Vec<String>, RequestError> {
        let list = format!(
            "SELECT DISTINCT partition FROM system.parts WHERE database = '{}' AND table = '{TABLE}' AND active \
             AND toDate(partition) < today() - {days} ORDER BY partition",
            self.database
        );
        let partitions: Vec<String> =
            self.execute(&list).await?.lines().map(str::trim).filter(|p| is_day(p)).map(str::to_owned).collect();
        for p in &partitions {
            self.execute(&format!("ALTER TABLE {} DROP PARTITION '{p}'", self.table())).await?;
        }
        Ok(partitions)
    }

    fn error(&self, message: String) -> RequestError {
        RequestError { base: self.base.clone(), message }
    }

    /// Sends `body` with `query` in the URL (form-encoded), returns the answer.
    async fn request(&self, query: Option<&str>, body: Bytes) -> Result<Bytes, RequestError> {
        let mut uri = format!("{}/?output_format_json_quote_64bit_integers=0", self.base);
        if let Some(q) = query {
            uri.push_str("&query=");
            uri.push_str(&url_encode(q));
        }
        let mut request = hyper::Request::post(uri);
        if let Some(user) = &self.user {
            request = request.header("X-ClickHouse-User", user.clone());
        }
        if let Some(key) = &self.key {
            request = request.header("X-ClickHouse-Key", key.clone());
        }
        let request = request.body(Full::new(body)).map_err(|e| self.error(e.to_string()))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| self.error(format!("no answer in {} s", TIMEOUT.as_secs())))?
            .map_err(|e| self.error(e.to_string()))?;
        let status = response.status();
        // An answer is untrusted input: read at most MAX_ANSWER bytes of it.
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| self.error(format!("reading the answer: {e} (at most {MAX_ANSWER} bytes are read)")))?;
        if !status.is_success() {
            let text = escape_bytes(&body[..body.len().min(300)]);
            return Err(self.error(format!("HTTP {status}: {}", text.trim())));
        }
        Ok(body)
    }

    /// Runs one statement.
    pub async fn execute(&self, sql: &str) -> Result<String, RequestError> {
        let body = self.request(None, Bytes::from(sql.to_owned())).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The server's version, as (major, minor).
    pub async fn version(&self) -> Result<(u32, u32), RequestError> {
        let text = self.execute("SELECT version()").await?;
        let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Ok((parts.next().unwrap_or(0), parts.next().unwrap_or(0)))
    }

    /// Creates the database and the table (`dfdwatch store init`); with a TTL of `ttl_days` where
    /// the server has table TTLs (19.6 and later). Returns whether the TTL was set.
    pub async fn init(&self, ttl_days: u32) -> Result<bool, RequestError> {
        let with_ttl = self.version().await? >= (19, 6);
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database)).await?;
        self.execute(&schema::clickhouse(&self.database, with_ttl.then_some(ttl_days))).await?;
        Ok(with_ttl)
    }

    /// Inserts `rows` (one request, JSONEachRow).
    pub async fn insert(&self, rows: &[Row]) -> Result<(), RequestError> {
        let mut body = Vec::with_capacity(rows.len() * 512);
        for r in rows {
            serde_json::to_writer(&mut body, r).map_err(|e| self.error(e.to_string()))?;
            body.push(b'\n');
        }
        let query = format!("INSERT INTO {}.{TABLE} ({}) FORMAT JSONEachRow", self.database, COLUMNS.join(", "));
        self.request(Some(&query), Bytes::from(body)).await.map(|_| ())
    }

    /// The rows `query` selects, in its order.
    pub async fn select(&self, query: &Query) -> Result<Vec<Row>, RequestError> {
        let sql =
            query.sql_with_literals().replacen(&format!("FROM {TABLE}"), &format!("FROM {}.{TABLE}", self.database), 1);
        let body = self.request(None, Bytes::from(format!("{sql} FORMAT JSONEachRow"))).await?;
        body.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|e| self.error(format!("unreadable row: {e}"))))
            .collect()
    }
}

/// Whether `s` is a day as a partition of the table is named (`YYYY-MM-DD`).
fn is_day(s: &str) -> bool {
    s.len() == 10 && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() })
}

/// Percent-encodes a query for the URL.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The shipper's counters.
#[derive(Debug, Default)]
pub struct ShipCounters {
    sent: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    queued: AtomicI64,
    up: AtomicI64,
}

impl ShipCounters {
    fn dropped(&self, n: u64) -> u64 {
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }
}

/// The store writer's side of the shipper: offers rows without waiting.
#[derive(Clone, Debug)]
pub struct ShipQueue {
    tx: mpsc::Sender<Row>,
    counters: Arc<ShipCounters>,
}

impl ShipQueue {
    /// Queues one row; a full queue drops it, counted.
    pub fn offer(&self, row: Row) {
        if self.tx.try_send(row).is_ok() {
            self.counters.queued.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let n = self.counters.dropped(1);
        if n.is_power_of_two() {
            tracing::error!(total = n, "ClickHouse queue full: row dropped (it is still in the local store)");
        }
    }
}

/// Starts shipping to `server`; returns the writer's queue and the task to run on the runtime. The
/// task ends once the queue's handles are dropped and what was queued is sent (or, ClickHouse
/// being down then, dropped and counted after a few tries).
pub fn start(server: ClickHouse, counters: Arc<ShipCounters>) -> (ShipQueue, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (ShipQueue { tx, counters: counters.clone() }, ship(server, rx, counters))
}

async fn ship(server: ClickHouse, mut rx: mpsc::Receiver<Row>, counters: Arc<ShipCounters>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len();
        counters.queued.fetch_sub(n as i64, Ordering::Relaxed);
        let mut delay = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match server.insert(&batch).await {
                Ok(()) => {
                    counters.sent.fetch_add(n as u64, Ordering::Relaxed);
                    counters.up.store(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    counters.up.store(0, Ordering::Relaxed);
                    let total = counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if total.is_power_of_two() {
                        tracing::warn!(error = %e, total_errors = total, rows = n, "insert into ClickHouse failed; retrying");
                    }
                    // Stopping: a few tries, not a wait for ever.
                    if rx.is_closed() && attempt >= ATTEMPTS_AT_EXIT {
                        let total = counters.dropped(n as u64);
                        tracing::error!(rows = n, total_dropped = total, "rows not shipped to ClickHouse before exit");
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
        batch.clear();
    }
}

/// Exports [`ShipCounters`] when scraped.
pub struct ShipCollector {
    counters: Arc<ShipCounters>,
    rows: IntCounterVec,
    errors: IntCounter,
    queued: IntGauge,
    up: IntGauge,
}

impl ShipCollector {
    /// A collector for `counters`.
    pub fn new(counters: Arc<ShipCounters>) -> Result<Self, prometheus::Error> {
        let rows = IntCounterVec::new(
            Opts::new(
                "dfdwatch_clickhouse_rows_total",
                "Rows for ClickHouse, by result: sent, dropped (the queue was full while ClickHouse was away, or it was still away at exit).",
            ),
            &["result"],
        )?;
        rows.with_label_values(&["sent"]);
        rows.with_label_values(&["dropped"]);
        Ok(Self {
            counters,
            rows,
            errors: IntCounter::new("dfdwatch_clickhouse_errors_total", "Failed inserts into ClickHouse (each try).")?,
            queued: IntGauge::new("dfdwatch_clickhouse_queued_rows", "Rows waiting to be shipped to ClickHouse.")?,
            up: IntGauge::new("dfdwatch_clickhouse_up", "1 while ClickHouse takes inserts.")?,
        })
    }
}

impl Collector for ShipCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.rows.desc();
        d.extend(self.errors.desc());
        d.extend(self.queued.desc());
        d.extend(self.up.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = &self.counters;
        let set = |m: &IntCounter, v: u64| m.inc_by(v.saturating_sub(m.get()));
        set(&self.rows.with_label_values(&["sent"]), c.sent.load(Ordering::Relaxed));
        set(&self.rows.with_label_values(&["dropped"]), c.dropped.load(Ordering::Relaxed));
        set(&self.errors, c.errors.load(Ordering::Relaxed));
        self.queued.set(c.queued.load(Ordering::Relaxed).max(0));
        self.up.set(c.up.load(Ordering::Relaxed));
        let mut out = self.rows.collect();
        out.extend(self.errors.collect());
        out.extend(self.queued.collect());
        out.extend(self.up.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_databases_and_credentials_are_checked() {
        let args = |url: &str, db: &str| ClickHouseArgs {
            clickhouse_url: Some(url.into()),
            clickhouse_database: db.into(),
            ..ClickHouseArgs::default()
        };
        assert!(ClickHouse::from_args(&ClickHouseArgs::default()).unwrap().is_none());
        assert!(ClickHouse::from_args(&args("http://127.0.0.1:8123", "dfdwatch")).unwrap().is_some());
        assert!(matches!(ClickHouse::from_args(&args("https://ch:8443", "dfdwatch")), Err(ConfigError::Scheme(_))));
        assert!(matches!(ClickHouse::from_args(&args("http://ch:8123", "a;DROP")), Err(ConfigError::Database(_))));
        let mut bad = args("http://ch:8123", "dfdwatch");
        bad.clickhouse_user = Some("a\nb".into());
        assert!(matches!(ClickHouse::from_args(&bad), Err(ConfigError::Credentials)));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(2);
        let counters = Arc::new(ShipCounters::default());
        let queue = ShipQueue { tx, counters: counters.clone() };
        for _ in 0..5 {
            queue.offer(Row::default());
        }
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            url_encode("INSERT INTO a.b (x) FORMAT JSONEachRow"),
            "INSERT%20INTO%20a.b%20%28x%29%20FORMAT%20JSONEachRow"
        );
    }
}
