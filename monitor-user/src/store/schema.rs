//! The flow store's tables, for SQLite and for ClickHouse: the same columns ([`super::row::COLUMNS`]),
//! the same names, so that every query (`dfdwatch investigate`) runs unchanged on both.

use super::row::COLUMNS;

/// The table every record goes to.
pub const TABLE: &str = "flow_records";

/// The schema's version, kept in SQLite's `user_version` (a store of another version is refused,
/// not rewritten).
pub const VERSION: i64 = 1;

/// Columns that hold integers; every other column holds text.
const INTEGERS: &[&str] =
    &["time_ns", "last_ns", "connections", "src_port", "dst_port", "alert", "raises_alert", "duplicate"];

/// Whether `column` holds integers.
pub fn is_integer(column: &str) -> bool {
    INTEGERS.contains(&column)
}

/// The indexes of the SQLite store: time ranges, and either end's node, zone, address and pod
/// (each with time, for a workload's timeline), and the alerts' flow keys.
const SQLITE_INDEXES: &[(&str, &str)] = &[
    ("time", "time_ns"),
    ("src_node", "src_node, time_ns"),
    ("dst_node", "dst_node, time_ns"),
    ("src_zone", "src_zone, time_ns"),
    ("dst_zone", "dst_zone, time_ns"),
    ("src_addr", "src_addr, time_ns"),
    ("dst_addr", "dst_addr, time_ns"),
    ("src_pod", "src_pod, time_ns"),
    ("dst_pod", "dst_pod, time_ns"),
];

/// SQLite: the table and its indexes (idempotent).
pub fn sqlite() -> String {
    let columns: Vec<String> =
        COLUMNS.iter().map(|c| format!("  {c} {} NOT NULL", if is_integer(c) { "INTEGER" } else { "TEXT" })).collect();
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {TABLE} (\n{}\n);\n", columns.join(",\n"));
    for (name, on) in SQLITE_INDEXES {
        sql.push_str(&format!("CREATE INDEX IF NOT EXISTS {TABLE}_{name} ON {TABLE} ({on});\n"));
    }
    sql.push_str(&format!("CREATE INDEX IF NOT EXISTS {TABLE}_flow_key ON {TABLE} (flow_key) WHERE flow_key != '';\n"));
    sql
}

/// ClickHouse: the table in `database`, partitioned by day and ordered for time and workload
/// queries; with `ttl_days`, rows older than that are dropped by the server (ClickHouse 19.6 and
/// later; older servers get no TTL and keep everything, see docs/store.md).
pub fn clickhouse(database: &str, ttl_days: Option<u32>) -> String {
    let columns: Vec<String> =
        COLUMNS.iter().map(|c| format!("  {c} {}", if is_integer(c) { "Int64" } else { "String" })).collect();
    let ttl = ttl_days.map(|d| format!("\nTTL day + INTERVAL {d} DAY")).unwrap_or_default();
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{TABLE} (\n{},\n  day Date DEFAULT toDate(toDateTime(intDiv(time_ns, 1000000000)))\n)\nENGINE = MergeTree()\nPARTITION BY day\nORDER BY (time_ns, src_addr, dst_addr){ttl}",
        columns.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemas_name_every_column() {
        let (lite, house) = (sqlite(), clickhouse("dfdwatch", Some(7)));
        for c in COLUMNS {
            assert!(lite.contains(&format!("  {c} ")), "{c} in SQLite");
            assert!(house.contains(&format!("  {c} ")), "{c} in ClickHouse");
        }
        assert!(house.contains("TTL day + INTERVAL 7 DAY"));
        assert!(!clickhouse("dfdwatch", None).contains("TTL"));
    }
}
