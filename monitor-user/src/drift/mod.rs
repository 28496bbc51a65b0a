//! `dfdwatch drift`: the approved DFD against what the flow store saw over a period. It reports
//! approved flows never seen (stale approvals, with when each was last seen, if ever), unapproved
//! flows seen (ranked by severity, then connections), unmodelled workloads, approvals expired or
//! ending within 30 days, and nodes whose selector matched nothing; as text, JSON, Markdown (for
//! a ticket) or SARIF (for a code-scanning view of the DFD repository). Each finding points at the
//! DFD item it is about, where there is one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use dfdwatch_dfd::date::Date;
use dfdwatch_dfd::diag::Loc;
use dfdwatch_dfd::model::{Dfd, Flow};
use dfdwatch_dfd::report::SarifResult;
use serde::Serialize;

use crate::store::clickhouse::ClickHouseArgs;
use crate::store::query::Query;
use crate::store::row::Row;
use crate::store::source::{Source, SourceError};
use crate::store::writer::unix_ns;

/// Approvals ending within this many days are reported.
const EXPIRING_DAYS: i64 = 30;
/// Rows read at most.
const MAX_ROWS: u32 = 5_000_000;

/// How the report is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Plain text.
    #[default]
    Text,
    /// JSON.
    Json,
    /// Markdown, for a ticket.
    Markdown,
    /// SARIF 2.1.0.
    Sarif,
}

/// Options of `dfdwatch drift`.
#[derive(clap::Args, Debug)]
pub struct DriftArgs {
    /// The approved DFD (files or directories).
    #[arg(long = "dfd", value_name = "PATH", required = true)]
    pub dfd: Vec<PathBuf>,
    /// The flow store (the daemon's --store).
    #[arg(long, value_name = "PATH", default_value = "/var/lib/dfdwatch/flows.db")]
    pub store: PathBuf,
    /// The cluster store instead.
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// The period, back from now.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// How to write the report.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The day approvals are weighed against (default today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub today: Option<String>,
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Should be fixed.
    Medium,
    /// Fix now.
    High,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// One thing the DFD and reality disagree on.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `stale_approval`, `unapproved_flow`, `unmodelled_workload`, `approval_expired`,
    /// `approval_expiring`, `node_unmatched`.
    pub kind: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// The flow, node or workload it is about.
    pub subject: String,
    /// What was seen, in words.
    pub detail: String,
    /// Connections behind it (seen flows and workloads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// When it was last seen, if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Where the DFD item is.
    #[serde(skip)]
    pub loc: Option<Loc>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The period (RFC 3339).
    pub from: String,
    /// The period's end.
    pub to: String,
    /// Flow records read.
    pub records: usize,
    /// The findings: expiries, unapproved flows and unmodelled workloads first, by severity.
    pub findings: Vec<Finding>,
}

fn time(ns: i64) -> String {
    crate::investigate::view::time(ns)
}

/// Whether `r` is a connection `f` approves (same nodes, a port in its ports).
fn approves(f: &Flow, r: &Row) -> bool {
    f.from.id == r.src_node
        && f.to.id == r.dst_node
        && u16::try_from(r.dst_port)
            .is_ok_and(|p| f.ports.iter().any(|range| (range.port..=range.end_port).contains(&p)))
}

/// An end by its DFD node, else its pod, else its cgroup (the root cgroup names nobody), else its
/// address.
fn end_label(node: &str, pod: &str, cgroup: &str, addr: &str) -> String {
    [node, pod, cgroup].into_iter().find(|s| !s.is_empty() && *s != "/").map_or_else(|| addr.to_owned(), str::to_owned)
}

/// The report for `dfd` against `rows` (the period's flow records), with each stale flow's
/// last sighting from `last_seen`.
pub fn report(
    dfd: &Dfd,
    rows: &[Row],
    today: Date,
    last_seen: &dyn Fn(&Flow) -> Option<i64>,
    period: (i64, i64),
) -> Report {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.record == "flow" && r.duplicate == 0).collect();
    let mut findings = Vec::new();
    // Approvals by date.
    for f in &dfd.flows {
        let Some(expires) = f.approval.as_ref().and_then(|a| a.expires) else { continue };
        let left = expires.unix_days() - today.unix_days();
        let loc = f.approval.as_ref().map(|a| a.loc.clone());
        if left < 0 {
            findings.push(Finding {
                kind: "approval_expired",
                severity: Severity::High,
                subject: f.id.clone(),
                detail: format!("approval ended on {expires} ({} day(s) ago)", -left),
                connections: None,
                last_seen: None,
                loc,
            });
        } else if left <= EXPIRING_DAYS {
            findings.push(Finding {
                kind: "approval_expiring",
                severity: Severity::Medium,
                subject: f.id.clone(),
                detail: format!("approval ends on {expires}, in {left} day(s)"),
                connections: None,
                last_seen: None,
                loc,
            });
        }
    }
    // Unapproved flows seen, by pair, port and verdict.
    let mut unapproved: BTreeMap<SeenKey, Seen> = BTreeMap::new();
    let mut unmodelled: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &rows {
        if r.alert == 1 {
            let key = SeenKey {
                src: end_label(&r.src_node, &r.src_pod, &r.src_cgroup, &r.src_addr),
                dst: end_label(&r.dst_node, &r.dst_pod, &r.dst_cgroup, &r.dst_addr),
                port: r.dst_port,
                verdict: r.verdict.clone(),
            };
            let e = unapproved.entry(key).or_default();
            e.connections += r.connections;
            e.last_ns = e.last_ns.max(r.last_ns);
            if rank(&r.severity) > rank(&e.severity) {
                e.severity.clone_from(&r.severity);
            }
        }
        for (node, pod, cgroup, addr) in [
            (&r.src_node, &r.src_pod, &r.src_cgroup, &r.src_addr),
            (&r.dst_node, &r.dst_pod, &r.dst_cgroup, &r.dst_addr),
        ] {
            if node.is_empty() {
                let e = unmodelled.entry(end_label(node, pod, cgroup, addr)).or_insert((0, 0));
                e.0 += r.connections;
                e.1 = e.1.max(r.last_ns);
            }
        }
    }
    // Ranked by the verdicts' own severity (critical above high), then connections.
    let mut unapproved: Vec<(SeenKey, Seen)> = unapproved.into_iter().collect();
    unapproved.sort_by(|(ka, a), (kb, b)| {
        (rank(&b.severity), b.connections).cmp(&(rank(&a.severity), a.connections)).then(ka.cmp(kb))
    });
    let seen_flows: Vec<Finding> = unapproved
        .into_iter()
        .map(|(k, s)| Finding {
            kind: "unapproved_flow",
            severity: match rank(&s.severity) {
                3.. => Severity::High,
                2 => Severity::Medium,
                _ => Severity::Low,
            },
            subject: format!("{} -> {}:{}", k.src, k.dst, k.port),
            detail: format!("{} ({}), {} connection(s)", k.verdict, s.severity, s.connections),
            connections: Some(s.connections),
            last_seen: Some(time(s.last_ns)),
            loc: None,
        })
        .collect();
    findings.extend(seen_flows);
    let mut workloads: Vec<Finding> = unmodelled
        .into_iter()
        .map(|(w, (n, last))| Finding {
            kind: "unmodelled_workload",
            severity: Severity::Medium,
            subject: w,
            detail: format!("on no node of the DFD, {n} connection(s)"),
            connections: Some(n),
            last_seen: Some(time(last)),
            loc: None,
        })
        .collect();
    workloads.sort_by(|a, b| b.connections.cmp(&a.connections).then(a.subject.cmp(&b.subject)));
    findings.extend(workloads);
    // Approved flows never seen in the period.
    for f in &dfd.flows {
        if !rows.iter().any(|r| r.verdict == "approved" && approves(f, r)) {
            let last = last_seen(f);
            findings.push(Finding {
                kind: "stale_approval",
                severity: Severity::Low,
                subject: f.id.clone(),
                detail: match last {
                    Some(t) => format!("{} -> {} not seen in the period; last seen {}", f.from.id, f.to.id, time(t)),
                    None => format!("{} -> {} never seen", f.from.id, f.to.id),
                },
                connections: None,
                last_seen: last.map(time),
                loc: Some(f.loc.clone()),
            });
        }
    }
    // Nodes whose selector matched nothing.
    let used: BTreeSet<&str> = rows.iter().flat_map(|r| [r.src_node.as_str(), r.dst_node.as_str()]).collect();
    for n in &dfd.nodes {
        if !used.contains(n.id.as_str()) {
            findings.push(Finding {
                kind: "node_unmatched",
                severity: Severity::Low,
                subject: n.id.clone(),
                detail: "its selector matched no connection in the period".into(),
                connections: None,
                last_seen: None,
                loc: Some(n.loc.clone()),
            });
        }
    }
    Report { from: time(period.0), to: time(period.1), records: rows.len(), findings }
}

/// Unapproved connections of one kind: client, server, port and verdict.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SeenKey {
    src: String,
    dst: String,
    port: i64,
    verdict: String,
}

/// What was seen of them.
#[derive(Debug, Default)]
struct Seen {
    connections: i64,
    severity: String,
    last_ns: i64,
}

fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// Markdown table cell text.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Writes `report` in `format`.
pub fn write(report: &Report, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    let p = crate::investigate::view::printable;
    match format {
        Format::Text => {
            writeln!(
                out,
                "drift from {} to {} ({} flow records): {} finding(s)",
                report.from,
                report.to,
                report.records,
                report.findings.len()
            )?;
            for f in &report.findings {
                writeln!(out, "{:<6} {:<20} {}: {}", f.severity.as_str(), f.kind, p(&f.subject), p(&f.detail))?;
            }
            Ok(())
        }
        Format::Markdown => {
            writeln!(out, "## DFD drift, {} to {}\n", report.from, report.to)?;
            if report.findings.is_empty() {
                return writeln!(out, "The DFD and what was seen agree ({} flow records).", report.records);
            }
            writeln!(out, "| severity | finding | subject | detail |\n|---|---|---|---|")?;
            for f in &report.findings {
                let mark = if f.severity == Severity::High { "**high**" } else { f.severity.as_str() };
                writeln!(out, "| {mark} | `{}` | `{}` | {} |", f.kind, cell(&p(&f.subject)), cell(&p(&f.detail)))?;
            }
            Ok(())
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        }
        Format::Sarif => {
            let results: Vec<SarifResult<'_>> = report
                .findings
                .iter()
                .map(|f| SarifResult {
                    rule: f.kind,
                    level: match f.severity {
                        Severity::High => "error",
                        Severity::Medium => "warning",
                        Severity::Low => "note",
                    },
                    message: format!("{}: {}", f.subject, f.detail),
                    loc: f.loc.as_ref(),
                })
                .collect();
            let sarif = dfdwatch_dfd::report::sarif_log("dfdwatch drift", &results);
            serde_json::to_writer_pretty(&mut *out, &sarif)?;
            writeln!(out)
        }
    }
}

/// Runs `dfdwatch drift`; returns the exit status (0 written, 64 bad usage, 65 the DFD has
/// errors, 66 the store cannot be read).
pub fn drift(args: &DriftArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let fail = |err: &mut dyn Write, msg: String, code: u8| {
        let _ = writeln!(err, "dfdwatch: {msg}");
        code
    };
    let today = match &args.today {
        None => Date::today_utc(),
        Some(s) => match Date::parse(s) {
            Some(d) => d,
            None => return fail(err, format!("--today {s:?} is not a date; write YYYY-MM-DD"), 64),
        },
    };
    let loaded = match dfdwatch_dfd::load::load_paths(&args.dfd) {
        Ok(l) => l,
        Err(e) => return fail(err, e.to_string(), 64),
    };
    if loaded.findings.iter().any(|f| f.severity == dfdwatch_dfd::diag::Severity::Error) {
        return fail(err, "the DFD does not parse: run `dfdwatch check` on it".into(), 65);
    }
    let source = match Source::open(&args.store, &args.clickhouse) {
        Ok(s) => s,
        Err(e @ SourceError::Usage(_)) => return fail(err, e.to_string(), 64),
        Err(e) => return fail(err, e.to_string(), 66),
    };
    let to = unix_ns().saturating_add(1);
    let from = to.saturating_sub(i64::try_from(args.since.as_nanos()).unwrap_or(i64::MAX));
    let rows = match source.rows(&Query { from_ns: from, to_ns: to, limit: MAX_ROWS, ..Query::default() }) {
        Ok(r) => r,
        Err(e) => return fail(err, e.to_string(), 66),
    };
    let last_seen = |f: &Flow| -> Option<i64> {
        let q = Query {
            from_ns: 0,
            to_ns: to,
            between: Some((f.from.id.clone(), f.to.id.clone())),
            verdict: Some("approved".into()),
            without_duplicates: true,
            newest_first: true,
            limit: 1000,
            ..Query::default()
        };
        source.rows(&q).ok()?.iter().find(|r| approves(f, r)).map(|r| r.last_ns)
    };
    let report = report(&loaded.dfd, &rows, today, &last_seen, (from, to));
    match write(&report, args.format, out) {
        Ok(()) => 0,
        Err(e) => fail(err, format!("cannot write the report: {e}"), 66),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata: {name: drift}
spec:
  tiers: [{id: T2, name: App, level: 2}]
  dataClasses: [{id: public, level: 0}]
  zones: [{id: app, name: App, tier: T2, match: {cidrs: ["10.0.0.0/24"]}}]
  nodes:
    - {id: web, name: Web, kind: process, zone: app, match: {cidrs: ["10.0.0.1/32"]}}
    - {id: api, name: API, kind: process, zone: app, match: {cidrs: ["10.0.0.2/32"]}}
    - {id: db, name: DB, kind: datastore, zone: app, match: {cidrs: ["10.0.0.3/32"]}}
    - {id: batch, name: Batch, kind: process, zone: app, match: {cidrs: ["10.0.0.4/32"]}}
  flows:
    - {id: web-api, from: web, to: api, ports: [{port: 80}], encryption: {required: none}, data: [public]}
    - {id: api-db, from: api, to: db, ports: [{port: 5432}], encryption: {required: none}, data: [public], approval: {ticket: SEC-1, expires: "2026-12-10"}}
    - {id: batch-db, from: batch, to: db, ports: [{port: 5432}], encryption: {required: none}, data: [public], approval: {ticket: SEC-2, expires: "2026-11-01"}}
"#;

    fn row(t: i64, src: (&str, &str), dst: (&str, &str), port: i64, verdict: &str, n: i64) -> Row {
        Row {
            time_ns: t,
            last_ns: t + 1,
            record: "flow".into(),
            kind: "connect".into(),
            connections: n,
            src_addr: src.0.into(),
            src_node: src.1.into(),
            dst_addr: dst.0.into(),
            dst_node: dst.1.into(),
            dst_port: port,
            verdict: verdict.into(),
            severity: if verdict == "approved" { "info" } else { "high" }.into(),
            alert: i64::from(verdict != "approved"),
            ..Row::default()
        }
    }

    #[test]
    fn the_report_names_exactly_the_stale_the_unapproved_and_the_unseen() {
        let (dfd, findings) = dfdwatch_dfd::load::load_str("drift.yaml", DFD);
        assert!(findings.iter().all(|f| f.severity != dfdwatch_dfd::diag::Severity::Error), "{findings:?}");
        let web = ("10.0.0.1", "web");
        let api = ("10.0.0.2", "api");
        let rows = vec![
            row(100, web, api, 80, "approved", 40),
            // The web reaches the database directly, twice; an unknown host probes the API.
            row(110, web, ("10.0.0.3", "db"), 5432, "lateral_movement", 2),
            // (more connections, but a lower severity: ranked after)
            Row { severity: "medium".into(), ..row(120, ("10.0.9.9", ""), api, 22, "unmodelled_endpoint", 5) },
            // Second sightings are not counted again.
            Row { duplicate: 1, ..row(130, web, api, 80, "approved", 40) },
        ];
        // api-db was last seen before the period; batch-db never.
        let last_seen = |f: &Flow| (f.id == "api-db").then_some(50);
        let today = Date::parse("2026-12-01").unwrap();
        let r = report(&dfd, &rows, today, &last_seen, (60, 200));
        let got: Vec<(&str, &str)> = r.findings.iter().map(|f| (f.kind, f.subject.as_str())).collect();
        assert_eq!(
            got,
            [
                ("approval_expiring", "api-db"),
                ("approval_expired", "batch-db"),
                ("unapproved_flow", "web -> db:5432"),
                ("unapproved_flow", "10.0.9.9 -> api:22"),
                ("unmodelled_workload", "10.0.9.9"),
                ("stale_approval", "api-db"),
                ("stale_approval", "batch-db"),
                ("node_unmatched", "batch"),
            ]
        );
        assert!(r.findings[5].last_seen.is_some() && r.findings[6].last_seen.is_none());
        assert_eq!(r.findings[2].connections, Some(2));
        for format in [Format::Text, Format::Json, Format::Markdown, Format::Sarif] {
            let mut out = Vec::new();
            write(&r, format, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("web -> db:5432"), "{format:?}: {text}");
            if format == Format::Sarif {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["runs"][0]["results"].as_array().map(Vec::len), Some(8));
                assert!(
                    v["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"]
                        .as_u64()
                        .is_some()
                );
            }
        }
    }
}
