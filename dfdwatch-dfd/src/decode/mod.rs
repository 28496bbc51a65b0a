//! Turns positioned YAML documents into the [`crate::model::Dfd`], reporting every problem at once.

mod fields;
mod items;
mod selector;

use crate::diag::Finding;
use crate::model::{API_VERSION, Dfd, Document, KIND, Metadata};
use crate::yaml::Yaml;
use fields::{Cx, Obj, string, string_map, strings};

pub use fields::closest;

/// Decodes one YAML document into `dfd` (merging with what earlier documents declared).
/// Problems go to `findings`; items with problems are left out.
pub fn document(y: &Yaml, dfd: &mut Dfd, findings: &mut Vec<Finding>) {
    let mut cx = Cx { findings };
    let Some(mut o) = Obj::new(&mut cx, y, "an ApprovedDataFlowDiagram document") else {
        return;
    };
    let mut kind_ok = true;
    match o.require(&mut cx, "apiVersion", API_VERSION).and_then(|v| string(&mut cx, v, "apiVersion")) {
        Some(v) if v == API_VERSION => {}
        Some(v) => {
            kind_ok = false;
            if let Some(loc) = o.get("apiVersion").map(|v| v.loc.clone()) {
                cx.report(
                    "P005",
                    &loc,
                    format!("unsupported apiVersion `{v}`; this dfdwatch reads `apiVersion: {API_VERSION}`"),
                );
            }
        }
        None => kind_ok = false,
    }
    match o.require(&mut cx, "kind", KIND).and_then(|v| string(&mut cx, v, "kind")) {
        Some(v) if v == KIND => {}
        Some(v) => {
            kind_ok = false;
            if let Some(loc) = o.get("kind").map(|v| v.loc.clone()) {
                cx.report("P005", &loc, format!("`kind: {v}` is not read by dfdwatch; use `kind: {KIND}`"));
            }
        }
        None => kind_ok = false,
    }
    let metadata = o.require(&mut cx, "metadata", "{name: my-app}").and_then(|v| metadata(&mut cx, v));
    let spec = o.require(&mut cx, "spec", "{tiers: [...], zones: [...], nodes: [...], flows: [...]}");
    o.finish(&mut cx);
    if !kind_ok {
        return;
    }
    dfd.documents.push(Document { loc: y.loc.clone(), metadata: metadata.unwrap_or_default() });
    if let Some(spec) = spec {
        items::spec(&mut cx, spec, dfd);
    }
}

fn metadata(cx: &mut Cx<'_>, y: &Yaml) -> Option<Metadata> {
    let mut o = Obj::new(cx, y, "`metadata`")?;
    let mut m = Metadata::default();
    if let Some(v) = o.require(cx, "name", "my-app").and_then(|v| fields::id(cx, v, "metadata.name")) {
        m.name = v;
    }
    m.owner = o.get("owner").and_then(|v| string(cx, v, "owner"));
    if let Some(v) = o.get("approvedBy") {
        m.approved_by = strings(cx, v, "approvedBy");
    }
    if let Some(v) = o.get("approvedAt") {
        m.approved_at = items::date(cx, v, "approvedAt");
    }
    m.revision = o.get("revision").and_then(|v| string(cx, v, "revision"));
    if let Some(v) = o.get("labels") {
        m.labels = string_map(cx, v, "labels");
    }
    m.description = o.get("description").and_then(|v| string(cx, v, "description"));
    o.finish(cx);
    Some(m)
}
