//! Lint and parse behaviour on small fixtures: each rule fires where it should, with its place.

use dfdwatch_dfd::date::Date;
use dfdwatch_dfd::diag::{Finding, Severity};
use dfdwatch_dfd::lint::lint;
use dfdwatch_dfd::load::load_str;

const PLATFORM: &str = include_str!("../../approved-dfd/00-platform.yaml");
const SHOP: &str = include_str!("../../approved-dfd/shop.yaml");

fn today() -> Date {
    Date { year: 2026, month: 11, day: 23 }
}

/// Shipped DFD plus `extra` (another document) through parse and lint.
fn run(extra: &str) -> Vec<Finding> {
    let src = format!("{PLATFORM}\n---\n{SHOP}\n---\n{extra}");
    let (dfd, mut findings) = load_str("t.yaml", &src);
    assert!(findings.is_empty(), "parse findings: {findings:#?}");
    findings.extend(lint(&dfd, today()));
    findings
}

fn parse_only(src: &str) -> Vec<Finding> {
    load_str("t.yaml", src).1
}

fn rules(f: &[Finding]) -> Vec<&'static str> {
    let mut r: Vec<_> = f.iter().map(|f| f.rule).collect();
    r.sort_unstable();
    r
}

const HEAD: &str =
    "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata: {name: extra}\nspec:\n";

#[test]
fn the_notes_counterexample() {
    // A direct plaintext nginx -> postgres flow, and an api-canary node overlapping api.
    let extra = format!(
        "{HEAD}  nodes:
    - {{id: api-canary, kind: process, zone: app, match: {{k8s: {{namespace: shop, labels: {{app: api}}}}}}}}
  flows:
    - {{id: nginx-to-db, from: nginx, to: postgres, ports: [{{port: 5432}}], encryption: {{required: none}}, data: [pii]}}
"
    );
    let f = run(&extra);
    assert_eq!(rules(&f), ["B002", "H002", "X001", "X002", "X003"], "{f:#?}");
    let x1 = f.iter().find(|f| f.rule == "X001").map(ToString::to_string).unwrap_or_default();
    assert!(x1.starts_with("t.yaml:"), "{x1}");
    assert!(x1.contains("error: flow nginx-to-db crosses up T1->T3 without an authn checkpoint"), "{x1}");
}

#[test]
fn dangling_and_duplicate() {
    let extra = format!(
        "{HEAD}  nodes:
    - {{id: api, kind: process, zone: app, match: {{k8s: {{namespace: shop, serviceAccount: other}}}}}}
  flows:
    - {{id: api-to-cache, from: api, to: rediss, ports: [{{port: 6379}}], encryption: {{required: tls}}, data: [sesion]}}
"
    );
    let f = run(&extra);
    let s001: Vec<String> = f.iter().filter(|f| f.rule == "S001").map(|f| f.message.clone()).collect();
    assert_eq!(s001.len(), 2, "{f:#?}");
    assert!(s001.iter().any(|m| m.contains("unknown nodes `rediss`; did you mean `redis`?")), "{s001:?}");
    assert!(s001.iter().any(|m| m.contains("`sesion`; did you mean `session`?")), "{s001:?}");
    assert!(f.iter().any(|f| f.rule == "S002" && f.message.contains("duplicate node id `api`")), "{f:#?}");
}

#[test]
fn expired_approval_depends_on_today() {
    let src = format!("{PLATFORM}\n---\n{SHOP}");
    let (dfd, _) = load_str("t.yaml", &src);
    assert!(lint(&dfd, Date { year: 2027, month: 6, day: 30 }).is_empty());
    let late = lint(&dfd, Date { year: 2027, month: 7, day: 1 });
    assert_eq!(rules(&late), ["H001"]);
    assert!(late[0].message.contains("SEC-1234"));
}

#[test]
fn data_above_max_misplaced_checkpoint_overlap_and_no_rate_limit() {
    let extra = format!(
        "{HEAD}  flows:
    - {{id: clients-to-nginx-2, from: clients, to: nginx, ports: [{{port: 400, endPort: 500}}], encryption: {{required: tls}}, data: [financial], checkpoints: [db-authn]}}
    - {{id: api-to-clients, from: api, to: clients, ports: [{{port: 443}}], encryption: {{required: tls}}, data: [session]}}
"
    );
    let f = run(&extra);
    assert_eq!(rules(&f), ["S003", "X004", "X005", "X007"], "{f:#?}");
}

#[test]
fn node_outside_zone_and_local_only_binding() {
    let extra = format!(
        "{HEAD}  nodes:
    - {{id: stray, kind: process, zone: app, match: {{k8s: {{namespace: default}}}}}}
    - {{id: worker, kind: process, zone: app, match: {{executables: [/usr/bin/worker]}}}}
  flows:
    - {{id: stray-to-worker, from: stray, to: worker, ports: [{{port: 80}}], encryption: {{required: tls}}}}
"
    );
    let f = run(&extra);
    assert_eq!(rules(&f), ["B003", "B003", "B005"], "{f:#?}");
}

#[test]
fn unknown_field_and_duplicate_key_are_all_reported() {
    let src = "apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata: {name: x}
spec:
  tiers:
    - {id: T1, level: 1, lvl: 2}
  zones:
    - id: z
      tier: T1
      externl: true
  flows:
    - {id: f, from: a, to: b, ports: [{port: 70000}], encryption: {required: tsl}}
";
    let f = parse_only(src);
    let text: Vec<String> = f.iter().map(ToString::to_string).collect();
    assert_eq!(rules(&f), ["P003", "P003", "P004", "S005"], "{text:#?}");
    assert!(
        text.iter().any(|t| t.starts_with("t.yaml:6:26: error: unknown field `lvl` in a tier; did you mean `level`?")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("t.yaml:10:7: error: unknown field `externl`") && t.contains("`external`")),
        "{text:#?}"
    );
    assert!(text.iter().any(|t| t.contains("did you mean `tls`?")), "{text:#?}");
    let empty = parse_only(&src.replace("ports: [{port: 70000}]", "ports: []"));
    assert_eq!(rules(&empty), ["P003", "P003", "P004", "S005"], "{empty:#?}");
    assert!(empty.iter().any(|f| f.message.starts_with("`ports` is empty")), "{empty:#?}");
    let dup = parse_only("apiVersion: a\napiVersion: b\n");
    assert_eq!(rules(&dup), ["P002"]);
}

#[test]
fn wrong_kind_and_version() {
    let f = parse_only("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {}\n");
    assert_eq!(rules(&f), ["P005", "P005"], "{f:#?}");
    assert!(f.iter().all(|f| f.severity == Severity::Error));
}

#[test]
fn selector_values_are_checked() {
    let src = format!(
        "{HEAD}  zones:
    - id: z
      tier: T1
      match:
        cidrs: [10.0.0.1/8, not-a-cidr]
        executables: [bin/sh]
        spiffe: [\"spiffe://td/[\"]
        k8s:
          labelExpressions: [{{key: app, operator: In}}]
"
    );
    let f = parse_only(&src);
    assert_eq!(rules(&f), ["P004", "P004", "P004", "P004", "P004"], "{f:#?}");
}

#[test]
fn external_cidrs_must_not_cover_internal_ones() {
    let extra = format!(
        "{HEAD}  zones:
    - {{id: vms, tier: T2, match: {{cidrs: [10.20.0.0/16, 198.51.100.0/24]}}}}
  nodes:
    - {{id: vm, kind: process, zone: vms, match: {{cidrs: [10.20.0.0/16]}}}}
  flows:
    - {{id: api-to-vm, from: api, to: vm, ports: [{{port: 22}}], encryption: {{required: tls}}}}
"
    );
    let f = run(&extra);
    // 10.20/16 is carved out of the internet zone; 198.51.100.0/24 is not.
    assert_eq!(rules(&f), ["B004", "B004"], "{f:#?}");
    assert!(f.iter().any(|f| f.message.starts_with("external zone internet")), "{f:#?}");
    assert!(f.iter().any(|f| f.message.starts_with("node clients")), "{f:#?}");
}

#[test]
fn unknown_fields_are_capped() {
    let mut src = String::from(
        "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata: {name: x}\nspec: {}\n",
    );
    for i in 0..100 {
        src.push_str(&format!("junk{i}: 1\n"));
    }
    let f = parse_only(&src);
    assert_eq!(f.len(), 21, "{f:#?}");
    assert!(f[20].message.starts_with("80 more unknown fields"), "{}", f[20].message);
}

#[test]
fn credentials_in_clear_and_personal_data_to_external() {
    let extra = format!(
        "{HEAD}  flows:
    - {{id: nginx-to-api-plain, from: nginx, to: api, ports: [{{port: 9000}}], encryption: {{required: none}}, checkpoints: [api-authn]}}
    - {{id: api-to-payments-pii, from: api, to: payments, ports: [{{port: 8443}}], encryption: {{required: tls}}, data: [pii]}}
"
    );
    let f = run(&extra);
    assert_eq!(rules(&f), ["X008", "X012", "X013"], "{f:#?}");
    assert_eq!(
        dfdwatch_dfd::rules::capitals("X013").map(dfdwatch_dfd::rules::Capitals::name),
        Some("Authentication & Session Management")
    );
}

/// A DFD of many copies of one document (a 1 MB ConfigMap's worth) gives a report that grows with
/// the copies, not with their square: copies are duplicate ids (S002), never compared again for
/// overlaps (B002, S003), and each lint lists at most 1,000 findings and counts the rest.
#[test]
fn copies_of_a_document_give_a_bounded_report() {
    let demo = include_str!("../../approved-dfd/demo/shop-demo.yaml");
    let src = vec![demo; 330].join("---\n");
    let started = std::time::Instant::now();
    let (dfd, mut findings) = load_str("copies.yaml", &src);
    findings.extend(lint(&dfd, today()));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    let count = |rule: &str| findings.iter().filter(|f| f.rule == rule).count();
    assert_eq!(count("B002") + count("S003"), 0, "copies are not compared with each other");
    assert_eq!(count("S002"), 1001, "1,000 listed and one that counts the rest");
    let rest = findings.iter().find(|f| f.rule == "S002" && f.message.contains("more duplicate ids")).unwrap();
    assert!(rest.message.starts_with("6896 more"), "{}", rest.message);
    let bytes: usize = findings.iter().map(|f| f.message.len()).sum();
    assert!(bytes < 512 * 1024, "report of {bytes} bytes");
}

/// Many distinct nodes that all overlap: the pairs are compared, but at most 1,000 are listed.
#[test]
fn overlapping_pairs_are_listed_up_to_a_bound() {
    let mut extra = format!("{HEAD}  nodes:\n");
    for i in 0..100 {
        extra.push_str(&format!(
            "    - {{id: wide-{i}, name: Wide {i}, kind: process, zone: app, match: {{cidrs: [\"10.0.0.0/8\"]}}}}\n"
        ));
    }
    let findings = run(&extra);
    let b002: Vec<&Finding> = findings.iter().filter(|f| f.rule == "B002").collect();
    assert_eq!(b002.len(), 1001, "1,000 pairs listed and one that counts the rest");
    assert!(b002.iter().any(|f| f.message.starts_with("3950 more pairs of nodes")), "{b002:#?}");
}

/// Comparing 400 glob selectors with 400 literal ones compiles each glob once, not once per
/// pair: it took 6 s for this 65 KB DFD in a release build, it now takes a tenth of a second.
#[test]
fn pairwise_glob_lints_compile_each_glob_once() {
    let mut src = String::from(
        "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata: {name: globs}\nspec:\n  tiers:\n    - {id: T1, name: One, level: 1}\n  zones:\n    - {id: z, name: Z, tier: T1}\n  nodes:\n",
    );
    for i in 0..400 {
        src.push_str(&format!(
            "    - {{id: g{i}, name: G{i}, kind: process, zone: z, match: {{hosts: [\"web-{i}-*\"]}}}}\n"
        ));
        src.push_str(&format!(
            "    - {{id: l{i}, name: L{i}, kind: process, zone: z, match: {{hosts: [\"db-{i}\"]}}}}\n"
        ));
    }
    let started = std::time::Instant::now();
    let (dfd, findings) = load_str("globs.yaml", &src);
    assert!(findings.is_empty(), "{findings:#?}");
    let findings = lint(&dfd, today());
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert!(findings.iter().all(|f| f.rule != "B002"), "web-N-* and db-N never meet");
}

#[test]
fn catch_all_nodes_and_flows_are_errors_unless_acknowledged() {
    let extra = |ack: &str| {
        format!(
            "{HEAD}  zones:
    - {{id: anywhere, name: Anywhere, tier: T1, match: {{cidrs: [\"0.0.0.0/0\", \"::/0\"]}}}}
  nodes:
    - {{id: anything, kind: process, zone: anywhere, match: {{cidrs: [\"0.0.0.0/0\"]}}{ack}}}
  flows:
    - {{id: anything-to-api, from: anything, to: api, ports: [{{port: 1, endPort: 65535}}], encryption: {{required: tls}}, checkpoints: [jwt-authn]{ack}}}
"
        )
    };
    let f = run(&extra(""));
    let b006: Vec<&Finding> = f.iter().filter(|f| f.rule == "B006").collect();
    assert_eq!(b006.len(), 2, "{f:#?}");
    assert!(b006.iter().all(|f| f.severity == Severity::Error));
    assert!(b006[0].message.contains("node anything matches every address (0.0.0.0/0)"), "{b006:#?}");
    assert!(b006[1].message.contains("flow anything-to-api approves every port"), "{b006:#?}");
    let f = run(&extra(", acknowledgeCatchAll: \"the VPN concentrator, SEC-77\""));
    assert!(!f.iter().any(|f| f.rule == "B006"), "acknowledged in the file: {f:#?}");
    // The shipped DFD's external node matches every address (the internet): no finding.
    let (dfd, _) = load_str("t.yaml", &format!("{PLATFORM}\n---\n{SHOP}"));
    assert!(!lint(&dfd, today()).iter().any(|f| f.rule == "B006"));
}
