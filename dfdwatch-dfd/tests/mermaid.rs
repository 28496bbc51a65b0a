//! Mermaid output must parse with mermaid's own parser, run headless under node by
//! `tools/mermaid-check/check.mjs`. Needs `npm ci --prefix tools/mermaid-check` (cargo xtask
//! setup runs it); without node_modules this test fails and says so, it does not skip.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use dfdwatch_dfd::cli::{RenderArgs, render};
use dfdwatch_dfd::render::RenderFormat;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require_node_modules() {
    let tool = root().join("tools/mermaid-check");
    assert!(
        tool.join("node_modules/mermaid").is_dir() && tool.join("node_modules/jsdom").is_dir(),
        "tools/mermaid-check/node_modules is missing: run `npm ci --prefix tools/mermaid-check` (cargo xtask setup does)"
    );
}

fn mermaid_accepts(src: &str) {
    require_node_modules();
    let tool = root().join("tools/mermaid-check");
    let mut child = match Command::new("node")
        .arg(tool.join("check.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run node (Node.js 20 or later is needed): {e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(src.as_bytes());
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("node failed: {e}"),
    };
    assert!(out.status.success(), "mermaid rejected the output: {}\n{src}", String::from_utf8_lossy(&out.stderr));
}

fn rendered(path: PathBuf) -> String {
    let args = RenderArgs { paths: vec![path], format: RenderFormat::Mermaid, output: None };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(render(&args, &mut out, &mut err), 0, "{}", String::from_utf8_lossy(&err));
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn mermaid_parses_shipped_and_awkward_dfds() {
    mermaid_accepts(&rendered(root().join("approved-dfd")));
    mermaid_accepts(&rendered(root().join("dfdwatch-dfd/tests/fixtures/violations.yaml")));
}

#[test]
fn the_checker_rejects_bad_mermaid() {
    require_node_modules();
    let tool = root().join("tools/mermaid-check/check.mjs");
    let bad = root().join("dfdwatch-dfd/tests/fixtures/bad.mmd");
    let st = Command::new("node").arg(tool).arg(bad).stderr(Stdio::null()).stdout(Stdio::null()).status();
    assert!(st.as_ref().is_ok_and(|s| s.code() == Some(1)), "check.mjs accepted invalid Mermaid: {st:?}");
}

#[test]
fn mermaid_parses_a_path_drawn_over_the_dfd() {
    use dfdwatch_dfd::render::{Overlay, OverlayEnd, OverlayHop, render_with_overlay};
    let loaded = dfdwatch_dfd::load::load_paths(&[root().join("approved-dfd/demo")]).expect("the demo DFD loads");
    let hop = |from: OverlayEnd, to: OverlayEnd, label: &str| OverlayHop { from, to, label: label.into() };
    let overlay = Overlay {
        hops: vec![
            hop(
                OverlayEnd::Node("front".into()),
                OverlayEnd::Node("postgres".into()),
                "1: 10:02:03 unapproved_crossing :5432",
            ),
            hop(
                OverlayEnd::Node("postgres".into()),
                OverlayEnd::Observed("198.51.100.7".into()),
                "2: 10:02:04 \"exfil\" <b> #9",
            ),
            hop(OverlayEnd::Node("no-such-node".into()), OverlayEnd::Node("front".into()), "3: a node the DFD lost"),
        ],
    };
    let text = render_with_overlay(&loaded.dfd, &[], RenderFormat::Mermaid, &overlay);
    assert!(text.contains("linkStyle") && text.contains("o_198_51_100_7"), "{text}");
    mermaid_accepts(&text);
}
