//! Security lints on flows: tier crossings (X001, X002, X006), encryption and data (X003, X004,
//! X008, X012, X013), rate limiting at the edge (X005), checkpoint placement (X007) and expiry (H001).

use super::Index;
use crate::date::Date;
use crate::diag::Finding;
use crate::model::{CheckpointKind, Dfd, EncryptionKind, Flow};

pub(super) fn check(dfd: &Dfd, ix: &Index<'_>, today: Option<Date>, out: &mut Vec<Finding>) {
    for f in &dfd.flows {
        if let Some(today) = today {
            expiry(f, today, out);
        }
        placement(f, ix, out);
        let (Some((_, fz, ft)), Some((tn, tz, tt))) = (ix.placement(&f.from.id), ix.placement(&f.to.id)) else {
            continue;
        };
        let kinds: Vec<CheckpointKind> =
            f.checkpoints.iter().filter_map(|c| ix.checkpoints.get(c.id.as_str())).map(|c| c.kind).collect();
        let crossing = fz.id != tz.id;
        let upward = tt.level > ft.level;
        let plaintext = f.encryption.required == EncryptionKind::None;
        if upward && !kinds.iter().any(|k| matches!(k, CheckpointKind::Authn | CheckpointKind::MtlsPeer)) {
            out.push(Finding::new(
                "X001",
                Some(&f.loc),
                format!("flow {} crosses up {}->{} without an authn checkpoint; add a checkpoint of kind `authn` (or `mtls-peer`) enforced by {}", f.id, ft.id, tt.id, f.to.id),
            ));
        }
        if upward && ix.tiers.values().any(|t| t.level > ft.level && t.level < tt.level) {
            out.push(Finding::new(
                "X002",
                Some(&f.loc),
                format!(
                    "flow {} skips a tier ({}->{}); route it through a node in the tier between",
                    f.id, ft.id, tt.id
                ),
            ));
        }
        if plaintext {
            let personal: Vec<&str> = f
                .data
                .iter()
                .filter_map(|d| ix.data.get(d.id.as_str()))
                .filter(|d| d.personal)
                .map(|d| d.id.as_str())
                .collect();
            if !personal.is_empty() {
                out.push(Finding::new(
                    "X003",
                    Some(&f.loc),
                    format!("flow {} carries personal data ({}) unencrypted; set `encryption: {{required: tls}}` or stronger", f.id, personal.join(", ")),
                ));
            } else if crossing || tz.external {
                out.push(Finding::new(
                    "X008",
                    Some(&f.loc),
                    format!(
                        "flow {} crosses from zone {} to {} unencrypted; require tls, mtls, wireguard or ipsec",
                        f.id, fz.id, tz.id
                    ),
                ));
            }
        }
        if plaintext && kinds.contains(&CheckpointKind::Authn) {
            out.push(Finding::new(
                "X013",
                Some(&f.loc),
                format!("flow {} has an authn checkpoint but `encryption: {{required: none}}`, so credentials cross in clear; require tls or mtls", f.id),
            ));
        }
        let unapproved = f.approval.as_ref().is_none_or(|a| a.ticket.is_none());
        if tz.external && unapproved {
            let personal: Vec<&str> = f
                .data
                .iter()
                .filter_map(|d| ix.data.get(d.id.as_str()))
                .filter(|d| d.personal)
                .map(|d| d.id.as_str())
                .collect();
            if !personal.is_empty() {
                out.push(Finding::new(
                    "X012",
                    Some(&f.loc),
                    format!("flow {} sends personal data ({}) to external zone {} without an approval; add `approval: {{ticket: ..., expires: ...}}` (e.g. the DPA ticket)", f.id, personal.join(", "), tz.id),
                ));
            }
        }
        let max = [tz.max_data.as_ref(), tn.max_data.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|r| ix.data.get(r.id.as_str()))
            .min_by_key(|d| d.level);
        if let Some(max) = max {
            for d in f.data.iter().filter_map(|d| ix.data.get(d.id.as_str())) {
                if d.level > max.level {
                    out.push(Finding::new(
                        "X004",
                        Some(&f.loc),
                        format!("flow {} carries {} (level {}) to {}, whose maxData is {} (level {}); stop sending it or raise maxData", f.id, d.id, d.level, f.to.id, max.id, max.level),
                    ));
                }
            }
        }
        if fz.external && !tz.external && !kinds.contains(&CheckpointKind::RateLimit) {
            out.push(Finding::new(
                "X005",
                Some(&f.loc),
                format!("flow {} enters from external zone {} without a rate-limit checkpoint; add one of kind `rate-limit`", f.id, fz.id),
            ));
        }
        let web = f.app_protocol.as_deref().is_some_and(|p| matches!(p, "http" | "https" | "grpc" | "h2" | "http2"));
        if upward && web && !kinds.contains(&CheckpointKind::SchemaValidation) {
            out.push(Finding::new(
                "X006",
                Some(&f.loc),
                format!(
                    "flow {} is an upward {} crossing without schema validation; add a `schema-validation` checkpoint",
                    f.id,
                    f.app_protocol.as_deref().unwrap_or("http")
                ),
            ));
        }
    }
}

fn expiry(f: &Flow, today: Date, out: &mut Vec<Finding>) {
    if let Some(a) = &f.approval
        && let Some(exp) = a.expires.filter(|e| *e < today)
    {
        let ticket = a.ticket.as_deref().map(|t| format!(" (ticket {t})")).unwrap_or_default();
        out.push(Finding::new(
            "H001",
            Some(&a.loc),
            format!(
                "approval of flow {}{ticket} expired on {exp}; renew it with a new `expires` date or remove the flow",
                f.id
            ),
        ));
    }
}

fn placement(f: &Flow, ix: &Index<'_>, out: &mut Vec<Finding>) {
    for r in &f.checkpoints {
        let Some(cp) = ix.checkpoints.get(r.id.as_str()) else {
            continue;
        };
        if let Some(by) = &cp.enforced_by
            && by.id != f.from.id
            && by.id != f.to.id
        {
            out.push(Finding::new(
                    "X007",
                    Some(&r.loc),
                    format!("checkpoint {} is enforced by {}, which is neither end of flow {} ({} -> {}); list it on a flow that touches {}", cp.id, by.id, f.id, f.from.id, f.to.id, by.id),
                ));
        }
    }
}
