//! The `dfdwatch` command line: `run` the daemon; `check`, `render`, `diff`, `sign` and `verify`
//! approved DFDs; `investigate` the flow store.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use monitor_user::daemon::{RunArgs, RunError};

/// Exit status for bad usage (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;
/// Exit status for a bad configuration file (sysexits EX_CONFIG).
const EX_CONFIG: u8 = 78;
/// Exit status when privileges are missing (sysexits EX_NOPERM).
const EX_NOPERM: u8 = 77;

/// dfdwatch: a runtime trust-boundary monitor. Traces every TCP connect and accept on this node
/// and compares the flows with the approved data-flow diagram.
#[derive(Parser, Debug)]
#[command(name = "dfdwatch", version)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `monitor_user=debug` (the daemon's modules). RUST_LOG wins.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load the eBPF probes and write one JSON line per TCP connection (needs root or CAP_BPF,
    /// CAP_PERFMON).
    Run(Box<RunArgs>),
    /// Check approved DFD files: strict parsing and lints, every problem at once as
    /// `file:line:col: severity: message`. Exit 0 clean, 1 on an error-level finding, 64 bad usage.
    Check(dfdwatch_dfd::cli::CheckArgs),
    /// Draw approved DFD files as Graphviz DOT or Mermaid.
    Render(dfdwatch_dfd::cli::RenderArgs),
    /// What a DFD change does to the boundaries, for the reviewer of a pull request: OLD and NEW
    /// are paths or git revisions (`REV:PATH`). Exit 1 with --fail-on when a change that severe
    /// is found, 65 when a side does not parse, 64 bad usage.
    Diff(dfdwatch_dfd::cli::DiffArgs),
    /// Sign a DFD directory as an approver: writes its manifest `dfd.sha256` and a minisign
    /// signature of it (docs/signing.md).
    Sign(dfdwatch_dfd::cli::SignArgs),
    /// Verify a DFD directory's signatures against trusted keys, as the daemon does with
    /// --dfd-trust-key. Exit 0 verified, 1 not, 64 bad usage.
    Verify(dfdwatch_dfd::cli::VerifyArgs),
    /// Ask the flow store what happened around an alert: a workload's `timeline`, the
    /// lateral-movement `path`, the `reach` the DFD allows (docs/investigate.md). Exit 0
    /// answered, 1 not found, 64 bad usage, 66 the store cannot be read, 69 Graphviz missing.
    Investigate(monitor_user::investigate::InvestigateArgs),
    /// The cluster store's housekeeping: `store init` creates ClickHouse's table, `store trim`
    /// drops old days on servers without TTLs (docs/store.md). Exit 0 done, 64 bad usage, 69
    /// ClickHouse refused or unreachable.
    Store(monitor_user::store::cli::StoreArgs),
    /// Draft a DFD from what was observed (the flow store, or a live watch with --for), with
    /// the decisions only a person can make marked TODO; with --base, only what the DFD lacks
    /// (docs/learn.md). Exit 0 written, 1 nothing observed, 64 bad usage, 66 store unreadable.
    Learn(monitor_user::learn::LearnArgs),
    /// The approved DFD against what the flow store saw: stale approvals, unapproved flows,
    /// unmodelled workloads, approvals ending, nodes that matched nothing (docs/learn.md). Exit 0
    /// written, 64 bad usage, 65 the DFD has errors, 66 the store cannot be read.
    Drift(monitor_user::drift::DriftArgs),
}

fn init_logging(level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .map_err(|e| format!("--log-level {level}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .map_err(|e| format!("logging: {e}"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EX_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    if let Err(e) = init_logging(&cli.log_level) {
        eprintln!("dfdwatch: {e}");
        return ExitCode::from(EX_USAGE);
    }
    match cli.command {
        Command::Check(args) => {
            ExitCode::from(dfdwatch_dfd::cli::check(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Render(args) => {
            ExitCode::from(dfdwatch_dfd::cli::render(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Diff(args) => {
            ExitCode::from(dfdwatch_dfd::cli::diff(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Sign(args) => {
            ExitCode::from(dfdwatch_dfd::cli::sign(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Verify(args) => {
            ExitCode::from(dfdwatch_dfd::cli::verify(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Drift(args) => {
            ExitCode::from(monitor_user::drift::drift(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Learn(args) => {
            ExitCode::from(monitor_user::learn::learn(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Store(args) => {
            ExitCode::from(monitor_user::store::cli::store(&args, &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Investigate(args) => ExitCode::from(monitor_user::investigate::investigate(
            &args,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Run(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("dfdwatch: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(monitor_user::daemon::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ (RunError::Usage(_) | RunError::Config(_))) => {
                    tracing::error!("{e}");
                    ExitCode::from(EX_USAGE)
                }
                Err(e @ RunError::Probes(monitor_user::probes::ProbeError::NotPermitted(_))) => {
                    tracing::error!("{e}");
                    ExitCode::from(EX_NOPERM)
                }
                Err(e @ (RunError::Identity(_) | RunError::Policy(_) | RunError::Kube(_) | RunError::WebConfig(_))) => {
                    tracing::error!("{e}");
                    ExitCode::from(EX_CONFIG)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
