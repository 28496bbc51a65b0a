//! `dfdwatch run`'s options: parsed by clap, then validated once, every error reported at once,
//! before the daemon touches anything (no probe loaded, no file opened, no port bound).

use std::path::PathBuf;

use crate::probes::{self, AttachPoint, ProbeConfig};

/// Options of `dfdwatch run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Append events (JSON Lines) to this file instead of writing them to stdout.
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
    /// Attach point to use; by default the first this kernel supports (raw-tracepoint, then
    /// tracepoint).
    #[arg(long, value_enum)]
    pub attach: Option<AttachPoint>,
    /// Size of the kernel-to-daemon ring buffer in MiB (a power of two, 1 to 1024).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub ring_buffer_mib: u32,
    /// How often the reader collects records the probes did not announce (batched wakeups).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub flush_interval_ms: u64,
    /// How often the kernel's flow counters are read and each active flow's record written
    /// (`dfdwatch.flow.v1`); flow and violation metrics grow at this pace.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub flow_interval_ms: u64,
    /// Connections of one alerting flow recorded one by one per second, at most; the rest are
    /// counted in its flow records and in dfdwatch_unreported_connections_total.
    #[arg(long, default_value_t = crate::flows::kernel::DEFAULT_REPORT_LIMIT, value_name = "N")]
    pub flow_report_limit: u32,
    /// Flows tracked at once (kernel and daemon). A new flow beyond them is sent and recorded
    /// connection by connection, counted in dfdwatch_flow_table_full_total.
    #[arg(long, default_value_t = monitor_common::FLOW_ENTRIES, value_name = "N")]
    pub flow_table_entries: u32,
    /// How often the daemon proves that its probes still see connections (a refused loopback
    /// connect of its own that must come through them); three missed in a row make it blind.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub heartbeat_interval_ms: u64,
    /// Where the daemon keeps the last time it knew it was watching, so that after a restart it
    /// can write a gap record saying from when to when nothing was seen (created 0700).
    #[arg(long, default_value = "/var/lib/dfdwatch", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The flow store (SQLite): every flow record and each connection of an alerting flow, for
    /// `dfdwatch investigate` (docs/store.md). Default: flows.db in --state-dir.
    #[arg(long, value_name = "PATH", conflicts_with = "no_store")]
    pub store: Option<PathBuf>,
    /// Keep no flow store.
    #[arg(long)]
    pub no_store: bool,
    /// The cluster store (ClickHouse) the flow store's records are also shipped to.
    #[command(flatten)]
    pub clickhouse: crate::store::clickhouse::ClickHouseArgs,
    /// Records older than this are deleted from the flow store (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub store_retention: std::time::Duration,
    /// The flow store is trimmed, oldest records first, to at most this many bytes on disk.
    #[arg(long, default_value_t = 1 << 30, value_name = "BYTES")]
    pub store_max_bytes: u64,
    /// How often kernel loss counters are checked and increases logged.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub stats_interval_ms: u64,
    /// BTF of the running kernel, for struct offsets.
    #[arg(long, default_value = probes::btf::VMLINUX_BTF, value_name = "PATH")]
    pub btf: PathBuf,
    /// Capacity of the in-kernel listener table: listening ports, counted once per network
    /// namespace. When it is full, accepts on further ports lose their process (logged and
    /// counted as `listener_map_full`).
    #[arg(long, default_value_t = monitor_common::LISTENER_ENTRIES, value_name = "N")]
    pub max_listeners: u32,
    /// Static identity file (TOML) naming hosts and networks by CIDR or hostname; see
    /// docs/identity.md.
    #[arg(long, value_name = "PATH")]
    pub identity_file: Option<PathBuf>,
    /// Approved DFD files or directories (as for `dfdwatch check`); each end of every event is
    /// placed on its node, zone and tier. A DFD with an error-level finding is refused (an expired
    /// approval is not an error here: it is a warning and a metric, see docs/verdicts.md).
    #[arg(long = "dfd", value_name = "PATH")]
    pub dfd: Vec<PathBuf>,
    /// Require the DFD to be signed: a minisign public key whose signatures count (repeat for
    /// each approver). The DFD must then be one directory holding `dfd.sha256` and its
    /// signatures (`dfdwatch sign`); anything else is refused, at start and on reload.
    #[arg(long = "dfd-trust-key", value_name = "FILE")]
    pub dfd_trust_keys: Vec<PathBuf>,
    /// Distinct trusted keys that must have signed the DFD.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub dfd_required_signatures: usize,
    /// Append alert events (JSON Lines, schema dfdwatch.alert.v1) to this file, or `-` for stdout.
    /// Needs --dfd.
    #[arg(long, value_name = "PATH")]
    pub alerts_file: Option<PathBuf>,
    /// How events are written: dfdwatch's JSON records, or OCSF 1.5.0 (Network Activity 4001,
    /// Detection Finding 2004) for a SIEM.
    #[arg(long, value_enum, default_value = "json")]
    pub events_format: crate::sinks::ocsf::Format,
    /// How alerts are written: dfdwatch's JSON, or OCSF (Detection Finding 2004).
    #[arg(long, value_enum, default_value = "json")]
    pub alerts_format: crate::sinks::ocsf::Format,
    /// Rotate the alerts file once it holds this many bytes (0: never rotate).
    #[arg(long, default_value_t = 100 << 20, value_name = "BYTES")]
    pub alerts_max_bytes: u64,
    /// Rotated alert files kept (alerts.jsonl.1 is the newest).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub alerts_keep: u32,
    /// When alert lines are forced to disk: after every batch, at most once a second, or never.
    #[arg(long, value_enum, default_value = "interval")]
    pub alerts_fsync: crate::sinks::line_file::FsyncPolicy,
    /// Also post every alert to this Alertmanager (base URL, http://; the daemon uses
    /// /api/v2/alerts). Needs --dfd.
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Option<String>,
    /// Repeats of one flow inside this many seconds give one alert and, when the window closes,
    /// one summary line with their count.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub alert_window_secs: u64,
    /// De-duplication windows open at once, at most. When a scan opens more, the oldest window is
    /// closed early (its summary written) and counted in dfdwatch_alert_windows_evicted_total.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub alert_max_windows: usize,
    /// How often the DFD files are checked for changes (a changed, valid DFD replaces the running
    /// one; SIGHUP reloads at once).
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub dfd_watch_interval_secs: u64,
    /// Watch a Kubernetes cluster through this kubeconfig file for pod, namespace, service
    /// account, SPIFFE and Service identity (see docs/kubernetes-identity.md).
    #[arg(long, value_name = "PATH", conflicts_with = "kube_in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the cluster this daemon runs in (service account token; the DaemonSet case).
    #[arg(long)]
    pub kube_in_cluster: bool,
    /// SPIFFE trust domain for derived SPIFFE IDs.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    /// Address of the HTTP endpoint serving /metrics, /healthz and /readyz. Loopback by default;
    /// port 0 picks a free port (logged).
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR:PORT")]
    pub metrics_addr: std::net::SocketAddr,
    /// TLS and basic auth for the metrics endpoint: a web configuration file in the Prometheus
    /// exporter toolkit's format (tls_server_config, basic_auth_users; docs/metrics.md).
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Do not listen at all (no metrics, no health endpoints).
    #[arg(long)]
    pub no_metrics: bool,
    /// Node name written in events (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
}

/// Every problem with the options, reported together.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ConfigErrors(pub Vec<String>);

impl RunArgs {
    /// The flow store to keep, unless --no-store.
    pub fn store_options(&self) -> Option<crate::store::StoreOptions> {
        (!self.no_store).then(|| crate::store::StoreOptions {
            path: self.store.clone().unwrap_or_else(|| self.state_dir.join("flows.db")),
            retention: self.store_retention,
            max_bytes: self.store_max_bytes,
        })
    }

    /// Checks every option; returns the probes' configuration, or every problem found.
    pub fn validate(&self) -> Result<ProbeConfig, ConfigErrors> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        let mib = self.ring_buffer_mib;
        check(
            (1..=1024).contains(&mib) && mib.is_power_of_two(),
            format!("--ring-buffer-mib {mib}: use a power of two from 1 to 1024"),
        );
        check((1..=1000).contains(&self.flush_interval_ms), "--flush-interval-ms: use 1 to 1000".into());
        check(self.stats_interval_ms >= 100, "--stats-interval-ms: use at least 100".into());
        check((100..=60_000).contains(&self.heartbeat_interval_ms), "--heartbeat-interval-ms: use 100 to 60000".into());
        check((100..=60_000).contains(&self.flow_interval_ms), "--flow-interval-ms: use 100 to 60000".into());
        check((1..=1_000_000).contains(&self.flow_report_limit), "--flow-report-limit: use 1 to 1000000".into());
        check((1..=1 << 20).contains(&self.flow_table_entries), "--flow-table-entries: use 1 to 1048576".into());
        check(
            (self.alerts_file.is_none() && self.alertmanager_url.is_none()) || !self.dfd.is_empty(),
            "--alerts-file and --alertmanager-url need --dfd: alerts are verdicts against the approved DFD".into(),
        );
        check((1..=3600).contains(&self.dfd_watch_interval_secs), "--dfd-watch-interval-secs: use 1 to 3600".into());
        check(
            self.dfd_trust_keys.is_empty() || (self.dfd.len() == 1 && self.dfd[0].is_dir()),
            "--dfd-trust-key needs --dfd to name one directory: a signature covers a DFD directory as a whole".into(),
        );
        check(
            (1..=self.dfd_trust_keys.len().max(1)).contains(&self.dfd_required_signatures),
            "--dfd-required-signatures: use 1 to the number of --dfd-trust-key given".into(),
        );
        check(self.alerts_keep <= 1000, "--alerts-keep: use 0 to 1000".into());
        check((1..=86_400).contains(&self.alert_window_secs), "--alert-window-secs: use 1 to 86400".into());
        check((1..=1 << 20).contains(&self.alert_max_windows), "--alert-max-windows: use 1 to 1048576".into());
        check((1..=1 << 20).contains(&self.max_listeners), "--max-listeners: use 1 to 1048576".into());
        let retention = self.store_retention.as_secs();
        check((60..=3650 * 86_400).contains(&retention), "--store-retention: use 1m to 3650d".into());
        check(self.store_max_bytes >= 1 << 20, "--store-max-bytes: use at least 1048576 (1 MiB)".into());
        if let Some(url) = &self.alertmanager_url
            && let Err(e) = crate::sinks::alertmanager::alerts_uri(url)
        {
            problems.push(e.to_string());
        }
        if let Err(e) = crate::store::clickhouse::ClickHouse::from_args(&self.clickhouse) {
            problems.push(e.to_string());
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let ring_bytes = mib << 20;
        Ok(ProbeConfig {
            btf_path: self.btf.clone(),
            attach: self.attach,
            ring_bytes,
            wakeup_bytes: u64::from(ring_bytes / 16),
            wakeup_ns: 1_000_000,
            listener_entries: self.max_listeners,
            flow_entries: self.flow_table_entries,
            // Set once the daemon has reserved the port.
            heartbeat_port: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cli = Cli::try_parse_from([
            "dfdwatch",
            "--ring-buffer-mib",
            "3",
            "--alert-window-secs",
            "0",
            "--alertmanager-url",
            "https://am:9093",
        ])
        .unwrap();
        let e = cli.run.validate().unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        for want in ["--ring-buffer-mib 3", "--alert-window-secs", "need --dfd", "only http://"] {
            assert!(e.to_string().contains(want), "{want} missing from: {e}");
        }
        assert!(Cli::try_parse_from(["dfdwatch"]).unwrap().run.validate().is_ok());
    }
}
