//! Compiles a checked [`Dfd`] into a petgraph graph of nodes and flows plus a [`Matcher`] that
//! resolves a runtime endpoint identity to its node and zone.

mod index;
mod matcher;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};

use crate::model::{Dfd, Flow, Node, Zone};

pub use matcher::{Identity, Matcher, Resolution};

/// Why a DFD cannot be compiled (run `dfdwatch check` first: these are its S001/S002/P007 errors).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A reference names an id that is not defined.
    #[error("{what} `{id}` is not defined (referenced by {by})")]
    Dangling {
        /// What kind of item was expected (`zone`, `tier`, `node`).
        what: &'static str,
        /// The missing id.
        id: String,
        /// The referring item.
        by: String,
    },
    /// Two nodes or zones share an id.
    #[error("{what} id `{id}` is declared twice")]
    Duplicate {
        /// `node` or `zone`.
        what: &'static str,
        /// The repeated id.
        id: String,
    },
    /// A selector flattens into too many `anyOf` alternatives.
    #[error("the selector of {owner} has too many anyOf alternatives")]
    TooManyBranches {
        /// The node or zone.
        owner: String,
    },
}

/// The compiled DFD: the model, its graph, and the matcher. Build once, share read-only.
#[derive(Debug)]
pub struct Compiled {
    /// The model it was compiled from.
    pub dfd: Dfd,
    /// One graph node per DFD node (weight: index into `dfd.nodes`), one edge per flow
    /// (weight: index into `dfd.flows`), directed from initiator to acceptor.
    pub graph: DiGraph<usize, usize>,
    /// Graph node of each DFD node id.
    pub node_index: HashMap<String, NodeIndex>,
    /// Index into `dfd.zones` of each DFD node (same order as `dfd.nodes`).
    pub node_zone: Vec<usize>,
    /// Resolves runtime identities to nodes and zones.
    pub matcher: Matcher,
}

impl Compiled {
    /// Compiles `dfd`. Fails on dangling references or duplicate node/zone ids.
    pub fn new(dfd: Dfd) -> Result<Compiled, CompileError> {
        let mut zone_ix: HashMap<&str, usize> = HashMap::new();
        for (i, z) in dfd.zones.iter().enumerate() {
            if zone_ix.insert(z.id.as_str(), i).is_some() {
                return Err(CompileError::Duplicate { what: "zone", id: z.id.clone() });
            }
            if dfd.tier(&z.tier.id).is_none() {
                return Err(CompileError::Dangling {
                    what: "tier",
                    id: z.tier.id.clone(),
                    by: format!("zone {}", z.id),
                });
            }
        }
        let mut graph = DiGraph::with_capacity(dfd.nodes.len(), dfd.flows.len());
        let mut node_index = HashMap::with_capacity(dfd.nodes.len());
        let mut node_zone = Vec::with_capacity(dfd.nodes.len());
        for (i, n) in dfd.nodes.iter().enumerate() {
            let Some(z) = zone_ix.get(n.zone.id.as_str()) else {
                return Err(CompileError::Dangling {
                    what: "zone",
                    id: n.zone.id.clone(),
                    by: format!("node {}", n.id),
                });
            };
            node_zone.push(*z);
            if node_index.insert(n.id.clone(), graph.add_node(i)).is_some() {
                return Err(CompileError::Duplicate { what: "node", id: n.id.clone() });
            }
        }
        for (i, f) in dfd.flows.iter().enumerate() {
            let end = |r: &crate::model::Ref| {
                node_index.get(&r.id).copied().ok_or_else(|| CompileError::Dangling {
                    what: "node",
                    id: r.id.clone(),
                    by: format!("flow {}", f.id),
                })
            };
            graph.add_edge(end(&f.from)?, end(&f.to)?, i);
        }
        let matcher = Matcher::new(&dfd, &node_zone)?;
        Ok(Compiled { dfd, graph, node_index, node_zone, matcher })
    }

    /// The DFD node behind a graph node.
    pub fn node(&self, ix: NodeIndex) -> Option<&Node> {
        self.graph.node_weight(ix).and_then(|i| self.dfd.nodes.get(*i))
    }

    /// The zone of the DFD node at `node` (index into `dfd.nodes`).
    pub fn zone_of(&self, node: usize) -> Option<&Zone> {
        self.node_zone.get(node).and_then(|z| self.dfd.zones.get(*z))
    }

    /// The flows approved from node `from` to node `to` (indices into `dfd.nodes`, which are also
    /// their graph indices): no id lookups, for the per-flow verdict.
    pub fn flows_between_ix(&self, from: usize, to: usize) -> impl Iterator<Item = &Flow> {
        let (a, b) = (NodeIndex::new(from), NodeIndex::new(to));
        let valid = from < self.graph.node_count() && to < self.graph.node_count();
        valid
            .then(|| self.graph.edges_connecting(a, b))
            .into_iter()
            .flatten()
            .filter_map(|e| self.dfd.flows.get(*e.weight()))
    }

    /// The flows approved from node id `from` to node id `to`.
    pub fn flows_between(&self, from: &str, to: &str) -> Vec<&Flow> {
        let (Some(a), Some(b)) = (self.node_index.get(from), self.node_index.get(to)) else {
            return Vec::new();
        };
        self.graph.edges_connecting(*a, *b).filter_map(|e| self.dfd.flows.get(*e.weight())).collect()
    }

    /// The flow behind a graph edge.
    pub fn flow(&self, e: EdgeIndex) -> Option<&Flow> {
        self.graph.edge_weight(e).and_then(|i| self.dfd.flows.get(*i))
    }
}
