//! Pod index: by UID (all pods), by IP (who holds each pod IP now) and by container id (pods on
//! this node), with the IP-reuse rule that keeps a dead pod from being named for a new pod's IP.
//!
//! The rule: a pod claims its IPs unless it uses the host network or has terminated (phase
//! `Succeeded`/`Failed`). When two pods claim one IP (the new pod arrived before the old pod's
//! deletion or terminal status), the claim of the pod with the later `status.startTime` wins;
//! when either start time is unknown or they are equal, the later event wins. A pod that lost an
//! IP never gets it back by default: when the winner goes away, the IP resolves to nothing, because
//! any remaining claimant's status is stale.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::convert::PodRecord;
use crate::health::{HealthState, RefusalReason};
use crate::model::PodIdentity;

#[derive(Debug)]
struct PodEntry {
    record: PodRecord,
    /// IPs this pod holds in `by_ip`.
    claims: Vec<IpAddr>,
    /// Container ids this pod holds in `by_container`.
    containers: Vec<String>,
}

/// All pods, indexed.
#[derive(Debug, Default)]
pub(crate) struct PodIndex {
    by_uid: HashMap<String, PodEntry>,
    by_ip: HashMap<IpAddr, String>,
    by_container: HashMap<String, String>,
}

impl PodIndex {
    /// Builds an index from a complete list (a relist). Pods are applied in start-time order so
    /// that the result does not depend on the list's order.
    pub(crate) fn from_list(mut records: Vec<PodRecord>, max: usize, health: &HealthState) -> Self {
        records.sort_by_key(|r| r.start_time);
        let mut index = Self::default();
        for r in records {
            index.apply(r, max, health);
        }
        index
    }

    pub(crate) fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub(crate) fn by_uid(&self, uid: &str) -> Option<&Arc<PodIdentity>> {
        self.by_uid.get(uid).map(|e| &e.record.ident)
    }

    /// Whether the index holds `record` already: the same identity and start time.
    pub(crate) fn holds(&self, record: &PodRecord) -> bool {
        self.by_uid
            .get(&record.ident.uid)
            .is_some_and(|e| e.record.start_time == record.start_time && *e.record.ident == *record.ident)
    }

    pub(crate) fn by_ip(&self, ip: IpAddr) -> Option<&Arc<PodIdentity>> {
        self.by_ip.get(&ip).and_then(|uid| self.by_uid(uid))
    }

    pub(crate) fn by_container(&self, id: &str) -> Option<&Arc<PodIdentity>> {
        self.by_container.get(id).and_then(|uid| self.by_uid(uid))
    }

    /// Adds or replaces a pod. Returns false if refused for capacity.
    pub(crate) fn apply(&mut self, record: PodRecord, max: usize, health: &HealthState) -> bool {
        let uid = record.ident.uid.clone();
        if !self.by_uid.contains_key(&uid) && self.by_uid.len() >= max {
            health.refuse(RefusalReason::CapacityReached);
            tracing::warn!(max, "pod capacity reached; pod not indexed");
            return false;
        }
        self.release(&uid);
        let pod = &record.ident;
        let mut claims = Vec::new();
        if !pod.host_network && !pod.is_terminated() {
            for ip in &pod.pod_ips {
                match self.by_ip.get(ip) {
                    Some(holder) if *holder != uid => {
                        let holder_start = self.by_uid.get(holder).and_then(|e| e.record.start_time);
                        let newer_holder = matches!(
                            (holder_start, record.start_time),
                            (Some(h), Some(mine)) if h > mine
                        );
                        health.ip_conflict();
                        if newer_holder {
                            tracing::debug!(%ip, pod = %pod.name, "IP held by a newer pod; claim ignored");
                            continue;
                        }
                        let old = holder.clone();
                        if let Some(e) = self.by_uid.get_mut(&old) {
                            e.claims.retain(|c| c != ip);
                        }
                        tracing::debug!(%ip, pod = %pod.name, "IP reused; now attributed to the newer pod");
                    }
                    _ => {}
                }
                self.by_ip.insert(*ip, uid.clone());
                claims.push(*ip);
            }
        }
        let mut containers = Vec::new();
        if pod.on_this_node {
            for id in pod.containers.iter().filter_map(|c| c.container_id.as_ref()) {
                self.by_container.insert(id.clone(), uid.clone());
                containers.push(id.clone());
            }
        }
        self.by_uid.insert(uid, PodEntry { record, claims, containers });
        true
    }

    /// Removes a pod and every index entry that still points to it.
    pub(crate) fn delete(&mut self, uid: &str) {
        self.release(uid);
        self.by_uid.remove(uid);
    }

    fn release(&mut self, uid: &str) {
        let Some(entry) = self.by_uid.get_mut(uid) else {
            return;
        };
        for ip in entry.claims.drain(..) {
            if self.by_ip.get(&ip).is_some_and(|h| h == uid) {
                self.by_ip.remove(&ip);
            }
        }
        for id in entry.containers.drain(..) {
            if self.by_container.get(&id).is_some_and(|h| h == uid) {
                self.by_container.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerIdentity, ContainerKind};
    use k8s_openapi::jiff::Timestamp;

    fn pod(uid: &str, ip: &str, start: Option<i64>, phase: &str) -> PodRecord {
        PodRecord {
            start_time: start.map(|s| Timestamp::from_second(s).unwrap()),
            ident: Arc::new(PodIdentity {
                namespace: "ns".into(),
                name: format!("pod-{uid}"),
                uid: uid.into(),
                labels: Default::default(),
                service_account: "default".into(),
                node_name: Some("node-a".into()),
                on_this_node: true,
                host_network: false,
                phase: Some(phase.into()),
                containers: vec![ContainerIdentity {
                    name: "c".into(),
                    kind: ContainerKind::Regular,
                    image: None,
                    container_id: Some(format!("cid-{uid}")),
                    runtime: Some("containerd".into()),
                }],
                pod_ips: vec![ip.parse().unwrap()],
                spiffe_id: None,
            }),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn holder(idx: &PodIndex, s: &str) -> Option<String> {
        idx.by_ip(ip(s)).map(|p| p.uid.clone())
    }

    #[test]
    fn add_before_delete_gives_the_ip_to_the_new_pod() {
        let h = HealthState::default();
        let mut idx = PodIndex::default();
        idx.apply(pod("old", "10.0.0.5", Some(100), "Running"), 10, &h);
        idx.apply(pod("new", "10.0.0.5", Some(200), "Running"), 10, &h);
        assert_eq!(holder(&idx, "10.0.0.5").as_deref(), Some("new"));
        // A late update of the old pod must not take the IP back.
        idx.apply(pod("old", "10.0.0.5", Some(100), "Running"), 10, &h);
        assert_eq!(holder(&idx, "10.0.0.5").as_deref(), Some("new"));
        idx.delete("old");
        assert_eq!(holder(&idx, "10.0.0.5").as_deref(), Some("new"));
        assert_eq!(idx.by_container("cid-old"), None);
        assert_eq!(idx.by_container("cid-new").unwrap().uid, "new");
    }

    #[test]
    fn without_start_times_the_later_event_wins_and_the_loser_never_returns() {
        let h = HealthState::default();
        let mut idx = PodIndex::default();
        idx.apply(pod("old", "10.0.0.5", None, "Running"), 10, &h);
        idx.apply(pod("new", "10.0.0.5", None, "Running"), 10, &h);
        assert_eq!(holder(&idx, "10.0.0.5").as_deref(), Some("new"));
        idx.delete("new");
        assert_eq!(holder(&idx, "10.0.0.5"), None, "the stale old pod must not get the IP back");
    }

    #[test]
    fn terminated_pods_release_their_ip_and_host_network_pods_claim_none() {
        let h = HealthState::default();
        let mut idx = PodIndex::default();
        idx.apply(pod("a", "10.0.0.7", Some(1), "Running"), 10, &h);
        idx.apply(pod("a", "10.0.0.7", Some(1), "Succeeded"), 10, &h);
        assert_eq!(holder(&idx, "10.0.0.7"), None);
        assert!(idx.by_uid("a").is_some(), "a terminated pod is still known by UID");
        let mut host = pod("h", "192.0.2.1", Some(1), "Running");
        Arc::make_mut(&mut host.ident).host_network = true;
        idx.apply(host, 10, &h);
        assert_eq!(holder(&idx, "192.0.2.1"), None);
    }

    #[test]
    fn relist_order_does_not_matter_and_capacity_is_enforced() {
        let h = HealthState::default();
        let a = PodIndex::from_list(
            vec![pod("new", "10.0.0.5", Some(200), "Running"), pod("old", "10.0.0.5", Some(100), "Running")],
            10,
            &h,
        );
        assert_eq!(holder(&a, "10.0.0.5").as_deref(), Some("new"));
        let mut idx = PodIndex::default();
        assert!(idx.apply(pod("1", "10.0.0.1", None, "Running"), 1, &h));
        assert!(!idx.apply(pod("2", "10.0.0.2", None, "Running"), 1, &h));
        assert!(idx.apply(pod("1", "10.0.0.3", None, "Running"), 1, &h), "updates are not capacity-bound");
        assert_eq!(holder(&idx, "10.0.0.1"), None);
        assert_eq!(holder(&idx, "10.0.0.3").as_deref(), Some("1"));
    }
}
