//! The verdict stage's output: an identified connection, judged. A [`Judged`] always carries a
//! verdict; the path without a DFD never builds one, so no later stage has to ask.

use std::sync::Arc;

use monitor_common::EventKind;

use super::verdict::{ObservedFlow, Verdict, verdict};
use super::{DfdRef, Placement, Policy, place};
use crate::identity::Identified;

/// What the verdict stage decided about one connection.
#[derive(Clone, Debug)]
pub struct Judgement {
    /// Where the source (initiator) sits in the DFD.
    pub src: Placement,
    /// Where the destination (acceptor) sits in the DFD.
    pub dst: Placement,
    /// The verdict.
    pub verdict: Verdict,
    /// The DFD revision that judged it.
    pub dfd: Arc<DfdRef>,
    /// The same connection was already seen from its other end on this node (a connect and an
    /// accept of two local workloads); alerts count it once.
    pub other_end_seen: bool,
    /// When this sighting completed a pair (a connect and an accept of one connection on this
    /// node, in either order): the flow key of the accept. Metrics count such connections under
    /// the connect, so the flow stage marks that accept's flow as counted elsewhere.
    pub paired_accept: Option<monitor_common::flow::FlowKey>,
    /// When this sighting completed a pair whose two sightings saw different server ends
    /// (destination NAT on the way, as for a Kubernetes Service): both of them.
    pub dnat: Option<Arc<Dnat>>,
}

/// The two server ends of one connection through destination NAT.
#[derive(Clone, Debug)]
pub struct Dnat {
    /// What the client connected to (a Service's ClusterIP and port), as its connect saw it.
    pub original: DnatEnd,
    /// What accepted it (the backend pod), as its accept saw it.
    pub backend: DnatEnd,
}

/// One server end of a connection through destination NAT.
#[derive(Clone, Debug)]
pub struct DnatEnd {
    /// Address and port.
    pub addr: std::net::SocketAddr,
    /// Its Kubernetes identity, when known.
    pub k8s: Option<crate::identity::kubernetes::K8sEnd>,
    /// Where it sits in the DFD.
    pub dfd: Placement,
}

impl Judgement {
    /// Whether this sighting raises an alert: its verdict calls for one, and it is not the
    /// second sighting of a connection already judged from its other end.
    pub fn raises_alert(&self) -> bool {
        self.verdict.alert && !self.other_end_seen
    }
}

/// An identified connection with its judgement.
#[derive(Clone, Debug)]
pub struct Judged {
    /// The connection and the identity of its ends.
    pub flow: Identified,
    /// The verdict on it.
    pub judgement: Judgement,
}

/// Places both ends of `flow` and judges it against `policy` (a pure function of the two).
pub fn judge(policy: &Policy, flow: &Identified) -> Judgement {
    let dfd = &policy.compiled;
    let conn = &flow.conn;
    let local_is_src = conn.local_is_src();
    let src_local = local_is_src.then_some(&flow.local);
    let dst_local = (!local_is_src).then_some(&flow.local);
    let ids = &policy.ids;
    let src = place(dfd, ids, conn.src.ip(), src_local, flow.src_k8s.as_ref(), flow.src_name.as_deref());
    let dst = place(dfd, ids, conn.dst.ip(), dst_local, flow.dst_k8s.as_ref(), flow.dst_name.as_deref());
    let observed = ObservedFlow {
        src: &src,
        dst: &dst,
        dst_port: conn.dst.port(),
        attempt: conn.kind == EventKind::ConnectFailed,
    };
    let verdict = verdict(dfd, &observed);
    Judgement {
        src,
        dst,
        verdict,
        dfd: policy.revision.clone(),
        other_end_seen: false,
        paired_accept: None,
        dnat: None,
    }
}
