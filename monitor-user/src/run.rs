//! `dfdwatch run`: load and attach the probes, then run the pipeline (ring-buffer reader ->
//! identity stage -> verdict stage, when a DFD is loaded -> event writer -> alert writer ->
//! Alertmanager, every hop a bounded queue) until SIGINT or SIGTERM, detach, drain and report the
//! final counters. SIGHUP and changes to the DFD files reload the DFD.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    cgroupfs,
    clock::WallClock,
    counters::Counters,
    http::{self, Health},
    identity::{IdentityStage, Resolver, StaticNames, cgroup::CgroupPaths},
    kernel_stats::KernelStats,
    metrics::Metrics,
    policy::{Policy, reload::Reloader, stage::VerdictStage},
    probes::{self, AttachPoint, ProbeConfig, Probes},
    reader::RingReader,
    sink::EventWriter,
};

/// Events waiting in each queue between stages (reader -> identity -> writer).
const EVENT_QUEUE: usize = 8192;
/// Alert candidates waiting for the alert writer.
const ALERT_QUEUE: usize = 4096;

/// Options of `dfdwatch run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Append events (JSON Lines) to this file instead of writing them to stdout.
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
    /// Attach point to use; by default the first this kernel supports (tracepoint, then
    /// raw-tracepoint).
    #[arg(long, value_enum)]
    pub attach: Option<AttachPoint>,
    /// Size of the kernel-to-daemon ring buffer in MiB (a power of two, 1 to 1024).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub ring_buffer_mib: u32,
    /// How often the reader collects records the probes did not announce (batched wakeups).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub flush_interval_ms: u64,
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
    /// placed on its node, zone and tier. A DFD with an error-level finding is refused.
    #[arg(long = "dfd", value_name = "PATH")]
    pub dfd: Vec<PathBuf>,
    /// Append alert events (JSON Lines, schema dfdwatch.alert.v1) to this file, or `-` for stdout.
    /// Needs --dfd.
    #[arg(long, value_name = "PATH")]
    pub alerts_file: Option<PathBuf>,
    /// Rotate the alerts file once it holds this many bytes (0: never rotate).
    #[arg(long, default_value_t = 100 << 20, value_name = "BYTES")]
    pub alerts_max_bytes: u64,
    /// Rotated alert files kept (alerts.jsonl.1 is the newest).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub alerts_keep: u32,
    /// When alert lines are forced to disk: after every batch, at most once a second, or never.
    #[arg(long, value_enum, default_value = "interval")]
    pub alerts_fsync: crate::rotate::FsyncPolicy,
    /// Also post every alert to this Alertmanager (base URL, http://; the daemon uses
    /// /api/v2/alerts). Needs --dfd.
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Option<String>,
    /// Repeats of one flow inside this many seconds give one alert and, when the window closes,
    /// one summary line with their count.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub alert_window_secs: u64,
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
    /// Do not listen at all (no metrics, no health endpoints).
    #[arg(long)]
    pub no_metrics: bool,
    /// Node name written in events (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
}

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid option: {0}")]
    Usage(String),
    #[error(transparent)]
    Probes(#[from] probes::ProbeError),
    #[error(transparent)]
    Identity(#[from] crate::identity::names::NamesError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("kubernetes identity: {0}")]
    Kube(String),
    #[error("cannot open events file {path}: {source}")]
    EventsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for metrics: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

impl RunArgs {
    fn validate(&self) -> Result<ProbeConfig, RunError> {
        let mib = self.ring_buffer_mib;
        if !(1..=1024).contains(&mib) || !mib.is_power_of_two() {
            return Err(RunError::Usage(format!("--ring-buffer-mib {mib}: use a power of two from 1 to 1024")));
        }
        if self.flush_interval_ms == 0 || self.flush_interval_ms > 1000 {
            return Err(RunError::Usage("--flush-interval-ms: use 1 to 1000".into()));
        }
        if self.stats_interval_ms < 100 {
            return Err(RunError::Usage("--stats-interval-ms: use at least 100".into()));
        }
        if (self.alerts_file.is_some() || self.alertmanager_url.is_some()) && self.dfd.is_empty() {
            return Err(RunError::Usage(
                "--alerts-file and --alertmanager-url need --dfd: alerts are verdicts against the approved DFD".into(),
            ));
        }
        if self.dfd_watch_interval_secs == 0 || self.dfd_watch_interval_secs > 3600 {
            return Err(RunError::Usage("--dfd-watch-interval-secs: use 1 to 3600".into()));
        }
        if self.alerts_keep > 1000 {
            return Err(RunError::Usage("--alerts-keep: use 0 to 1000".into()));
        }
        if let Some(url) = &self.alertmanager_url {
            crate::alertmanager::alerts_uri(url).map_err(|e| RunError::Usage(e.to_string()))?;
        }
        if self.alert_window_secs == 0 || self.alert_window_secs > 86_400 {
            return Err(RunError::Usage("--alert-window-secs: use 1 to 86400".into()));
        }
        if self.max_listeners == 0 || self.max_listeners > 1 << 20 {
            return Err(RunError::Usage("--max-listeners: use 1 to 1048576".into()));
        }
        let ring_bytes = mib << 20;
        Ok(ProbeConfig {
            btf_path: self.btf.clone(),
            attach: self.attach,
            ring_bytes,
            wakeup_bytes: u64::from(ring_bytes / 16),
            wakeup_ns: 1_000_000,
            listener_entries: self.max_listeners,
        })
    }
}

/// Logs every change of the Kubernetes watch's health: synced, connected, and the last error.
/// The cache keeps answering while the API server is unreachable.
async fn report_kube_health(identity: dfdwatch_kube::KubeIdentity) {
    let mut last = (false, false);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let h = identity.health();
        let now = (h.synced, h.connected);
        if now != last {
            match now {
                (true, true) => {
                    if !last.0 {
                        // The first list is decoded and indexed: its buffers are free now.
                        crate::heap::release_freed_memory();
                    }
                    tracing::info!("kubernetes identity synced and connected")
                }
                (true, false) => {
                    tracing::warn!(last_error = ?h.last_error, "kubernetes API server unreachable; answering from the cached identities")
                }
                (false, true) => {
                    tracing::info!("kubernetes API server reachable; first list not complete")
                }
                (false, false) => {
                    tracing::warn!(last_error = ?h.last_error, "kubernetes API server unreachable; no identities yet")
                }
            }
            last = now;
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| crate::escape::escape_bytes(s.trim().as_bytes()))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the daemon until a termination signal.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let config = args.validate()?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signal)?;

    let clock = WallClock::new();
    let node = args.node_name.clone().unwrap_or_else(host_name);
    let kube_node = node.clone();
    let counters = Arc::new(Counters::default());
    let writer = match &args.events_file {
        Some(path) => EventWriter::file(path, clock, node, counters.clone())
            .map_err(|source| RunError::EventsFile { path: path.clone(), source })?,
        None => EventWriter::stdout(clock, node, counters.clone()),
    };

    let names = match &args.identity_file {
        Some(path) => {
            let names = StaticNames::load(path)?;
            tracing::info!(path = %path.display(), entries = names.len(), "identity file loaded");
            names
        }
        None => StaticNames::default(),
    };
    let cgroups = match cgroupfs::v2_mount() {
        Some(mount) => Some(CgroupPaths::new(mount, Duration::from_secs(1))),
        None => {
            tracing::warn!("no cgroup v2 mount: events carry no cgroup path, container or pod");
            None
        }
    };
    let policy = if args.dfd.is_empty() {
        None
    } else {
        let policy = Policy::load(&args.dfd)?;
        let dfd = &policy.compiled.dfd;
        tracing::info!(nodes = dfd.nodes.len(), zones = dfd.zones.len(), flows = dfd.flows.len(), sha256 = %policy.revision.sha256, "approved DFD loaded");
        Some(policy)
    };
    let metrics = Metrics::new(counters.clone()).map_err(|e| RunError::Usage(e.to_string()))?;
    if let Some(policy) = &policy {
        metrics.set_dfd(policy);
    }
    let mut alertmanager_task = None;
    let alert_writer = if args.alerts_file.is_some() || args.alertmanager_url.is_some() {
        let window = Duration::from_secs(args.alert_window_secs);
        let mut writer = match &args.alerts_file {
            Some(path) => {
                let file = crate::alerts::AlertFile {
                    path: path.clone(),
                    max_bytes: args.alerts_max_bytes,
                    keep: args.alerts_keep,
                    fsync: args.alerts_fsync,
                };
                crate::alerts::AlertWriter::open(&file, window, counters.clone())
                    .map_err(|source| RunError::EventsFile { path: path.clone(), source })?
            }
            None => crate::alerts::AlertWriter::discarding(window, counters.clone()),
        };
        if let Some(url) = &args.alertmanager_url {
            let uri = crate::alertmanager::alerts_uri(url).map_err(|e| RunError::Usage(e.to_string()))?;
            tracing::info!(%uri, "alerts are also posted to Alertmanager");
            let (queue, task) = crate::alertmanager::start(uri, counters.clone());
            writer = writer.with_alertmanager(queue);
            alertmanager_task = Some(tokio::spawn(task));
        }
        Some(writer)
    } else {
        None
    };
    let metrics = Arc::new(metrics);
    let health = Arc::new(Health::default());
    let listener = if args.no_metrics {
        None
    } else {
        let l = http::bind(args.metrics_addr)
            .await
            .map_err(|source| RunError::Listen { addr: args.metrics_addr, source })?;
        let addr = l.local_addr().map_err(|source| RunError::Listen { addr: args.metrics_addr, source })?;
        tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
        Some(l)
    };
    let mut resolver = Resolver::new(cgroups, Arc::new(names), counters.clone());
    let (kube_stop_tx, kube_stop_rx) = watch::channel(false);
    let kube_task = if args.kubeconfig.is_some() || args.kube_in_cluster {
        let mut cfg = dfdwatch_kube::KubeConfig::for_node(kube_node.clone());
        cfg.trust_domain = args.trust_domain.clone();
        cfg.source = match &args.kubeconfig {
            Some(path) => dfdwatch_kube::ClientSource::Kubeconfig { path: path.clone(), context: None },
            None => dfdwatch_kube::ClientSource::InCluster,
        };
        let (identity, service) = dfdwatch_kube::start(cfg).await.map_err(|e| RunError::Kube(e.to_string()))?;
        resolver = resolver.with_kubernetes(identity.clone());
        let mut stop = kube_stop_rx;
        let task = tokio::spawn(service.run(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        }));
        health.watch_kubernetes(identity.clone());
        tokio::spawn(report_kube_health(identity));
        Some(task)
    } else {
        None
    };

    let mut probes = Probes::load(&config)?;
    let ring = probes.take_events()?;
    let mut kernel_stats = KernelStats::new(probes.take_stats()?, probes.prog_info()?);

    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let (identified_tx, identified_rx) = mpsc::channel(EVENT_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    // With a DFD, the verdict stage sits between identity and the writer; without, identity feeds
    // the writer directly.
    let (enriched_rx, judging, reloader) = match policy {
        Some(policy) => {
            let (enriched_tx, enriched_rx) = mpsc::channel(EVENT_QUEUE);
            let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
            let stage = VerdictStage::new(policy_rx, identified_rx, enriched_tx, counters.clone());
            let thread = std::thread::Builder::new()
                .name("verdict".into())
                .spawn(move || stage.run())
                .map_err(RunError::Poll)?;
            let reloader = Reloader::new(
                args.dfd.clone(),
                Duration::from_secs(args.dfd_watch_interval_secs),
                policy_tx,
                metrics.clone(),
            )
            .map_err(RunError::Signal)?;
            (enriched_rx, Some(thread), Some(tokio::spawn(reloader.run(stop_rx.clone()))))
        }
        None => (identified_rx, None, None),
    };
    let mut writer = writer.with_metrics(metrics.clone());
    let alerts = match alert_writer {
        Some(alert_writer) => {
            let (alert_tx, alert_rx) = std::sync::mpsc::sync_channel(ALERT_QUEUE);
            writer = writer.with_alerts(alert_tx);
            Some(
                std::thread::Builder::new()
                    .name("alert-writer".into())
                    .spawn(move || alert_writer.run(alert_rx))
                    .map_err(RunError::Poll)?,
            )
        }
        None => None,
    };
    let sink = std::thread::Builder::new()
        .name("event-writer".into())
        .spawn(move || writer.run(enriched_rx))
        .map_err(RunError::Poll)?;
    let stage = IdentityStage::new(resolver, rx, identified_tx);
    let identity =
        std::thread::Builder::new().name("identity".into()).spawn(move || stage.run()).map_err(RunError::Poll)?;
    let stop_rx_http = stop_rx.clone();
    let reader = RingReader::new(ring, tx, Duration::from_millis(args.flush_interval_ms), counters.clone())
        .map_err(RunError::Poll)?;
    let reader = tokio::spawn(reader.run(stop_rx));

    let server = listener.map(|l| tokio::spawn(http::serve(l, metrics.clone(), health.clone(), stop_rx_http)));
    health.set_ready(true);
    tracing::info!(
        attach_point = probes.attach_point.name(),
        ring_buffer_bytes = config.ring_bytes,
        seeded_listeners = probes.seeded_listeners,
        pid = std::process::id(),
        "dfdwatch ready"
    );

    let mut stats_tick = tokio::time::interval(Duration::from_millis(args.stats_interval_ms));
    let signal_name = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = stats_tick.tick() => kernel_stats.report_increases(&metrics),
        }
    };
    tracing::info!(signal = signal_name, "shutting down");
    health.set_ready(false);
    drop(probes);
    tracing::info!("probes detached");
    let _ = stop_tx.send(true);
    let _ = kube_stop_tx.send(true);
    if let Some(task) = kube_task
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "kubernetes watch task failed");
    }
    if let Err(e) = reader.await {
        tracing::error!(error = %e, "reader task failed");
    }
    if identity.join().is_err() {
        tracing::error!("identity thread panicked");
    }
    if let Some(judging) = judging
        && judging.join().is_err()
    {
        tracing::error!("verdict thread panicked");
    }
    if let Some(reloader) = reloader
        && let Err(e) = reloader.await
    {
        tracing::error!(error = %e, "DFD reload task failed");
    }
    if sink.join().is_err() {
        tracing::error!("event writer thread panicked");
    }
    if let Some(alerts) = alerts
        && alerts.join().is_err()
    {
        tracing::error!("alert writer thread panicked");
    }
    // The alert writer dropped its queue handle: delivery ends once the queue is posted.
    if let Some(task) = alertmanager_task
        && tokio::time::timeout(Duration::from_secs(30), task).await.is_err()
    {
        tracing::error!(
            "Alertmanager delivery did not finish within 30 s of shutdown; undelivered alerts are in the alert file"
        );
    }
    kernel_stats.report_increases(&metrics);
    if let Some(server) = server
        && let Err(e) = server.await
    {
        tracing::error!(error = %e, "metrics server task failed");
    }
    let summary = serde_json::json!({
        "pipeline": counters.snapshot(),
        "kernel": kernel_stats.totals(),
    });
    tracing::info!("final counters: {summary}");
    Ok(())
}
