//! Reads a `match:` selector, checking CIDRs and glob patterns as it goes.

use ipnet::IpNet;

use super::fields::{Cx, Obj, list, string, string_map, strings};
use crate::selector::{K8sSelector, LabelExpression, LabelOperator, MAX_PATTERN_LEN, Selector, compile_glob, is_glob};
use crate::yaml::Yaml;

/// Deepest `anyOf` nesting accepted.
pub const MAX_ANY_OF_DEPTH: usize = 4;

/// Reads a selector; `None` when it is not a mapping.
pub fn selector(cx: &mut Cx<'_>, y: &Yaml, depth: usize) -> Option<Selector> {
    let mut o = Obj::new(cx, y, "selector (`match`)")?;
    let mut s = Selector { loc: Some(y.loc.clone()), ..Selector::default() };
    if let Some(v) = o.get("k8s") {
        s.k8s = k8s(cx, v);
    }
    for (field, target) in [
        ("spiffe", &mut s.spiffe),
        ("images", &mut s.images),
        ("executables", &mut s.executables),
        ("cgroupPaths", &mut s.cgroup_paths),
        ("systemdUnits", &mut s.systemd_units),
        ("hosts", &mut s.hosts),
    ] {
        if let Some(v) = o.get(field) {
            *target = patterns(cx, v, field);
        }
    }
    if let Some(v) = o.get("fqdns") {
        cx.report(
            "P004",
            &v.loc,
            "`fqdns` is not supported: dfdwatch sees no DNS answers, so such a node could never match; bind it by \
             `cidrs`, or name its addresses in the daemon's identity file and use `hosts`",
        );
    }
    if let Some(v) = o.get("cidrs") {
        s.cidrs = cidrs(cx, v, "cidrs");
    }
    if let Some(v) = o.get("exceptCidrs") {
        s.except_cidrs = cidrs(cx, v, "exceptCidrs");
    }
    if let Some(v) = o.get("anyOf") {
        if depth >= MAX_ANY_OF_DEPTH {
            cx.report(
                "P007",
                &v.loc,
                format!("`anyOf` nested more than {MAX_ANY_OF_DEPTH} deep; flatten the alternatives"),
            );
        } else {
            s.any_of = list(cx, v, "anyOf").iter().filter_map(|i| selector(cx, i, depth + 1)).collect();
        }
    }
    for (field, absolute) in [("executables", &s.executables), ("cgroupPaths", &s.cgroup_paths)] {
        for p in absolute {
            if !p.starts_with('/') && !p.starts_with('*') {
                cx.report("P004", &y.loc, format!("`{field}` entry {p:?} must be an absolute path starting with `/`"));
            }
        }
    }
    o.finish(cx);
    Some(s)
}

fn patterns(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Vec<String> {
    let items = list(cx, y, field);
    let mut out = Vec::new();
    for item in items {
        let Some(p) = string(cx, item, field) else {
            continue;
        };
        if p.is_empty() {
            cx.report("P004", &item.loc, format!("`{field}` entries must not be empty"));
        } else if p.len() > MAX_PATTERN_LEN {
            cx.report(
                "P007",
                &item.loc,
                format!("`{field}` entry is {} bytes long; the limit is {MAX_PATTERN_LEN}", p.len()),
            );
        } else if is_glob(&p) && compile_glob(&p).is_none() {
            cx.report(
                "P004",
                &item.loc,
                format!("`{field}` entry {p:?} is not a valid glob; close every `[` and escape literal `*` as `\\*`"),
            );
        } else {
            out.push(p);
        }
    }
    out
}

fn cidrs(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for item in list(cx, y, field) {
        let Some(s) = string(cx, item, field) else {
            continue;
        };
        match s.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => out.push(net),
            Ok(net) => cx.report(
                "P004",
                &item.loc,
                format!("`{field}` entry {s} has host bits set; write the network address {}", net.trunc()),
            ),
            Err(_) => match s.parse::<std::net::IpAddr>() {
                Ok(ip) => out.push(IpNet::from(ip)),
                Err(_) => cx.report(
                    "P004",
                    &item.loc,
                    format!("`{field}` entry {s:?} is not a CIDR; write it like 10.0.0.0/8 or 2001:db8::/32"),
                ),
            },
        }
    }
    out
}

fn k8s(cx: &mut Cx<'_>, y: &Yaml) -> Option<K8sSelector> {
    let mut o = Obj::new(cx, y, "`match.k8s`")?;
    let mut k = K8sSelector::default();
    if let Some(v) = o.get("namespace") {
        k.namespaces.extend(string(cx, v, "namespace"));
    }
    if let Some(v) = o.get("namespaces") {
        k.namespaces.extend(strings(cx, v, "namespaces"));
    }
    if let Some(v) = o.get("namespaceLabels") {
        k.namespace_labels = string_map(cx, v, "namespaceLabels");
    }
    if let Some(v) = o.get("labels") {
        k.labels = string_map(cx, v, "labels");
    }
    if let Some(v) = o.get("labelExpressions") {
        for item in list(cx, v, "labelExpressions") {
            k.label_expressions.extend(label_expression(cx, item));
        }
    }
    if let Some(v) = o.get("serviceAccount") {
        k.service_accounts.extend(string(cx, v, "serviceAccount"));
    }
    if let Some(v) = o.get("serviceAccounts") {
        k.service_accounts.extend(strings(cx, v, "serviceAccounts"));
    }
    o.finish(cx);
    Some(k)
}

fn label_expression(cx: &mut Cx<'_>, y: &Yaml) -> Option<LabelExpression> {
    let mut o = Obj::new(cx, y, "label expression")?;
    let key = o.require(cx, "key", "app").and_then(|v| string(cx, v, "key"));
    let operator =
        o.require(cx, "operator", "In").and_then(|v| super::fields::one_of(cx, v, "operator", LabelOperator::ALL));
    let values = o.get("values").map(|v| strings(cx, v, "values")).unwrap_or_default();
    o.finish(cx);
    let (key, operator) = (key?, operator?);
    let needs_values = matches!(operator, LabelOperator::In | LabelOperator::NotIn);
    if needs_values == values.is_empty() {
        let msg = if needs_values {
            "`In` and `NotIn` need a non-empty `values` list"
        } else {
            "`Exists` and `DoesNotExist` take no `values`; remove them"
        };
        cx.report("P004", &y.loc, msg);
        return None;
    }
    Some(LabelExpression { key, operator, values })
}
