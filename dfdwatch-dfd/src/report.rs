//! Writes findings as text (`file:line:col: severity: message [rule]`), JSON or SARIF 2.1.0.

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::diag::{Finding, Severity};
use crate::rules::RULES;

/// Output formats of `dfdwatch check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One line per finding, then a summary line.
    #[default]
    Text,
    /// A JSON object with `findings` and `summary`.
    Json,
    /// SARIF 2.1.0 for code-scanning services.
    Sarif,
}

fn count(findings: &[Finding], s: Severity) -> usize {
    findings.iter().filter(|f| f.severity == s).count()
}

/// Writes `findings` in `format`.
pub fn write(format: Format, findings: &[Finding], out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Text => text(findings, out),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &json_report(findings))?;
            writeln!(out)
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &sarif(findings))?;
            writeln!(out)
        }
    }
}

fn text(findings: &[Finding], out: &mut dyn Write) -> io::Result<()> {
    for f in findings {
        writeln!(out, "{f}")?;
    }
    writeln!(
        out,
        "{} error(s), {} warning(s), {} info",
        count(findings, Severity::Error),
        count(findings, Severity::Warning),
        count(findings, Severity::Info)
    )
}

fn uri(f: &Finding) -> Option<String> {
    f.loc.as_ref().map(|l| l.file.to_string_lossy().replace('\\', "/"))
}

/// The JSON report: `{"findings": [{rule, severity, message, file, line, column}], "summary": {...}}`.
pub fn json_report(findings: &[Finding]) -> Value {
    let items: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "rule": f.rule,
                "severity": f.severity,
                "message": f.message,
                "file": uri(f),
                "line": f.loc.as_ref().map(|l| l.line),
                "column": f.loc.as_ref().map(|l| l.col),
                "capitals": crate::rules::capitals(f.rule).map(crate::rules::Capitals::name),
            })
        })
        .collect();
    json!({
        "findings": items,
        "summary": {
            "errors": count(findings, Severity::Error),
            "warnings": count(findings, Severity::Warning),
            "info": count(findings, Severity::Info),
        }
    })
}

/// A SARIF artifact URI: relative paths stay relative, absolute ones become `file://` URIs;
/// characters that URIs reserve are percent-encoded.
fn sarif_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// The SARIF 2.1.0 log: one run, the full rule catalogue, one result per finding.
pub fn sarif(findings: &[Finding]) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": {"text": r.description},
                "defaultConfiguration": {"level": level(r.severity)},
                "properties": {"tags": crate::rules::capitals(r.id).map(|c| vec![format!("CAPITALS: {}", c.name())]).unwrap_or_default()},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut r = json!({
                "ruleId": f.rule,
                "level": level(f.severity),
                "message": {"text": f.message},
            });
            if let Some(i) = RULES.iter().position(|r| r.id == f.rule) {
                r["ruleIndex"] = json!(i);
            }
            if let (Some(loc), Some(u)) = (&f.loc, uri(f)) {
                r["locations"] = json!([{
                    "physicalLocation": {
                        "artifactLocation": {"uri": sarif_uri(&u)},
                        "region": {"startLine": loc.line, "startColumn": loc.col},
                    }
                }]);
            }
            r
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "dfdwatch",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }]
    })
}

/// One result of the SARIF log of a command other than `check` (`diff`, `drift`): a kind of
/// finding, its level (`error`, `warning`, `note`), its message, and where in the DFD it is.
pub struct SarifResult<'a> {
    /// The kind, used as the rule id.
    pub rule: &'a str,
    /// `error`, `warning` or `note`.
    pub level: &'static str,
    /// What was found.
    pub message: String,
    /// Where in the DFD, when it is about one item.
    pub loc: Option<&'a crate::diag::Loc>,
}

/// The SARIF 2.1.0 log of `tool` (`dfdwatch diff`, `dfdwatch drift`): one run, a rule per kind
/// of result.
pub fn sarif_log(tool: &str, results: &[SarifResult<'_>]) -> Value {
    let mut kinds: Vec<&str> = results.iter().map(|r| r.rule).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let rules: Vec<Value> =
        kinds.iter().map(|k| json!({"id": k, "shortDescription": {"text": k.replace('_', " ")}})).collect();
    let results: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut v = json!({"ruleId": r.rule, "level": r.level, "message": {"text": r.message}});
            if let Some(l) = r.loc {
                v["locations"] = json!([{"physicalLocation": {
                    "artifactLocation": {"uri": sarif_uri(&l.file.to_string_lossy().replace('\\', "/"))},
                    "region": {"startLine": l.line, "startColumn": l.col},
                }}]);
            }
            v
        })
        .collect();
    json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{"tool": {"driver": {"name": tool, "version": env!("CARGO_PKG_VERSION"), "rules": rules}}, "results": results}],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sarif_uris() {
        assert_eq!(super::sarif_uri("approved-dfd/shop.yaml"), "approved-dfd/shop.yaml");
        assert_eq!(super::sarif_uri("/srv/my dfd/a#1.yaml"), "file:///srv/my%20dfd/a%231.yaml");
    }
}
