//! The `check` and `render` entry points: exit statuses, report formats, and that Graphviz
//! accepts the DOT output (needs `/usr/bin/dot`, Debian package `graphviz`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dfdwatch_dfd::cli::{CheckArgs, RenderArgs, check, render};
use dfdwatch_dfd::render::RenderFormat;
use dfdwatch_dfd::report::Format;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../approved-dfd")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn run_check(paths: Vec<PathBuf>, format: Format) -> (u8, String, String) {
    let args = CheckArgs { paths, format, today: Some("2026-11-23".into()) };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = check(&args, &mut out, &mut err);
    (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

fn run_render(paths: Vec<PathBuf>, format: RenderFormat) -> (u8, String, String) {
    let args = RenderArgs { paths, format, output: None };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = render(&args, &mut out, &mut err);
    (code, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

#[test]
fn exit_statuses() {
    assert_eq!(run_check(vec![shipped()], Format::Text).0, 0);
    let (code, _, err) = run_check(vec![PathBuf::from("/no/such/dfd")], Format::Text);
    assert_eq!(code, 64);
    assert!(err.contains("/no/such/dfd: no such file or directory"), "{err}");
    let (code, out, _) = run_check(vec![fixtures().join("violations.yaml")], Format::Text);
    assert_eq!(code, 1, "{out}");
    let (code, out, _) = run_check(vec![fixtures().join("broken.yaml")], Format::Text);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().next().is_some_and(|l| l.contains("broken.yaml:3:")), "{out}");
    let args = CheckArgs { paths: vec![shipped()], format: Format::Text, today: Some("tomorrow".into()) };
    assert_eq!(check(&args, &mut Vec::new(), &mut Vec::new()), 64);
}

#[test]
fn json_and_sarif_reports() {
    let (_, out, _) = run_check(vec![fixtures().join("violations.yaml")], Format::Json);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert!(v["summary"]["errors"].as_u64().unwrap_or(0) >= 3, "{out}");
    assert!(
        v["findings"].as_array().is_some_and(|a| a.iter().any(|f| f["rule"] == "X001" && f["line"].is_u64())),
        "{out}"
    );
    let (_, out, _) = run_check(vec![fixtures().join("violations.yaml")], Format::Sarif);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "dfdwatch");
    let results = run["results"].as_array().cloned().unwrap_or_default();
    assert!(!results.is_empty());
    let x001 = run["tool"]["driver"]["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == "X001"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(x001["properties"]["tags"][0], "CAPITALS: Authentication & Session Management");
    for r in &results {
        let idx = r["ruleIndex"].as_u64().unwrap_or(u64::MAX) as usize;
        assert_eq!(run["tool"]["driver"]["rules"][idx]["id"], r["ruleId"], "{r}");
        assert!(r["locations"][0]["physicalLocation"]["region"]["startLine"].is_u64(), "{r}");
    }
}

#[test]
fn render_refuses_dangling_references() {
    let (code, out, err) = run_render(vec![fixtures().join("dangling.yaml")], RenderFormat::Dot);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("unknown nodes `redis`"), "{err}");
}

#[test]
fn render_writes_output_file() {
    let path = std::env::temp_dir().join(format!("dfdwatch-render-{}.mmd", std::process::id()));
    let args = RenderArgs { paths: vec![shipped()], format: RenderFormat::Mermaid, output: Some(path.clone()) };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(render(&args, &mut out, &mut err), 0);
    assert!(out.is_empty());
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    assert!(text.starts_with("flowchart LR\n"), "{text}");
}

fn graphviz_accepts(dot_src: &str) {
    let dot = Path::new("/usr/bin/dot");
    assert!(dot.exists(), "Graphviz is missing: install the Debian package `graphviz` (cargo xtask setup does)");
    let mut child = match Command::new(dot)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run /usr/bin/dot: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(dot_src.as_bytes());
    }
    let res = match child.wait_with_output() {
        Ok(r) => r,
        Err(e) => panic!("dot failed to run: {e}"),
    };
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success() && stderr.trim().is_empty(), "dot rejected the output: {stderr}\n{dot_src}");
    assert!(String::from_utf8_lossy(&res.stdout).contains("<svg"));
}

#[test]
fn graphviz_renders_shipped_and_awkward_dfds() {
    let (code, dot, err) = run_render(vec![shipped()], RenderFormat::Dot);
    assert_eq!(code, 0, "{err}");
    graphviz_accepts(&dot);
    let (code, dot, err) = run_render(vec![fixtures().join("violations.yaml")], RenderFormat::Dot);
    assert_eq!(code, 0, "{err}");
    assert!(dot.contains("style=dashed color=\"red\""), "{dot}");
    assert!(dot.contains("subgraph \"cluster_inner\""), "{dot}");
    graphviz_accepts(&dot);
}

#[test]
fn fragments_merge_and_findings_name_their_file() {
    let dir = std::env::temp_dir().join(format!("dfdwatch-frag-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let platform = std::fs::read_to_string(shipped().join("00-platform.yaml")).unwrap_or_default();
    let shop = std::fs::read_to_string(shipped().join("shop.yaml")).unwrap_or_default();
    let _ = std::fs::write(dir.join("a.yaml"), platform);
    let _ = std::fs::write(dir.join("b.yml"), shop.replace("zone: data", "zone: dta"));
    let _ = std::fs::write(dir.join("notes.txt"), "not a DFD");
    let (code, out, _) = run_check(vec![dir.clone()], Format::Text);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1);
    let s001: Vec<&str> = out.lines().filter(|l| l.contains("[S001]")).collect();
    assert_eq!(s001.len(), 2, "{out}");
    assert!(
        s001.iter().all(|l| l.contains("b.yml:") && l.contains("unknown zones `dta`; did you mean `data`?")),
        "{out}"
    );
}

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    Check(CheckArgs),
    Render(RenderArgs),
}

#[test]
fn args_wire_into_a_clap_binary() {
    use clap::{CommandFactory, Parser};
    Cli::command().debug_assert();
    let c = Cli::try_parse_from(["dfdwatch", "check", "approved-dfd", "x.yaml", "--format", "sarif"]);
    assert!(
        matches!(&c, Ok(Cli { cmd: Cmd::Check(a) }) if a.paths.len() == 2 && a.format == Format::Sarif && a.today.is_none()),
        "{c:?}"
    );
    let r = Cli::try_parse_from(["dfdwatch", "render", "approved-dfd", "--format", "mermaid", "-o", "x.mmd"]);
    assert!(
        matches!(&r, Ok(Cli { cmd: Cmd::Render(a) }) if a.format == RenderFormat::Mermaid && a.output.is_some()),
        "{r:?}"
    );
    assert!(Cli::try_parse_from(["dfdwatch", "check"]).is_err(), "a path is required");
    assert!(Cli::try_parse_from(["dfdwatch", "render", "p", "--format", "svg"]).is_err());
}

#[test]
fn a_glob_too_long_is_refused_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("dfdwatch-longglob-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let shop = std::fs::read_to_string(shipped().join("shop.yaml")).unwrap_or_default();
    // 94,000 `*` once made globset's regex outgrow its limit, and globset panics on that.
    let long = "*".repeat(94_000);
    let edited = shop.replacen(r#"images: ["docker.io/library/nginx@sha256:*"]"#, &format!("images: [\"{long}\"]"), 1);
    assert_ne!(edited, shop, "the fixture edit applies");
    let file = dir.join("shop.yaml");
    let _ = std::fs::write(&file, edited);
    let (code, out, _) = run_check(vec![shipped().join("00-platform.yaml"), file.clone()], Format::Text);
    let (render_code, _, render_err) = run_render(vec![file], RenderFormat::Dot);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("94000 bytes long; the limit is 1024") && out.contains("P007"), "{out}");
    assert_eq!(render_code, 1, "render refuses it too: {render_err}");
}

#[test]
fn a_fifo_or_device_is_refused_not_read() {
    let dir = std::env::temp_dir().join(format!("dfdwatch-fifo-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let fifo = dir.join("dfd.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let (fifo_code, _, fifo_err) = run_check(vec![fifo], Format::Text);
    let (zero_code, _, zero_err) = run_check(vec![PathBuf::from("/dev/zero")], Format::Text);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(made, "mkfifo (coreutils) made the FIFO");
    assert_eq!(fifo_code, 64, "{fifo_err}");
    assert!(fifo_err.contains("not a regular file or directory"), "{fifo_err}");
    assert_eq!(zero_code, 64, "{zero_err}");
}
