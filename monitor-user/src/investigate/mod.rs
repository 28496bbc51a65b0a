//! `dfdwatch investigate`: questions a SOC analyst asks after an alert, answered from the flow
//! store (the local SQLite file, or ClickHouse for the cluster: the same queries, the same
//! answers). [`timeline`] lists what a workload talked to, [`path`] follows the lateral-movement
//! chain around an alert, [`reach`] shows the blast radius the DFD allows. Answers come as a
//! table, as JSON, or as a picture: the DFD drawn as `dfdwatch render` draws it, with the path (or
//! the reach) over it in red.

pub mod path;
pub mod reach;
pub mod timeline;
pub mod view;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use dfdwatch_dfd::model::Dfd;
use dfdwatch_dfd::render::{Overlay, OverlayEnd, OverlayHop, RenderFormat, render_with_overlay};

use crate::store::clickhouse::ClickHouseArgs;
use crate::store::query::{Query, Workload};
use crate::store::row::Row;
use crate::store::source::{Source, SourceError};
use crate::store::writer::unix_ns;

/// Exit: answered.
pub const EXIT_OK: u8 = 0;
/// Exit: the start of a path, or the workload of a reach, was not found.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit: bad usage.
pub const EXIT_USAGE: u8 = 64;
/// Exit: the store cannot be read.
pub const EXIT_NOINPUT: u8 = 66;
/// Exit: a tool the answer needs (Graphviz for SVG) is missing.
pub const EXIT_UNAVAILABLE: u8 = 69;

/// How an answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A readable table.
    #[default]
    Table,
    /// JSON.
    Json,
    /// The DFD in Graphviz DOT with the answer drawn over it (path and reach).
    Dot,
    /// The DFD as a Mermaid flowchart with the answer drawn over it (path and reach).
    Mermaid,
    /// The DOT picture rendered to SVG by Graphviz's `dot` (path and reach).
    Svg,
}

/// Options of `dfdwatch investigate`.
#[derive(clap::Args, Debug)]
pub struct InvestigateArgs {
    /// The flow store to read (the daemon's --store; by default flows.db in its state directory).
    #[arg(long, value_name = "PATH", default_value = "/var/lib/dfdwatch/flows.db", global = true)]
    pub store: PathBuf,
    /// Read the cluster store instead: ClickHouse (--clickhouse-url and its login options).
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// The approved DFD (files or directories): needed by `reach` and for pictures.
    #[arg(long = "dfd", value_name = "PATH", global = true)]
    pub dfd: Vec<PathBuf>,
    /// How to write the answer.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: Format,
    /// The question.
    #[command(subcommand)]
    pub question: Question,
}

/// The questions.
#[derive(clap::Subcommand, Debug)]
pub enum Question {
    /// Every flow and alert of a workload, both directions, in time order, with verdicts.
    /// WORKLOAD: a DFD node (`node:ID` or a bare id), a pod (`NAMESPACE/NAME`), a cgroup
    /// (`/PATH`) or an address.
    Timeline {
        /// The workload.
        workload: String,
        /// How far back from --until.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// The end of the time asked for (RFC 3339; default now).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        until: Option<std::time::SystemTime>,
        /// Entries at most.
        #[arg(long, default_value_t = 10_000)]
        limit: u32,
    },
    /// The lateral-movement chain around an alert (by its flow_key) or around a workload's first
    /// alert in the time asked for: hops before and after it, in time order.
    Path {
        /// An alert's `flow_key` (16 hex digits, or `alert:KEY`), or a workload.
        start: String,
        /// How far before and after the start hop to follow hops.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        window: Duration,
        /// How far back from --until to look for the start.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// The end of the time asked for (RFC 3339; default now).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        until: Option<std::time::SystemTime>,
        /// Also follow hops the DFD approves.
        #[arg(long)]
        include_approved: bool,
    },
    /// The blast radius from the DFD: nodes and zones a workload reaches through approved flows,
    /// the restricted (highest-tier) zones among them, and which hops were seen. Needs --dfd.
    Reach {
        /// The workload (its DFD node is looked up in the store unless it is one).
        workload: String,
        /// Approved flows followed, at most.
        #[arg(long, default_value_t = 3)]
        hops: usize,
        /// How far back from --until a hop counts as seen.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: Duration,
        /// The end of the time asked for (RFC 3339; default now).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        until: Option<std::time::SystemTime>,
    },
}

/// A failed investigation: its message and exit status.
struct Failed(String, u8);

fn usage(msg: String) -> Failed {
    Failed(msg, EXIT_USAGE)
}

fn range(since: Duration, until: Option<std::time::SystemTime>) -> (i64, i64) {
    let to = until
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(unix_ns, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    (to.saturating_sub(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)), to.saturating_add(1))
}

/// Runs `dfdwatch investigate` against the store `args` names; returns the exit status.
pub fn investigate(args: &InvestigateArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let source = Source::open(&args.store, &args.clickhouse).map_err(|e| match e {
        SourceError::Usage(m) => usage(m),
        SourceError::Unreadable(_) => Failed(e.to_string(), EXIT_NOINPUT),
    });
    match source.and_then(|source| answer(args, &source)) {
        Ok(text) => match out.write_all(text.as_bytes()) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                let _ = writeln!(err, "dfdwatch: cannot write the answer: {e}");
                EXIT_NOINPUT
            }
        },
        Err(Failed(msg, code)) => {
            let _ = writeln!(err, "dfdwatch: {msg}");
            code
        }
    }
}

/// The answer to `args.question` from `source`, written in `args.format`.
fn answer(args: &InvestigateArgs, source: &Source) -> Result<String, Failed> {
    let rows = |q: &Query| source.rows(q).map_err(|e| Failed(e.to_string(), EXIT_NOINPUT));
    let dfd = load_dfd(&args.dfd)?;
    match &args.question {
        Question::Timeline { workload, since, until, limit } => {
            let w: Workload = workload.parse().map_err(|e: crate::store::query::BadWorkload| usage(e.to_string()))?;
            if !matches!(args.format, Format::Table | Format::Json) {
                return Err(usage(
                    "a timeline is written as a table or JSON; pictures are drawn for path and reach".into(),
                ));
            }
            let (from, to) = range(*since, *until);
            let t = timeline::timeline(&w, from, to, *limit, rows(&timeline::query(&w, from, to, *limit))?);
            if args.format == Format::Json {
                return json(&t);
            }
            Ok(timeline::text(&t))
        }
        Question::Path { start, window, since, until, include_approved } => {
            let start: path::Start =
                start.parse().map_err(|e: crate::store::query::BadWorkload| usage(e.to_string()))?;
            let (from, to) = range(*since, *until);
            let Some(first) = rows(&path::start_query(&start, from, to))?.into_iter().next() else {
                return Err(Failed(
                    format!("{start}: no alert found in the time asked for (see --since, --until)"),
                    EXIT_NOT_FOUND,
                ));
            };
            let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
            let around = rows(&path::window_query(&first, window_ns, *include_approved))?;
            let p = path::chain(&start, &first, &around, window_ns, *include_approved);
            match args.format {
                Format::Table => Ok(path::text(&p)),
                Format::Json => json(&p),
                picture => draw(dfd.as_ref(), &path_overlay(&p), picture),
            }
        }
        Question::Reach { workload, hops, since, until } => {
            let Some(dfd) = &dfd else {
                return Err(usage("reach follows the approved flows of a DFD: give it with --dfd".into()));
            };
            let w: Workload = workload.parse().map_err(|e: crate::store::query::BadWorkload| usage(e.to_string()))?;
            let (from, to) = range(*since, *until);
            let node = match &w {
                Workload::Node(id) if dfd.node(id).is_some() => id.clone(),
                _ => node_of(
                    &w,
                    &rows(&Query {
                        from_ns: from,
                        to_ns: to,
                        workload: Some(w.clone()),
                        limit: 1_000,
                        ..Query::default()
                    })?,
                )
                .ok_or_else(|| {
                    Failed(
                        format!("{w}: on no node of this DFD, and never seen on one in the time asked for"),
                        EXIT_NOT_FOUND,
                    )
                })?,
            };
            let mut r = reach::reach(dfd, &w.to_string(), &node, *hops);
            for hop in &mut r.tree {
                hop.seen = rows(&reach::seen_query(hop, from, to))?.first().map(|row| view::time(row.time_ns));
            }
            match args.format {
                Format::Table => Ok(reach::text(&r)),
                Format::Json => json(&r),
                picture => draw(Some(dfd), &reach_overlay(&r), picture),
            }
        }
    }
}

/// The DFD node a workload was placed on in `rows` (the most recent placement).
fn node_of(w: &Workload, rows: &[Row]) -> Option<String> {
    rows.iter().rev().find_map(|r| {
        let (src, dst) = (view::EndView::src(r), view::EndView::dst(r));
        [src, dst].into_iter().find(|e| timeline::is_workload(w, e) && !e.node.is_empty()).map(|e| e.node)
    })
}

fn json(value: &impl serde::Serialize) -> Result<String, Failed> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| Failed(format!("cannot write JSON: {e}"), EXIT_NOINPUT))
}

fn load_dfd(paths: &[PathBuf]) -> Result<Option<Dfd>, Failed> {
    if paths.is_empty() {
        return Ok(None);
    }
    let loaded = dfdwatch_dfd::load::load_paths(paths).map_err(|e| usage(e.to_string()))?;
    let errors: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == dfdwatch_dfd::diag::Severity::Error)
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(Failed(format!("the DFD has errors (`dfdwatch check` shows them):\n{}", errors.join("\n")), 65));
    }
    Ok(Some(loaded.dfd))
}

/// An end of a hop as drawn: its DFD node, else its pod or address.
fn overlay_end(e: &view::EndView) -> OverlayEnd {
    if e.node.is_empty() {
        OverlayEnd::Observed(if e.pod.is_empty() { e.addr.clone() } else { e.pod.clone() })
    } else {
        OverlayEnd::Node(e.node.clone())
    }
}

fn path_overlay(p: &path::Path) -> Overlay {
    let hops = p
        .hops
        .iter()
        .map(|h| OverlayHop {
            from: overlay_end(&h.src),
            to: overlay_end(&h.dst),
            label: format!(
                "{}: {} {} :{}",
                h.n,
                h.time.get(11..19).unwrap_or(&h.time),
                h.verdict,
                h.dst.port.unwrap_or(0)
            ),
        })
        .collect();
    Overlay { hops }
}

fn reach_overlay(r: &reach::Reach) -> Overlay {
    let hops = r
        .tree
        .iter()
        .map(|h| OverlayHop {
            from: OverlayEnd::Node(h.from.clone()),
            to: OverlayEnd::Node(h.to.clone()),
            label: format!("hop {}: {}{}", h.depth, h.flow, if h.seen.is_some() { " (seen)" } else { "" }),
        })
        .collect();
    Overlay { hops }
}

/// The DFD with `overlay` drawn over it.
fn draw(dfd: Option<&Dfd>, overlay: &Overlay, format: Format) -> Result<String, Failed> {
    let Some(dfd) = dfd else {
        return Err(usage("a picture is the DFD with the answer drawn over it: give the DFD with --dfd".into()));
    };
    let lints = dfdwatch_dfd::lint::lint_undated(dfd);
    match format {
        Format::Mermaid => Ok(render_with_overlay(dfd, &lints, RenderFormat::Mermaid, overlay)),
        Format::Svg => svg(&render_with_overlay(dfd, &lints, RenderFormat::Dot, overlay)),
        _ => Ok(render_with_overlay(dfd, &lints, RenderFormat::Dot, overlay)),
    }
}

/// Renders DOT to SVG with Graphviz's `dot`.
fn svg(dot: &str) -> Result<String, Failed> {
    use std::process::{Command, Stdio};
    let missing = || {
        Failed(
            "SVG is drawn by Graphviz's `dot`, which is not installed (Debian: apt install graphviz); --format dot writes the same picture as DOT".into(),
            EXIT_UNAVAILABLE,
        )
    };
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                missing()
            } else {
                Failed(format!("cannot run dot: {e}"), EXIT_UNAVAILABLE)
            }
        })?;
    // Written from a thread: dot may fill its output pipe before it has read all its input.
    let input = dot.to_owned();
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || stdin.map(|mut s| s.write_all(input.as_bytes())));
    let output = child.wait_with_output().map_err(|e| Failed(format!("dot: {e}"), EXIT_UNAVAILABLE))?;
    let _ = writer.join();
    if !output.status.success() {
        return Err(Failed(
            format!("dot failed: {}", String::from_utf8_lossy(&output.stderr).trim()),
            EXIT_UNAVAILABLE,
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
