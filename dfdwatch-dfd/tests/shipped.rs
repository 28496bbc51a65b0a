//! Every DFD shipped in `approved-dfd/` must check clean, and its drawings must match the golden files.

use std::path::PathBuf;

use dfdwatch_dfd::cli::{CheckArgs, RenderArgs, check, render};
use dfdwatch_dfd::render::RenderFormat;
use dfdwatch_dfd::report::Format;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../approved-dfd")
}

#[test]
fn shipped_dfd_is_clean() {
    let args = CheckArgs { paths: vec![shipped()], format: Format::Text, today: Some("2026-11-23".into()) };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = check(&args, &mut out, &mut err);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{out}{}", String::from_utf8_lossy(&err));
    assert!(out.starts_with("0 error(s), 0 warning(s), 0 info"), "shipped DFD has findings:\n{out}");
}

fn golden(format: RenderFormat, name: &str) {
    let args = RenderArgs { paths: vec![shipped()], format, output: None };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = render(&args, &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let got = String::from_utf8_lossy(&out).into_owned();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("DFD_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with DFD_BLESS=1 to create it)", path.display()));
    assert_eq!(got, want, "rendered output differs from {}; review and re-bless with DFD_BLESS=1", path.display());
}

#[test]
fn golden_dot() {
    golden(RenderFormat::Dot, "shop.dot");
}

#[test]
fn golden_mermaid() {
    golden(RenderFormat::Mermaid, "shop.mmd");
}
