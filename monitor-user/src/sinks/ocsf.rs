//! OCSF output (`--events-format ocsf`, `--alerts-format ocsf`), for SIEMs that take the Open
//! Cybersecurity Schema Framework (version 1.5.0, profile `host`): connection and flow records
//! become Network Activity (class 4001), alerts, DFD changes and gaps Detection Finding (2004).
//! What OCSF names is mapped to its fields (times, endpoints with their DFD zone in `zone`, the
//! process in `actor`, the reporting host in `device`, severity, the alert's key in
//! `finding_info.uid`); the whole dfdwatch record rides along in `unmapped.dfdwatch`, so the DFD
//! verdict with its STRIDE and CAPITALS categories, placements and revision are never lost.
//! docs/events.md lists the mapping.

use serde::Serialize;
use serde_json::{Value, json};

use super::alerts::{AlertRecord, Occurrence};
use super::dfd_change_record::DfdChangeRecord;
use super::flow_record::FlowRecord;
use super::gap_record::GapRecord;
use super::record::{Address, ConnectionRecord, LocalEnd};
use crate::policy::verdict::Verdict;

/// The OCSF version written.
pub const VERSION: &str = "1.5.0";

/// How records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// dfdwatch's own JSON records (docs/events.md).
    #[default]
    Json,
    /// OCSF 1.5.0 events (docs/events.md#ocsf).
    Ocsf,
}

/// An OCSF class: its id and name, and its category's.
struct Class {
    uid: u64,
    name: &'static str,
    category_uid: u64,
    category_name: &'static str,
}

const NETWORK_ACTIVITY: Class =
    Class { uid: 4001, name: "Network Activity", category_uid: 4, category_name: "Network Activity" };
const DETECTION_FINDING: Class =
    Class { uid: 2004, name: "Detection Finding", category_uid: 2, category_name: "Findings" };

/// Epoch milliseconds of an RFC 3339 time (0 if it does not parse; dfdwatch writes them all).
fn millis(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// OCSF `severity_id` of a dfdwatch severity name.
fn severity_id(severity: &str) -> u64 {
    match severity {
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        _ => 1,
    }
}

fn severity_name(id: u64) -> &'static str {
    ["Unknown", "Informational", "Low", "Medium", "High", "Critical"].get(id as usize).copied().unwrap_or("Other")
}

fn native(record: &impl Serialize) -> Value {
    json!({ "dfdwatch": serde_json::to_value(record).unwrap_or(Value::Null) })
}

fn metadata(log_name: &str, uid: Option<&str>) -> Value {
    let mut m = json!({
        "version": VERSION,
        "profiles": ["host"],
        "log_name": log_name,
        "product": {"name": "dfdwatch", "vendor_name": "dfdwatch", "version": env!("CARGO_PKG_VERSION")},
    });
    if let Some(uid) = uid {
        m["correlation_uid"] = json!(uid);
    }
    m
}

fn device(node: &str) -> Value {
    json!({"hostname": node, "name": node, "type_id": 0})
}

fn endpoint(a: &Address) -> Value {
    let mut e = json!({"ip": a.addr});
    if let Some(port) = a.port {
        e["port"] = json!(port);
    }
    if let Some(name) = &a.name {
        e["hostname"] = json!(name);
    }
    if let Some(p) = &a.dfd {
        if let Some(node) = &p.node {
            e["name"] = json!(node.as_ref());
        }
        if let Some(zone) = &p.zone {
            e["zone"] = json!(zone.as_ref());
        }
    }
    if let Some(k) = &a.k8s {
        if let (Some(ns), Some(pod)) = (&k.namespace, &k.pod) {
            e["container"] = json!({"name": format!("{ns}/{pod}"), "orchestrator": "kubernetes"});
            if let Some(uid) = &k.pod_uid {
                e["container"]["pod_uuid"] = json!(uid);
            }
        }
        if let Some(svc) = &k.service {
            e["svc_name"] = json!(svc);
        }
    }
    e
}

fn actor(local: &LocalEnd) -> Option<Value> {
    let pid = local.tgid?;
    let mut process = json!({"pid": pid, "user": {"uid": local.uid.to_string()}});
    if let Some(tid) = local.pid {
        process["tid"] = json!(tid);
    }
    if let Some(comm) = &local.comm {
        process["name"] = json!(comm);
    }
    if let Some(exe) = &local.identity.exe {
        let name = exe.rsplit('/').next().unwrap_or(exe);
        process["file"] = json!({"path": exe, "name": name, "type_id": 1});
    }
    if let Some(c) = &local.identity.container {
        process["container"] = json!({"uid": c.id, "runtime": c.runtime});
    }
    Some(json!({"process": process}))
}

fn connection_info(kind: &str, ip_version: u8) -> Value {
    let (direction_id, direction) = if kind == "accept" { (1, "Inbound") } else { (2, "Outbound") };
    json!({
        "direction_id": direction_id,
        "direction": direction,
        "protocol_name": "tcp",
        "protocol_num": 6,
        "protocol_ver_id": if ip_version == 6 { 6 } else { 4 },
    })
}

fn severity(verdict: Option<&Verdict>) -> u64 {
    verdict.map_or(1, |v| severity_id(v.severity.as_str()))
}

/// The fields every event has: class, activity, time, severity, reporting host, metadata.
fn event(class: &Class, activity: (u64, &str), time: u64, severity_id: u64, node: &str, metadata: Value) -> Value {
    let (activity_id, activity_name) = activity;
    json!({
        "class_uid": class.uid,
        "class_name": class.name,
        "category_uid": class.category_uid,
        "category_name": class.category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class.uid * 100 + activity_id,
        "type_name": format!("{}: {activity_name}", class.name),
        "time": time,
        "severity_id": severity_id,
        "severity": severity_name(severity_id),
        "device": device(node),
        "metadata": metadata,
    })
}

/// A connection or flow record's ends.
struct Ends<'a> {
    src: &'a Address,
    dst: &'a Address,
    kind: &'a str,
    ip_version: u8,
    local: &'a LocalEnd,
}

/// A Network Activity event: `activity` of the connection or flow between `ends`.
fn network_activity(
    activity: (u64, &str),
    time: u64,
    severity_id: u64,
    node: &str,
    log_name: &str,
    ends: &Ends<'_>,
) -> Value {
    let mut e = event(&NETWORK_ACTIVITY, activity, time, severity_id, node, metadata(log_name, None));
    e["src_endpoint"] = endpoint(ends.src);
    e["dst_endpoint"] = endpoint(ends.dst);
    e["connection_info"] = connection_info(ends.kind, ends.ip_version);
    if let Some(actor) = actor(ends.local) {
        e["actor"] = actor;
    }
    e
}

/// A connection record as Network Activity: Open (1), or Fail (4) for a failed connect.
pub fn connection(r: &ConnectionRecord) -> Value {
    let failed = r.kind == "connect_failed";
    let activity = if failed { (4, "Fail") } else { (1, "Open") };
    let ends = Ends { src: &r.src, dst: &r.dst, kind: r.kind, ip_version: r.ip_version, local: &r.local };
    let mut e = network_activity(
        activity,
        millis(&r.time),
        severity(r.verdict.as_ref()),
        &r.node,
        super::record::SCHEMA,
        &ends,
    );
    e["status_id"] = json!(if failed { 2 } else { 1 });
    if let Some(error) = &r.error {
        e["status_detail"] = json!(error.name);
        e["status_code"] = json!(error.errno.to_string());
    }
    e["unmapped"] = native(r);
    e
}

/// A flow record as Network Activity: Traffic (6), with its interval and connection count.
pub fn flow(r: &FlowRecord) -> Value {
    let (start, end) = (millis(&r.first_seen), millis(&r.last_seen));
    let ends = Ends { src: &r.src, dst: &r.dst, kind: r.kind, ip_version: r.ip_version, local: &r.local };
    let mut e =
        network_activity((6, "Traffic"), end, severity(r.verdict.as_ref()), &r.node, super::flow_record::SCHEMA, &ends);
    e["start_time"] = json!(start);
    e["end_time"] = json!(end);
    e["count"] = json!(r.connections);
    e["unmapped"] = native(r);
    e
}

/// A Detection Finding event, new and alerting.
fn detection_finding(
    activity: (u64, &str),
    time: u64,
    severity_id: u64,
    node: &str,
    log_name: &str,
    uid: &str,
) -> Value {
    let mut e = event(&DETECTION_FINDING, activity, time, severity_id, node, metadata(log_name, Some(uid)));
    e["status_id"] = json!(1);
    e["status"] = json!("New");
    e["is_alert"] = json!(true);
    e
}

/// An alert as Detection Finding: Create (1) for a first occurrence, Update (2) for a window's
/// summary; the flow key is the finding's `uid`, the connection its evidence.
pub fn alert(r: &AlertRecord) -> Value {
    let activity = if matches!(r.occurrence, Occurrence::First) { (1, "Create") } else { (2, "Update") };
    let ev = &r.event;
    let mut e = detection_finding(
        activity,
        millis(&r.time),
        severity_id(r.verdict.severity.as_str()),
        &ev.node,
        super::alerts::SCHEMA,
        &r.flow_key,
    );
    let src = ev
        .src
        .dfd
        .as_ref()
        .and_then(|p| p.node.as_deref().or(p.zone.as_deref()))
        .map_or(ev.src.addr.clone(), str::to_owned);
    let dst = ev
        .dst
        .dfd
        .as_ref()
        .and_then(|p| p.node.as_deref().or(p.zone.as_deref()))
        .map_or(ev.dst.addr.clone(), str::to_owned);
    let kind = r.verdict.kind.as_str();
    let mut finding = json!({
        "uid": r.flow_key,
        "title": format!("Unapproved flow ({kind}): {src} -> {dst}:{}", ev.dst.port.unwrap_or(0)),
        "desc": format!("A connection the approved DFD {} does not allow", r.dfd.name),
        "types": [kind],
        "first_seen_time": millis(&r.first_seen),
        "last_seen_time": millis(&r.last_seen),
        "analytic": {"name": "dfdwatch DFD verdict", "type_id": 1, "type": "Rule", "uid": r.dfd.sha256},
    });
    if kind == "lateral_movement" {
        finding["attacks"] = json!([{"tactic": {"uid": "TA0008", "name": "Lateral Movement"}}]);
    }
    e["finding_info"] = finding;
    e["count"] = json!(r.count);
    e["start_time"] = json!(millis(&r.first_seen));
    e["end_time"] = json!(millis(&r.last_seen));
    let mut evidence = json!({
        "src_endpoint": endpoint(&ev.src),
        "dst_endpoint": endpoint(&ev.dst),
        "connection_info": connection_info(ev.kind, ev.ip_version),
    });
    if let Some(actor) = actor(&ev.local) {
        evidence["actor"] = actor;
    }
    e["evidences"] = json!([evidence]);
    e["unmapped"] = native(r);
    e
}

/// An applied DFD change as Detection Finding: Create, as severe as its highest change.
pub fn dfd_change(r: &DfdChangeRecord) -> Value {
    let mut e = detection_finding(
        (1, "Create"),
        millis(&r.time),
        severity_id(r.highest),
        &r.node,
        super::dfd_change_record::SCHEMA,
        &r.new.sha256,
    );
    e["finding_info"] = json!({
        "uid": format!("dfd-change-{}", r.new.sha256),
        "title": format!("The approved DFD changed: {} change(s), highest {}", r.changes.len(), r.highest),
        "types": ["dfd_change"],
        "analytic": {"name": "dfdwatch DFD change review", "type_id": 1, "type": "Rule"},
    });
    e["unmapped"] = native(r);
    e
}

/// A time the daemon did not watch as Detection Finding: Create, medium.
pub fn gap(r: &GapRecord) -> Value {
    let uid = format!("gap-{}-{}", r.node, r.from);
    let mut e = detection_finding((1, "Create"), millis(&r.time), 3, &r.node, super::gap_record::SCHEMA, &uid);
    e["finding_info"] = json!({
        "uid": uid,
        "title": format!("dfdwatch did not watch for {:.1} s ({})", r.seconds, r.reason),
        "types": ["monitoring_gap"],
        "first_seen_time": millis(&r.from),
        "last_seen_time": millis(&r.to),
    });
    e["unmapped"] = native(r);
    e
}
