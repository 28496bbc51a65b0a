//! The matcher: resolves an endpoint [`Identity`] to the DFD node (and zone) whose selector it
//! matches, through candidate indexes whose cost does not grow with the number of nodes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use globset::GlobMatcher;
use ipnet::IpNet;

use super::CompileError;
use super::index::{BranchId, Index};
use crate::model::Dfd;
use crate::selector::{Branch, Constraint, Dim, LabelExpression, Selector, compile_glob, is_glob};

/// What is known about one end of a connection. Every field is optional: the remote end of a
/// socket is usually known only by `ip` (plus Kubernetes metadata when the IP is a pod's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Kubernetes namespace of the pod.
    pub namespace: Option<String>,
    /// Labels of the pod's namespace.
    pub namespace_labels: BTreeMap<String, String>,
    /// Labels of the pod.
    pub labels: BTreeMap<String, String>,
    /// The pod's service account.
    pub service_account: Option<String>,
    /// SPIFFE id, e.g. `spiffe://cluster.local/ns/shop/sa/api`.
    pub spiffe_id: Option<String>,
    /// Container image reference, e.g. `docker.io/library/nginx@sha256:...`.
    pub image: Option<String>,
    /// Absolute path of the executable (local end only).
    pub exe: Option<String>,
    /// cgroup v2 path, as in /proc/PID/cgroup (local end only).
    pub cgroup_path: Option<String>,
    /// systemd unit, e.g. `nginx.service` (local end only).
    pub systemd_unit: Option<String>,
    /// IP address.
    pub ip: Option<IpAddr>,
    /// Host name: the identity-file name of the address, or this node's host name.
    pub hostname: Option<String>,
}

impl Identity {
    /// The value of a string dimension.
    pub(super) fn value(&self, d: Dim) -> Option<&str> {
        match d {
            Dim::Namespace => self.namespace.as_deref(),
            Dim::ServiceAccount => self.service_account.as_deref(),
            Dim::Spiffe => self.spiffe_id.as_deref(),
            Dim::Image => self.image.as_deref(),
            Dim::Executable => self.exe.as_deref(),
            Dim::Cgroup => self.cgroup_path.as_deref(),
            Dim::SystemdUnit => self.systemd_unit.as_deref(),
            Dim::Host => self.hostname.as_deref(),
            Dim::NamespaceLabels | Dim::PodLabels | Dim::Ip => None,
        }
    }
}

#[derive(Debug)]
enum Pat {
    Exact(String),
    Glob(GlobMatcher),
}

#[derive(Debug)]
enum Test {
    Patterns(Dim, Vec<Pat>),
    Labels(Dim, Vec<LabelExpression>),
    Cidrs(Vec<IpNet>, Vec<IpNet>),
}

impl Test {
    /// `None` when the test cannot be evaluated: a local-end-only dimension (image, executable,
    /// cgroup, unit) that the identity does not carry, as for the remote end of a socket.
    fn eval(&self, id: &Identity) -> Option<bool> {
        if let Test::Patterns(d, _) = self
            && d.local_only()
            && id.value(*d).is_none()
        {
            return None;
        }
        Some(self.matches(id))
    }

    fn matches(&self, id: &Identity) -> bool {
        match self {
            Test::Patterns(d, pats) => id.value(*d).is_some_and(|v| {
                pats.iter().any(|p| match p {
                    Pat::Exact(s) => s == v,
                    Pat::Glob(g) => g.is_match(v),
                })
            }),
            Test::Labels(d, exprs) => {
                let labels = if *d == Dim::NamespaceLabels { &id.namespace_labels } else { &id.labels };
                exprs.iter().all(|e| e.operator.test(&e.values, labels.get(&e.key).map(String::as_str)))
            }
            Test::Cidrs(inc, exc) => {
                id.ip.is_some_and(|ip| inc.iter().any(|n| n.contains(&ip)) && !exc.iter().any(|n| n.contains(&ip)))
            }
        }
    }
}

#[derive(Debug)]
struct CompiledBranch {
    /// Index of the node (or zone) the branch belongs to.
    owner: usize,
    /// Bound by workload identity (anything but IP/FQDN): preferred over address-only matches.
    workload: bool,
    tests: Vec<Test>,
}

fn compile_branch(b: &Branch, owner: usize) -> CompiledBranch {
    let tests = b
        .constraints
        .iter()
        .map(|c| match c {
            Constraint::Patterns(d, p) => Test::Patterns(
                *d,
                p.iter()
                    .map(|s| match is_glob(s).then(|| compile_glob(s)).flatten() {
                        Some(g) => Pat::Glob(g),
                        None => Pat::Exact(s.clone()),
                    })
                    .collect(),
            ),
            Constraint::Labels(d, e) => Test::Labels(*d, e.clone()),
            Constraint::Cidrs { include, except } => Test::Cidrs(include.clone(), except.clone()),
        })
        .collect();
    let workload = b.dims().any(|d| !matches!(d, Dim::Ip));
    CompiledBranch { owner, workload, tests }
}

/// One set of selectors (nodes or zones) compiled for lookup.
#[derive(Debug, Default)]
struct Table {
    branches: Vec<CompiledBranch>,
    index: Index,
}

impl Table {
    fn add(&mut self, sel: &Selector, owner: usize, name: &str) -> Result<(), CompileError> {
        if sel.is_empty() {
            return Ok(());
        }
        let branches = sel.branches().ok_or_else(|| CompileError::TooManyBranches { owner: name.to_owned() })?;
        for b in &branches {
            let id = BranchId::try_from(self.branches.len())
                .map_err(|_| CompileError::TooManyBranches { owner: name.to_owned() })?;
            self.index.add(b, id);
            self.branches.push(compile_branch(b, owner));
        }
        Ok(())
    }

    /// Owners matched, workload-identity matches first; also how many candidates were tested.
    fn lookup(&self, id: &Identity) -> (Vec<usize>, usize) {
        let mut cands = Vec::new();
        self.index.candidates(id, &mut cands);
        cands.sort_unstable();
        cands.dedup();
        let mut strong = Vec::new();
        let mut weak = Vec::new();
        for c in &cands {
            let Some(b) = usize::try_from(*c).ok().and_then(|i| self.branches.get(i)) else {
                continue;
            };
            let mut evaluated = false;
            let ok = b.tests.iter().all(|t| match t.eval(id) {
                Some(r) => {
                    evaluated = true;
                    r
                }
                None => true,
            });
            if ok && evaluated {
                let list = if b.workload { &mut strong } else { &mut weak };
                if !list.contains(&b.owner) {
                    list.push(b.owner);
                }
            }
        }
        (if strong.is_empty() { weak } else { strong }, cands.len())
    }
}

/// What an identity resolved to. Indexes point into `dfd.nodes` and `dfd.zones`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Resolution {
    /// The node, when exactly one node matches.
    pub node: Option<usize>,
    /// The node's zone, or else the zone whose selector matches (when exactly one does).
    pub zone: Option<usize>,
    /// Every node that matched when more than one did (an ambiguity to alert on); else empty.
    pub ambiguous: Vec<usize>,
    /// How many candidate selector branches were tested (for cost measurements).
    pub candidates_tested: usize,
}

/// Resolves identities to nodes and zones. A selector's fields are all required, except that
/// local-end-only fields (images, executables, cgroupPaths, systemdUnits) are skipped when the
/// identity does not carry them (the remote end of a socket); at least one field must be
/// checked for a match. Workload-identity selectors (k8s, SPIFFE, image,
/// executable, cgroup, unit, host) take precedence over address-only ones (CIDRs, FQDNs), so a
/// pod inside `0.0.0.0/0` still resolves to its own node.
#[derive(Debug, Default)]
pub struct Matcher {
    nodes: Table,
    zones: Table,
    node_zone: Vec<usize>,
}

impl Matcher {
    /// Compiles the node and zone selectors of `dfd`; `node_zone[i]` is the zone of node `i`.
    pub fn new(dfd: &Dfd, node_zone: &[usize]) -> Result<Matcher, CompileError> {
        let mut m = Matcher { node_zone: node_zone.to_vec(), ..Matcher::default() };
        for (i, n) in dfd.nodes.iter().enumerate() {
            if let Some(sel) = &n.selector {
                m.nodes.add(sel, i, &format!("node {}", n.id))?;
            }
        }
        for (i, z) in dfd.zones.iter().enumerate() {
            if let Some(sel) = &z.selector {
                m.zones.add(sel, i, &format!("zone {}", z.id))?;
            }
        }
        Ok(m)
    }

    /// Resolves `id` to its node and zone.
    pub fn resolve(&self, id: &Identity) -> Resolution {
        let (nodes, tested) = self.nodes.lookup(id);
        match nodes.as_slice() {
            [one] => Resolution {
                node: Some(*one),
                zone: self.node_zone.get(*one).copied(),
                ambiguous: Vec::new(),
                candidates_tested: tested,
            },
            [] => {
                let (zones, zt) = self.zones.lookup(id);
                let zone = if let [z] = zones.as_slice() { Some(*z) } else { None };
                Resolution { node: None, zone, ambiguous: Vec::new(), candidates_tested: tested + zt }
            }
            many => {
                let mut ambiguous = many.to_vec();
                ambiguous.sort_unstable();
                Resolution { node: None, zone: None, ambiguous, candidates_tested: tested }
            }
        }
    }
}
