//! Renders DFDs whose display names are random printable text and checks that Graphviz and
//! mermaid's parser accept every drawing (needs graphviz and `npm ci --prefix tools/mermaid-check`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use dfdwatch_dfd::date::Date;
use dfdwatch_dfd::lint::lint;
use dfdwatch_dfd::load::load_str;
use dfdwatch_dfd::render::{RenderFormat, render};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn dfd_with_names(names: &[String]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut s = String::from(
        "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata: {name: fuzz}\nspec:\n",
    );
    s.push_str(&format!("  tiers: [{{id: T1, name: {}, level: 1}}, {{id: T2, level: 2}}]\n", q(&names[0])));
    s.push_str(&format!(
        "  zones:\n    - {{id: a, name: {}, tier: T1}}\n    - {{id: b, name: {}, tier: T2, parent: a}}\n",
        q(&names[1]),
        q(&names[2])
    ));
    s.push_str("  nodes:\n");
    for (i, n) in names.iter().enumerate().skip(3) {
        let zone = if i % 2 == 0 { "a" } else { "b" };
        s.push_str(&format!(
            "    - {{id: n{i}, name: {}, kind: process, zone: {zone}, match: {{hosts: [h{i}]}}}}\n",
            q(n)
        ));
    }
    s.push_str("  flows:\n");
    let last = names.len().saturating_sub(1);
    for (i, name) in names.iter().enumerate().take(last).skip(3) {
        s.push_str(&format!(
            "    - {{id: f{i}, from: n{i}, to: n{}, ports: [{{port: 80}}], appProtocol: {}, encryption: {{required: none}}}}\n",
            i + 1,
            q(name)
        ));
    }
    s
}

#[test]
fn random_names_render_to_valid_dot_and_mermaid() {
    let tool = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/mermaid-check");
    assert!(
        tool.join("node_modules/mermaid").is_dir(),
        "tools/mermaid-check/node_modules is missing: run `npm ci --prefix tools/mermaid-check` (cargo xtask setup does)"
    );
    let dir = std::env::temp_dir().join(format!("dfdwatch-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut runner = TestRunner::new(Config { cases: 24, ..Config::default() });
    let names = prop::collection::vec("[ -~\u{a0}-\u{17f}\u{4e00}-\u{4e10}]{1,24}", 8..12);
    let mmd_files = std::cell::RefCell::new(Vec::new());
    let result = runner.run(&names, |names| {
        let (dfd, findings) = load_str("fuzz.yaml", &dfd_with_names(&names));
        prop_assert!(findings.is_empty(), "{findings:#?}");
        let lints = lint(&dfd, Date { year: 2026, month: 1, day: 1 });
        let dot = render(&dfd, &lints, RenderFormat::Dot);
        let mut child = Command::new("/usr/bin/dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TestCaseError::fail(format!("cannot run /usr/bin/dot (install graphviz): {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(dot.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(out.status.success(), "dot rejected:\n{}\n{dot}", String::from_utf8_lossy(&out.stderr));
        let path = dir.join(format!("case{}.mmd", mmd_files.borrow().len()));
        let _ = std::fs::write(&path, render(&dfd, &lints, RenderFormat::Mermaid));
        mmd_files.borrow_mut().push(path);
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(mmd_files.borrow().len(), 24);
    let out = Command::new("node").arg(tool.join("check.mjs")).args(mmd_files.borrow().iter()).output();
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(o) => assert!(o.status.success(), "mermaid rejected a drawing: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("cannot run node: {e}"),
    }
}
