//! `cargo xtask`: the project's tasks. `setup` installs what a fresh Debian machine lacks;
//! `build`, `test`, `demo`, `fuzz` and `bench` run it first, so a newcomer only ever types `cargo xtask demo` and
//! `cargo xtask test`.

mod bench;
mod cmd;
mod demo;
mod deploy_tools;
mod fuzz;
mod setup;
mod test;
mod toolchain;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned toolchains, Debian packages and bpf-linker, and mount tracefs
    /// (idempotent; fast when everything is there).
    Setup,
    /// Set up, then build the daemon (with its embedded eBPF programs).
    Build,
    /// Set up, build, lint, and run every test (needs root: the tests load eBPF programs).
    Test,
    /// Set up, build, then run dfdwatch over two scripted pods and print their events.
    Demo,
    /// Set up, then fuzz the DFD loader and lints, DFD signatures and the ring-buffer record
    /// decoder (all targets, or those named: dfd_load, dfd_signed, event_record).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Targets to run.
        targets: Vec<String>,
    },
    /// Set up, build in release, and run the benchmarks (all, or those named: pipeline, latency,
    /// memory, stall, overhead); see BENCHMARKS.md.
    Bench { which: Vec<String> },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            cmd::build_daemon()
        }
        Task::Test => test::run(),
        Task::Demo => demo::run(),
        Task::Bench { which } => bench::run(&which),
        Task::Fuzz { seconds, targets } => {
            setup::run()?;
            fuzz::run(&targets, seconds)
        }
    }
}
