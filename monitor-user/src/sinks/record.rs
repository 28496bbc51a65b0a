//! The JSON connection event, one per line (schema `dfdwatch.connection.v1`, documented in
//! docs/events.md): built once per connection by the fan-out, serialised by each sink at its edge.
//! Every string from the kernel is escaped before it gets here.

use std::net::SocketAddr;

use monitor_common::EventKind;
use serde::Serialize;

use crate::source::decode::Origin;
use crate::{
    clock::WallClock,
    escape::escape_bytes,
    identity::{Identified, LocalIdentity, kubernetes::K8sEnd},
    policy::{Judgement, Placement, verdict::Verdict},
};

/// Schema id written in every event.
pub const SCHEMA: &str = "dfdwatch.connection.v1";

/// One connection event as written to the events stream.
#[derive(Debug, Serialize)]
pub struct ConnectionRecord {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// RFC 3339 UTC time when the kernel saw the state change, nanosecond precision.
    pub time: String,
    /// The node (host name) that observed it.
    pub node: String,
    /// `connect`, `connect_failed` or `accept`.
    pub kind: &'static str,
    /// For `connect_failed`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// 4 or 6 (IPv4-mapped IPv6 addresses are reported as IPv4).
    pub ip_version: u8,
    /// The initiator (client) end.
    pub src: Address,
    /// The acceptor (server) end.
    pub dst: Address,
    /// Which end is on this node: `src` for connects, `dst` for accepts.
    pub local_side: &'static str,
    /// The local end's workload as the kernel saw it.
    pub local: LocalEnd,
    /// The verdict against the approved DFD; present when a DFD is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Present (true) when this connection was already reported from its other end on this node
    /// (a connect and an accept of two local workloads): metrics and alerts count it once.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub other_end_seen: bool,
    /// Present when this sighting completed a pair whose two sightings saw different server ends
    /// (destination NAT on the way, such as a Kubernetes Service): both of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnat: Option<DnatRecord>,
    /// Why this connection is recorded one by one: `first` (the first of its flow, or the first
    /// judged differently), `reported` (a connection of an alerting flow: each is recorded) or
    /// `untracked` (the flow table had no room for its flow). Every other connection is counted in
    /// its flow's `dfdwatch.flow.v1` records.
    pub recorded: &'static str,
}

/// The two server ends of one connection through destination NAT.
#[derive(Debug, Serialize)]
pub struct DnatRecord {
    /// What the client connected to (for a Service, its ClusterIP, with `k8s.service`).
    pub original_dst: Address,
    /// What accepted the connection (for a Service, the backend pod, with `k8s.pod`).
    pub backend_dst: Address,
}

/// An address and port.
#[derive(Debug, Serialize)]
pub struct Address {
    /// IP address.
    pub addr: String,
    /// Port; a flow record leaves out the client's, which changes with every connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Name from the static identity file, when it names this address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where this end sits in the approved DFD; present when a DFD is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dfd: Option<Placement>,
    /// Kubernetes identity (pod, namespace, service account, SPIFFE ID, or Service), when the
    /// daemon watches a cluster and knows this address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8sEnd>,
}

/// The reason a connect failed.
#[derive(Debug, Serialize)]
pub struct ErrorInfo {
    /// Positive errno from the socket (0 when the application gave up first).
    pub errno: i32,
    /// Symbolic name: `ECONNREFUSED`, `ETIMEDOUT`, `ECONNRESET`, ..., or `aborted` for 0.
    pub name: &'static str,
}

/// The local end of a connection.
#[derive(Debug, Serialize)]
pub struct LocalEnd {
    /// Process id; absent when unknown (see `attribution`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tgid: Option<u32>,
    /// Thread id; absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Command name, escaped (`\xNN` for bytes outside printable ASCII); absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// uid of the process (connect) or of the socket's owner (accept).
    pub uid: u32,
    /// cgroup v2 id (the inode of the cgroup directory).
    pub cgroup_id: u64,
    /// Network namespace inode number.
    pub netns: u32,
    /// Where the process fields come from: `task` (the connecting task), `listener` (the process
    /// that listens on the port), or `socket` (process unknown; uid and cgroup from the socket).
    pub attribution: &'static str,
    /// Executable, cgroup path, container, pod UID and systemd unit, where known.
    #[serde(flatten)]
    pub identity: LocalIdentity,
}

/// Name of a socket error number.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        0 => "aborted",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        _ => "other",
    }
}

fn address(a: SocketAddr, name: &Option<String>, dfd: Option<&Placement>, k8s: &Option<K8sEnd>) -> Address {
    Address {
        addr: a.ip().to_string(),
        port: Some(a.port()),
        name: name.as_ref().map(|n| escape_bytes(n.as_bytes())),
        dfd: dfd.cloned(),
        k8s: k8s.as_ref().map(escape_k8s),
    }
}

/// Names from the API server are untrusted: escape them like kernel strings.
fn escape_k8s(k: &K8sEnd) -> K8sEnd {
    let e = |s: &Option<String>| s.as_ref().map(|v| escape_bytes(v.as_bytes()));
    K8sEnd {
        namespace: e(&k.namespace),
        pod: e(&k.pod),
        pod_uid: e(&k.pod_uid),
        service_account: e(&k.service_account),
        spiffe_id: e(&k.spiffe_id),
        node: e(&k.node),
        image: e(&k.image),
        service: e(&k.service),
        labels: Default::default(),
        namespace_labels: Default::default(),
    }
}

impl ConnectionRecord {
    /// Builds the record for one connection (recorded as its flow's first), with its judgement
    /// when a DFD is loaded.
    pub fn new(e: &Identified, judgement: Option<&Judgement>, clock: &WallClock, node: &str) -> Self {
        let c = &e.conn;
        let (src_dfd, dst_dfd) = (judgement.map(|j| &j.src), judgement.map(|j| &j.dst));
        let kind = match c.kind {
            EventKind::Connect => "connect",
            EventKind::ConnectFailed => "connect_failed",
            EventKind::Accept => "accept",
        };
        let attribution = match (&c.process, c.kind) {
            (None, _) => "socket",
            (Some(_), _) if c.origin == Origin::FoundAtStart => "holder",
            (Some(_), EventKind::Accept) => "listener",
            (Some(_), _) => "task",
        };
        ConnectionRecord {
            schema: SCHEMA,
            time: clock.rfc3339(c.monotonic_ns),
            node: node.to_owned(),
            kind,
            error: c.error.map(|errno| ErrorInfo { errno, name: errno_name(errno) }),
            ip_version: if c.src.is_ipv4() { 4 } else { 6 },
            src: address(c.src, &e.src_name, src_dfd, &e.src_k8s),
            dst: address(c.dst, &e.dst_name, dst_dfd, &e.dst_k8s),
            local_side: if c.local_is_src() { "src" } else { "dst" },
            local: LocalEnd {
                tgid: c.process.as_ref().map(|p| p.tgid),
                pid: c.process.as_ref().map(|p| p.pid),
                comm: c.process.as_ref().map(|p| escape_bytes(&p.comm)),
                uid: c.uid,
                cgroup_id: c.cgroup_id,
                netns: c.netns,
                attribution,
                identity: e.local.clone(),
            },
            verdict: judgement.map(|j| j.verdict.clone()),
            other_end_seen: judgement.is_some_and(|j| j.other_end_seen),
            dnat: judgement.and_then(|j| j.dnat.as_deref()).map(|d| DnatRecord {
                original_dst: address(d.original.addr, &None, Some(&d.original.dfd), &d.original.k8s),
                backend_dst: address(d.backend.addr, &None, Some(&d.backend.dfd), &d.backend.k8s),
            }),
            recorded: "first",
        }
    }
}
