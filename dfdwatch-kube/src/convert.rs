//! Turns API server objects (untrusted input) into identity records: checks every bound, refuses
//! odd objects with a counted reason, never panics.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::config::Settings;
use crate::health::{HealthState, RefusalReason, ResourceKind};
use crate::model::{BackendPod, ContainerIdentity, ContainerKind, Labels, PodIdentity, ServiceIdentity, ServicePort};
use crate::spiffe::SpiffeId;

/// The label EndpointSlices carry naming their Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A pod ready for the index, with what IP conflict resolution needs.
#[derive(Debug, Clone)]
pub(crate) struct PodRecord {
    pub(crate) ident: Arc<PodIdentity>,
    pub(crate) start_time: Option<Timestamp>,
}

/// A namespace's labels.
#[derive(Debug, Clone)]
pub(crate) struct NamespaceRecord {
    pub(crate) name: String,
    pub(crate) labels: Arc<Labels>,
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlicePort {
    pub(crate) name: Option<String>,
    pub(crate) port: u16,
    pub(crate) protocol: String,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceEndpoint {
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) ready: Option<bool>,
    pub(crate) pod: Option<BackendPod>,
    pub(crate) node_name: Option<String>,
}

/// An EndpointSlice reduced to what backend resolution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceRecord {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) service: Option<String>,
    pub(crate) ports: Vec<SlicePort>,
    pub(crate) endpoints: Vec<SliceEndpoint>,
}

/// Converts objects of one kind, counting and logging refusals.
pub(crate) struct Converter<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) health: &'a HealthState,
}

impl Converter<'_> {
    fn refuse<T>(&self, kind: ResourceKind, meta: &ObjectMeta, reason: RefusalReason) -> Option<T> {
        self.health.refuse(reason);
        tracing::warn!(
            kind = kind.as_str(),
            namespace = meta.namespace.as_deref().unwrap_or(""),
            name = meta.name.as_deref().map(|n| truncate(n, 80)).unwrap_or(""),
            reason = reason.as_str(),
            "refused an object from the API server"
        );
        None
    }

    fn name<'m>(&self, value: Option<&'m String>) -> Result<&'m str, RefusalReason> {
        match value {
            None => Err(RefusalReason::MissingField),
            Some(v) if v.is_empty() => Err(RefusalReason::MissingField),
            Some(v) if v.len() > self.settings.limits.max_name_len => Err(RefusalReason::NameTooLong),
            Some(v) => Ok(v),
        }
    }

    fn labels(&self, labels: Option<&Labels>) -> Result<Labels, RefusalReason> {
        let l = &self.settings.limits;
        let Some(labels) = labels else {
            return Ok(Labels::new());
        };
        if labels.len() > l.max_labels {
            return Err(RefusalReason::TooManyLabels);
        }
        if labels.iter().any(|(k, v)| k.len() > l.max_label_key_len || v.len() > l.max_label_value_len) {
            return Err(RefusalReason::LabelTooLong);
        }
        Ok(labels.clone())
    }

    fn ips<'s>(&self, values: impl Iterator<Item = &'s str>) -> Result<Vec<IpAddr>, RefusalReason> {
        let mut ips = Vec::new();
        for v in values {
            match v.parse::<IpAddr>() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) => self.health.refuse(RefusalReason::InvalidAddress),
            }
            if ips.len() > self.settings.limits.max_ips {
                return Err(RefusalReason::TooManyEntries);
            }
        }
        Ok(ips)
    }

    pub(crate) fn pod(&self, pod: &Pod) -> Option<PodRecord> {
        match self.try_pod(pod) {
            Ok(r) => Some(r),
            Err(reason) => self.refuse(ResourceKind::Pods, &pod.metadata, reason),
        }
    }

    fn try_pod(&self, pod: &Pod) -> Result<PodRecord, RefusalReason> {
        let meta = &pod.metadata;
        let namespace = self.name(meta.namespace.as_ref())?.to_owned();
        let name = self.name(meta.name.as_ref())?.to_owned();
        let uid = self.name(meta.uid.as_ref())?.to_owned();
        let labels = self.labels(meta.labels.as_ref())?;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let service_account = match spec.and_then(|s| s.service_account_name.as_ref()) {
            Some(sa) if !sa.is_empty() => self.name(Some(sa))?.to_owned(),
            _ => "default".to_owned(),
        };
        let node_name = match spec.and_then(|s| s.node_name.as_ref()) {
            Some(n) if !n.is_empty() => Some(self.name(Some(n))?.to_owned()),
            _ => None,
        };
        let on_this_node = node_name.as_deref() == Some(self.settings.node_name.as_str());
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);

        let mut containers = Vec::new();
        if let Some(spec) = spec {
            let init = spec.init_containers.iter().flatten();
            containers.extend(init.map(|c| (c.name.as_str(), ContainerKind::Init, c.image.clone())));
            let regular = spec.containers.iter();
            containers.extend(regular.map(|c| (c.name.as_str(), ContainerKind::Regular, c.image.clone())));
            let eph = spec.ephemeral_containers.iter().flatten();
            containers.extend(eph.map(|c| (c.name.as_str(), ContainerKind::Ephemeral, c.image.clone())));
        }
        if containers.len() > self.settings.limits.max_containers {
            return Err(RefusalReason::TooManyContainers);
        }
        let mut containers: Vec<ContainerIdentity> = containers
            .into_iter()
            .map(|(name, kind, image)| ContainerIdentity {
                name: name.to_owned(),
                kind,
                image,
                container_id: None,
                runtime: None,
            })
            .collect();
        if let Some(status) = status {
            let statuses = status
                .init_container_statuses
                .iter()
                .flatten()
                .map(|s| (ContainerKind::Init, s))
                .chain(status.container_statuses.iter().flatten().map(|s| (ContainerKind::Regular, s)))
                .chain(status.ephemeral_container_statuses.iter().flatten().map(|s| (ContainerKind::Ephemeral, s)));
            for (kind, cs) in statuses {
                let Some(raw) = cs.container_id.as_deref().filter(|s| !s.is_empty()) else {
                    continue;
                };
                if raw.len() > self.settings.limits.max_name_len {
                    return Err(RefusalReason::NameTooLong);
                }
                let (runtime, id) = split_container_id(raw);
                if let Some(c) = containers.iter_mut().find(|c| c.kind == kind && c.name == cs.name) {
                    c.container_id = Some(id.to_owned());
                    c.runtime = runtime.map(str::to_owned);
                }
            }
        }

        let pod_ips = match status {
            Some(s) => match s.pod_ips.as_ref().filter(|v| !v.is_empty()) {
                Some(list) => {
                    if list.len() > self.settings.limits.max_ips {
                        return Err(RefusalReason::TooManyEntries);
                    }
                    self.ips(list.iter().map(|p| p.ip.as_str()))?
                }
                None => self.ips(s.pod_ip.iter().map(String::as_str))?,
            },
            None => Vec::new(),
        };
        let spiffe_id = match SpiffeId::for_workload(&self.settings.trust_domain, &namespace, &service_account) {
            Ok(id) => Some(id),
            Err(err) => {
                self.health.refuse(RefusalReason::SpiffeRejected);
                tracing::warn!(%namespace, pod = %truncate(&name, 80), error = %err, "no SPIFFE ID for pod");
                None
            }
        };
        Ok(PodRecord {
            start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            ident: Arc::new(PodIdentity {
                namespace,
                name,
                uid,
                labels,
                service_account,
                node_name,
                on_this_node,
                host_network,
                phase: status.and_then(|s| s.phase.clone()),
                containers,
                pod_ips,
                spiffe_id,
            }),
        })
    }

    pub(crate) fn namespace(&self, ns: &Namespace) -> Option<NamespaceRecord> {
        let meta = &ns.metadata;
        let result = self.name(meta.name.as_ref()).and_then(|name| {
            Ok(NamespaceRecord { name: name.to_owned(), labels: Arc::new(self.labels(meta.labels.as_ref())?) })
        });
        result.or_else(|r| self.refuse(ResourceKind::Namespaces, meta, r).ok_or(())).ok()
    }

    pub(crate) fn service(&self, svc: &Service) -> Option<Arc<ServiceIdentity>> {
        match self.try_service(svc) {
            Ok(s) => Some(Arc::new(s)),
            Err(reason) => self.refuse(ResourceKind::Services, &svc.metadata, reason),
        }
    }

    fn try_service(&self, svc: &Service) -> Result<ServiceIdentity, RefusalReason> {
        let meta = &svc.metadata;
        let spec = svc.spec.as_ref();
        let raw_ips: Vec<&str> = match spec {
            Some(s) => match s.cluster_ips.as_ref().filter(|v| !v.is_empty()) {
                Some(list) => list.iter().map(String::as_str).collect(),
                None => s.cluster_ip.iter().map(String::as_str).collect(),
            },
            None => Vec::new(),
        };
        if raw_ips.len() > self.settings.limits.max_ips {
            return Err(RefusalReason::TooManyEntries);
        }
        // "None" marks a headless Service: no ClusterIP, not an invalid address.
        let cluster_ips = self.ips(raw_ips.into_iter().filter(|s| !s.is_empty() && *s != "None"))?;
        let raw_ports = spec.and_then(|s| s.ports.as_ref());
        if raw_ports.is_some_and(|p| p.len() > self.settings.limits.max_ports) {
            return Err(RefusalReason::TooManyEntries);
        }
        let ports = raw_ports
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: u16::try_from(p.port).ok()?,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                })
            })
            .collect();
        Ok(ServiceIdentity {
            namespace: self.name(meta.namespace.as_ref())?.to_owned(),
            name: self.name(meta.name.as_ref())?.to_owned(),
            uid: self.name(meta.uid.as_ref())?.to_owned(),
            labels: self.labels(meta.labels.as_ref())?,
            selector: self.labels(spec.and_then(|s| s.selector.as_ref()))?,
            cluster_ips,
            ports,
        })
    }

    pub(crate) fn slice(&self, slice: &EndpointSlice) -> Option<SliceRecord> {
        match self.try_slice(slice) {
            Ok(s) => Some(s),
            Err(reason) => self.refuse(ResourceKind::EndpointSlices, &slice.metadata, reason),
        }
    }

    fn try_slice(&self, slice: &EndpointSlice) -> Result<SliceRecord, RefusalReason> {
        let meta = &slice.metadata;
        let l = &self.settings.limits;
        let namespace = self.name(meta.namespace.as_ref())?.to_owned();
        let name = self.name(meta.name.as_ref())?.to_owned();
        let service = match meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            Some(s) => Some(self.name(Some(s))?.to_owned()),
            None => None,
        };
        if slice.endpoints.len() > l.max_endpoints_per_slice {
            return Err(RefusalReason::TooManyEntries);
        }
        let raw_ports = slice.ports.as_ref();
        if raw_ports.is_some_and(|p| p.len() > l.max_ports) {
            return Err(RefusalReason::TooManyEntries);
        }
        let ports = raw_ports
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: u16::try_from(p.port?).ok()?,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                })
            })
            .collect();
        // FQDN slices name hosts, not addresses: nothing to index.
        let ip_slice = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
        let mut endpoints = Vec::new();
        for ep in slice.endpoints.iter().filter(|_| ip_slice) {
            let ips = self.ips(ep.addresses.iter().map(String::as_str))?;
            let pod = match ep.target_ref.as_ref() {
                Some(r) if r.kind.as_deref() == Some("Pod") => Some(BackendPod {
                    namespace: self.name(r.namespace.as_ref().or(Some(&namespace)))?.to_owned(),
                    name: self.name(r.name.as_ref())?.to_owned(),
                    uid: match r.uid.as_ref() {
                        Some(u) if !u.is_empty() => Some(self.name(Some(u))?.to_owned()),
                        _ => None,
                    },
                }),
                _ => None,
            };
            let node_name = match ep.node_name.as_ref() {
                Some(n) if !n.is_empty() => Some(self.name(Some(n))?.to_owned()),
                _ => None,
            };
            endpoints.push(SliceEndpoint { ips, ready: ep.conditions.as_ref().and_then(|c| c.ready), pod, node_name });
        }
        Ok(SliceRecord { namespace, name, service, ports, endpoints })
    }
}

/// Splits `containerd://abc` into (`containerd`, `abc`); an id without a prefix is returned whole.
pub(crate) fn split_container_id(raw: &str) -> (Option<&str>, &str) {
    match raw.split_once("://") {
        Some((runtime, id)) => (Some(runtime), id),
        None => (None, raw),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
