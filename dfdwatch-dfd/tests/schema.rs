//! `approved-dfd/schema.json` (the JSON Schema for editors) must agree with the decoder: every
//! shipped DFD and fixture validates against it, and fields the decoder rejects are rejected.
//! A small validator for the subset of JSON Schema that the file uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dfdwatch_dfd::yaml::{Value as Y, Yaml, parse};
use serde_json::{Map, Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(root().join("approved-dfd/schema.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// YAML 1.2 core-schema typing of plain scalars, as the decoder reads them.
fn to_json(y: &Yaml) -> Value {
    match &y.value {
        Y::Null => Value::Null,
        Y::Scalar { text, plain } => {
            if *plain {
                if let Ok(n) = text.parse::<i64>() {
                    return json!(n);
                }
                if text == "true" || text == "false" {
                    return json!(text == "true");
                }
            }
            json!(text)
        }
        Y::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Y::Map(entries) => {
            Value::Object(entries.iter().map(|(k, v)| (k.text.clone(), to_json(v))).collect::<Map<_, _>>())
        }
    }
}

fn resolve<'s>(root: &'s Value, s: &'s Value) -> &'s Value {
    match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => resolve(root, &root["$defs"][name]),
        None => s,
    }
}

fn validate(root: &Value, s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let s = resolve(root, s);
    if let Some(c) = s.get("const").filter(|c| *c != v) {
        errs.push(format!("{path}: {v} is not {c}"));
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array).filter(|e| !e.contains(v)) {
        errs.push(format!("{path}: {v} not in {e:?}"));
    }
    let ok = match s.get("type").and_then(Value::as_str) {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        errs.push(format!("{path}: {v} is not {}", s["type"]));
        return;
    }
    if let Some(obj) = v.as_object() {
        for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if r.as_str().is_some_and(|r| !obj.contains_key(r)) {
                errs.push(format!("{path}: missing {r}"));
            }
        }
        for (k, val) in obj {
            match s.get("properties").and_then(|p| p.get(k)) {
                Some(ps) => validate(root, ps, val, &format!("{path}.{k}"), errs),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{path}: unknown field {k}")),
                    Some(ap @ Value::Object(_)) => validate(root, ap, val, &format!("{path}.{k}"), errs),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, val) in arr.iter().enumerate() {
            validate(root, items, val, &format!("{path}[{i}]"), errs);
        }
    }
}

fn check_file(path: &Path) -> Vec<String> {
    let src = std::fs::read_to_string(path).unwrap_or_default();
    let file: Arc<Path> = Arc::from(path);
    let mut findings = Vec::new();
    let docs = parse(&src, &file, &mut findings);
    assert!(findings.is_empty() && !docs.is_empty(), "{}: {findings:?}", path.display());
    let root = schema();
    let mut errs = Vec::new();
    for d in &docs {
        validate(&root, &root, &to_json(d), "$", &mut errs);
    }
    errs
}

#[test]
fn schema_is_draft_2020_12() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["properties"]["apiVersion"]["const"], dfdwatch_dfd::model::API_VERSION);
}

#[test]
fn shipped_dfds_and_fixtures_validate() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("approved-dfd"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(!files.is_empty());
    files.push(root().join("dfdwatch-dfd/tests/fixtures/violations.yaml"));
    files.push(root().join("dfdwatch-dfd/tests/fixtures/dangling.yaml"));
    for f in files {
        let errs = check_file(&f);
        assert!(errs.is_empty(), "{}: {errs:#?}", f.display());
    }
}

#[test]
fn schema_rejects_what_the_decoder_rejects() {
    let errs = check_file(&root().join("dfdwatch-dfd/tests/fixtures/broken.yaml"));
    assert!(errs.iter().any(|e| e.contains("unknown field ownr")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("$.spec.tiers[0].level")), "{errs:?}");
}
