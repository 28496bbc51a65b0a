//! Candidate indexes for the matcher: each selector branch is filed under one "anchor" so that a
//! lookup touches only the branches that share a value with the identity. Hash maps for exact
//! values and (namespace, label) pairs, literal prefix/suffix maps for globs, and one hash map
//! per prefix length for CIDRs. Lookup cost grows with the identity's label count and with the
//! number of distinct glob-literal and CIDR prefix lengths in use (bounded by string length and
//! 33/129), not with the number of nodes.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::selector::{Branch, Constraint, Dim, LabelOperator, is_glob, literal_prefix, literal_suffix};

/// Identifies a compiled branch (index into the matcher's branch table).
pub(super) type BranchId = u32;

/// Where one value can be found: exact, by literal prefix, by literal suffix.
#[derive(Debug, Default)]
pub(super) struct StrIndex {
    exact: HashMap<String, Vec<BranchId>>,
    prefix: HashMap<String, Vec<BranchId>>,
    suffix: HashMap<String, Vec<BranchId>>,
    /// Byte lengths of the literal prefixes and suffixes in use: a lookup probes only these.
    prefix_lens: Vec<usize>,
    suffix_lens: Vec<usize>,
    /// Patterns with neither a literal prefix nor suffix (e.g. `*`): always candidates.
    any: Vec<BranchId>,
}

fn add_len(lens: &mut Vec<usize>, len: usize) {
    if let Err(at) = lens.binary_search(&len) {
        lens.insert(at, len);
    }
}

impl StrIndex {
    fn add(&mut self, pattern: &str, b: BranchId) {
        let (pre, suf) = (literal_prefix(pattern), literal_suffix(pattern));
        if !is_glob(pattern) {
            self.exact.entry(pattern.to_owned()).or_default().push(b);
        } else if !pre.is_empty() {
            self.prefix.entry(pre.to_owned()).or_default().push(b);
            add_len(&mut self.prefix_lens, pre.len());
        } else if !suf.is_empty() {
            self.suffix.entry(suf.to_owned()).or_default().push(b);
            add_len(&mut self.suffix_lens, suf.len());
        } else {
            self.any.push(b);
        }
    }

    fn lookup(&self, value: &str, out: &mut Vec<BranchId>) {
        out.extend(self.exact.get(value).into_iter().flatten());
        out.extend(&self.any);
        for &n in self.prefix_lens.iter().take_while(|n| **n <= value.len()) {
            out.extend(value.get(..n).and_then(|p| self.prefix.get(p)).into_iter().flatten());
        }
        for &n in self.suffix_lens.iter().take_while(|n| **n <= value.len()) {
            out.extend(value.get(value.len() - n..).and_then(|p| self.suffix.get(p)).into_iter().flatten());
        }
    }
}

/// CIDR index: one hash map per prefix length in use, keyed by the masked network address.
#[derive(Debug, Default)]
pub(super) struct CidrIndex {
    by_len: HashMap<(bool, u8), HashMap<IpAddr, Vec<BranchId>>>,
    /// The (is_v6, length) pairs in use, longest first.
    lens: Vec<(bool, u8)>,
}

impl CidrIndex {
    fn add(&mut self, net: &IpNet, b: BranchId) {
        let key = (matches!(net, IpNet::V6(_)), net.prefix_len());
        if !self.lens.contains(&key) {
            self.lens.push(key);
            self.lens.sort_by_key(|k| std::cmp::Reverse(k.1));
        }
        self.by_len.entry(key).or_default().entry(net.network()).or_default().push(b);
    }

    fn lookup(&self, ip: IpAddr, out: &mut Vec<BranchId>) {
        let v6 = ip.is_ipv6();
        for &(is6, len) in self.lens.iter().filter(|(is6, _)| *is6 == v6) {
            let Ok(net) = IpNet::new(ip, len) else {
                continue;
            };
            if let Some(v) = self.by_len.get(&(is6, len)).and_then(|m| m.get(&net.trunc().network())) {
                out.extend(v);
            }
        }
    }
}

/// All anchors of one matcher (one for node selectors, one for zone selectors).
#[derive(Debug, Default)]
pub(super) struct Index {
    /// (namespace, label key, label value) of branches with a literal namespace and an `In` label.
    pub ns_label: HashMap<String, LabelMap>,
    /// (label key, label value) of branches with an `In` label but no literal namespace.
    pub label: LabelMap,
    /// One string index per pattern dimension.
    pub strings: HashMap<Dim, StrIndex>,
    /// CIDR anchors.
    pub cidrs: CidrIndex,
    /// Branches with no usable anchor (e.g. only `NotIn` labels): always candidates.
    pub scan: Vec<BranchId>,
}

/// label key -> label value -> branches.
pub(super) type LabelMap = HashMap<String, HashMap<String, Vec<BranchId>>>;

fn label_lookup(map: &LabelMap, labels: &std::collections::BTreeMap<String, String>, out: &mut Vec<BranchId>) {
    if map.is_empty() {
        return;
    }
    for (k, v) in labels {
        out.extend(map.get(k).and_then(|m| m.get(v)).into_iter().flatten());
    }
}

/// Most anchor keys one branch may produce before it falls back to `scan`.
const MAX_KEYS: usize = 4096;

fn literal_patterns(c: Option<&Constraint>) -> Option<&Vec<String>> {
    match c {
        Some(Constraint::Patterns(_, p)) if p.iter().all(|x| !is_glob(x)) => Some(p),
        _ => None,
    }
}

impl Index {
    /// Files branch `b` under its most selective anchor that a remote end can carry too: a
    /// local-end-only field (executable, image, cgroup, unit) anchors a branch only when it has
    /// nothing else, or the remote end of a socket, known by its address, would never find a
    /// node bound by `cidrs` plus `executables`.
    pub fn add(&mut self, branch: &Branch, b: BranchId) {
        let find = |d: Dim| branch.constraints.iter().find(|c| c.dim() == d);
        let in_label = match find(Dim::PodLabels) {
            Some(Constraint::Labels(_, exprs)) => exprs.iter().find(|e| e.operator == LabelOperator::In),
            _ => None,
        };
        let namespaces = literal_patterns(find(Dim::Namespace));
        if let (Some(ns), Some(l)) = (namespaces, in_label)
            && ns.len() * l.values.len() <= MAX_KEYS
        {
            for n in ns {
                for v in &l.values {
                    let by_key = self.ns_label.entry(n.clone()).or_default();
                    by_key.entry(l.key.clone()).or_default().entry(v.clone()).or_default().push(b);
                }
            }
            return;
        }
        let by_string = |d: Dim, index: &mut Self| {
            if let Some(Constraint::Patterns(_, pats)) = find(d) {
                let idx = index.strings.entry(d).or_default();
                for p in pats {
                    idx.add(p, b);
                }
                return true;
            }
            false
        };
        for d in [Dim::Spiffe, Dim::Namespace, Dim::ServiceAccount, Dim::Host] {
            if by_string(d, self) {
                return;
            }
        }
        if let Some(Constraint::Cidrs { include, .. }) = find(Dim::Ip)
            && !include.is_empty()
        {
            for n in include {
                self.cidrs.add(n, b);
            }
            return;
        }
        if let Some(l) = in_label {
            for v in &l.values {
                self.label.entry(l.key.clone()).or_default().entry(v.clone()).or_default().push(b);
            }
            return;
        }
        for d in [Dim::Executable, Dim::Image, Dim::Cgroup, Dim::SystemdUnit] {
            if by_string(d, self) {
                return;
            }
        }
        self.scan.push(b);
    }

    /// Candidate branches for an identity (may contain duplicates and non-matches).
    pub fn candidates(&self, id: &super::Identity, out: &mut Vec<BranchId>) {
        if let Some(by_key) = id.namespace.as_deref().and_then(|ns| self.ns_label.get(ns)) {
            label_lookup(by_key, &id.labels, out);
        }
        label_lookup(&self.label, &id.labels, out);
        for (d, idx) in &self.strings {
            if let Some(value) = id.value(*d) {
                idx.lookup(value, out);
            }
        }
        if let Some(ip) = id.ip {
            self.cidrs.lookup(ip, out);
        }
        out.extend(&self.scan);
    }
}
