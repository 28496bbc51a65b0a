//! Typed reading of YAML values with error accumulation: each helper reports a precise,
//! fix-oriented finding and returns `None` instead of stopping at the first problem.

use crate::diag::{Finding, Loc};
use crate::yaml::{Key, Value, Yaml};

/// Unknown fields reported one by one in one mapping; the rest are counted in one finding.
pub const MAX_UNKNOWN_REPORTED: usize = 20;

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// The findings being collected while decoding.
pub struct Cx<'f> {
    /// Where problems go.
    pub findings: &'f mut Vec<Finding>,
}

impl Cx<'_> {
    /// Records a finding of `rule` at `loc`.
    pub fn report(&mut self, rule: &'static str, loc: &Loc, message: impl Into<String>) {
        self.findings.push(Finding::new(rule, Some(loc), message));
    }
}

/// A YAML mapping being read field by field; fields never read are reported as unknown.
pub struct Obj<'y> {
    entries: &'y [(Key, Yaml)],
    used: Vec<bool>,
    known: Vec<&'static str>,
    /// Where the mapping starts.
    pub loc: &'y Loc,
    what: &'static str,
}

impl<'y> Obj<'y> {
    /// Reads `y` as a mapping describing a `what` (e.g. "flow"); reports and returns `None` otherwise.
    pub fn new(cx: &mut Cx<'_>, y: &'y Yaml, what: &'static str) -> Option<Obj<'y>> {
        match &y.value {
            Value::Map(entries) => {
                Some(Obj { entries, used: vec![false; entries.len()], known: Vec::new(), loc: &y.loc, what })
            }
            _ => {
                cx.report(
                    "P004",
                    &y.loc,
                    format!("{what} must be a mapping (`key: value` lines), not {}", y.kind_word()),
                );
                None
            }
        }
    }

    /// The value of `key`, if present and not null.
    pub fn get(&mut self, key: &'static str) -> Option<&'y Yaml> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let i = self.entries.iter().position(|(k, _)| k.text == key)?;
        if let Some(u) = self.used.get_mut(i) {
            *u = true;
        }
        let v = &self.entries.get(i)?.1;
        if matches!(v.value, Value::Null) { None } else { Some(v) }
    }

    /// The value of a required `key`; reports it missing with an example (`hint`).
    pub fn require(&mut self, cx: &mut Cx<'_>, key: &'static str, hint: &str) -> Option<&'y Yaml> {
        let v = self.get(key);
        if v.is_none() {
            cx.report(
                "P004",
                self.loc,
                format!("{} is missing required field `{key}`; add `{key}: {hint}`", self.what),
            );
        }
        v
    }

    /// Reports every field that was never asked for, suggesting the closest known name.
    pub fn finish(self, cx: &mut Cx<'_>) {
        let unknown = self.used.iter().filter(|u| !**u).count();
        for (n, ((key, _), _)) in self.entries.iter().zip(&self.used).filter(|(_, u)| !**u).enumerate() {
            if n == MAX_UNKNOWN_REPORTED {
                cx.report(
                    "P003",
                    &key.loc,
                    format!("{} more unknown fields in {}; is this the right place for them?", unknown - n, self.what),
                );
                break;
            }
            let hint = match closest(&key.text, &self.known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known fields: {}", self.known.join(", ")),
            };
            cx.report("P003", &key.loc, format!("unknown field `{}` in {}; {hint}", key.text, self.what));
        }
    }
}

fn norm(s: &str) -> String {
    s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.last().copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The known name closest to `got` (same letters ignoring case and `_`/`-`, or within 2 edits).
pub fn closest<'k>(got: &str, known: &[&'k str]) -> Option<&'k str> {
    if got.len() > 64 {
        return None;
    }
    let g = norm(got);
    known
        .iter()
        .map(|k| (if norm(k) == g { 0 } else { edit_distance(&g, &norm(k)) }, *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// A scalar as text (quoted or plain).
pub fn string(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Option<String> {
    match &y.value {
        Value::Scalar { text, .. } => Some(text.clone()),
        _ => {
            cx.report("P004", &y.loc, format!("`{field}` must be a string, not {}", y.kind_word()));
            None
        }
    }
}

/// A plain integer.
pub fn int(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Option<i64> {
    if let Value::Scalar { text, plain: true } = &y.value
        && let Ok(n) = text.parse::<i64>()
    {
        return Some(n);
    }
    cx.report("P004", &y.loc, format!("`{field}` must be a whole number without quotes, e.g. `{field}: 2`"));
    None
}

/// A plain `true` or `false`.
pub fn boolean(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Option<bool> {
    match &y.value {
        Value::Scalar { text, plain: true } if text == "true" => Some(true),
        Value::Scalar { text, plain: true } if text == "false" => Some(false),
        _ => {
            cx.report("P004", &y.loc, format!("`{field}` must be `true` or `false` (unquoted)"));
            None
        }
    }
}

/// The items of a list.
pub fn list<'y>(cx: &mut Cx<'_>, y: &'y Yaml, field: &str) -> &'y [Yaml] {
    match &y.value {
        Value::Seq(items) => items,
        _ => {
            cx.report(
                "P004",
                &y.loc,
                format!("`{field}` must be a list (`- item` lines or `[a, b]`), not {}", y.kind_word()),
            );
            &[]
        }
    }
}

/// A list of strings; bad items are reported and skipped.
pub fn strings(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Vec<String> {
    list(cx, y, field).iter().filter_map(|i| string(cx, i, field)).collect()
}

/// A mapping of strings to strings (labels, params).
pub fn string_map(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    match &y.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                if let Some(s) = string(cx, v, &k.text) {
                    out.insert(k.text.clone(), s);
                }
            }
        }
        _ => {
            cx.report("P004", &y.loc, format!("`{field}` must be a mapping of names to strings, not {}", y.kind_word()))
        }
    }
    out
}

/// One of a closed set of spellings.
pub fn one_of<T: Copy>(cx: &mut Cx<'_>, y: &Yaml, field: &str, table: &[(&str, T)]) -> Option<T> {
    let s = string(cx, y, field)?;
    if let Some((_, v)) = table.iter().find(|(name, _)| *name == s) {
        return Some(*v);
    }
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    let hint = closest(&s, &names).map(|c| format!("did you mean `{c}`? ")).unwrap_or_default();
    cx.report("P004", &y.loc, format!("`{field}: {s}` is not allowed; {hint}use one of: {}", names.join(", ")));
    None
}

/// An id: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most 128 characters.
pub fn id(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Option<String> {
    let s = string(cx, y, field)?;
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Some(s)
    } else {
        cx.report(
            "P004",
            &y.loc,
            format!("`{field}` must be an id of letters, digits, `.`, `_` or `-` (starting with a letter or digit, at most {MAX_ID_LEN} characters); got {s:?}"),
        );
        None
    }
}

/// A reference to another item's id.
pub fn reference(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Option<crate::model::Ref> {
    id(cx, y, field).map(|id| crate::model::Ref { id, loc: y.loc.clone() })
}

/// A list of references.
pub fn references(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Vec<crate::model::Ref> {
    list(cx, y, field).iter().filter_map(|i| reference(cx, i, field)).collect()
}
