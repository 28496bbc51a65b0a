//! Static reasoning on selector branches: can two branches match the same endpoint (overlap),
//! and is one branch contained in another (within)? Both are conservative approximations.

use ipnet::IpNet;

use crate::selector::{
    Branch, Constraint, Dim, LabelExpression, LabelOperator, is_glob, literal_prefix,
    literal_suffix, pattern_matches,
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
    inner
        .iter()
        .filter(|x| x.key == req.key)
        .any(|x| match (req.operator, x.operator) {
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
            let small = if a.prefix_len() >= b.prefix_len() {
                a
            } else {
                b
            };
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
        (
            Constraint::Cidrs {
                include: ai,
                except: ae,
            },
            Constraint::Cidrs {
                include: bi,
                except: be,
            },
        ) => cidrs_meet(ai, ae, bi, be),
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
        (Constraint::Labels(_, o), Constraint::Labels(_, i)) => {
            o.iter().all(|r| label_implied(r, i))
        }
        (
            Constraint::Cidrs {
                include: oi,
                except: oe,
            },
            Constraint::Cidrs {
                include: ii,
                except: ie,
            },
        ) => {
            !ii.is_empty()
                && ii.iter().all(|n| {
                    // n must be inside the outer networks, and every outer exception inside n must
                    // also be an inner exception (an exception covering all of n leaves nothing).
                    net_covered(n, oi)
                        && oe.iter().all(|e| {
                            !(n.contains(e) || e.contains(n))
                                || (n.contains(e) && net_covered(e, ie))
                        })
                })
        }
        _ => false,
    }
}

/// Whether every endpoint matching `inner` also matches `outer`: each dimension `outer`
/// constrains must be constrained at least as tightly by `inner`.
pub fn branch_within(outer: &Branch, inner: &Branch) -> bool {
    outer
        .constraints
        .iter()
        .all(|oc| of(inner, oc.dim()).any(|ic| constraint_within(oc, ic)))
}
