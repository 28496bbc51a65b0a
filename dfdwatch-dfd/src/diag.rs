//! Findings: what `dfdwatch check` reports (parse errors and lint results), with their location.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

/// Where something is in the DFD sources: file, 1-based line and 1-based column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// The file the item was read from.
    pub file: Arc<Path>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

impl Loc {
    /// A location at line/col (both 1-based) in `file`.
    pub fn new(file: &Arc<Path>, line: usize, col: usize) -> Self {
        Loc {
            file: Arc::clone(file),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }

    /// The start of `file`, for findings that concern a whole file.
    pub fn file_start(file: &Arc<Path>) -> Self {
        Loc::new(file, 1, 1)
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = crate::escape::escape_path(&self.file);
        write!(f, "{file}:{}:{}", self.line, self.col)
    }
}

/// How serious a finding is. `Error` makes `dfdwatch check` exit with status 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never blocks.
    Info,
    /// Probably a mistake or a risk; does not block.
    Warning,
    /// The DFD is wrong or unsafe; blocks merge and rendering.
    Error,
}

impl Severity {
    /// The lower-case word used in text output (`error`, `warning`, `info`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in the DFD: a parse error or a lint result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Rule id, e.g. `P003` (unknown field) or `X001` (upward crossing without authn).
    /// The catalogue is [`crate::rules::RULES`].
    pub rule: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Where it is, when it can be pinned to a place in a file.
    pub loc: Option<Loc>,
}

impl Finding {
    /// A finding of `rule` at its default severity.
    pub fn new(rule: &'static str, loc: Option<&Loc>, message: impl Into<String>) -> Self {
        Finding { rule, severity: crate::rules::default_severity(rule), message: message.into(), loc: loc.cloned() }
    }

    /// The same finding with another severity.
    #[must_use]
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}: {} [{}]", self.severity, self.message, self.rule)
    }
}

/// Sorts findings by file, line, column, then rule, so output is stable and reviewable.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| a.loc.cmp(&b.loc).then_with(|| a.rule.cmp(b.rule)).then_with(|| a.message.cmp(&b.message)));
}

/// True when at least one finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}
