//! Services and EndpointSlices through the real kube client: a ClusterIP resolves to its Service,
//! the Service port and that port's backends, and follows slice changes.

use dfdwatch_kube_standin as support;

use std::net::IpAddr;

use serde_json::json;
use support::{Harness, Kind, WAIT, endpoint_slice, eventually, namespace, service};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad test address {s:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_resolves_to_the_service_and_its_backends() {
    let h = Harness::start(|api| {
        api.apply(Kind::Namespaces, namespace("shop", json!({"team": "payments"})));
        api.apply(Kind::Services, service("shop", "payments", "10.96.0.10", &[("http", 80), ("grpc", 9090)]));
        api.apply(
            Kind::EndpointSlices,
            endpoint_slice(
                "shop",
                "payments-abc",
                "payments",
                ("http", 8080),
                &[("10.1.0.11", "payments-1", "uid-p1"), ("10.1.0.12", "payments-2", "uid-p2")],
            ),
        );
    })
    .await;
    let id = &h.identity;

    let r = id.service_by_cluster_ip(ip("10.96.0.10"), 80).unwrap();
    assert_eq!((r.service.namespace.as_str(), r.service.name.as_str()), ("shop", "payments"));
    assert_eq!(r.service.labels.get("tier").map(String::as_str), Some("backend"));
    assert_eq!(r.service.selector.get("app").map(String::as_str), Some("payments"));
    let port = r.port.clone().unwrap();
    assert_eq!((port.name.as_deref(), port.port, port.protocol.as_str()), (Some("http"), 80, "TCP"));
    let mut backends: Vec<(IpAddr, u16, String)> =
        r.backends.iter().map(|b| (b.ip, b.port, b.pod.as_ref().unwrap().name.clone())).collect();
    backends.sort();
    assert_eq!(
        backends,
        vec![(ip("10.1.0.11"), 8080, "payments-1".to_owned()), (ip("10.1.0.12"), 8080, "payments-2".to_owned()),]
    );
    let b = r.backend(ip("10.1.0.12"), 8080).unwrap();
    assert_eq!(b.pod.as_ref().and_then(|p| p.uid.as_deref()), Some("uid-p2"));
    assert_eq!(b.ready, Some(true));
    assert_eq!(r.namespace_labels.as_deref().and_then(|l| l.get("team")).map(String::as_str), Some("payments"));

    // A port the slices do not cover yet: the Service, the port, no backends.
    let grpc = id.service_by_cluster_ip(ip("10.96.0.10"), 9090).unwrap();
    assert_eq!(grpc.port.as_ref().map(|p| p.port), Some(9090));
    assert!(grpc.backends.is_empty());
    // A port the Service does not expose: the Service, no port, no backends.
    let other = id.service_by_cluster_ip(ip("10.96.0.10"), 443).unwrap();
    assert_eq!(other.port, None);
    assert!(other.backends.is_empty());
    // Not a ClusterIP.
    assert_eq!(id.service_by_cluster_ip(ip("10.96.0.11"), 80), None);

    // A second slice adds a backend; deleting the first removes its two.
    h.api.apply(
        Kind::EndpointSlices,
        endpoint_slice("shop", "payments-def", "payments", ("http", 8080), &[("10.1.0.13", "payments-3", "uid-p3")]),
    );
    eventually("three backends", WAIT, || {
        let r = id.service_by_cluster_ip(ip("10.96.0.10"), 80)?;
        (r.backends.len() == 3).then_some(())
    })
    .await;
    h.api.delete(Kind::EndpointSlices, "shop", "payments-abc");
    let left = eventually("one backend", WAIT, || {
        let r = id.service_by_cluster_ip(ip("10.96.0.10"), 80)?;
        (r.backends.len() == 1).then_some(r)
    })
    .await;
    assert_eq!(left.backends[0].ip, ip("10.1.0.13"));

    // A Service created later resolves once watched; a deleted one stops resolving.
    h.api.apply(Kind::Services, service("shop", "cart", "10.96.0.20", &[("http", 80)]));
    eventually("cart service", WAIT, || id.service_by_cluster_ip(ip("10.96.0.20"), 80)).await;
    h.api.delete(Kind::Services, "shop", "payments");
    eventually("payments gone", WAIT, || id.service_by_cluster_ip(ip("10.96.0.10"), 80).is_none().then_some(())).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_services_are_not_indexed_by_ip() {
    let h = Harness::start(|api| {
        api.apply(Kind::Services, service("shop", "db", "None", &[("sql", 5432)]));
    })
    .await;
    let health = h.identity.health();
    assert_eq!(health.resource(dfdwatch_kube::ResourceKind::Services).map(|r| r.objects), Some(1));
    assert_eq!(health.refused_for(dfdwatch_kube::RefusalReason::InvalidAddress), 0);
    h.shutdown().await;
}
