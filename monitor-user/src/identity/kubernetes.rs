//! Kubernetes identity of both ends, from the `dfdwatch-kube` cache (never waits on the API
//! server): the local end by container id, pod UID or address; the remote end by pod address, or
//! as a Service when it is a ClusterIP (with the backend the kernel connected to, if known).

use std::net::IpAddr;

use dfdwatch_kube::{KubeIdentity, ResolvedPod};
use serde::Serialize;

/// The Kubernetes identity of one end, as written in events (`src.k8s`, `dst.k8s`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct K8sEnd {
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Pod UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// SPIFFE ID (`spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The pod's node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Image of the container (local end, when the container is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The Service, when the address is a ClusterIP: `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Pod labels (for the DFD matcher; not written in events).
    #[serde(skip)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Namespace labels (for the DFD matcher; not written in events).
    #[serde(skip)]
    pub namespace_labels: std::collections::BTreeMap<String, String>,
}

fn from_pod(p: &ResolvedPod, container_id: Option<&str>) -> K8sEnd {
    let pod = &p.pod;
    let image = container_id.and_then(|id| {
        pod.containers
            .iter()
            .find(|c| c.container_id.as_deref().is_some_and(|cid| cid.ends_with(id)))
            .and_then(|c| c.image.clone())
    });
    K8sEnd {
        namespace: Some(pod.namespace.clone()),
        pod: Some(pod.name.clone()),
        pod_uid: Some(pod.uid.clone()),
        service_account: Some(pod.service_account.clone()),
        spiffe_id: pod.spiffe_id.as_ref().map(|s| s.as_str().to_owned()),
        node: pod.node_name.clone(),
        image,
        service: None,
        labels: pod.labels.clone(),
        namespace_labels: p.namespace_labels.as_deref().cloned().unwrap_or_default(),
    }
}

/// The local end: by container id, else pod UID (both from the cgroup path), else address.
pub fn local(kube: &KubeIdentity, container_id: Option<&str>, pod_uid: Option<&str>, ip: IpAddr) -> Option<K8sEnd> {
    let pod = container_id
        .and_then(|id| kube.pod_by_container_id(id))
        .or_else(|| pod_uid.and_then(|uid| kube.pod_by_uid(uid)))
        .or_else(|| kube.pod_by_ip(ip))?;
    Some(from_pod(&pod, container_id))
}

/// The remote end: a pod by address, else a Service by ClusterIP and port.
pub fn remote(kube: &KubeIdentity, ip: IpAddr, port: u16) -> Option<K8sEnd> {
    if let Some(pod) = kube.pod_by_ip(ip) {
        return Some(from_pod(&pod, None));
    }
    let svc = kube.service_by_cluster_ip(ip, port)?;
    Some(K8sEnd {
        namespace: Some(svc.service.namespace.clone()),
        service: Some(format!("{}/{}", svc.service.namespace, svc.service.name)),
        labels: svc.service.labels.clone(),
        namespace_labels: svc.namespace_labels.as_deref().cloned().unwrap_or_default(),
        ..K8sEnd::default()
    })
}
