//! A strict YAML reader: builds a positioned tree, rejects duplicate keys, anchors, aliases and
//! tags, and bounds nesting depth and node count (the input is untrusted).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::{Finding, Loc};

/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;
/// Most YAML nodes (scalars, sequences, mappings) accepted in one file.
pub const MAX_NODES: usize = 500_000;

/// A YAML value with the place it starts at.
#[derive(Clone, Debug)]
pub struct Yaml {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub loc: Loc,
}

/// The shape of a YAML value.
#[derive(Clone, Debug)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// Any scalar; `plain` is false when it was quoted or a block scalar.
    Scalar {
        /// The text.
        text: String,
        /// Whether it was written without quotes (then `true`, `42` are typed values).
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Yaml>),
    /// A mapping with scalar keys, in file order, without duplicates.
    Map(Vec<(Key, Yaml)>),
}

/// A mapping key.
#[derive(Clone, Debug)]
pub struct Key {
    /// The key text.
    pub text: String,
    /// Where the key is.
    pub loc: Loc,
}

impl Yaml {
    /// A short word for the kind of value, for messages ("a mapping", "a list", ...).
    pub fn kind_word(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

enum Frame {
    Seq(Vec<Yaml>, Loc),
    /// Entries, the key waiting for its value, where the mapping starts, and the keys seen
    /// (text to position) so duplicate detection stays linear in the number of keys.
    Map(Vec<(Key, Yaml)>, Option<Key>, Loc, HashMap<String, (u32, u32)>),
}

fn loc_of(file: &Arc<Path>, span: &Span) -> Loc {
    Loc::new(file, span.start.line(), span.start.col() + 1)
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Parses every document in `src`. Problems go to `findings`; documents that could not be read
/// completely are dropped (the syntax error says why).
pub fn parse(src: &str, file: &Arc<Path>, findings: &mut Vec<Finding>) -> Vec<Yaml> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut nodes = 0usize;
    let mut doc_ok = true;
    for item in Parser::new_from_str(src) {
        let (event, span) = match item {
            Ok(x) => x,
            Err(e) => {
                let m = e.marker();
                findings.push(Finding::new(
                    "P001",
                    Some(&Loc::new(file, m.line(), m.col() + 1)),
                    format!("YAML syntax error: {}; fix the indentation, quoting or brackets here", e.info()),
                ));
                return docs;
            }
        };
        let loc = loc_of(file, &span);
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                stack.clear();
                doc_ok = true;
                continue;
            }
            Event::DocumentEnd => continue,
            Event::Alias(_) => {
                findings.push(Finding::new(
                    "P006",
                    Some(&loc),
                    "aliases (*name) are not allowed in an approved DFD; write the value out so reviewers see it in the diff",
                ));
                doc_ok = false;
                Yaml { value: Value::Null, loc }
            }
            Event::Scalar(text, style, anchor, tag) => {
                check_anchor_tag(anchor, tag.is_some(), &loc, findings, &mut doc_ok);
                let plain = style == ScalarStyle::Plain;
                let value = if plain && is_null(&text) {
                    Value::Null
                } else {
                    Value::Scalar { text: text.into_owned(), plain }
                };
                Yaml { value, loc }
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                check_anchor_tag(anchor, tag.is_some(), &loc, findings, &mut doc_ok);
                if stack.len() >= MAX_DEPTH {
                    findings.push(Finding::new(
                        "P007",
                        Some(&loc),
                        format!("nesting deeper than {MAX_DEPTH} levels; flatten the structure"),
                    ));
                    return docs;
                }
                let is_seq = matches!(event, Event::SequenceStart(..));
                stack.push(if is_seq {
                    Frame::Seq(Vec::new(), loc)
                } else {
                    Frame::Map(Vec::new(), None, loc, HashMap::new())
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, start)) => Yaml { value: Value::Seq(items), loc: start },
                _ => continue,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(entries, _, start, _)) => Yaml { value: Value::Map(entries), loc: start },
                _ => continue,
            },
        };
        nodes += 1;
        if nodes > MAX_NODES {
            findings.push(Finding::new(
                "P007",
                Some(&node.loc),
                format!("more than {MAX_NODES} YAML values in one file; split the DFD into several files"),
            ));
            return docs;
        }
        match stack.last_mut() {
            None => {
                if doc_ok {
                    docs.push(node);
                }
            }
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, pending, _, seen)) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let text = match node.value {
                        Value::Scalar { text, .. } => text,
                        Value::Null => String::new(),
                        Value::Seq(_) | Value::Map(_) => {
                            findings.push(Finding::new(
                                "P004",
                                Some(&node.loc),
                                "a mapping key must be a plain string, not a list or mapping",
                            ));
                            doc_ok = false;
                            String::new()
                        }
                    };
                    if let Some((line, col)) = seen.get(&text) {
                        findings.push(Finding::new(
                            "P002",
                            Some(&node.loc),
                            format!("duplicate key `{text}` (first at line {line}:{col}); keep one of them"),
                        ));
                        doc_ok = false;
                    } else {
                        seen.insert(text.clone(), (node.loc.line, node.loc.col));
                    }
                    *pending = Some(Key { text, loc: node.loc });
                }
            },
        }
    }
    docs
}

fn check_anchor_tag(anchor: usize, tagged: bool, loc: &Loc, findings: &mut Vec<Finding>, ok: &mut bool) {
    if anchor != 0 {
        findings.push(Finding::new(
            "P006",
            Some(loc),
            "anchors (&name) are not allowed in an approved DFD; write the value out where it is used",
        ));
        *ok = false;
    }
    if tagged {
        findings.push(Finding::new(
            "P006",
            Some(loc),
            "YAML tags (!tag) are not allowed in an approved DFD; remove the tag",
        ));
        *ok = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str) -> (Vec<Yaml>, Vec<Finding>) {
        let file: Arc<Path> = Arc::from(Path::new("t.yaml"));
        let mut f = Vec::new();
        let d = parse(src, &file, &mut f);
        (d, f)
    }

    #[test]
    fn duplicate_key_has_position() {
        let (docs, f) = run("a: 1\nb:\n  c: 2\n  c: 3\n");
        assert!(docs.is_empty());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "P002");
        let loc = f[0].loc.as_ref().unwrap();
        assert_eq!((loc.line, loc.col), (4, 3));
    }

    #[test]
    fn anchors_and_aliases_rejected() {
        let (_, f) = run("a: &x 1\nb: *x\n");
        assert_eq!(f.iter().filter(|f| f.rule == "P006").count(), 2);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let src = "[".repeat(10_000);
        let (_, f) = run(&src);
        assert!(f.iter().any(|f| f.rule == "P007" || f.rule == "P001"));
    }

    #[test]
    fn syntax_error_is_reported() {
        let (_, f) = run("a: [1, 2\nb: 3\n");
        assert_eq!(f[0].rule, "P001");
    }
}
