//! Updates after the initial sync: namespace labels follow the namespace, a refused update drops
//! the stale version, and a malformed watch event neither panics nor stops the watch.

use dfdwatch_kube_standin as support;

use std::net::IpAddr;

use dfdwatch_kube::RefusalReason;
use serde_json::json;
use support::{Harness, Kind, WAIT, eventually, namespace, pod};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad test address {s:?}: {e}"))
}

const T1: &str = "2026-11-23T10:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_label_changes_show_in_pod_lookups() {
    let h = Harness::start(|api| {
        api.apply(Kind::Namespaces, namespace("shop", json!({"zone": "internal"})));
        api.apply(Kind::Pods, pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1));
    })
    .await;
    let zone = |h: &Harness| {
        h.identity.pod_by_ip(ip("10.1.0.1")).and_then(|p| p.namespace_labels).and_then(|l| l.get("zone").cloned())
    };
    assert_eq!(zone(&h).as_deref(), Some("internal"));
    h.api.apply(Kind::Namespaces, namespace("shop", json!({"zone": "dmz"})));
    eventually("new namespace label", WAIT, || (zone(&h).as_deref() == Some("dmz")).then_some(())).await;
    h.api.delete(Kind::Namespaces, "", "shop");
    eventually("namespace gone", WAIT, || h.identity.namespace_labels("shop").is_none().then_some(())).await;
    let p = h.identity.pod_by_ip(ip("10.1.0.1")).unwrap();
    assert_eq!(p.namespace_labels, None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_removes_the_previous_version() {
    let h = Harness::start(|api| {
        api.apply(Kind::Pods, pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1));
    })
    .await;
    assert!(h.identity.pod_by_ip(ip("10.1.0.1")).is_some());
    let mut bloated = pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1);
    let containers: Vec<serde_json::Value> = (0..65).map(|i| json!({"name": format!("c{i}")})).collect();
    bloated["spec"]["containers"] = json!(containers);
    h.api.apply(Kind::Pods, bloated);
    eventually("stale version dropped", WAIT, || h.identity.pod_by_uid("uid-a").is_none().then_some(())).await;
    assert_eq!(h.identity.pod_by_ip(ip("10.1.0.1")), None);
    assert_eq!(h.identity.health().refused_for(RefusalReason::TooManyContainers), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_watch_event_does_not_stop_the_watch() {
    let h = Harness::start(|_| {}).await;
    eventually("pod watch open", WAIT, || (h.api.open_watches(Kind::Pods) == 1).then_some(())).await;
    h.api.send_raw(
        Kind::Pods,
        r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":7},"spec":"x"}}"#,
    );
    h.api.send_raw(Kind::Pods, "this is not json");
    h.api.apply(Kind::Pods, pod("shop", "b", "uid-b", "node-a", Some("10.1.0.2"), "Running", T1));
    eventually("pod after the garbage", WAIT, || h.identity.pod_by_ip(ip("10.1.0.2"))).await;
    let health = h.identity.health();
    assert!(health.resource(dfdwatch_kube::ResourceKind::Pods).unwrap().errors >= 1);
    assert!(health.connected, "a bad body is an answer, not an outage");
    h.shutdown().await;
}

/// The generation moves when an identity changes, and only then: a pod update that changes
/// nothing the index keeps (here, a container's readiness) leaves it where it was, so the daemon
/// does not re-judge every flow on every status update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generation_moves_on_identity_changes_only() {
    let h = Harness::start(|api| {
        api.apply(Kind::Pods, pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1));
    })
    .await;
    let synced = h.identity.generation();
    let mut not_ready = pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1);
    not_ready["status"]["containerStatuses"][0]["ready"] = json!(false);
    h.api.apply(Kind::Pods, not_ready);
    // A marker applied after it: once the marker is in, the update before it was handled.
    h.api.apply(Kind::Pods, pod("shop", "marker", "uid-m", "node-a", Some("10.1.0.9"), "Running", T1));
    eventually("marker indexed", WAIT, || h.identity.pod_by_uid("uid-m").map(|_| ())).await;
    assert_eq!(h.identity.generation(), synced + 1, "only the marker moved it");
    let mut relabelled = pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", T1);
    relabelled["metadata"]["labels"]["app"] = json!("b");
    h.api.apply(Kind::Pods, relabelled);
    eventually("new labels", WAIT, || {
        h.identity.pod_by_uid("uid-a").filter(|p| p.pod.labels.get("app").map(String::as_str) == Some("b")).map(|_| ())
    })
    .await;
    assert!(h.identity.generation() > synced + 1, "a label change moves it");
    h.shutdown().await;
}
