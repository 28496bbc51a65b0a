//! The sinks, after the flow stage: a typed fan-out ([`fanout`]) records the metrics itself (from
//! each flow's interval, and from connections the flow table could not track), builds each
//! connection or flow record once, and hands it to independent bounded queues: the events writer
//! ([`events`]) and the alert writer ([`alerts`], which feeds [`alertmanager`]). Each sink
//! serialises at its own edge.

pub mod alertmanager;
pub mod alerts;
pub mod dfd_change_record;
pub mod events;
pub mod fanout;
pub mod flow_record;
pub mod gap_record;
pub mod line_file;
pub mod ocsf;
pub mod record;
pub mod windows;

/// Synthetic judged connections for the sinks' unit tests.
#[cfg(test)]
pub(crate) mod fixture {
    use std::sync::Arc;

    use monitor_common::EventKind;

    use super::alerts::AlertCandidate;
    use super::record::ConnectionRecord;
    use crate::clock::WallClock;
    use crate::identity::{Identified, LocalIdentity};
    use crate::policy::verdict::{Severity, Verdict, VerdictKind};
    use crate::policy::{DfdRef, Judged, Judgement, Placement};
    use crate::source::decode::Connection;

    /// A connect from 10.0.0.1 (node `api`, zone `app`) to 10.0.0.2:`port` (node `db`, zone
    /// `data`), judged lateral movement; `n` sets its time.
    pub fn judged(port: u16, n: u64) -> Judged {
        let conn = Connection {
            kind: EventKind::Connect,
            error: None,
            monotonic_ns: 1_000_000_000 + n,
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: std::net::SocketAddr::new("10.0.0.2".parse().unwrap(), port),
            process: None,
            uid: 0,
            cgroup_id: 1,
            netns: 1,
            route: Default::default(),
            origin: Default::default(),
        };
        let flow = Identified {
            conn,
            local: LocalIdentity::default(),
            src_name: None,
            dst_name: None,
            src_k8s: None,
            dst_k8s: None,
            identity_generation: 0,
        };
        let at = |node: &str, zone: &str| Placement {
            node: Some(node.into()),
            zone: Some(zone.into()),
            tier: Some("t3".into()),
            ..Placement::default()
        };
        let verdict = Verdict {
            kind: VerdictKind::LateralMovement,
            alert: true,
            attempt: false,
            severity: Severity::High,
            tier_direction: None,
            flow: None,
            nearest_flows: vec!["api-to-db".into()],
            stride: &["elevation_of_privilege"],
            capitals: &["S"],
        };
        let dfd = Arc::new(DfdRef { name: "test".into(), sha256: "ff".into() });
        let judgement = Judgement {
            src: at("api", "app"),
            dst: at("db", "data"),
            verdict,
            dfd,
            other_end_seen: false,
            paired_accept: None,
            dnat: None,
        };
        Judged { flow, judgement }
    }

    /// [`judged`] as the alert writer receives it.
    pub fn candidate(port: u16, n: u64) -> AlertCandidate {
        candidate_from("api", port, n)
    }

    /// [`candidate`] from the DFD node `src`.
    pub fn candidate_from(src: &str, port: u16, n: u64) -> AlertCandidate {
        let mut j = judged(port, n);
        j.judgement.src.node = Some(src.into());
        let clock = WallClock::new();
        let event = Arc::new(ConnectionRecord::new(&j.flow, Some(&j.judgement), &clock, "n1"));
        super::alerts::candidate(&j, event)
    }
}
