//! Property tests: no input makes the parser, the lints, the renderers or the compiler panic.

use dfdwatch_dfd::compile::{Compiled, Identity};
use dfdwatch_dfd::date::Date;
use dfdwatch_dfd::lint::lint;
use dfdwatch_dfd::load::load_str;
use dfdwatch_dfd::render::{RenderFormat, render};
use proptest::prelude::*;

const SHIPPED: &str = concat!(
    include_str!("../../approved-dfd/00-platform.yaml"),
    "\n---\n",
    include_str!("../../approved-dfd/shop.yaml")
);

fn everything(src: &str) {
    let (dfd, _) = load_str("p.yaml", src);
    let findings = lint(&dfd, Date { year: 2026, month: 11, day: 23 });
    let _ = render(&dfd, &findings, RenderFormat::Dot);
    let _ = render(&dfd, &findings, RenderFormat::Mermaid);
    if let Ok(c) = Compiled::new(dfd) {
        let id = Identity {
            namespace: Some("shop".into()),
            labels: [("app".to_owned(), "api".to_owned())].into_iter().collect(),
            ip: "10.0.0.1".parse().ok(),
            spiffe_id: Some("spiffe://a/b".into()),
            hostname: Some("h".into()),
            ..Identity::default()
        };
        let _ = c.matcher.resolve(&id);
    }
}

const IDS: &[&str] = &["a", "b", "c", "T1", "T2", "z", "pii", "x"];
const SELECTORS: &[&str] = &[
    "{k8s: {namespace: a, labels: {app: a}}}",
    "{k8s: {namespaces: [a, b], labelExpressions: [{key: t, operator: NotIn, values: [c]}]}}",
    "{cidrs: [10.0.0.0/8], exceptCidrs: [10.1.0.0/16]}",
    "{cidrs: [\"0.0.0.0/0\"]}",
    "{spiffe: [\"spiffe://a/*\"]}",
    "{hosts: [\"h*\"], systemdUnits: [x.service]}",
    "{images: [\"img@*\"]}",
    "{anyOf: [{k8s: {namespace: a}}, {fqdns: [\"*.x.com\"]}]}",
    "{}",
];

fn doc() -> impl Strategy<Value = String> {
    let id = || prop::sample::select(IDS);
    let tier = (id(), 0i64..4).prop_map(|(i, l)| format!("    - {{id: {i}, level: {l}}}\n"));
    let data =
        (id(), 0i64..4, any::<bool>()).prop_map(|(i, l, p)| format!("    - {{id: {i}, level: {l}, personal: {p}}}\n"));
    let zone = (id(), id(), prop::option::of(id()), any::<bool>(), prop::sample::select(SELECTORS), id()).prop_map(
        |(i, t, p, e, s, m)| {
            let parent = p.map(|p| format!(", parent: {p}")).unwrap_or_default();
            format!("    - {{id: {i}, tier: {t}{parent}, external: {e}, match: {s}, maxData: {m}}}\n")
        },
    );
    let node =
        (id(), id(), prop::sample::select(&["process", "datastore", "external"][..]), prop::sample::select(SELECTORS))
            .prop_map(|(i, z, k, s)| format!("    - {{id: {i}, kind: {k}, zone: {z}, match: {s}}}\n"));
    let cp = (id(), prop::sample::select(&["authn", "rate-limit", "schema-validation"][..]), id())
        .prop_map(|(i, k, by)| format!("    - {{id: {i}, kind: {k}, enforcedBy: {by}}}\n"));
    let flow = (id(), id(), id(), 1u32..70000, 0u32..3, prop::sample::select(&["none", "tls"][..]), id(), id())
        .prop_map(|(i, f, t, p, w, e, d, c)| {
            format!(
                "    - {{id: {i}, from: {f}, to: {t}, ports: [{{port: {p}, endPort: {}}}], appProtocol: http, encryption: {{required: {e}}}, data: [{d}], checkpoints: [{c}], approval: {{expires: \"2026-01-0{}\"}}}}\n",
                p + w,
                w + 1
            )
        });
    (
        prop::collection::vec(tier, 0..4),
        prop::collection::vec(data, 0..3),
        prop::collection::vec(zone, 0..4),
        prop::collection::vec(node, 0..5),
        prop::collection::vec(cp, 0..3),
        prop::collection::vec(flow, 0..6),
    )
        .prop_map(|(t, d, z, n, c, f)| {
            format!(
                "apiVersion: dfd.dfdwatch.dev/v1alpha1\nkind: ApprovedDataFlowDiagram\nmetadata: {{name: p}}\nspec:\n  tiers:\n{}  dataClasses:\n{}  zones:\n{}  nodes:\n{}  checkpoints:\n{}  flows:\n{}",
                t.concat(),
                d.concat(),
                z.concat(),
                n.concat(),
                c.concat(),
                f.concat()
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(src in ".{0,400}") {
        everything(&src);
    }

    #[test]
    fn yaml_like_text_never_panics(src in "[-a-z0-9:{}\\[\\],&*!|>#'\" \n]{0,300}") {
        everything(&src);
    }

    #[test]
    fn edited_shipped_dfd_never_panics(pos in 0usize..8000, len in 0usize..40, ins in "[-a-z:{}\\[\\] \n\"*&]{0,10}") {
        let mut s: Vec<char> = SHIPPED.chars().collect();
        let p = pos.min(s.len());
        let end = (p + len).min(s.len());
        s.splice(p..end, ins.chars());
        everything(&s.into_iter().collect::<String>());
    }

    #[test]
    fn generated_dfds_never_panic(src in doc()) {
        // The generator writes well-formed documents, so only value findings may appear.
        let (_, parse) = load_str("p.yaml", &src);
        prop_assert!(parse.iter().all(|f| f.rule == "P004" || f.rule == "S005"), "{parse:#?}");
        everything(&src);
    }
}
