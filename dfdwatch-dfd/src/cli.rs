//! The `dfdwatch check` and `dfdwatch render` subcommands: arguments (clap) and their bodies.
//!
//! Exit statuses: 0 clean (warnings and info allowed); 1 when any error-level finding exists,
//! including input that cannot be parsed (syntax errors, unknown fields, wrong types: there is
//! no separate 65); 64 (EX_USAGE) for bad usage such as a path that does not exist or a
//! malformed `--today`; 74 (EX_IOERR) when the report or drawing cannot be written.

use std::io::Write;
use std::path::PathBuf;

use crate::date::Date;
use crate::diag::{Finding, Severity, has_errors, sort_findings};
use crate::load::{Loaded, load_paths};
use crate::render::RenderFormat;
use crate::report::Format;

/// Exit status: clean.
pub const EXIT_OK: u8 = 0;
/// Exit status: at least one error-level finding (including unparsable input).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: bad usage (EX_USAGE), e.g. a path that does not exist.
pub const EXIT_USAGE: u8 = 64;
/// Exit status: the output could not be written (EX_IOERR).
pub const EXIT_IO: u8 = 74;

/// Arguments of `dfdwatch check`.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// DFD files, or directories whose `.yaml`/`.yml` files are read (not recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The date approvals are checked against (`YYYY-MM-DD`; default: today in UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub today: Option<String>,
}

/// Arguments of `dfdwatch render`.
#[derive(Clone, Debug, clap::Args)]
pub struct RenderArgs {
    /// DFD files, or directories whose `.yaml`/`.yml` files are read (not recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Drawing format.
    #[arg(long, value_enum, default_value_t = RenderFormat::Dot)]
    pub format: RenderFormat,
    /// Write the drawing to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Arguments of `dfdwatch sign`.
#[derive(Clone, Debug, clap::Args)]
pub struct SignArgs {
    /// The DFD directory: its `.yaml`/`.yml` files are listed in `dfd.sha256`, which is signed.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The approver's minisign secret key (`minisign -G` makes one).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// A file holding the key's password; without it, the environment variable
    /// DFDWATCH_KEY_PASSWORD, else no password (a key made with `minisign -G -W`).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Signed with the signature and logged by the daemon: who approves, which ticket.
    #[arg(long, value_name = "TEXT")]
    pub comment: String,
    /// Names the signature file `dfd.sha256.NAME.minisig` (default: the key id).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Arguments of `dfdwatch verify`.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// The DFD directory, with `dfd.sha256` and its signatures.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// A trusted minisign public key (repeat for each approver).
    #[arg(long = "trust-key", value_name = "FILE", required = true)]
    pub trust_keys: Vec<PathBuf>,
    /// Distinct trusted keys that must have signed.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub required: usize,
}

/// Signs the DFD directory (`dfdwatch sign`); returns the exit status.
pub fn sign(args: &SignArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let password = match &args.password_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(p) => p.trim_end_matches(['\n', '\r']).to_owned(),
            Err(e) => {
                let _ = writeln!(err, "dfdwatch: {}: {e}", crate::escape::escape_path(path));
                return EXIT_USAGE;
            }
        },
        None => std::env::var("DFDWATCH_KEY_PASSWORD").unwrap_or_default(),
    };
    let signed = crate::sign::secret_key(&args.key, &password)
        .and_then(|key| crate::sign::sign(&args.dir, &key, args.name.as_deref(), &args.comment));
    match signed {
        Ok(path) => {
            let _ = writeln!(out, "signed: {}", crate::sign::MANIFEST);
            let _ = writeln!(out, "signature: {}", crate::escape::escape_path(&path));
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: {e}");
            EXIT_USAGE
        }
    }
}

/// Verifies the DFD directory's signatures (`dfdwatch verify`); returns the exit status: 0
/// verified, 1 not verified, 64 bad usage (a key that does not read).
pub fn verify(args: &VerifyArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let trust = match crate::sign::Trust::from_files(&args.trust_keys, args.required) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: {e}");
            return EXIT_USAGE;
        }
    };
    let bundle = match crate::sign::read_bundle(std::slice::from_ref(&args.dir)) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: {e}");
            return EXIT_USAGE;
        }
    };
    match crate::sign::verify(&bundle, &trust) {
        Ok(approvers) => {
            for a in approvers {
                let esc = |s: &str| crate::escape::escape_bytes(s.as_bytes());
                let _ = writeln!(out, "signed by {} (key {}): {}", esc(&a.key), a.key_id, esc(&a.comment));
            }
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: not verified: {e}");
            EXIT_FINDINGS
        }
    }
}

fn load(paths: &[PathBuf], err: &mut dyn Write) -> Result<Loaded, u8> {
    load_paths(paths).map_err(|e| {
        let _ = writeln!(err, "dfdwatch: {e}");
        EXIT_USAGE
    })
}

/// Parses and lints the DFD under `args.paths`, writes the report to `out`, and returns the exit status.
pub fn check(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let today = match &args.today {
        None => Date::today_utc(),
        Some(s) => match Date::parse(s) {
            Some(d) => d,
            None => {
                let _ = writeln!(err, "dfdwatch: --today {s:?} is not a date; write YYYY-MM-DD");
                return EXIT_USAGE;
            }
        },
    };
    let loaded = match load(&args.paths, err) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let findings = all_findings(loaded, today);
    if crate::report::write(args.format, &findings, out).is_err() {
        let _ = writeln!(err, "dfdwatch: cannot write the report");
        return EXIT_IO;
    }
    if has_errors(&findings) { EXIT_FINDINGS } else { EXIT_OK }
}

/// Parse findings, then (only when the files parsed cleanly) lint findings, sorted.
pub fn all_findings(loaded: Loaded, today: Date) -> Vec<Finding> {
    let mut findings = loaded.findings;
    if !has_errors(&findings) {
        findings.extend(crate::lint::lint(&loaded.dfd, today));
    }
    sort_findings(&mut findings);
    findings
}

/// Draws the DFD under `args.paths` as DOT or Mermaid and returns the exit status. Refuses
/// (status 1, findings on `err`) when the files do not parse or have dangling or duplicate ids.
pub fn render(args: &RenderArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let loaded = match load(&args.paths, err) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Drawings mark security errors only: the calendar (approval expiry) never changes them.
    let lints = crate::lint::lint_undated(&loaded.dfd);
    let mut blocking: Vec<Finding> =
        loaded.findings.iter().filter(|f| f.severity == Severity::Error).cloned().collect();
    blocking.extend(
        lints.iter().filter(|f| matches!(f.rule, "S001" | "S002" | "S004") && f.severity == Severity::Error).cloned(),
    );
    if !blocking.is_empty() {
        sort_findings(&mut blocking);
        for f in &blocking {
            let _ = writeln!(err, "{f}");
        }
        let _ = writeln!(err, "dfdwatch: not rendering: fix the errors above first (run `dfdwatch check`)");
        return EXIT_FINDINGS;
    }
    let text = crate::render::render(&loaded.dfd, &lints, args.format);
    let written = match &args.output {
        Some(path) => std::fs::write(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display())),
        None => out.write_all(text.as_bytes()).map_err(|e| e.to_string()),
    };
    match written {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "dfdwatch: cannot write the drawing: {e}");
            EXIT_IO
        }
    }
}

/// Severity threshold of `dfdwatch diff --fail-on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailOn {
    /// Never fail on changes.
    #[default]
    Never,
    /// Fail on any change.
    Low,
    /// Fail on medium or high changes.
    Medium,
    /// Fail on high changes.
    High,
}

/// Output formats of `dfdwatch diff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DiffFormat {
    /// One line per change, then a summary line.
    #[default]
    Text,
    /// A Markdown table, for a pull-request comment.
    Markdown,
    /// The changes as JSON.
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
}

/// Arguments of `dfdwatch diff`.
#[derive(Clone, Debug, clap::Args)]
pub struct DiffArgs {
    /// The DFD before: a file or directory, or `REV:PATH` for a git revision of one (e.g.
    /// `origin/main:approved-dfd`).
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The DFD after, in the same forms.
    #[arg(value_name = "NEW")]
    pub new: String,
    /// Report format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Exit 1 when a change of this severity or above is found (for CI gating).
    #[arg(long, value_enum, default_value_t = FailOn::Never)]
    pub fail_on: FailOn,
}

/// Exit status of `dfdwatch diff` when a side does not parse (EX_DATAERR).
pub const EXIT_DATA: u8 = 65;

/// The DFD sources named by a `diff` argument: a path, or `REV:PATH` read with `git show`.
fn diff_sources(spec: &str) -> Result<Vec<crate::load::Source>, String> {
    let path = std::path::Path::new(spec);
    if path.exists() {
        return crate::load::read_sources(&[path.to_owned()]).map_err(|e| e.to_string());
    }
    let Some((rev, path)) = spec.split_once(':') else {
        return Err(format!(
            "{}: no such file or directory, and not REV:PATH",
            crate::escape::escape_bytes(spec.as_bytes())
        ));
    };
    let git = |args: &[&str]| -> Result<Vec<u8>, String> {
        let out = std::process::Command::new("git").args(args).output().map_err(|e| format!("git: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("git {}: {}", args.join(" "), crate::escape::escape_bytes(err.trim().as_bytes())));
        }
        Ok(out.stdout)
    };
    let path = path.trim_end_matches('/');
    let kind = git(&["cat-file", "-t", &format!("{rev}:{path}")])?;
    let files: Vec<String> = if kind.starts_with(b"tree") {
        let listing = git(&["ls-tree", "--name-only", &format!("{rev}:{path}")])?;
        let mut names: Vec<String> = String::from_utf8_lossy(&listing)
            .lines()
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .map(|n| format!("{path}/{n}"))
            .collect();
        names.sort();
        names
    } else {
        vec![path.to_owned()]
    };
    if files.is_empty() {
        return Err(format!("{rev}:{path} holds no .yaml or .yml file"));
    }
    files
        .into_iter()
        .map(|f| {
            let mut bytes = git(&["show", &format!("{rev}:{f}")])?;
            bytes.truncate(crate::load::MAX_FILE_BYTES as usize + 1);
            Ok(crate::load::Source { path: f.into(), bytes })
        })
        .collect()
}

/// Compares two DFDs (`dfdwatch diff`) and returns the exit status: 0, or 1 when a change at or
/// above `--fail-on` is found; 64 bad usage; 65 when a side does not parse.
pub fn diff(args: &DiffArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let mut sides = Vec::new();
    for spec in [&args.old, &args.new] {
        let sources = match diff_sources(spec) {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(err, "dfdwatch: {e}");
                return EXIT_USAGE;
            }
        };
        let loaded = crate::load::parse_sources(&sources);
        if has_errors(&loaded.findings) {
            for f in loaded.findings.iter().filter(|f| f.severity == Severity::Error) {
                let _ = writeln!(err, "{f}");
            }
            let _ = writeln!(
                err,
                "dfdwatch: {} does not parse; fix it first (`dfdwatch check`)",
                crate::escape::escape_bytes(spec.as_bytes())
            );
            return EXIT_DATA;
        }
        sides.push(loaded.dfd);
    }
    let changes = crate::diff::changes(&sides[0], &sides[1]);
    if crate::diff::write(args.format, &changes, out).is_err() {
        let _ = writeln!(err, "dfdwatch: cannot write the report");
        return EXIT_IO;
    }
    let threshold = match args.fail_on {
        FailOn::Never => None,
        FailOn::Low => Some(crate::diff::Severity::Low),
        FailOn::Medium => Some(crate::diff::Severity::Medium),
        FailOn::High => Some(crate::diff::Severity::High),
    };
    if threshold.is_some_and(|t| changes.iter().any(|c| c.severity >= t)) { EXIT_FINDINGS } else { EXIT_OK }
}
