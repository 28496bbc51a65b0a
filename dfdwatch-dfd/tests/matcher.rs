//! The compiled graph and the matcher: resolution on the shipped DFD, ambiguity, and a lookup
//! cost that does not grow with the number of nodes.

use std::time::Instant;

use dfdwatch_dfd::compile::{Compiled, Identity, Resolution};
use dfdwatch_dfd::load::load_str;

const PLATFORM: &str = include_str!("../../approved-dfd/00-platform.yaml");
const SHOP: &str = include_str!("../../approved-dfd/shop.yaml");

fn compiled(src: &str) -> Compiled {
    let (dfd, findings) = load_str("t.yaml", src);
    assert!(findings.is_empty(), "{findings:#?}");
    match Compiled::new(dfd) {
        Ok(c) => c,
        Err(e) => panic!("compile: {e}"),
    }
}

fn shop() -> Compiled {
    compiled(&format!("{PLATFORM}\n---\n{SHOP}"))
}

fn names(c: &Compiled, r: &Resolution) -> (Option<String>, Option<String>) {
    (
        r.node.and_then(|n| c.dfd.nodes.get(n)).map(|n| n.id.clone()),
        r.zone.and_then(|z| c.dfd.zones.get(z)).map(|z| z.id.clone()),
    )
}

fn pod(ns: &str, sa: &str, labels: &[(&str, &str)]) -> Identity {
    Identity {
        namespace: Some(ns.into()),
        service_account: Some(sa.into()),
        labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        ip: "10.42.0.7".parse().ok(),
        ..Identity::default()
    }
}

fn some(a: &str, b: &str) -> (Option<String>, Option<String>) {
    (Some(a.into()), Some(b.into()))
}

#[test]
fn graph_has_every_node_and_flow() {
    let c = shop();
    assert_eq!(c.graph.node_count(), 6);
    assert_eq!(c.graph.edge_count(), 5);
    let f = c.flows_between("api", "postgres");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, "api-to-postgres");
    assert!(c.flows_between("postgres", "api").is_empty());
}

#[test]
fn resolves_pods_addresses_and_zones() {
    let c = shop();
    let m = &c.matcher;
    assert_eq!(names(&c, &m.resolve(&pod("shop", "api", &[("app", "api")]))), some("api", "app"));
    assert_eq!(names(&c, &m.resolve(&pod("shop-data", "redis", &[("app", "redis")]))), some("redis", "data"));
    let pg = Identity {
        exe: Some("/usr/lib/postgresql/16/bin/postgres".into()),
        ..pod("shop-data", "postgres", &[("app", "postgres")])
    };
    assert_eq!(names(&c, &m.resolve(&pg)), some("postgres", "data"));
    let wrong_exe = Identity { exe: Some("/bin/sh".into()), ..pg };
    assert_eq!(names(&c, &m.resolve(&wrong_exe)), (None, Some("data".into())));
    // A canary pod: excluded by `track NotIn [canary]`, but still inside the app zone.
    let canary = pod("shop", "api", &[("app", "api"), ("track", "canary")]);
    assert_eq!(names(&c, &m.resolve(&canary)), (None, Some("app".into())));
    let ip = |s: &str| Identity { ip: s.parse().ok(), ..Identity::default() };
    assert_eq!(names(&c, &m.resolve(&ip("198.51.100.7"))), some("clients", "internet"));
    assert_eq!(names(&c, &m.resolve(&ip("2001:db8::1"))), some("clients", "internet"));
    assert_eq!(names(&c, &m.resolve(&ip("203.0.113.9"))), some("payments", "payments-saas"));
    assert_eq!(names(&c, &m.resolve(&ip("10.1.2.3"))), (None, None));
    // SPIFFE alone identifies the api.
    let spiffe = Identity { spiffe_id: Some("spiffe://cluster.local/ns/shop/sa/api".into()), ..Identity::default() };
    assert_eq!(names(&c, &m.resolve(&spiffe)).0.as_deref(), Some("api"));
}

#[test]
fn ambiguity_is_reported_not_guessed() {
    let src = "apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata: {name: amb}
spec:
  tiers: [{id: T1, level: 1}]
  zones: [{id: z, tier: T1}]
  nodes:
    - {id: a, kind: process, zone: z, match: {k8s: {namespace: ns, labels: {app: x}}}}
    - {id: b, kind: process, zone: z, match: {k8s: {namespace: ns}}}
    - {id: c, kind: process, zone: z, match: {spiffe: [\"spiffe://td/ns/ns/*\"], hosts: [\"web-*\"], systemdUnits: [nginx.service], cgroupPaths: [\"/system.slice/*\"]}}
";
    let c = compiled(src);
    let r = c.matcher.resolve(&pod("ns", "sa", &[("app", "x")]));
    assert_eq!(r.node, None);
    assert_eq!(r.ambiguous, vec![0, 1]);
    let host = Identity {
        spiffe_id: Some("spiffe://td/ns/ns/sa/web".into()),
        hostname: Some("web-01".into()),
        systemd_unit: Some("nginx.service".into()),
        cgroup_path: Some("/system.slice/nginx.service".into()),
        ..Identity::default()
    };
    assert_eq!(c.matcher.resolve(&host).node, Some(2));
    let other_host = Identity { hostname: Some("db-01".into()), ..host };
    assert_eq!(c.matcher.resolve(&other_host).node, None);
}

/// A DFD with `n` nodes: one namespace+label pod, one /24 and one SPIFFE prefix per three nodes.
fn synthetic(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata: {name: big}\nspec:\n  tiers: [{id: T1, level: 1}]\n  zones: [{id: z, tier: T1}]\n  nodes:\n",
    );
    for i in 0..n {
        let m = match i % 3 {
            0 => format!("{{k8s: {{namespace: ns{}, labels: {{app: a{i}}}}}}}", i % 50),
            1 => format!("{{cidrs: [10.{}.{}.0/24]}}", (i >> 8) & 255, i & 255),
            _ => format!("{{spiffe: [\"spiffe://td/ns/n{i}/*\"]}}"),
        };
        s.push_str(&format!("    - {{id: n{i}, kind: process, zone: z, match: {m}}}\n"));
    }
    s
}

fn probes(n: usize) -> Vec<Identity> {
    let last = |r: usize| (0..n).rev().find(|i| i % 3 == r).unwrap_or(0);
    let (a, b, c) = (last(0), last(1), last(2));
    vec![
        pod(&format!("ns{}", a % 50), "sa", &[("app", &format!("a{a}")), ("tier", "web")]),
        Identity { ip: format!("10.{}.{}.9", (b >> 8) & 255, b & 255).parse().ok(), ..Identity::default() },
        Identity { spiffe_id: Some(format!("spiffe://td/ns/n{c}/sa/x")), ..Identity::default() },
    ]
}

#[test]
fn lookup_cost_does_not_grow_with_node_count() {
    let mut report = Vec::new();
    let mut tested = Vec::new();
    for n in [30, 300, 3_000, 15_000] {
        let c = compiled(&synthetic(n));
        let ids = probes(n);
        for id in &ids {
            let r = c.matcher.resolve(id);
            assert!(r.node.is_some(), "n={n}: {id:?} -> {r:?}");
        }
        tested.push(ids.iter().map(|id| c.matcher.resolve(id).candidates_tested).sum::<usize>());
        let rounds = 5_000;
        let start = Instant::now();
        for _ in 0..rounds {
            for id in &ids {
                std::hint::black_box(c.matcher.resolve(std::hint::black_box(id)));
            }
        }
        let ns_per = start.elapsed().as_nanos() / (rounds * ids.len() as u128);
        report.push(format!("{n} nodes: {ns_per} ns/lookup"));
    }
    println!("matcher lookup cost: {}", report.join(", "));
    assert!(tested.windows(2).all(|w| w[0] == w[1]), "candidates tested grew with node count: {tested:?}");
}

/// A node bound by an address and a local-end-only field: the remote end of a socket, known by
/// its address, matches it by the address (the field is skipped, as documented); the local end,
/// which carries the field, must match both. For every local-only field.
#[test]
fn remote_ends_match_by_address_whatever_local_only_field_the_node_has() {
    type Set = fn(&mut Identity, &str);
    let fields: [(&str, &str, Set); 4] = [
        ("executables", "/usr/bin/api", |id, v| id.exe = Some(v.into())),
        ("images", "registry.example/api:1", |id, v| id.image = Some(v.into())),
        ("cgroupPaths", "/system.slice/api.service", |id, v| id.cgroup_path = Some(v.into())),
        ("systemdUnits", "api.service", |id, v| id.systemd_unit = Some(v.into())),
    ];
    for (field, value, set) in fields {
        let src = format!(
            "apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata: {{name: t}}
spec:
  tiers: [{{id: T2, level: 2}}]
  zones: [{{id: app, tier: T2, match: {{cidrs: [\"10.77.0.0/16\"]}}}}]
  nodes:
    - {{id: api, kind: process, zone: app, match: {{cidrs: [\"10.77.1.0/24\"], {field}: [\"{value}\"]}}}}
    - {{id: db, kind: datastore, zone: app, match: {{cidrs: [\"10.77.2.0/24\"]}}}}
  flows:
    - {{id: api-to-db, from: api, to: db, ports: [{{port: 5432}}], encryption: {{required: tls}}}}
"
        );
        let c = compiled(&src);
        let remote = Identity { ip: "10.77.1.20".parse().ok(), ..Identity::default() };
        assert_eq!(names(&c, &c.matcher.resolve(&remote)), some("api", "app"), "{field}: the remote end");
        let mut local = remote.clone();
        set(&mut local, value);
        assert_eq!(names(&c, &c.matcher.resolve(&local)), some("api", "app"), "{field}: the local end");
        set(&mut local, "/something/else");
        assert_eq!(names(&c, &c.matcher.resolve(&local)), (None, Some("app".into())), "{field}: another program");
    }
}
