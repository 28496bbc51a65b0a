//! API server outages and expired watches through the real kube client: the cache is kept while
//! the server is down and health says so; a 410 Gone forces a relist; bookmarks move the resume
//! point so that no relist is needed.

use dfdwatch_kube_standin as support;

use std::net::IpAddr;

use dfdwatch_kube::ResourceKind;
use serde_json::json;
use support::{Harness, Kind, WAIT, eventually, namespace, pod};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad test address {s:?}: {e}"))
}

const T1: &str = "2026-11-23T10:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_mid_watch_keeps_the_cache_then_resyncs() {
    let mut h = Harness::start(|api| {
        api.apply(Kind::Namespaces, namespace("shop", json!({"zone": "internal"})));
        api.apply(Kind::Pods, pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1));
        api.apply(Kind::Pods, pod("shop", "b", "uid-b", "node-b", Some("10.1.0.2"), "Running", T1));
    })
    .await;
    let before = h.identity.health();
    assert!(before.connected && before.synced);
    let last_event = before.last_event_at;

    h.api.stop().await;
    let down = eventually("health says disconnected", WAIT, || {
        let hl = h.identity.health();
        (!hl.connected).then_some(hl)
    })
    .await;
    assert!(down.last_error.is_some());
    assert!(down.synced, "the cache stays complete as of the last sync");
    // Lookups keep answering from the cache.
    assert_eq!(h.identity.pod_by_ip(ip("10.1.0.1")).unwrap().pod.uid, "uid-a");
    assert_eq!(h.identity.pod_by_uid("uid-b").unwrap().pod.name, "b");
    assert!(h.identity.namespace_labels("shop").is_some());

    // While it is down, the cluster changes (etcd keeps the history).
    h.api.delete_unannounced_with_history(Kind::Pods, "shop", "b");
    h.api.restart().await;
    eventually("reconnected", WAIT, || h.identity.health().connected.then_some(())).await;
    eventually("pod b's deletion seen after the restart", WAIT, || {
        h.identity.pod_by_uid("uid-b").is_none().then_some(())
    })
    .await;
    h.api.apply(Kind::Pods, pod("shop", "c", "uid-c", "node-a", Some("10.1.0.3"), "Running", T1));
    eventually("new pod after restart", WAIT, || h.identity.pod_by_ip(ip("10.1.0.3"))).await;
    let after = h.identity.health();
    assert!(after.connected && after.synced);
    assert!(after.last_event_at > last_event);
    assert!(after.resource(ResourceKind::Pods).unwrap().errors >= 1);
    assert_eq!(h.identity.pod_by_ip(ip("10.1.0.1")).unwrap().pod.uid, "uid-a");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_forces_a_relist_that_replaces_the_cache() {
    let h = Harness::start(|api| {
        api.apply(Kind::Pods, pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1));
        api.apply(Kind::Pods, pod("shop", "b", "uid-b", "node-a", Some("10.1.0.2"), "Running", T1));
    })
    .await;
    assert_eq!(h.api.lists(Kind::Pods), 1);
    // Changes no watch will ever announce, then the history is compacted and the watches end:
    // resuming from the old resourceVersion gets 410 Gone, and only a relist shows the changes.
    h.api.delete_unannounced(Kind::Pods, "shop", "a");
    h.api.apply_unannounced(Kind::Pods, pod("shop", "c", "uid-c", "node-a", Some("10.1.0.1"), "Running", T1));
    h.api.compact();
    h.api.close_watches();

    eventually("relisted pod c holds the IP", WAIT, || {
        h.identity.pod_by_ip(ip("10.1.0.1")).filter(|p| p.pod.uid == "uid-c")
    })
    .await;
    assert_eq!(h.identity.pod_by_uid("uid-a"), None, "a pod missing from the relist is dropped");
    assert_eq!(h.identity.pod_by_uid("uid-b").unwrap().pod.name, "b");
    assert_eq!(h.api.lists(Kind::Pods), 2, "exactly one relist");
    let health = h.identity.health();
    let pods = health.resource(ResourceKind::Pods).unwrap();
    assert_eq!(pods.lists, 2);
    assert!(pods.errors >= 1, "the 410 is recorded");
    let err = health.last_error.clone().unwrap_or_default();
    assert!(err.contains("too old resource version"), "last error: {err}");
    assert!(health.connected, "a 410 is an answer, not an outage");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_move_the_resume_point_so_no_relist_is_needed() {
    let h = Harness::start(|api| {
        api.apply(Kind::Pods, pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1));
    })
    .await;
    eventually("pod watch open", WAIT, || (h.api.open_watches(Kind::Pods) == 1).then_some(())).await;
    assert!(h.api.watches(Kind::Pods).iter().all(|w| w.bookmarks), "bookmarks requested");
    // Other resources moved the resourceVersion on; the pod watch only learns it from a bookmark.
    h.api.bump(50);
    let rv = h.api.bookmark();
    h.api.compact();
    h.api.close_watches();
    let resumed = eventually("pod watch resumed", WAIT, || {
        let w = h.api.watches(Kind::Pods);
        (w.len() >= 2).then(|| w[1].clone())
    })
    .await;
    assert_eq!(resumed.resource_version, Some(rv.to_string()), "resumed from the bookmark");
    assert_eq!(h.api.lists(Kind::Pods), 1, "no relist");
    h.api.apply(Kind::Pods, pod("shop", "b", "uid-b", "node-a", Some("10.1.0.2"), "Running", T1));
    eventually("pod b via the resumed watch", WAIT, || h.identity.pod_by_ip(ip("10.1.0.2"))).await;
    assert_eq!(h.api.lists(Kind::Pods), 1);
    h.shutdown().await;
}
