//! Places one end of a connection on the approved DFD: its node, zone and tier, or the nodes it
//! matches ambiguously. The local end is matched on everything the identity stage knows; the
//! remote end on its address (external zones by CIDR), until cluster identity names it.

use std::net::IpAddr;
use std::sync::Arc;

use dfdwatch_dfd::compile::Compiled;
use dfdwatch_dfd::compile::Identity;
use serde::Serialize;

use crate::identity::LocalIdentity;
use crate::identity::kubernetes::K8sEnd;

/// The DFD's node, zone and tier ids, made once per revision: a placement holds clones of these
/// `Arc`s, so placing an end copies no id.
#[derive(Debug, Default)]
pub struct DfdIds {
    nodes: Vec<Arc<str>>,
    zones: Vec<Arc<str>>,
    zone_tiers: Vec<Arc<str>>,
}

impl DfdIds {
    /// The ids of `dfd`, by index.
    pub fn new(dfd: &Compiled) -> Self {
        Self {
            nodes: dfd.dfd.nodes.iter().map(|n| Arc::from(n.id.as_str())).collect(),
            zones: dfd.dfd.zones.iter().map(|z| Arc::from(z.id.as_str())).collect(),
            zone_tiers: dfd.dfd.zones.iter().map(|z| Arc::from(z.tier.id.as_str())).collect(),
        }
    }
}

/// Where one end sits in the DFD. Absent fields: not resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// DFD node id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    /// DFD zone id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<Arc<str>>,
    /// Tier id of the zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Arc<str>>,
    /// Every node the endpoint matched, when it matched more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ambiguous: Vec<Arc<str>>,
    /// Index of the node in the compiled DFD (for the verdict; not serialised).
    #[serde(skip)]
    pub node_ix: Option<usize>,
    /// Index of the zone in the compiled DFD (for the verdict; not serialised).
    #[serde(skip)]
    pub zone_ix: Option<usize>,
}

/// Places an endpoint: `local` is the identity stage's view for the local end, `None` for the
/// remote end; `k8s` its Kubernetes identity, when known; `name` the identity file's name of its
/// address, when it names it. A `hosts` selector matches that name, else (for a host process on
/// this node) the node's host name.
pub fn place(
    dfd: &Compiled,
    ids: &DfdIds,
    ip: IpAddr,
    local: Option<&LocalIdentity>,
    k8s: Option<&K8sEnd>,
    name: Option<&str>,
) -> Placement {
    let mut id = Identity { ip: Some(ip), hostname: name.map(str::to_owned), ..Identity::default() };
    if let Some(l) = local {
        id.exe = l.exe.clone();
        id.cgroup_path = l.cgroup_path.clone();
        id.systemd_unit = l.systemd_unit.clone();
        if id.hostname.is_none() {
            id.hostname = l.host.clone();
        }
    }
    if let Some(k) = k8s {
        id.namespace = k.namespace.clone();
        id.labels = k.labels.clone();
        id.namespace_labels = k.namespace_labels.clone();
        id.service_account = k.service_account.clone();
        id.spiffe_id = k.spiffe_id.clone();
        if local.is_some() {
            id.image = k.image.clone();
        }
    }
    let r = dfd.matcher.resolve(&id);
    Placement {
        node: r.node.and_then(|n| ids.nodes.get(n)).cloned(),
        zone: r.zone.and_then(|z| ids.zones.get(z)).cloned(),
        tier: r.zone.and_then(|z| ids.zone_tiers.get(z)).cloned(),
        ambiguous: r.ambiguous.iter().filter_map(|&n| ids.nodes.get(n)).cloned().collect(),
        node_ix: r.node,
        zone_ix: r.zone,
    }
}
