//! Service index (by ClusterIP) and EndpointSlice index (Service -> backends per port).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::convert::SliceRecord;
use crate::health::{HealthState, RefusalReason};
use crate::model::{Backend, ServiceIdentity, ServicePort};

/// `(namespace, name)`.
pub(crate) type Key = (String, String);

/// Services by key and by ClusterIP.
#[derive(Debug, Default)]
pub(crate) struct ServiceIndex {
    by_key: HashMap<Key, Arc<ServiceIdentity>>,
    by_ip: HashMap<IpAddr, Key>,
}

impl ServiceIndex {
    pub(crate) fn from_list(records: Vec<Arc<ServiceIdentity>>, max: usize, health: &HealthState) -> Self {
        let mut index = Self::default();
        for r in records {
            index.apply(r, max, health);
        }
        index
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The Service held under `key`, if any.
    pub(crate) fn get(&self, key: &Key) -> Option<&Arc<ServiceIdentity>> {
        self.by_key.get(key)
    }

    pub(crate) fn by_ip(&self, ip: IpAddr) -> Option<&Arc<ServiceIdentity>> {
        self.by_ip.get(&ip).and_then(|k| self.by_key.get(k))
    }

    pub(crate) fn apply(&mut self, svc: Arc<ServiceIdentity>, max: usize, health: &HealthState) -> bool {
        let key = (svc.namespace.clone(), svc.name.clone());
        if !self.by_key.contains_key(&key) && self.by_key.len() >= max {
            health.refuse(RefusalReason::CapacityReached);
            tracing::warn!(max, "service capacity reached; service not indexed");
            return false;
        }
        self.delete(&key);
        for ip in &svc.cluster_ips {
            // ClusterIPs are allocated uniquely by the API server; on a (stale) clash the later
            // event wins.
            self.by_ip.insert(*ip, key.clone());
        }
        self.by_key.insert(key, svc);
        true
    }

    pub(crate) fn delete(&mut self, key: &Key) {
        if let Some(old) = self.by_key.remove(key) {
            for ip in &old.cluster_ips {
                if self.by_ip.get(ip).is_some_and(|k| k == key) {
                    self.by_ip.remove(ip);
                }
            }
        }
    }
}

/// Backends of one Service, per (port name, protocol).
#[derive(Debug, Default)]
pub(crate) struct PortBackends(Vec<(Option<String>, String, Arc<[Backend]>)>);

impl PortBackends {
    pub(crate) fn for_port(&self, port: &ServicePort) -> Option<&Arc<[Backend]>> {
        self.0.iter().find(|(name, proto, _)| *name == port.name && *proto == port.protocol).map(|(_, _, b)| b)
    }
}

/// EndpointSlices by key, grouped by Service, with each Service's backends precomputed.
#[derive(Debug, Default)]
pub(crate) struct SliceIndex {
    by_key: HashMap<Key, SliceRecord>,
    by_service: HashMap<Key, BTreeSet<String>>,
    backends: HashMap<Key, Arc<PortBackends>>,
}

impl SliceIndex {
    pub(crate) fn from_list(records: Vec<SliceRecord>, max: usize, health: &HealthState) -> Self {
        let mut index = Self::default();
        for r in records {
            index.apply(r, max, health);
        }
        index
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The slice held under `key`, if any.
    pub(crate) fn get(&self, key: &Key) -> Option<&SliceRecord> {
        self.by_key.get(key)
    }

    pub(crate) fn backends(&self, namespace: &str, service: &str) -> Option<&Arc<PortBackends>> {
        self.backends.get(&(namespace.to_owned(), service.to_owned()))
    }

    pub(crate) fn apply(&mut self, slice: SliceRecord, max: usize, health: &HealthState) -> bool {
        let key = (slice.namespace.clone(), slice.name.clone());
        if !self.by_key.contains_key(&key) && self.by_key.len() >= max {
            health.refuse(RefusalReason::CapacityReached);
            tracing::warn!(max, "endpointslice capacity reached; slice not indexed");
            return false;
        }
        self.delete(&key);
        let service = slice.service.clone().map(|s| (slice.namespace.clone(), s));
        self.by_key.insert(key.clone(), slice);
        if let Some(service) = service {
            self.by_service.entry(service.clone()).or_default().insert(key.1);
            self.recompute(&service);
        }
        true
    }

    pub(crate) fn delete(&mut self, key: &Key) {
        let Some(old) = self.by_key.remove(key) else {
            return;
        };
        if let Some(svc) = old.service {
            let service = (old.namespace, svc);
            if let Some(set) = self.by_service.get_mut(&service) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.by_service.remove(&service);
                }
            }
            self.recompute(&service);
        }
    }

    fn recompute(&mut self, service: &Key) {
        let Some(names) = self.by_service.get(service) else {
            self.backends.remove(service);
            return;
        };
        let mut groups: Vec<(Option<String>, String, Vec<Backend>)> = Vec::new();
        for name in names {
            let Some(slice) = self.by_key.get(&(service.0.clone(), name.clone())) else {
                continue;
            };
            for port in &slice.ports {
                let idx = match groups.iter().position(|(n, p, _)| *n == port.name && *p == port.protocol) {
                    Some(i) => i,
                    None => {
                        groups.push((port.name.clone(), port.protocol.clone(), Vec::new()));
                        groups.len() - 1
                    }
                };
                for ep in &slice.endpoints {
                    for ip in &ep.ips {
                        groups[idx].2.push(Backend {
                            ip: *ip,
                            port: port.port,
                            ready: ep.ready,
                            pod: ep.pod.clone(),
                            node_name: ep.node_name.clone(),
                        });
                    }
                }
            }
        }
        let backends = groups.into_iter().map(|(n, p, b)| (n, p, Arc::from(b))).collect();
        self.backends.insert(service.clone(), Arc::new(PortBackends(backends)));
    }
}
