//! Selectors bind nodes and zones to runtime identities. Fields of one selector are ANDed, the
//! items of a list field are ORed, and `anyOf` ORs whole sub-selectors. This module holds the
//! types and flattens a selector into conjunctive branches, the form that lints and the matcher use.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use crate::diag::Loc;

/// Most conjunctive branches one selector may flatten into.
pub const MAX_BRANCHES: usize = 1024;

/// `match`: which runtime endpoints belong to a node or zone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    /// Kubernetes identity (namespace, labels, service account).
    pub k8s: Option<K8sSelector>,
    /// SPIFFE ids; `*` is a wildcard, so `spiffe://td/ns/shop/*` is a prefix.
    pub spiffe: Vec<String>,
    /// Container images (`repo[:tag|@sha256:digest]`); globs allowed. Local end only.
    pub images: Vec<String>,
    /// Absolute executable paths; globs allowed. Local end only.
    pub executables: Vec<String>,
    /// cgroup v2 paths (as in /proc/PID/cgroup); globs allowed, `*` also matches `/`. Local end only.
    pub cgroup_paths: Vec<String>,
    /// systemd unit names, e.g. `nginx.service`; globs allowed. Local end only.
    pub systemd_units: Vec<String>,
    /// IP networks the endpoint's address must be in.
    pub cidrs: Vec<IpNet>,
    /// IP networks carved out of `cidrs`.
    pub except_cidrs: Vec<IpNet>,
    /// Host names: the daemon's identity-file names of addresses, and this node's host name for
    /// its host processes; globs allowed.
    pub hosts: Vec<String>,
    /// Alternatives: the endpoint must match at least one (and every other field here).
    pub any_of: Vec<Selector>,
    /// Where the selector is written.
    pub loc: Option<Loc>,
}

/// `match.k8s`: Kubernetes identity. All present fields must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct K8sSelector {
    /// Allowed namespaces (`namespace` or `namespaces`).
    pub namespaces: Vec<String>,
    /// Labels the namespace must carry.
    pub namespace_labels: BTreeMap<String, String>,
    /// Labels the pod must carry.
    pub labels: BTreeMap<String, String>,
    /// Set-based label requirements on the pod (as in a Kubernetes LabelSelector).
    pub label_expressions: Vec<LabelExpression>,
    /// Allowed service accounts (`serviceAccount` or `serviceAccounts`).
    pub service_accounts: Vec<String>,
}

/// `labelExpressions[]`: one set-based label requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelExpression {
    /// Label key.
    pub key: String,
    /// How the label is tested.
    pub operator: LabelOperator,
    /// Values for `In`/`NotIn`.
    pub values: Vec<String>,
}

/// Operator of a label expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// Label present with one of the values.
    In,
    /// Label absent or with none of the values.
    NotIn,
    /// Label present.
    Exists,
    /// Label absent.
    DoesNotExist,
}

impl LabelOperator {
    /// Every operator with its YAML spelling.
    pub const ALL: &[(&str, LabelOperator)] = &[
        ("In", LabelOperator::In),
        ("NotIn", LabelOperator::NotIn),
        ("Exists", LabelOperator::Exists),
        ("DoesNotExist", LabelOperator::DoesNotExist),
    ];

    /// Whether a label value (None when absent) satisfies the requirement.
    pub fn test(self, values: &[String], actual: Option<&str>) -> bool {
        match (self, actual) {
            (LabelOperator::In, Some(v)) => values.iter().any(|x| x == v),
            (LabelOperator::In, None) => false,
            (LabelOperator::NotIn, Some(v)) => !values.iter().any(|x| x == v),
            (LabelOperator::NotIn, None) | (LabelOperator::DoesNotExist, None) => true,
            (LabelOperator::Exists, a) => a.is_some(),
            (LabelOperator::DoesNotExist, Some(_)) => false,
        }
    }
}

/// One identity dimension that a constraint tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// Kubernetes namespace.
    Namespace,
    /// Namespace labels.
    NamespaceLabels,
    /// Pod labels.
    PodLabels,
    /// Service account.
    ServiceAccount,
    /// SPIFFE id.
    Spiffe,
    /// Container image.
    Image,
    /// Executable path.
    Executable,
    /// cgroup path.
    Cgroup,
    /// systemd unit.
    SystemdUnit,
    /// IP address.
    Ip,
    /// Host name.
    Host,
}

impl Dim {
    /// Whether only the local end of a socket can be identified by this dimension.
    pub fn local_only(self) -> bool {
        matches!(self, Dim::Image | Dim::Executable | Dim::Cgroup | Dim::SystemdUnit)
    }
}

/// One ANDed test inside a branch.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// The value of `Dim` must match one of these glob patterns.
    Patterns(Dim, Vec<String>),
    /// The namespace (`NamespaceLabels`) or pod (`PodLabels`) labels must satisfy every requirement.
    Labels(Dim, Vec<LabelExpression>),
    /// The address must be in one of `include` and in none of `except`.
    Cidrs {
        /// Allowed networks.
        include: Vec<IpNet>,
        /// Carved-out networks.
        except: Vec<IpNet>,
    },
}

impl Constraint {
    /// The dimension tested.
    pub fn dim(&self) -> Dim {
        match self {
            Constraint::Patterns(d, _) | Constraint::Labels(d, _) => *d,
            Constraint::Cidrs { .. } => Dim::Ip,
        }
    }
}

/// A conjunction of constraints: an endpoint matches when it satisfies all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Branch {
    /// The constraints, all required.
    pub constraints: Vec<Constraint>,
}

impl Branch {
    /// Dimensions this branch constrains.
    pub fn dims(&self) -> impl Iterator<Item = Dim> + '_ {
        self.constraints.iter().map(Constraint::dim)
    }
}

fn map_to_exprs(map: &BTreeMap<String, String>) -> Vec<LabelExpression> {
    map.iter()
        .map(|(k, v)| LabelExpression { key: k.clone(), operator: LabelOperator::In, values: vec![v.clone()] })
        .collect()
}

impl Selector {
    /// The constraints written directly in this selector (not in `anyOf`).
    pub fn own_constraints(&self) -> Vec<Constraint> {
        let mut c = Vec::new();
        if let Some(k) = &self.k8s {
            if !k.namespaces.is_empty() {
                c.push(Constraint::Patterns(Dim::Namespace, k.namespaces.clone()));
            }
            if !k.namespace_labels.is_empty() {
                c.push(Constraint::Labels(Dim::NamespaceLabels, map_to_exprs(&k.namespace_labels)));
            }
            let mut pod = map_to_exprs(&k.labels);
            pod.extend(k.label_expressions.iter().cloned());
            if !pod.is_empty() {
                c.push(Constraint::Labels(Dim::PodLabels, pod));
            }
            if !k.service_accounts.is_empty() {
                c.push(Constraint::Patterns(Dim::ServiceAccount, k.service_accounts.clone()));
            }
        }
        for (dim, list) in [
            (Dim::Spiffe, &self.spiffe),
            (Dim::Image, &self.images),
            (Dim::Executable, &self.executables),
            (Dim::Cgroup, &self.cgroup_paths),
            (Dim::SystemdUnit, &self.systemd_units),
            (Dim::Host, &self.hosts),
        ] {
            if !list.is_empty() {
                c.push(Constraint::Patterns(dim, list.clone()));
            }
        }
        if !self.cidrs.is_empty() || !self.except_cidrs.is_empty() {
            c.push(Constraint::Cidrs { include: self.cidrs.clone(), except: self.except_cidrs.clone() });
        }
        c
    }

    /// Flattens into disjunctive normal form: the endpoint matches if it matches any branch.
    /// Returns `None` when there would be more than [`MAX_BRANCHES`] branches.
    pub fn branches(&self) -> Option<Vec<Branch>> {
        let own = self.own_constraints();
        if self.any_of.is_empty() {
            return Some(vec![Branch { constraints: own }]);
        }
        let mut out = Vec::new();
        for alt in &self.any_of {
            for b in alt.branches()? {
                let mut constraints = own.clone();
                constraints.extend(b.constraints);
                out.push(Branch { constraints });
                if out.len() > MAX_BRANCHES {
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Whether the selector (including its alternatives) states no criteria at all.
    pub fn is_empty(&self) -> bool {
        self.own_constraints().is_empty() && self.any_of.iter().all(Selector::is_empty)
    }
}

/// Whether a pattern uses glob wildcards.
pub fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// The literal text before the first wildcard.
pub fn literal_prefix(p: &str) -> &str {
    p.find(['*', '?', '[']).map_or(p, |i| &p[..i])
}

/// The literal text after the last wildcard (or after the closing `]`).
pub fn literal_suffix(p: &str) -> &str {
    p.rfind(['*', '?', ']']).map_or(p, |i| &p[i + 1..])
}

/// Longest pattern (glob or exact) accepted, in bytes. Far above any real path, image or name,
/// and short enough that its compiled form stays small: globset panics on a pattern whose regex
/// outgrows its size limit (about 90,000 `*`).
pub const MAX_PATTERN_LEN: usize = 1024;

/// Compiles a pattern with dfdwatch's glob semantics: `*` matches any run of characters,
/// including `/`. Returns `None` for a malformed glob or one longer than [`MAX_PATTERN_LEN`].
pub fn compile_glob(p: &str) -> Option<globset::GlobMatcher> {
    if p.len() > MAX_PATTERN_LEN {
        return None;
    }
    globset::GlobBuilder::new(p)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

/// Compiled globs [`pattern_matches`] keeps per thread, at most, and their patterns' bytes. The
/// lints compare selectors pairwise, so compiling on each comparison made `check` quadratic in
/// compilations (a 65 KB DFD of 800 nodes took 6 s); with the cache each distinct glob is
/// compiled once. The bounds keep a DFD full of globs from holding all their compiled forms.
const GLOB_CACHE_ENTRIES: usize = 4096;
/// See [`GLOB_CACHE_ENTRIES`].
const GLOB_CACHE_BYTES: usize = 256 << 10;

thread_local! {
    static COMPILED: std::cell::RefCell<(HashMap<String, Option<globset::GlobMatcher>>, usize)> =
        std::cell::RefCell::new((HashMap::new(), 0));
}

/// Whether `text` matches pattern `p` (exact comparison when `p` has no wildcard).
pub fn pattern_matches(p: &str, text: &str) -> bool {
    if !is_glob(p) {
        return p == text;
    }
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        let (compiled, bytes) = &mut *cache;
        if let Some(g) = compiled.get(p) {
            return g.as_ref().is_some_and(|g| g.is_match(text));
        }
        let g = compile_glob(p);
        let matched = g.as_ref().is_some_and(|g| g.is_match(text));
        if *bytes + p.len() > GLOB_CACHE_BYTES || compiled.len() >= GLOB_CACHE_ENTRIES {
            compiled.clear();
            *bytes = 0;
        }
        *bytes += p.len();
        compiled.insert(p.to_owned(), g);
        matched
    })
}
