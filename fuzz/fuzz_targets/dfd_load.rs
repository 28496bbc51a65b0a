//! A DFD file, as an attacker or a careless operator could write it: parsed, linted, compiled,
//! drawn, reported in every format and compared with itself, without a panic, a hang (libFuzzer's
//! -timeout) or unbounded memory (its -rss_limit_mb).
#![no_main]

use dfdwatch_dfd::diag::has_errors;
use dfdwatch_dfd::render::RenderFormat;
use dfdwatch_dfd::report::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (dfd, mut findings) = dfdwatch_dfd::load::load_str("fuzz.yaml", text);
    let lints = dfdwatch_dfd::lint::lint_undated(&dfd);
    for format in [Format::Text, Format::Json, Format::Sarif] {
        let mut out = Vec::new();
        let _ = dfdwatch_dfd::report::write(format, &findings, &mut out);
    }
    if has_errors(&findings) {
        return;
    }
    for format in [RenderFormat::Dot, RenderFormat::Mermaid] {
        let _ = dfdwatch_dfd::render::render(&dfd, &lints, format);
    }
    assert!(dfdwatch_dfd::diff::changes(&dfd, &dfd).is_empty(), "a DFD differs from itself");
    let _ = dfdwatch_dfd::diff::changes(&dfdwatch_dfd::model::Dfd::default(), &dfd);
    findings.extend(lints);
    if !has_errors(&findings) {
        let _ = dfdwatch_dfd::compile::Compiled::new(dfd);
    }
});
