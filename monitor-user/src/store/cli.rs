//! `dfdwatch store`: the cluster store's housekeeping. `init` creates ClickHouse's database and
//! table (with a TTL where the server has them); `trim` drops the days older than the retention,
//! for servers without table TTLs (ClickHouse before 19.6, Debian's 18.16 among them). The local
//! store needs neither: the daemon creates and trims it itself.

use std::io::Write;
use std::time::Duration;

use super::clickhouse::{ClickHouse, ClickHouseArgs};

/// Exit: done.
const EXIT_OK: u8 = 0;
/// Exit: bad usage.
const EXIT_USAGE: u8 = 64;
/// Exit: ClickHouse refused or cannot be reached.
const EXIT_UNAVAILABLE: u8 = 69;

/// Options of `dfdwatch store`.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The housekeeping commands.
#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Create the ClickHouse database and table (idempotent).
    Init {
        /// Where, and how to log in.
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
        /// Rows are dropped by the server after this long, where it has table TTLs (whole days).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        retention: Duration,
    },
    /// Drop the days older than the retention (for servers without table TTLs; run it daily).
    Trim {
        /// Where, and how to log in.
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
        /// Days older than this are dropped (whole days).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        retention: Duration,
    },
}

fn days(retention: Duration) -> u32 {
    u32::try_from(retention.as_secs().div_ceil(86_400)).unwrap_or(u32::MAX).max(1)
}

/// Runs `dfdwatch store`; returns the exit status.
pub fn store(args: &StoreArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let (StoreCommand::Init { clickhouse, retention } | StoreCommand::Trim { clickhouse, retention }) = &args.command;
    let server = match ClickHouse::from_args(clickhouse) {
        Ok(Some(server)) => server,
        Ok(None) => {
            let _ = writeln!(
                err,
                "dfdwatch: `store` works on the cluster store: give --clickhouse-url (the daemon creates and trims its local store itself)"
            );
            return EXIT_USAGE;
        }
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: {e}");
            return EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: cannot start the runtime: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let days = days(*retention);
    let done = match &args.command {
        StoreCommand::Init { .. } => runtime.block_on(server.init(days)).map(|ttl| {
            if ttl {
                format!("created {} on {} (rows dropped after {days} days)\n", server.table(), server.url())
            } else {
                format!(
                    "created {} on {}; this server has no table TTLs: run `dfdwatch store trim` daily (docs/store.md)\n",
                    server.table(),
                    server.url()
                )
            }
        }),
        StoreCommand::Trim { .. } => runtime
            .block_on(server.drop_days_before(days))
            .map(|dropped| format!("dropped {} day(s) older than {days} days from {}\n", dropped.len(), server.table())),
    };
    match done {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: {e}");
            EXIT_UNAVAILABLE
        }
    }
}
