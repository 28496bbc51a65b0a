//! Decodes the `spec` lists: tiers, data classes, checkpoints, zones, nodes, flows and defaults.

use super::fields::{Cx, Obj, boolean, id, int, list, one_of, reference, references, string, string_map, strings};
use super::selector::selector;
use crate::date::Date;
use crate::model::{
    Approval, Checkpoint, CheckpointKind, DataClass, Defaults, Dfd, Encryption, EncryptionKind, Flow, Node, NodeKind,
    PlatformFlow, PortRange, Protocol, Tier, UnapprovedAction, UnmatchedAction, Zone,
};
use crate::yaml::Yaml;

/// Most items accepted in one `spec` list of one document.
pub const MAX_ITEMS: usize = 100_000;

/// Reads a `YYYY-MM-DD` date (quoted or not).
pub fn date(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Option<Date> {
    let s = string(cx, y, field)?;
    let d = Date::parse(&s);
    if d.is_none() {
        cx.report(
            "P004",
            &y.loc,
            format!("`{field}: {s}` is not a date; write a real day as YYYY-MM-DD, e.g. \"2027-06-30\""),
        );
    }
    d
}

/// Reads `spec` into `dfd`.
pub fn spec(cx: &mut Cx<'_>, y: &Yaml, dfd: &mut Dfd) {
    let Some(mut o) = Obj::new(cx, y, "`spec`") else {
        return;
    };
    if let Some(v) = o.get("tiers") {
        each(cx, v, "tiers", |cx, i| dfd.tiers.extend(tier(cx, i)));
    }
    if let Some(v) = o.get("dataClasses") {
        each(cx, v, "dataClasses", |cx, i| dfd.data_classes.extend(data_class(cx, i)));
    }
    if let Some(v) = o.get("checkpoints") {
        each(cx, v, "checkpoints", |cx, i| dfd.checkpoints.extend(checkpoint(cx, i)));
    }
    if let Some(v) = o.get("zones") {
        each(cx, v, "zones", |cx, i| dfd.zones.extend(zone(cx, i)));
    }
    if let Some(v) = o.get("nodes") {
        each(cx, v, "nodes", |cx, i| dfd.nodes.extend(node(cx, i)));
    }
    if let Some(v) = o.get("flows") {
        each(cx, v, "flows", |cx, i| dfd.flows.extend(flow(cx, i)));
    }
    if let Some(v) = o.get("defaults") {
        if let Some(prev) = &dfd.defaults.loc {
            cx.report("S002", &v.loc, format!("`defaults` is already set at {prev}; keep `defaults` in one file only"));
        } else if let Some(d) = defaults(cx, v) {
            dfd.defaults = d;
        }
    }
    o.finish(cx);
}

fn each(cx: &mut Cx<'_>, y: &Yaml, field: &str, mut f: impl FnMut(&mut Cx<'_>, &Yaml)) {
    let items = list(cx, y, field);
    if items.len() > MAX_ITEMS {
        cx.report("P007", &y.loc, format!("`{field}` has more than {MAX_ITEMS} items; split it across files"));
        return;
    }
    for i in items {
        f(cx, i);
    }
}

fn opt_string(cx: &mut Cx<'_>, o: &mut Obj<'_>, key: &'static str) -> Option<String> {
    o.get(key).and_then(|v| string(cx, v, key))
}

fn tier(cx: &mut Cx<'_>, y: &Yaml) -> Option<Tier> {
    let mut o = Obj::new(cx, y, "a tier")?;
    let tid = o.require(cx, "id", "T1").and_then(|v| id(cx, v, "id"));
    let name = opt_string(cx, &mut o, "name");
    let level = o.require(cx, "level", "1").and_then(|v| int(cx, v, "level"));
    let description = opt_string(cx, &mut o, "description");
    o.finish(cx);
    let tid = tid?;
    Some(Tier { name: name.unwrap_or_else(|| tid.clone()), id: tid, level: level?, description, loc: y.loc.clone() })
}

fn data_class(cx: &mut Cx<'_>, y: &Yaml) -> Option<DataClass> {
    let mut o = Obj::new(cx, y, "a data class")?;
    let did = o.require(cx, "id", "pii").and_then(|v| id(cx, v, "id"));
    let level = o.require(cx, "level", "3").and_then(|v| int(cx, v, "level"));
    let personal = o.get("personal").and_then(|v| boolean(cx, v, "personal")).unwrap_or(false);
    let aliases = o.get("aliases").map(|v| strings(cx, v, "aliases")).unwrap_or_default();
    let description = opt_string(cx, &mut o, "description");
    o.finish(cx);
    Some(DataClass { id: did?, level: level?, personal, aliases, description, loc: y.loc.clone() })
}

fn checkpoint(cx: &mut Cx<'_>, y: &Yaml) -> Option<Checkpoint> {
    let mut o = Obj::new(cx, y, "a checkpoint")?;
    let cid = o.require(cx, "id", "api-authn").and_then(|v| id(cx, v, "id"));
    let kind = o.require(cx, "kind", "authn").and_then(|v| one_of(cx, v, "kind", CheckpointKind::ALL));
    let enforced_by = o.get("enforcedBy").and_then(|v| reference(cx, v, "enforcedBy"));
    let mechanism = opt_string(cx, &mut o, "mechanism");
    let reference = opt_string(cx, &mut o, "ref");
    let params = o.get("params").map(|v| string_map(cx, v, "params")).unwrap_or_default();
    let description = opt_string(cx, &mut o, "description");
    o.finish(cx);
    Some(Checkpoint {
        id: cid?,
        kind: kind?,
        enforced_by,
        mechanism,
        reference,
        params,
        description,
        loc: y.loc.clone(),
    })
}

fn zone(cx: &mut Cx<'_>, y: &Yaml) -> Option<Zone> {
    let mut o = Obj::new(cx, y, "a zone")?;
    let zid = o.require(cx, "id", "app").and_then(|v| id(cx, v, "id"));
    let name = opt_string(cx, &mut o, "name");
    let tier = o.require(cx, "tier", "T2").and_then(|v| reference(cx, v, "tier"));
    let parent = o.get("parent").and_then(|v| reference(cx, v, "parent"));
    let external = o.get("external").and_then(|v| boolean(cx, v, "external")).unwrap_or(false);
    let sel = o.get("match").and_then(|v| selector(cx, v, 0));
    let max_data = o.get("maxData").and_then(|v| reference(cx, v, "maxData"));
    let description = opt_string(cx, &mut o, "description");
    o.finish(cx);
    let zid = zid?;
    Some(Zone {
        name: name.unwrap_or_else(|| zid.clone()),
        id: zid,
        tier: tier?,
        parent,
        external,
        selector: sel,
        max_data,
        description,
        loc: y.loc.clone(),
    })
}

fn node(cx: &mut Cx<'_>, y: &Yaml) -> Option<Node> {
    let mut o = Obj::new(cx, y, "a node")?;
    let nid = o.require(cx, "id", "api").and_then(|v| id(cx, v, "id"));
    let name = opt_string(cx, &mut o, "name");
    let kind = o.require(cx, "kind", "process").and_then(|v| one_of(cx, v, "kind", NodeKind::ALL));
    let zone = o.require(cx, "zone", "app").and_then(|v| reference(cx, v, "zone"));
    let sel = o.get("match").and_then(|v| selector(cx, v, 0));
    let max_data = o.get("maxData").and_then(|v| reference(cx, v, "maxData"));
    let owner = opt_string(cx, &mut o, "owner");
    let description = opt_string(cx, &mut o, "description");
    let acknowledge_catch_all = opt_string(cx, &mut o, "acknowledgeCatchAll");
    o.finish(cx);
    let nid = nid?;
    Some(Node {
        name: name.unwrap_or_else(|| nid.clone()),
        id: nid,
        kind: kind?,
        zone: zone?,
        selector: sel,
        max_data,
        owner,
        description,
        acknowledge_catch_all,
        loc: y.loc.clone(),
    })
}

const PROTOCOLS: &[(&str, Protocol)] = &[("TCP", Protocol::Tcp), ("UDP", Protocol::Udp), ("SCTP", Protocol::Sctp)];

fn port_number(cx: &mut Cx<'_>, y: &Yaml, field: &str) -> Option<u16> {
    let n = int(cx, y, field)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            cx.report("S005", &y.loc, format!("`{field}: {n}` is not a port; use a number from 1 to 65535"));
            None
        }
    }
}

fn port_range(cx: &mut Cx<'_>, y: &Yaml) -> Option<PortRange> {
    let mut o = Obj::new(cx, y, "a port entry")?;
    let port = o.require(cx, "port", "443").and_then(|v| port_number(cx, v, "port"));
    let end = o.get("endPort").map(|v| (port_number(cx, v, "endPort"), v.loc.clone()));
    let protocol = o.get("protocol").and_then(|v| one_of(cx, v, "protocol", PROTOCOLS)).unwrap_or(Protocol::Tcp);
    o.finish(cx);
    let port = port?;
    let end_port = match end {
        None => port,
        Some((None, _)) => return None,
        Some((Some(e), loc)) if e < port => {
            cx.report(
                "S005",
                &loc,
                format!("`endPort: {e}` is below `port: {port}`; endPort is the last port of the range"),
            );
            return None;
        }
        Some((Some(e), _)) => e,
    };
    Some(PortRange { port, end_port, protocol, loc: y.loc.clone() })
}

fn encryption(cx: &mut Cx<'_>, y: &Yaml) -> Option<Encryption> {
    let mut o = Obj::new(cx, y, "`encryption`")?;
    let required = o.require(cx, "required", "tls").and_then(|v| one_of(cx, v, "required", EncryptionKind::ALL));
    let min_tls = match o.get("minTLS") {
        Some(v) => match string(cx, v, "minTLS") {
            Some(s) if matches!(s.as_str(), "1.0" | "1.1" | "1.2" | "1.3") => Some(s),
            Some(s) => {
                cx.report(
                    "S005",
                    &v.loc,
                    format!("`minTLS: {s}` is not a TLS version; use \"1.2\" or \"1.3\" (quoted)"),
                );
                None
            }
            None => None,
        },
        None => None,
    };
    let verify = o.get("verify").map(|v| strings(cx, v, "verify")).unwrap_or_default();
    o.finish(cx);
    Some(Encryption { required: required?, min_tls, verify })
}

fn approval(cx: &mut Cx<'_>, y: &Yaml) -> Option<Approval> {
    let mut o = Obj::new(cx, y, "`approval`")?;
    let ticket = opt_string(cx, &mut o, "ticket");
    let owner = opt_string(cx, &mut o, "owner");
    let expires = o.get("expires").and_then(|v| date(cx, v, "expires"));
    o.finish(cx);
    Some(Approval { ticket, owner, expires, loc: y.loc.clone() })
}

fn flow(cx: &mut Cx<'_>, y: &Yaml) -> Option<Flow> {
    let mut o = Obj::new(cx, y, "a flow")?;
    let fid = o.require(cx, "id", "api-to-db").and_then(|v| id(cx, v, "id"));
    let from = o.require(cx, "from", "api").and_then(|v| reference(cx, v, "from"));
    let to = o.require(cx, "to", "db").and_then(|v| reference(cx, v, "to"));
    let ports = match o.require(cx, "ports", "[{port: 443, protocol: TCP}]") {
        Some(v) => {
            let items = list(cx, v, "ports");
            if items.is_empty() && matches!(v.value, crate::yaml::Value::Seq(_)) {
                cx.report(
                    "S005",
                    &v.loc,
                    "`ports` is empty; list the acceptor's listening ports, e.g. `[{port: 443}]`",
                );
            }
            items.iter().filter_map(|i| port_range(cx, i)).collect()
        }
        None => Vec::new(),
    };
    let app_protocol = opt_string(cx, &mut o, "appProtocol");
    let enc = o.require(cx, "encryption", "{required: tls}").and_then(|v| encryption(cx, v));
    let data = o.get("data").map(|v| references(cx, v, "data")).unwrap_or_default();
    let checkpoints = o.get("checkpoints").map(|v| references(cx, v, "checkpoints")).unwrap_or_default();
    let approval = o.get("approval").and_then(|v| approval(cx, v));
    let description = opt_string(cx, &mut o, "description");
    let acknowledge_catch_all = opt_string(cx, &mut o, "acknowledgeCatchAll");
    o.finish(cx);
    Some(Flow {
        id: fid?,
        from: from?,
        to: to?,
        ports,
        app_protocol,
        encryption: enc?,
        data,
        checkpoints,
        approval,
        description,
        acknowledge_catch_all,
        loc: y.loc.clone(),
    })
}

const UNMATCHED: &[(&str, UnmatchedAction)] =
    &[("alert", UnmatchedAction::Alert), ("ignore", UnmatchedAction::Ignore), ("learn", UnmatchedAction::Learn)];
const UNAPPROVED: &[(&str, UnapprovedAction)] = &[("alert", UnapprovedAction::Alert), ("log", UnapprovedAction::Log)];

fn defaults(cx: &mut Cx<'_>, y: &Yaml) -> Option<Defaults> {
    let mut o = Obj::new(cx, y, "`defaults`")?;
    let mut d = Defaults { loc: Some(y.loc.clone()), ..Defaults::default() };
    if let Some(v) = o.get("unmatchedEndpoint").and_then(|v| one_of(cx, v, "unmatchedEndpoint", UNMATCHED)) {
        d.unmatched_endpoint = v;
    }
    if let Some(v) = o.get("unapprovedFlow").and_then(|v| one_of(cx, v, "unapprovedFlow", UNAPPROVED)) {
        d.unapproved_flow = v;
    }
    if let Some(v) = o.get("platformFlows") {
        d.platform_flows = list(cx, v, "platformFlows")
            .iter()
            .filter_map(|i| one_of(cx, i, "platformFlows", PlatformFlow::ALL))
            .collect();
    }
    o.finish(cx);
    Some(d)
}
