//! The approved-DFD object model: what a merged set of `ApprovedDataFlowDiagram` files declares.
//! Every field is documented because people read these types to learn the format.

use std::collections::BTreeMap;
use std::fmt;

use crate::date::Date;
use crate::diag::Loc;
pub use crate::selector::{K8sSelector, LabelExpression, LabelOperator, Selector};

/// The `apiVersion` this crate reads.
pub const API_VERSION: &str = "dfd.dfdwatch.dev/v1alpha1";
/// The `kind` this crate reads.
pub const KIND: &str = "ApprovedDataFlowDiagram";

/// The approved DFD, merged from one or more files. Ids are global across files.
#[derive(Clone, Debug, Default)]
pub struct Dfd {
    /// One entry per YAML document read, in load order.
    pub documents: Vec<Document>,
    /// Trust tiers; a higher `level` is more trusted.
    pub tiers: Vec<Tier>,
    /// Data classifications that flows carry.
    pub data_classes: Vec<DataClass>,
    /// Declared validation controls (authn, authz, schema validation, ...).
    pub checkpoints: Vec<Checkpoint>,
    /// Trust zones (boundaries), each in one tier.
    pub zones: Vec<Zone>,
    /// Processes, datastores and external entities.
    pub nodes: Vec<Node>,
    /// Approved flows, from initiator to acceptor.
    pub flows: Vec<Flow>,
    /// What the monitor does with traffic the DFD does not describe.
    pub defaults: Defaults,
}

/// A reference to another item by id, with where the reference is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    /// The id referred to.
    pub id: String,
    /// Where the reference is written.
    pub loc: Loc,
}

/// One `ApprovedDataFlowDiagram` document (a file may hold several, separated by `---`).
#[derive(Clone, Debug)]
pub struct Document {
    /// Where the document starts.
    pub loc: Loc,
    /// `metadata` of this document.
    pub metadata: Metadata,
}

/// `metadata`: who owns and approved this DFD fragment.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Name of the fragment (required), e.g. `shop`.
    pub name: String,
    /// Owning team.
    pub owner: Option<String>,
    /// Who approved this revision (e-mail addresses or team names).
    pub approved_by: Vec<String>,
    /// When it was approved (`YYYY-MM-DD`).
    pub approved_at: Option<Date>,
    /// Revision number or string, bumped on every approved change.
    pub revision: Option<String>,
    /// Free key/value labels.
    pub labels: BTreeMap<String, String>,
    /// Free text.
    pub description: Option<String>,
}

/// `spec.tiers[]`: an ordered trust tier.
#[derive(Clone, Debug)]
pub struct Tier {
    /// Id, e.g. `T2`.
    pub id: String,
    /// Display name, e.g. `Authenticated`; defaults to the id.
    pub name: String,
    /// Rank; higher is more trusted. Crossings toward a higher level are "upward".
    pub level: i64,
    /// Free text.
    pub description: Option<String>,
    /// Where the tier is declared.
    pub loc: Loc,
}

/// `spec.dataClasses[]`: a data classification.
#[derive(Clone, Debug)]
pub struct DataClass {
    /// Id, e.g. `pii`.
    pub id: String,
    /// Sensitivity rank; higher is more sensitive. Compared with `maxData`.
    pub level: i64,
    /// Personal data: must never travel unencrypted (lint X003).
    pub personal: bool,
    /// Other names for this class (used by importers).
    pub aliases: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// Where it is declared.
    pub loc: Loc,
}

/// What a checkpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// `authn`: authenticates the caller.
    Authn,
    /// `authz`: authorizes the request.
    Authz,
    /// `schema-validation`: validates the payload against a schema.
    SchemaValidation,
    /// `rate-limit`: limits request rate.
    RateLimit,
    /// `waf`: web application firewall.
    Waf,
    /// `dlp`: data-loss prevention.
    Dlp,
    /// `mtls-peer`: verifies the peer's certificate identity.
    MtlsPeer,
    /// `input-sanitization`: sanitizes input.
    InputSanitization,
}

impl CheckpointKind {
    /// Every kind with its YAML spelling.
    pub const ALL: &[(&str, CheckpointKind)] = &[
        ("authn", CheckpointKind::Authn),
        ("authz", CheckpointKind::Authz),
        ("schema-validation", CheckpointKind::SchemaValidation),
        ("rate-limit", CheckpointKind::RateLimit),
        ("waf", CheckpointKind::Waf),
        ("dlp", CheckpointKind::Dlp),
        ("mtls-peer", CheckpointKind::MtlsPeer),
        ("input-sanitization", CheckpointKind::InputSanitization),
    ];

    /// The short label used in drawings (`AuthN`, `Schema`, ...).
    pub fn label(self) -> &'static str {
        match self {
            CheckpointKind::Authn => "AuthN",
            CheckpointKind::Authz => "AuthZ",
            CheckpointKind::SchemaValidation => "Schema",
            CheckpointKind::RateLimit => "RateLimit",
            CheckpointKind::Waf => "WAF",
            CheckpointKind::Dlp => "DLP",
            CheckpointKind::MtlsPeer => "mTLS-Peer",
            CheckpointKind::InputSanitization => "Sanitize",
        }
    }
}

/// `spec.checkpoints[]`: a declared validation control on flows.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Id, e.g. `api-authn`.
    pub id: String,
    /// What it does.
    pub kind: CheckpointKind,
    /// The node that enforces it; must be an end of every flow listing it (lint X007).
    pub enforced_by: Option<Ref>,
    /// How, e.g. `oidc-jwt`, `mtls-client-cert`.
    pub mechanism: Option<String>,
    /// A pointer to the configuration or spec (`ref`), e.g. `openapi/shop-v1.yaml`.
    pub reference: Option<String>,
    /// Free parameters, e.g. `rps: 200`.
    pub params: BTreeMap<String, String>,
    /// Free text.
    pub description: Option<String>,
    /// Where it is declared.
    pub loc: Loc,
}

/// `spec.zones[]`: a trust zone, drawn as a dashed boundary.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Id, e.g. `app`.
    pub id: String,
    /// Display name; defaults to the id.
    pub name: String,
    /// The zone's tier.
    pub tier: Ref,
    /// Enclosing zone, if nested.
    pub parent: Option<Ref>,
    /// Outside our control (internet, SaaS).
    pub external: bool,
    /// Which runtime endpoints belong to the zone (`match`).
    pub selector: Option<Selector>,
    /// Most sensitive data class that may enter the zone.
    pub max_data: Option<Ref>,
    /// Free text.
    pub description: Option<String>,
    /// Where it is declared.
    pub loc: Loc,
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// `process`: a running workload.
    Process,
    /// `datastore`: a database, cache, queue or bucket.
    Datastore,
    /// `external`: an entity outside our control.
    External,
}

impl NodeKind {
    /// Every kind with its YAML spelling.
    pub const ALL: &[(&str, NodeKind)] =
        &[("process", NodeKind::Process), ("datastore", NodeKind::Datastore), ("external", NodeKind::External)];
}

/// `spec.nodes[]`: a process, datastore or external entity.
#[derive(Clone, Debug)]
pub struct Node {
    /// Id, e.g. `api`.
    pub id: String,
    /// Display name; defaults to the id.
    pub name: String,
    /// What it is.
    pub kind: NodeKind,
    /// The zone it lives in.
    pub zone: Ref,
    /// Which runtime endpoints are this node (`match`).
    pub selector: Option<Selector>,
    /// Most sensitive data class that may reach this node (overrides the zone's when lower).
    pub max_data: Option<Ref>,
    /// Owning team.
    pub owner: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Why this node may match every address (`acknowledgeCatchAll`), silencing B006.
    pub acknowledge_catch_all: Option<String>,
    /// Where it is declared.
    pub loc: Loc,
}

/// Transport protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// `ports[]`: the acceptor's listening port or port range.
#[derive(Clone, Debug)]
pub struct PortRange {
    /// First port (1-65535).
    pub port: u16,
    /// Last port, inclusive (`endPort`; equals `port` when absent).
    pub end_port: u16,
    /// Transport protocol (default TCP).
    pub protocol: Protocol,
    /// Where it is declared.
    pub loc: Loc,
}

impl PortRange {
    /// Whether `port`/`protocol` falls inside this range.
    pub fn contains(&self, port: u16, protocol: Protocol) -> bool {
        self.protocol == protocol && self.port <= port && port <= self.end_port
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.end_port > self.port {
            write!(f, "{}-{}/{}", self.port, self.end_port, self.protocol)
        } else {
            write!(f, "{}/{}", self.port, self.protocol)
        }
    }
}

/// Required encryption on a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncryptionKind {
    /// `none`: plaintext is approved.
    None,
    /// `tls`: TLS, server-authenticated.
    Tls,
    /// `mtls`: mutual TLS.
    Mtls,
    /// `wireguard`: WireGuard tunnel.
    Wireguard,
    /// `ipsec`: IPsec.
    Ipsec,
    /// `any`: any of the encrypted kinds.
    Any,
}

impl EncryptionKind {
    /// Every kind with its YAML spelling.
    pub const ALL: &[(&str, EncryptionKind)] = &[
        ("none", EncryptionKind::None),
        ("tls", EncryptionKind::Tls),
        ("mtls", EncryptionKind::Mtls),
        ("wireguard", EncryptionKind::Wireguard),
        ("ipsec", EncryptionKind::Ipsec),
        ("any", EncryptionKind::Any),
    ];

    /// The label used in drawings.
    pub fn label(self) -> &'static str {
        match self {
            EncryptionKind::None => "plaintext",
            EncryptionKind::Tls => "TLS",
            EncryptionKind::Mtls => "mTLS",
            EncryptionKind::Wireguard => "WireGuard",
            EncryptionKind::Ipsec => "IPsec",
            EncryptionKind::Any => "encrypted",
        }
    }
}

/// `encryption`: what protection the flow requires.
#[derive(Clone, Debug)]
pub struct Encryption {
    /// Required kind (`required`).
    pub required: EncryptionKind,
    /// Lowest TLS version accepted (`minTLS`: `"1.2"` or `"1.3"`).
    pub min_tls: Option<String>,
    /// How the monitor may verify it, e.g. `tls-client-hello`.
    pub verify: Vec<String>,
}

/// `approval`: the change ticket that approved a flow.
#[derive(Clone, Debug)]
pub struct Approval {
    /// Ticket id, e.g. `SEC-1234`.
    pub ticket: Option<String>,
    /// Who approved.
    pub owner: Option<String>,
    /// Last day the approval is valid (`YYYY-MM-DD`); lint H001 fires after it.
    pub expires: Option<Date>,
    /// Where `approval` is declared.
    pub loc: Loc,
}

/// `spec.flows[]`: an approved data flow from initiator to acceptor.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Id, e.g. `api-to-db`.
    pub id: String,
    /// Initiator node (the end that sends the SYN).
    pub from: Ref,
    /// Acceptor node (the end that listens).
    pub to: Ref,
    /// Acceptor's listening ports.
    pub ports: Vec<PortRange>,
    /// Application protocol, e.g. `https`, `postgres`.
    pub app_protocol: Option<String>,
    /// Required encryption.
    pub encryption: Encryption,
    /// Data classes carried.
    pub data: Vec<Ref>,
    /// Checkpoints applied.
    pub checkpoints: Vec<Ref>,
    /// Approval record.
    pub approval: Option<Approval>,
    /// Free text.
    pub description: Option<String>,
    /// Why this flow may approve every port (`acknowledgeCatchAll`), silencing B006.
    pub acknowledge_catch_all: Option<String>,
    /// Where it is declared.
    pub loc: Loc,
}

/// What to do with an endpoint that matches no node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UnmatchedAction {
    /// `alert` (default).
    #[default]
    Alert,
    /// `ignore`.
    Ignore,
    /// `learn`: record it for a later DFD proposal.
    Learn,
}

/// What to do with a flow that the DFD does not approve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UnapprovedAction {
    /// `alert` (default).
    #[default]
    Alert,
    /// `log`: record without alerting (audit mode).
    Log,
}

/// Platform traffic approved without being drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlatformFlow {
    /// `dns`: any endpoint to port 53 UDP/TCP.
    Dns,
    /// `kube-dns`: pods to the cluster DNS service.
    KubeDns,
    /// `kubelet-probes`: kubelet health probes to pods.
    KubeletProbes,
    /// `ntp`: any endpoint to port 123 UDP.
    Ntp,
}

impl PlatformFlow {
    /// Every value with its YAML spelling.
    pub const ALL: &[(&str, PlatformFlow)] = &[
        ("dns", PlatformFlow::Dns),
        ("kube-dns", PlatformFlow::KubeDns),
        ("kubelet-probes", PlatformFlow::KubeletProbes),
        ("ntp", PlatformFlow::Ntp),
    ];
}

/// `spec.defaults`: the monitor's behaviour outside the drawn DFD (at most one file may set it).
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// For endpoints that match no node (`unmatchedEndpoint`).
    pub unmatched_endpoint: UnmatchedAction,
    /// For flows that no `flows[]` entry approves (`unapprovedFlow`).
    pub unapproved_flow: UnapprovedAction,
    /// Platform traffic approved implicitly (`platformFlows`).
    pub platform_flows: Vec<PlatformFlow>,
    /// Where `defaults` is declared, if it is.
    pub loc: Option<Loc>,
}

impl Dfd {
    /// The tier with this id.
    pub fn tier(&self, id: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.id == id)
    }
    /// The zone with this id.
    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.id == id)
    }
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
    /// The data class with this id.
    pub fn data_class(&self, id: &str) -> Option<&DataClass> {
        self.data_classes.iter().find(|d| d.id == id)
    }
    /// The checkpoint with this id.
    pub fn checkpoint(&self, id: &str) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.id == id)
    }
    /// The tier of a zone, if both resolve.
    pub fn zone_tier(&self, zone: &Zone) -> Option<&Tier> {
        self.tier(&zone.tier.id)
    }
    /// The zone of a node, if it resolves.
    pub fn node_zone(&self, node: &Node) -> Option<&Zone> {
        self.zone(&node.zone.id)
    }
}
