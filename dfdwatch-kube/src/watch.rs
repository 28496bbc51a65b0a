//! The watcher task: lists and watches pods, namespaces, Services and EndpointSlices, applies the
//! events to the index (it is the only writer), probes reachability and records health.

use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::{Backoff, StreamBackoff};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::config::{Limits, Settings};
use crate::convert::{Converter, NamespaceRecord, PodRecord, SliceRecord};
use crate::handle::{KubeIdentity, Shared};
use crate::health::{HealthState, RefusalReason, ResourceKind};
use crate::model::ServiceIdentity;
use crate::store::{Index, PodIndex, ServiceIndex, SliceIndex};

/// First wait after a watch error; doubles up to [`Settings::max_backoff`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest a reachability probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One kind of watched object and how it enters the index.
trait Watched: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    type Record: Send;
    const KIND: ResourceKind;
    fn max(limits: &Limits) -> usize;
    fn convert(c: &Converter<'_>, obj: &Self) -> Option<Self::Record>;
    fn apply(index: &mut Index, record: Self::Record, max: usize, health: &HealthState);
    /// Whether the index holds this record already, unchanged (an update of fields the index
    /// does not keep, such as a pod's readiness): then nothing is written, and the index's
    /// generation does not move, so the daemon does not re-judge its flows for nothing.
    fn unchanged(_index: &Index, _record: &Self::Record) -> bool {
        false
    }
    fn delete(index: &mut Index, obj: &Self);
    /// Replaces this kind's whole contents after a (re)list; built outside the lock.
    fn replace(shared: &Shared, records: Vec<Self::Record>, max: usize);
}

fn meta_key<K: Resource>(obj: &K) -> (String, String) {
    let m = obj.meta();
    (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
}

fn write(shared: &Shared) -> std::sync::RwLockWriteGuard<'_, Index> {
    let guard = shared.index.write().unwrap_or_else(PoisonError::into_inner);
    shared.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    guard
}

/// Drops a replaced part of the index. Callers take it out with `let old = mem::replace(&mut
/// write(..).part, new);`, so the write guard (a temporary of that statement) is released before
/// this runs: freeing 100,000 pod records takes hundreds of milliseconds, which would stall every
/// lookup under the lock. It is freed on the blocking pool, so it does not hold up the runtime's
/// other tasks either (the daemon's signals, reloads, HTTP).
fn drop_unlocked<T: Send + 'static>(old: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(old))),
        Err(_) => drop(old),
    }
}

impl Watched for Pod {
    type Record = PodRecord;
    const KIND: ResourceKind = ResourceKind::Pods;
    fn max(limits: &Limits) -> usize {
        limits.max_pods
    }
    fn convert(c: &Converter<'_>, obj: &Self) -> Option<PodRecord> {
        c.pod(obj)
    }
    fn apply(index: &mut Index, record: PodRecord, max: usize, health: &HealthState) {
        index.pods.apply(record, max, health);
    }
    fn unchanged(index: &Index, record: &PodRecord) -> bool {
        index.pods.holds(record)
    }
    fn delete(index: &mut Index, obj: &Self) {
        if let Some(uid) = obj.metadata.uid.as_deref() {
            index.pods.delete(uid);
        }
    }
    fn replace(shared: &Shared, records: Vec<PodRecord>, max: usize) {
        let built = PodIndex::from_list(records, max, &shared.health);
        let old = std::mem::replace(&mut write(shared).pods, built);
        drop_unlocked(old);
    }
}

impl Watched for Namespace {
    type Record = NamespaceRecord;
    const KIND: ResourceKind = ResourceKind::Namespaces;
    fn max(limits: &Limits) -> usize {
        limits.max_namespaces
    }
    fn convert(c: &Converter<'_>, obj: &Self) -> Option<NamespaceRecord> {
        c.namespace(obj)
    }
    fn unchanged(index: &Index, record: &NamespaceRecord) -> bool {
        index.namespaces.get(&record.name).is_some_and(|held| **held == *record.labels)
    }
    fn apply(index: &mut Index, record: NamespaceRecord, max: usize, health: &HealthState) {
        if !index.namespaces.contains_key(&record.name) && index.namespaces.len() >= max {
            health.refuse(RefusalReason::CapacityReached);
            tracing::warn!(max, "namespace capacity reached; namespace not indexed");
            return;
        }
        index.namespaces.insert(record.name, record.labels);
    }
    fn delete(index: &mut Index, obj: &Self) {
        if let Some(name) = obj.metadata.name.as_deref() {
            index.namespaces.remove(name);
        }
    }
    fn replace(shared: &Shared, records: Vec<NamespaceRecord>, max: usize) {
        let mut built = std::collections::HashMap::with_capacity(records.len());
        for r in records {
            if built.len() >= max {
                shared.health.refuse(RefusalReason::CapacityReached);
                continue;
            }
            built.insert(r.name, r.labels);
        }
        let old = std::mem::replace(&mut write(shared).namespaces, built);
        drop_unlocked(old);
    }
}

impl Watched for Service {
    type Record = Arc<ServiceIdentity>;
    const KIND: ResourceKind = ResourceKind::Services;
    fn max(limits: &Limits) -> usize {
        limits.max_services
    }
    fn convert(c: &Converter<'_>, obj: &Self) -> Option<Self::Record> {
        c.service(obj)
    }
    fn apply(index: &mut Index, record: Self::Record, max: usize, health: &HealthState) {
        index.services.apply(record, max, health);
    }
    fn unchanged(index: &Index, record: &Self::Record) -> bool {
        let key = (record.namespace.clone(), record.name.clone());
        index.services.get(&key).is_some_and(|held| **held == **record)
    }
    fn delete(index: &mut Index, obj: &Self) {
        index.services.delete(&meta_key(obj));
    }
    fn replace(shared: &Shared, records: Vec<Self::Record>, max: usize) {
        let built = ServiceIndex::from_list(records, max, &shared.health);
        let old = std::mem::replace(&mut write(shared).services, built);
        drop_unlocked(old);
    }
}

impl Watched for EndpointSlice {
    type Record = SliceRecord;
    const KIND: ResourceKind = ResourceKind::EndpointSlices;
    fn max(limits: &Limits) -> usize {
        limits.max_endpoint_slices
    }
    fn convert(c: &Converter<'_>, obj: &Self) -> Option<SliceRecord> {
        c.slice(obj)
    }
    fn apply(index: &mut Index, record: SliceRecord, max: usize, health: &HealthState) {
        index.slices.apply(record, max, health);
    }
    fn unchanged(index: &Index, record: &SliceRecord) -> bool {
        let key = (record.namespace.clone(), record.name.clone());
        index.slices.get(&key).is_some_and(|held| held == record)
    }
    fn delete(index: &mut Index, obj: &Self) {
        index.slices.delete(&meta_key(obj));
    }
    fn replace(shared: &Shared, records: Vec<SliceRecord>, max: usize) {
        let built = SliceIndex::from_list(records, max, &shared.health);
        let old = std::mem::replace(&mut write(shared).slices, built);
        drop_unlocked(old);
    }
}

/// Exponential backoff between watch retries, reset by the first successful event.
#[derive(Debug)]
struct CappedBackoff {
    next: Duration,
    max: Duration,
}

impl CappedBackoff {
    fn new(max: Duration) -> Self {
        Self { next: MIN_BACKOFF.min(max), max }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(now)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = MIN_BACKOFF.min(self.max);
    }
}

/// One item from one of the four watches (boxed: a Pod is large).
enum Update {
    Pod(Box<watcher::Result<Event<Pod>>>),
    Namespace(Box<watcher::Result<Event<Namespace>>>),
    Service(Box<watcher::Result<Event<Service>>>),
    Slice(Box<watcher::Result<Event<EndpointSlice>>>),
}

/// Objects gathered during a (re)list, swapped in whole when it completes.
struct Relist<R>(Option<Vec<R>>);

impl<R> Default for Relist<R> {
    fn default() -> Self {
        Self(None)
    }
}

#[derive(Default)]
struct Relists {
    pods: Relist<PodRecord>,
    namespaces: Relist<NamespaceRecord>,
    services: Relist<Arc<ServiceIdentity>>,
    slices: Relist<SliceRecord>,
}

/// The task that owns the watches and writes the identity index. Build it with
/// [`KubeIdentityService::new`] (or [`crate::start`]) and drive it with [`KubeIdentityService::run`].
pub struct KubeIdentityService {
    client: Client,
    settings: Settings,
    shared: Arc<Shared>,
}

impl Debug for KubeIdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeIdentityService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl KubeIdentityService {
    /// A service over an already-built client, and the lookup handle it feeds. Nothing is
    /// contacted until [`run`](Self::run).
    pub fn new(client: Client, settings: Settings) -> (Self, KubeIdentity) {
        let shared = Arc::new(Shared::default());
        let handle = KubeIdentity::new(Arc::clone(&shared));
        (Self { client, settings, shared }, handle)
    }

    fn stream<K: Watched>(&self, wrap: fn(Box<watcher::Result<Event<K>>>) -> Update) -> BoxStream<'static, Update> {
        // Bookmarks are requested (the default); a 410 Gone from a watch makes the watcher relist.
        let config = watcher::Config::default();
        let events = watcher::watcher(Api::<K>::all(self.client.clone()), config);
        StreamBackoff::new(events, CappedBackoff::new(self.settings.max_backoff))
            .map(move |e| wrap(Box::new(e)))
            .boxed()
    }

    /// Runs until `shutdown` completes. Never returns early on API server errors: it keeps
    /// retrying with backoff while the handles serve the cache as it was.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut events = futures::stream::select_all([
            self.stream::<Pod>(Update::Pod),
            self.stream::<Namespace>(Update::Namespace),
            self.stream::<Service>(Update::Service),
            self.stream::<EndpointSlice>(Update::Slice),
        ]);
        let mut relists = Relists::default();
        let event_loop = async {
            while let Some(update) = events.next().await {
                match update {
                    Update::Pod(e) => self.on_event(*e, &mut relists.pods),
                    Update::Namespace(e) => self.on_event(*e, &mut relists.namespaces),
                    Update::Service(e) => self.on_event(*e, &mut relists.services),
                    Update::Slice(e) => self.on_event(*e, &mut relists.slices),
                }
            }
        };
        let probe = self.probe_loop();
        tracing::info!(node = %self.settings.node_name, "Kubernetes identity watcher started");
        tokio::select! {
            () = shutdown => {}
            () = event_loop => {}
            () = probe => {}
        }
        tracing::info!("Kubernetes identity watcher stopped");
    }

    async fn probe_loop(&self) {
        let mut ticks = tokio::time::interval(self.settings.probe_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let timeout = PROBE_TIMEOUT.min(self.settings.probe_interval);
            match tokio::time::timeout(timeout, self.client.apiserver_version()).await {
                Ok(Ok(_)) => reconnected(self.shared.health.reachable()),
                Ok(Err(err)) => self.record_error(None, format!("probe: {err}"), is_reachable(&err)),
                Err(_) => self.record_error(None, format!("probe: no answer within {timeout:?}"), false),
            }
        }
    }

    fn record_error(&self, kind: Option<ResourceKind>, message: String, reachable: bool) {
        let was = self.shared.health.is_connected();
        if was && !reachable {
            tracing::warn!(error = %message, "Kubernetes API server unreachable; serving cached identities");
        } else {
            tracing::warn!(kind = kind.map(ResourceKind::as_str), error = %message, "Kubernetes watch error");
        }
        self.shared.health.error(kind, message, reachable);
    }

    fn on_event<K: Watched>(&self, event: watcher::Result<Event<K>>, relist: &mut Relist<K::Record>) {
        let converter = Converter { settings: &self.settings, health: &self.shared.health };
        let max = K::max(&self.settings.limits);
        let health = &self.shared.health;
        match event {
            Err(err) => {
                let reachable = match &err {
                    watcher::Error::InitialListFailed(e)
                    | watcher::Error::WatchStartFailed(e)
                    | watcher::Error::WatchFailed(e) => is_reachable(e),
                    watcher::Error::WatchError(status) => {
                        if status.code == 410 {
                            tracing::info!(kind = K::KIND.as_str(), "watch expired (410 Gone); relisting");
                        }
                        true
                    }
                    watcher::Error::NoResourceVersion => true,
                };
                self.record_error(Some(K::KIND), err.to_string(), reachable);
            }
            Ok(Event::Init) => {
                relist.0 = Some(Vec::new());
                reconnected(health.event());
            }
            Ok(Event::InitApply(obj)) => {
                if let Some(buffer) = relist.0.as_mut() {
                    if buffer.len() >= max {
                        health.refuse(RefusalReason::CapacityReached);
                    } else if let Some(record) = K::convert(&converter, &obj) {
                        buffer.push(record);
                    }
                }
                reconnected(health.event());
            }
            Ok(Event::InitDone) => {
                let records = relist.0.take().unwrap_or_default();
                let count = records.len();
                K::replace(&self.shared, records, max);
                reconnected(health.listed(K::KIND));
                tracing::info!(kind = K::KIND.as_str(), objects = count, "list complete");
            }
            Ok(Event::Apply(obj)) => {
                if let Some(record) = K::convert(&converter, &obj) {
                    if !K::unchanged(&self.shared.read(), &record) {
                        K::apply(&mut write(&self.shared), record, max, health);
                    }
                } else {
                    // A refused update must not leave the previous version answering lookups.
                    K::delete(&mut write(&self.shared), &obj);
                }
                reconnected(health.event());
            }
            Ok(Event::Delete(obj)) => {
                K::delete(&mut write(&self.shared), &obj);
                reconnected(health.event());
            }
        }
    }
}

fn reconnected(ended_outage: bool) {
    if ended_outage {
        tracing::info!("Kubernetes API server reachable again; watches resumed");
    }
}

/// Whether a client error means the API server answered (an error status, a bad body) rather
/// than could not be reached.
fn is_reachable(err: &kube::Error) -> bool {
    !matches!(err, kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_))
}
