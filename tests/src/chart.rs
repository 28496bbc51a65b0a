//! The deployment tests' tools: the pinned Python venv that `cargo xtask setup` installs
//! (tools/deploy-check), and rendering the Helm chart through it with the real Helm library.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::sys;

/// The chart directory.
pub fn chart_dir() -> PathBuf {
    sys::workspace_root().join("deploy/helm/dfdwatch")
}

/// A tool from the venv; a missing venv is an error that says how to install it.
pub fn tool(name: &str) -> Result<PathBuf> {
    let path = sys::workspace_root().join("target/deploy-tools/venv/bin").join(name);
    ensure!(
        path.exists(),
        "{} is missing: the deployment tests' Python tools are installed by `cargo xtask setup` \
         (tools/deploy-check/requirements.txt)",
        path.display()
    );
    Ok(path)
}

/// Runs `program` with `args` and fails with its output unless it exits 0; returns stdout+stderr.
pub fn run_ok(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("run {}", program.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{} {} failed ({}):\n{text}", program.display(), args.join(" "), out.status);
    }
    Ok(text)
}

/// Runs tools/deploy-check/deploy_check.py with `args`.
pub fn deploy_check(args: &[&str]) -> Result<String> {
    let script = sys::workspace_root().join("tools/deploy-check/deploy_check.py");
    let script = script.to_str().context("non-UTF-8 path")?.to_owned();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    run_ok(&tool("python")?, &all)
}

/// One rendering of the chart: the core manifests, the Prometheus Operator and Grafana objects,
/// and every object parsed.
pub struct Rendered {
    pub main: PathBuf,
    pub monitoring: PathBuf,
    pub objects: Vec<Value>,
}

impl Rendered {
    /// The one object of `kind` (and `name`, when given).
    pub fn object(&self, kind: &str, name: Option<&str>) -> Result<&Value> {
        let mut found =
            self.objects.iter().filter(|o| o["kind"] == kind && name.is_none_or(|n| o["metadata"]["name"] == n));
        let first = found.next().with_context(|| format!("no {kind} {name:?} rendered"))?;
        ensure!(found.next().is_none(), "more than one {kind} {name:?} rendered");
        Ok(first)
    }
}

/// Renders the chart into `dir` (files named after `tag`) with extra `render` arguments
/// (`--values FILE`, `--set-file KEY=PATH`, absolute paths).
pub fn render(dir: &Path, tag: &str, extra: &[String]) -> Result<Rendered> {
    let main = dir.join(format!("{tag}.yaml"));
    let monitoring = dir.join(format!("{tag}-monitoring.yaml"));
    let json = dir.join(format!("{tag}.json"));
    let chart = chart_dir();
    let mut args =
        vec!["render", path_str(&chart)?, "--out", path_str(&main)?, "--monitoring-out", path_str(&monitoring)?];
    args.extend(["--json-out", path_str(&json)?]);
    args.extend(extra.iter().map(String::as_str));
    deploy_check(&args)?;
    let objects = serde_json::from_str(&std::fs::read_to_string(&json)?).context("parse rendered objects")?;
    Ok(Rendered { main, monitoring, objects })
}

/// A path as UTF-8.
pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("non-UTF-8 path {}", p.display()))
}

pub use crate::sys::Scratch;

/// The dfdwatch_* metric names in `text`.
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("dfdwatch_") {
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}
