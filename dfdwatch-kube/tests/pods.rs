//! Pods through the real kube client against the stand-in API server: late pods, IP reuse in both
//! event orders, terminated pods, refusals of oversized objects.

use dfdwatch_kube_standin as support;

use std::net::IpAddr;
use std::time::Duration;

use dfdwatch_kube::RefusalReason;
use serde_json::json;
use support::{Harness, Kind, WAIT, eventually, namespace, pod};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad test address {s:?}: {e}"))
}

const T1: &str = "2026-11-23T10:00:00Z";
const T2: &str = "2026-11-23T10:05:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_created_after_its_first_lookup_is_a_miss_then_a_hit() {
    let h = Harness::start(|api| {
        api.apply(Kind::Namespaces, namespace("shop", json!({"zone": "internal"})));
    })
    .await;
    let id = &h.identity;
    assert_eq!(id.pod_by_ip(ip("10.1.0.9")), None);
    assert_eq!(id.pod_by_uid("uid-late"), None);
    assert_eq!(id.pod_by_container_id("containerd://cid-uid-late"), None);

    h.api.apply(Kind::Pods, pod("shop", "late", "uid-late", "node-a", Some("10.1.0.9"), "Running", T1));
    let got = eventually("late pod by IP", WAIT, || id.pod_by_ip(ip("10.1.0.9"))).await;
    let p = &got.pod;
    assert_eq!((p.namespace.as_str(), p.name.as_str(), p.uid.as_str()), ("shop", "late", "uid-late"));
    assert_eq!(p.labels.get("app").map(String::as_str), Some("late"));
    assert_eq!(p.service_account, "late-sa");
    assert_eq!(p.node_name.as_deref(), Some("node-a"));
    assert!(p.on_this_node);
    assert_eq!(p.pod_ips, vec![ip("10.1.0.9")]);
    assert_eq!(p.spiffe_id.as_ref().map(|s| s.as_str()), Some("spiffe://cluster.local/ns/shop/sa/late-sa"));
    assert_eq!(p.containers.len(), 1);
    assert_eq!(p.containers[0].name, "app");
    assert_eq!(p.containers[0].image.as_deref(), Some("registry.example/app:1"));
    assert_eq!(p.containers[0].container_id.as_deref(), Some("cid-uid-late"));
    assert_eq!(p.containers[0].runtime.as_deref(), Some("containerd"));
    assert_eq!(got.namespace_labels.as_deref().and_then(|l| l.get("zone")).map(String::as_str), Some("internal"));
    assert_eq!(id.pod_by_uid("uid-late").unwrap().pod, got.pod);
    assert_eq!(id.pod_by_container_id("cid-uid-late").unwrap().pod, got.pod);
    assert_eq!(id.pod_by_container_id("containerd://cid-uid-late").unwrap().pod, got.pod);
    assert_eq!(id.namespace_labels("shop").unwrap().get("zone").map(String::as_str), Some("internal"));

    // A pod on another node is a remote end: known by IP and UID, not by container id.
    h.api.apply(Kind::Pods, pod("shop", "far", "uid-far", "node-b", Some("10.2.0.3"), "Running", T1));
    let far = eventually("remote pod", WAIT, || id.pod_by_ip(ip("10.2.0.3"))).await;
    assert!(!far.pod.on_this_node);
    assert_eq!(id.pod_by_container_id("cid-uid-far"), None);
    h.shutdown().await;
}

/// Polls until `ip` resolves to `want`, failing at once if it ever resolves to `never`.
async fn until_ip_is(h: &Harness, addr: &str, want: Option<&str>, never: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = h.identity.pod_by_ip(ip(addr)).map(|p| p.pod.uid.clone());
        assert_ne!(now.as_deref(), Some(never), "{addr} attributed to the dead pod");
        if now.as_deref() == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{addr}: still {now:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_reused_after_delete_then_add_is_never_the_old_pod() {
    let h = Harness::start(|api| {
        api.apply(Kind::Pods, pod("shop", "old", "uid-old", "node-a", Some("10.1.0.5"), "Running", T1));
    })
    .await;
    assert_eq!(h.identity.pod_by_ip(ip("10.1.0.5")).unwrap().pod.uid, "uid-old");
    h.api.delete(Kind::Pods, "shop", "old");
    eventually("old pod gone", WAIT, || h.identity.pod_by_uid("uid-old").is_none().then_some(())).await;
    assert_eq!(h.identity.pod_by_ip(ip("10.1.0.5")), None);
    h.api.apply(Kind::Pods, pod("shop", "new", "uid-new", "node-a", Some("10.1.0.5"), "Running", T2));
    until_ip_is(&h, "10.1.0.5", Some("uid-new"), "uid-old").await;
    assert_eq!(h.identity.pod_by_container_id("cid-uid-old"), None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_reused_before_the_old_pods_delete_arrives_is_never_the_old_pod() {
    let h = Harness::start(|api| {
        api.apply(Kind::Pods, pod("shop", "old", "uid-old", "node-a", Some("10.1.0.5"), "Running", T1));
    })
    .await;
    // The new pod's ADDED arrives while the old pod still says Running with the same IP.
    h.api.apply(Kind::Pods, pod("shop", "new", "uid-new", "node-a", Some("10.1.0.5"), "Running", T2));
    eventually("new pod known", WAIT, || h.identity.pod_by_uid("uid-new")).await;
    until_ip_is(&h, "10.1.0.5", Some("uid-new"), "uid-old").await;
    // A late status update of the old pod does not take the IP back.
    let mut stale = pod("shop", "old", "uid-old", "node-a", Some("10.1.0.5"), "Running", T1);
    stale["metadata"]["labels"]["touched"] = json!("yes");
    h.api.apply(Kind::Pods, stale);
    eventually("old pod update applied", WAIT, || {
        h.identity.pod_by_uid("uid-old").filter(|p| p.pod.labels.contains_key("touched"))
    })
    .await;
    until_ip_is(&h, "10.1.0.5", Some("uid-new"), "uid-old").await;
    // Then the old pod's deletion leaves the new pod's IP alone.
    h.api.delete(Kind::Pods, "shop", "old");
    eventually("old pod gone", WAIT, || h.identity.pod_by_uid("uid-old").is_none().then_some(())).await;
    until_ip_is(&h, "10.1.0.5", Some("uid-new"), "uid-old").await;
    assert!(h.identity.health().ip_conflicts >= 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pod_releases_its_ip_but_keeps_its_uid() {
    let h = Harness::start(|api| {
        api.apply(Kind::Pods, pod("batch", "job", "uid-job", "node-a", Some("10.1.0.7"), "Running", T1));
    })
    .await;
    assert!(h.identity.pod_by_ip(ip("10.1.0.7")).is_some());
    h.api.apply(Kind::Pods, pod("batch", "job", "uid-job", "node-a", Some("10.1.0.7"), "Succeeded", T1));
    eventually("IP released", WAIT, || h.identity.pod_by_ip(ip("10.1.0.7")).is_none().then_some(())).await;
    let p = h.identity.pod_by_uid("uid-job").unwrap();
    assert_eq!(p.pod.phase.as_deref(), Some("Succeeded"));
    // A Failed pod's IP, reused by a new pod: the new pod.
    h.api.apply(Kind::Pods, pod("batch", "next", "uid-next", "node-a", Some("10.1.0.7"), "Running", T2));
    until_ip_is(&h, "10.1.0.7", Some("uid-next"), "uid-job").await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_odd_objects_are_refused_and_counted_without_stopping_the_watch() {
    let h = Harness::start(|_| {}).await;
    let mut big = pod("shop", "big", "uid-big", "node-a", Some("10.1.0.20"), "Running", T1);
    let labels: serde_json::Map<String, serde_json::Value> = (0..100).map(|i| (format!("l{i}"), json!("v"))).collect();
    big["metadata"]["labels"] = serde_json::Value::Object(labels);
    h.api.apply(Kind::Pods, big);
    let mut long = pod("shop", "long", "uid-long", "node-a", Some("10.1.0.21"), "Running", T1);
    long["metadata"]["labels"]["app"] = json!("x".repeat(64));
    h.api.apply(Kind::Pods, long);
    let mut no_uid = pod("shop", "nouid", "", "node-a", Some("10.1.0.22"), "Running", T1);
    no_uid["metadata"].as_object_mut().unwrap().remove("uid");
    h.api.apply(Kind::Pods, no_uid);
    let mut bad_ip = pod("shop", "badip", "uid-badip", "node-a", Some("10.1.0.300"), "Running", T1);
    bad_ip["spec"]["serviceAccountName"] = json!("sa:with:colons");
    h.api.apply(Kind::Pods, bad_ip);
    h.api.apply(Kind::Pods, pod("shop", "fine", "uid-fine", "node-a", Some("10.1.0.23"), "Running", T1));

    eventually("the good pod after the bad ones", WAIT, || h.identity.pod_by_ip(ip("10.1.0.23"))).await;
    let health = h.identity.health();
    assert_eq!(health.refused_for(RefusalReason::TooManyLabels), 1);
    assert_eq!(health.refused_for(RefusalReason::LabelTooLong), 1);
    assert_eq!(health.refused_for(RefusalReason::MissingField), 1);
    assert_eq!(health.refused_for(RefusalReason::InvalidAddress), 1);
    assert_eq!(health.refused_for(RefusalReason::SpiffeRejected), 1);
    assert_eq!(h.identity.pod_by_uid("uid-big"), None);
    assert_eq!(h.identity.pod_by_uid("uid-long"), None);
    assert_eq!(h.identity.pod_by_ip(ip("10.1.0.22")), None);
    let odd = h.identity.pod_by_uid("uid-badip").unwrap();
    assert!(odd.pod.pod_ips.is_empty());
    assert_eq!(odd.pod.spiffe_id, None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pods_resolve_by_both_ips_and_init_containers_by_id() {
    let mut p = pod("shop", "ds", "uid-ds", "node-a", Some("10.1.0.30"), "Running", T1);
    p["status"]["podIPs"] = json!([{"ip": "10.1.0.30"}, {"ip": "fd00::30"}]);
    p["spec"]["initContainers"] = json!([{"name": "setup", "image": "registry.example/setup:1"}]);
    p["status"]["initContainerStatuses"] = json!([{"name": "setup", "image": "registry.example/setup:1",
        "imageID": "", "ready": false, "restartCount": 0, "containerID": "cri-o://init-ds"}]);
    let h = Harness::start(move |api| {
        api.apply(Kind::Pods, p);
    })
    .await;
    let v4 = h.identity.pod_by_ip(ip("10.1.0.30")).unwrap();
    let v6 = h.identity.pod_by_ip(ip("fd00::30")).unwrap();
    assert_eq!(v4.pod, v6.pod);
    assert_eq!(v4.pod.pod_ips, vec![ip("10.1.0.30"), ip("fd00::30")]);
    let by_init = h.identity.pod_by_container_id("cri-o://init-ds").unwrap();
    assert_eq!(by_init.pod.uid, "uid-ds");
    let init = &by_init.pod.containers[0];
    assert_eq!((init.name.as_str(), init.kind), ("setup", dfdwatch_kube::ContainerKind::Init));
    assert_eq!(init.runtime.as_deref(), Some("cri-o"));
    h.shutdown().await;
}
