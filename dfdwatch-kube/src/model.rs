//! Identity snapshots handed to the event path: owned, immutable, shared through `Arc`, holding
//! exactly what the DFD's selectors need and nothing from the API server beyond that.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::spiffe::SpiffeId;

/// Labels of a pod, namespace or Service.
pub type Labels = BTreeMap<String, String>;

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// `spec.initContainers`.
    Init,
    /// `spec.containers`.
    Regular,
    /// `spec.ephemeralContainers` (debug containers).
    Ephemeral,
}

/// One container of a pod, as the spec and status tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// Container name in the pod spec.
    pub name: String,
    /// Which list it comes from.
    pub kind: ContainerKind,
    /// Image reference from the spec.
    pub image: Option<String>,
    /// Runtime container id without its `runtime://` prefix (what cgroup paths show), once the
    /// kubelet has reported it.
    pub container_id: Option<String>,
    /// The runtime prefix of the status' `containerID` (`containerd`, `cri-o`, `docker`, ...).
    pub runtime: Option<String>,
}

/// A pod's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod labels.
    pub labels: Labels,
    /// Service account (`spec.serviceAccountName`, `default` when unset).
    pub service_account: String,
    /// Node the pod is scheduled on, if any.
    pub node_name: Option<String>,
    /// Whether that node is this one (the pod can be a local end).
    pub on_this_node: bool,
    /// Whether the pod uses the host's network namespace; such pods' IPs are the node's and are
    /// never indexed by IP.
    pub host_network: bool,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`), if reported.
    pub phase: Option<String>,
    /// Containers, init first, then regular, then ephemeral.
    pub containers: Vec<ContainerIdentity>,
    /// Pod IPs from `status.podIPs` (or `status.podIP`).
    pub pod_ips: Vec<IpAddr>,
    /// `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT`, or `None` if the names hold
    /// characters SPIFFE forbids (counted as a refusal).
    pub spiffe_id: Option<SpiffeId>,
}

impl PodIdentity {
    /// Whether the pod has finished (`Succeeded` or `Failed`) and so holds no IP any more.
    pub fn is_terminated(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }
}

/// A pod as a lookup returns it: the pod and its namespace's labels at lookup time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPod {
    /// The pod.
    pub pod: Arc<PodIdentity>,
    /// Labels of the pod's namespace, if the namespace is known.
    pub namespace_labels: Option<Arc<Labels>>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (`None` when unnamed).
    pub name: Option<String>,
    /// The Service port (on the ClusterIP).
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// A Service's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service UID.
    pub uid: String,
    /// Service labels.
    pub labels: Labels,
    /// Pod selector of the Service (empty for selector-less Services).
    pub selector: Labels,
    /// ClusterIPs (one per IP family; none for headless and ExternalName Services).
    pub cluster_ips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
}

/// The pod behind an endpoint, from the EndpointSlice's `targetRef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPod {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID, if the slice gives it.
    pub uid: Option<String>,
}

/// One backend (endpoint address and target port) of a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Endpoint address.
    pub ip: IpAddr,
    /// Target port on the endpoint.
    pub port: u16,
    /// `conditions.ready` (`None` when the slice does not say).
    pub ready: Option<bool>,
    /// The pod behind it, if the slice names one.
    pub pod: Option<BackendPod>,
    /// Node of the endpoint, if given.
    pub node_name: Option<String>,
}

/// What a connection to a ClusterIP resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedService {
    /// The Service.
    pub service: Arc<ServiceIdentity>,
    /// The Service port matching the connection's TCP port, if the Service exposes it.
    pub port: Option<ServicePort>,
    /// Backends of that port from the Service's EndpointSlices (empty when unknown or when the
    /// port is not exposed).
    pub backends: Arc<[Backend]>,
    /// Labels of the Service's namespace, if the namespace is known.
    pub namespace_labels: Option<Arc<Labels>>,
}

impl ResolvedService {
    /// The backend the kernel saw the connection go to (after DNAT), if it is one of them.
    pub fn backend(&self, ip: IpAddr, port: u16) -> Option<&Backend> {
        self.backends.iter().find(|b| b.ip == ip && b.port == port)
    }
}
