//! Static reasoning on selector branches: can two branches match the same endpoint (overlap),
//! and is one branch contained in another (within)? Both are conservative approximations.

use ipnet::IpNet;

use crate::selector::{
    Branch, Constraint, Dim, LabelExpression, LabelOperator, is_glob, literal_prefix, literal_suffix, pattern_matches,
};

/// Whether two patterns can match a common string.
fn patterns_meet(p: &str, q: &str) -> bool {
    match (is_glob(p), is_glob(q)) {
        (false, false) => p == q,
        (true, false) => pattern_matches(p, q),
        (false, true) => pattern_matches(q, p),
        (true, true) => {
            let (pp, qp) = (literal_prefix(p), literal_prefix(q));
            let (ps, qs) = (literal_suffix(p), literal_suffix(q));
            (pp.starts_with(qp) || qp.starts_with(pp)) && (ps.ends_with(qs) || qs.ends_with(ps))
        }
    }
}

/// Whether every string `inner` matches is matched by `outer` (sound for literals and `prefix*`).
fn pattern_covers(outer: &str, inner: &str) -> bool {
    if !is_glob(inner) {
        return pattern_matches(outer, inner);
    }
    if outer == inner {
        return true;
    }
    let op = literal_prefix(outer);
    outer.len() == op.len() + 1 && outer.ends_with('*') && literal_prefix(inner).starts_with(op)
}

fn labels_meet(a: &[LabelExpression], b: &[LabelExpression]) -> bool {
    for x in a {
        for y in b.iter().filter(|y| y.key == x.key) {
            use LabelOperator::{DoesNotExist, Exists, In, NotIn};
            let clash = match (x.operator, y.operator) {
                (In, In) => !x.values.iter().any(|v| y.values.contains(v)),
                (In, NotIn) => x.values.iter().all(|v| y.values.contains(v)),
                (NotIn, In) => y.values.iter().all(|v| x.values.contains(v)),
                (In | Exists, DoesNotExist) | (DoesNotExist, In | Exists) => true,
                _ => false,
            };
            if clash {
                return false;
            }
        }
    }
    true
}

/// Whether the requirements `inner` imply requirement `req`.
fn label_implied(req: &LabelExpression, inner: &[LabelExpression]) -> bool {
    use LabelOperator::{DoesNotExist, Exists, In, NotIn};
    inner.iter().filter(|x| x.key == req.key).any(|x| match (req.operator, x.operator) {
        (In, In) => x.values.iter().all(|v| req.values.contains(v)),
        (Exists, In | Exists) => true,
        (NotIn, In) => !x.values.iter().any(|v| req.values.contains(v)),
        (NotIn, NotIn) => req.values.iter().all(|v| x.values.contains(v)),
        (DoesNotExist, DoesNotExist) | (NotIn, DoesNotExist) => true,
        _ => false,
    })
}

fn net_covered(n: &IpNet, by: &[IpNet]) -> bool {
    by.iter().any(|e| e.contains(n))
}

pub(crate) fn cidrs_meet(ai: &[IpNet], ae: &[IpNet], bi: &[IpNet], be: &[IpNet]) -> bool {
    ai.iter().any(|a| {
        bi.iter().any(|b| {
            let small = if a.prefix_len() >= b.prefix_len() { a } else { b };
            (a.contains(b) || b.contains(a)) && !net_covered(small, ae) && !net_covered(small, be)
        })
    })
}

fn constraint_meets(a: &Constraint, b: &Constraint) -> bool {
    match (a, b) {
        (Constraint::Patterns(_, p), Constraint::Patterns(_, q)) => {
            p.iter().any(|x| q.iter().any(|y| patterns_meet(x, y)))
        }
        (Constraint::Labels(_, x), Constraint::Labels(_, y)) => labels_meet(x, y),
        (Constraint::Cidrs { include: ai, except: ae }, Constraint::Cidrs { include: bi, except: be }) => {
            cidrs_meet(ai, ae, bi, be)
        }
        _ => true,
    }
}

fn of(b: &Branch, d: Dim) -> impl Iterator<Item = &Constraint> {
    b.constraints.iter().filter(move |c| c.dim() == d)
}

/// Whether some endpoint can match both branches. Branches that constrain no common dimension
/// are treated as not overlapping: they bind different kinds of identity (e.g. a Kubernetes
/// workload and a CIDR), and the matcher resolves workload identity before addresses.
pub fn branches_overlap(a: &Branch, b: &Branch) -> bool {
    let mut shared = false;
    for ca in &a.constraints {
        for cb in of(b, ca.dim()) {
            shared = true;
            if !constraint_meets(ca, cb) {
                return false;
            }
        }
    }
    shared
}

fn constraint_within(outer: &Constraint, inner: &Constraint) -> bool {
    match (outer, inner) {
        (Constraint::Patterns(_, o), Constraint::Patterns(_, i)) => {
            i.iter().all(|x| o.iter().any(|p| pattern_covers(p, x)))
        }
        (Constraint::Labels(_, o), Constraint::Labels(_, i)) => o.iter().all(|r| label_implied(r, i)),
        (Constraint::Cidrs { include: oi, except: oe }, Constraint::Cidrs { include: ii, except: ie }) => {
            !ii.is_empty()
                && ii.iter().all(|n| {
                    // n must be inside the outer networks, and every outer exception inside n must
                    // also be an inner exception (an exception covering all of n leaves nothing).
                    net_covered(n, oi)
                        && oe.iter().all(|e| !(n.contains(e) || e.contains(n)) || (n.contains(e) && net_covered(e, ie)))
                })
        }
        _ => false,
    }
}

/// Whether every endpoint matching `inner` also matches `outer`: each dimension `outer`
/// constrains must be constrained at least as tightly by `inner`.
pub fn branch_within(outer: &Branch, inner: &Branch) -> bool {
    outer.constraints.iter().all(|oc| of(inner, oc.dim()).any(|ic| constraint_within(oc, ic)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelExpression;

    fn pats(d: Dim, p: &[&str]) -> Constraint {
        Constraint::Patterns(d, p.iter().map(|s| (*s).to_owned()).collect())
    }

    fn label(key: &str, op: LabelOperator, values: &[&str]) -> LabelExpression {
        LabelExpression { key: key.into(), operator: op, values: values.iter().map(|s| (*s).to_owned()).collect() }
    }

    fn branch(c: Vec<Constraint>) -> Branch {
        Branch { constraints: c }
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().filter_map(|x| x.parse().ok()).collect()
    }

    #[test]
    fn patterns() {
        assert!(patterns_meet("spiffe://td/ns/a/*", "spiffe://td/ns/a/sa/x"));
        assert!(patterns_meet("spiffe://td/*", "spiffe://td/ns/*"));
        assert!(!patterns_meet("spiffe://td/ns/a/*", "spiffe://td/ns/b/*"));
        assert!(patterns_meet("*.example.com", "api.example.com"));
        assert!(!patterns_meet("*.example.com", "*.example.org"));
        assert!(pattern_covers("spiffe://td/ns/a/*", "spiffe://td/ns/a/sa/*"));
        assert!(!pattern_covers("spiffe://td/ns/a/sa/*", "spiffe://td/ns/a/*"));
        assert!(pattern_covers("shop", "shop"));
    }

    #[test]
    fn labels() {
        use LabelOperator::{DoesNotExist, Exists, In, NotIn};
        assert!(!labels_meet(&[label("app", In, &["a"])], &[label("app", In, &["b"])]));
        assert!(labels_meet(&[label("app", In, &["a", "b"])], &[label("app", In, &["b"])]));
        assert!(!labels_meet(&[label("app", In, &["a"])], &[label("app", NotIn, &["a"])]));
        assert!(!labels_meet(&[label("app", Exists, &[])], &[label("app", DoesNotExist, &[])]));
        assert!(labels_meet(&[label("app", In, &["a"])], &[label("tier", In, &["x"])]));
        assert!(label_implied(&label("app", Exists, &[]), &[label("app", In, &["a"])]));
        assert!(!label_implied(&label("app", In, &["a"]), &[label("app", Exists, &[])]));
    }

    #[test]
    fn cidrs() {
        let all = nets(&["0.0.0.0/0"]);
        let private = nets(&["10.0.0.0/8"]);
        let pod = nets(&["10.1.0.0/16"]);
        assert!(!cidrs_meet(&all, &private, &pod, &[]));
        assert!(cidrs_meet(&all, &[], &pod, &[]));
        assert!(!cidrs_meet(&nets(&["192.0.2.0/24"]), &[], &pod, &[]));
        let zone = Constraint::Cidrs { include: all.clone(), except: private.clone() };
        let inner = Constraint::Cidrs { include: all, except: nets(&["10.0.0.0/8", "172.16.0.0/12"]) };
        assert!(constraint_within(&zone, &inner));
        assert!(!constraint_within(&zone, &Constraint::Cidrs { include: pod, except: vec![] }));
    }

    #[test]
    fn branches() {
        let a = branch(vec![
            pats(Dim::Namespace, &["shop"]),
            Constraint::Labels(Dim::PodLabels, vec![label("app", LabelOperator::In, &["api"])]),
        ]);
        let b = branch(vec![pats(Dim::Namespace, &["shop"])]);
        let c = branch(vec![Constraint::Cidrs { include: nets(&["0.0.0.0/0"]), except: vec![] }]);
        assert!(branches_overlap(&a, &b), "a label subset in the same namespace overlaps");
        assert!(!branches_overlap(&a, &c), "different identity kinds are not compared");
        assert!(branch_within(&b, &a));
        assert!(!branch_within(&a, &b));
    }
}
