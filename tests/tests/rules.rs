//! The alerting rules in deploy/prometheus: Prometheus's own promtool accepts them and their unit
//! tests pass, and every dfdwatch metric they query is one the daemon defines.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use tests::{chart::metric_names, sys};

#[test]
fn rules_check_and_unit_tests_pass_with_promtool() -> Result<()> {
    let dir = sys::workspace_root().join("deploy/prometheus");
    for args in [vec!["check", "rules", "dfdwatch-rules.yaml"], vec!["test", "rules", "dfdwatch-rules.test.yaml"]] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .context("run promtool (Debian package prometheus)")?;
        ensure!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn rules_query_only_metrics_the_daemon_exports() -> Result<()> {
    let rules = std::fs::read_to_string(sys::workspace_root().join("deploy/prometheus/dfdwatch-rules.yaml"))?;
    let defined = sys::metric_definitions()?;
    let defined = metric_names(&defined);
    let used: BTreeSet<String> = metric_names(&rules)
        .into_iter()
        .filter(|n| n.ends_with("_total") || n.ends_with("_info") || n.ends_with("_seconds"))
        .collect();
    ensure!(!used.is_empty(), "no dfdwatch metric found in the rules");
    for name in &used {
        ensure!(defined.contains(name), "the rules query {name}, which monitor-user/src/telemetry/ does not define");
    }
    Ok(())
}
