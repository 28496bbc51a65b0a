//! The lookup handle the daemon's event path calls: cheap, synchronous, never touches the network.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use crate::convert::split_container_id;
use crate::health::{Health, HealthState};
use crate::model::{Labels, PodIdentity, ResolvedPod, ResolvedService};
use crate::store::Index;

/// State shared between the watcher task (the only writer) and the handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) index: RwLock<Index>,
    pub(crate) health: HealthState,
    /// Bumped each time the writer takes the index lock, before it changes anything.
    pub(crate) generation: AtomicU64,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Index> {
        // The writer only swaps or inserts whole entries; a panic mid-write leaves a usable index.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Lookup handle over the identity cache. `Clone`, `Send`, `Sync`; every method takes a read lock
/// for the duration of a few hash lookups and `Arc` clones (the writer holds its lock only to
/// insert or swap entries), and a miss returns `None` at once.
#[derive(Debug, Clone)]
pub struct KubeIdentity {
    pub(crate) shared: Arc<Shared>,
}

impl KubeIdentity {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn resolve(index: &Index, pod: &Arc<PodIdentity>) -> ResolvedPod {
        ResolvedPod { pod: Arc::clone(pod), namespace_labels: index.namespaces.get(&pod.namespace).cloned() }
    }

    /// A count that moves whenever the index may have changed (any pod, namespace, Service or
    /// EndpointSlice update). A caller that remembers a value can tell, by comparing later, that an
    /// identity it resolved before may have changed since.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// A pod (on any node) by UID; terminated pods stay known until deleted.
    pub fn pod_by_uid(&self, uid: &str) -> Option<ResolvedPod> {
        let index = self.shared.read();
        index.pods.by_uid(uid).map(|p| Self::resolve(&index, p))
    }

    /// A pod on this node by container id, with or without its `runtime://` prefix.
    pub fn pod_by_container_id(&self, container_id: &str) -> Option<ResolvedPod> {
        let (_, id) = split_container_id(container_id);
        let index = self.shared.read();
        index.pods.by_container(id).map(|p| Self::resolve(&index, p))
    }

    /// The pod that holds this IP now (never a terminated, deleted or superseded pod, never a
    /// host-network pod).
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<ResolvedPod> {
        let index = self.shared.read();
        index.pods.by_ip(ip).map(|p| Self::resolve(&index, p))
    }

    /// The Service whose ClusterIP this is, the Service port matching `port` (TCP), and that
    /// port's backends from the Service's EndpointSlices.
    pub fn service_by_cluster_ip(&self, ip: IpAddr, port: u16) -> Option<ResolvedService> {
        let index = self.shared.read();
        let service = index.services.by_ip(ip)?;
        let service_port = service.ports.iter().find(|p| p.port == port && p.protocol == "TCP").cloned();
        let backends = service_port
            .as_ref()
            .and_then(|p| index.slices.backends(&service.namespace, &service.name).and_then(|b| b.for_port(p)).cloned())
            .unwrap_or_else(|| Arc::from(Vec::new()));
        Some(ResolvedService {
            service: Arc::clone(service),
            port: service_port,
            backends,
            namespace_labels: index.namespaces.get(&service.namespace).cloned(),
        })
    }

    /// A namespace's labels.
    pub fn namespace_labels(&self, namespace: &str) -> Option<Arc<Labels>> {
        self.shared.read().namespaces.get(namespace).cloned()
    }

    /// The watcher's health now.
    pub fn health(&self) -> Health {
        let counts = self.shared.read().counts();
        self.shared.health.snapshot(counts)
    }
}
