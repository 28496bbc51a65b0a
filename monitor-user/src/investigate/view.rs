//! What `dfdwatch investigate` shows of a stored record: each end named as an analyst reads it
//! (DFD node, else pod, else address, with zone and tier), times in RFC 3339, and plain aligned
//! tables for the terminal.

use serde::Serialize;

use crate::store::row::Row;

/// One end of a hop or timeline entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndView {
    /// IP address.
    pub addr: String,
    /// Port (absent for a flow's client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// DFD node.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// DFD zone.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Tier of the zone.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tier: String,
    /// Kubernetes pod.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// cgroup path (the local end).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cgroup: String,
    /// Executable (the local end).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exe: String,
}

impl EndView {
    /// The client end of `r`.
    pub fn src(r: &Row) -> Self {
        Self {
            addr: r.src_addr.clone(),
            port: (r.src_port != 0).then_some(r.src_port),
            node: r.src_node.clone(),
            zone: r.src_zone.clone(),
            tier: r.src_tier.clone(),
            pod: r.src_pod.clone(),
            cgroup: r.src_cgroup.clone(),
            exe: r.src_exe.clone(),
        }
    }

    /// The server end of `r`.
    pub fn dst(r: &Row) -> Self {
        Self {
            addr: r.dst_addr.clone(),
            port: Some(r.dst_port),
            node: r.dst_node.clone(),
            zone: r.dst_zone.clone(),
            tier: r.dst_tier.clone(),
            pod: r.dst_pod.clone(),
            cgroup: r.dst_cgroup.clone(),
            exe: r.dst_exe.clone(),
        }
    }

    /// `node (zone, tier)`, else the pod or the address.
    pub fn label(&self) -> String {
        let who = [&self.node, &self.pod].into_iter().find(|s| !s.is_empty()).unwrap_or(&self.addr);
        let mut label = if who == &self.addr { who.clone() } else { format!("{who} {}", self.addr) };
        match (self.zone.is_empty(), self.tier.is_empty()) {
            (false, false) => label.push_str(&format!(" ({}, {})", self.zone, self.tier)),
            (false, true) => label.push_str(&format!(" ({})", self.zone)),
            _ => {}
        }
        label
    }
}

/// RFC 3339 UTC (seconds and milliseconds) of a Unix time in ns.
pub fn time(ns: i64) -> String {
    let ns = u64::try_from(ns).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `s` with control characters written as `\xNN`. The daemon escapes what it stores, but a
/// cluster store can be written by others: nothing read back may drive the analyst's terminal.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { format!("\\x{:02x}", u32::from(c) & 0xff) } else { c.to_string() }).collect()
}

/// Writes `rows` under `header`, each column as wide as its widest cell (control characters
/// escaped).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| printable(c)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            text.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_named_by_node_then_pod_then_address() {
        let mut e = EndView {
            addr: "10.0.0.5".into(),
            port: Some(80),
            node: String::new(),
            zone: String::new(),
            tier: String::new(),
            pod: String::new(),
            cgroup: String::new(),
            exe: String::new(),
        };
        assert_eq!(e.label(), "10.0.0.5");
        e.pod = "shop/web-1".into();
        e.zone = "shop".into();
        assert_eq!(e.label(), "shop/web-1 10.0.0.5 (shop)");
        e.node = "web".into();
        e.tier = "T1".into();
        assert_eq!(e.label(), "web 10.0.0.5 (shop, T1)");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let t = table(&["A"], &[vec!["evil\u{1b}[2Jname\n".into()]]);
        assert_eq!(t, "A\nevil\\x1b[2Jname\\x0a\n");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
