//! `dfdwatch run`: validate the options ([`config`]), open the sinks, load the DFD and identity
//! sources, load and attach the probes, start the [`pipeline`], then wait for SIGINT or SIGTERM
//! ([`wait_for_termination`]), detach, drain and report the final counters. SIGHUP and changes to
//! the DFD files reload the DFD.

pub mod config;
pub mod kube;
pub mod pipeline;

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::signal::unix::{Signal, SignalKind, signal};

pub use config::{ConfigErrors, RunArgs};
use pipeline::{Parts, Pipeline, Sinks};

use dfdwatch_dfd::sign::Trust;

use crate::{
    cgroupfs,
    identity::{Resolver, StaticNames, cgroup::CgroupPaths},
    policy::Policy,
    probes::{self, Probes},
    shutdown::Shutdown,
    telemetry::{
        counters::Counters,
        http::{self, Health},
        kernel_stats::KernelStats,
        liveness::{AliveFile, Liveness, Watchdog},
        metrics::Metrics,
        web_config::WebConfig,
    },
};

/// How often the approvals' expiry states are re-counted against the clock.
const APPROVAL_CHECK: Duration = Duration::from_secs(60);

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid options: {0}")]
    Config(#[from] ConfigErrors),
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
    #[error("cannot open {path}: {source}")]
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
    #[error(transparent)]
    WebConfig(#[from] crate::telemetry::web_config::WebConfigError),
    #[error("cannot reserve a loopback port for the heartbeat: {0}")]
    Heartbeat(#[source] std::io::Error),
    #[error("cannot watch the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
    #[error("cannot start a pipeline thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] crate::telemetry::metrics::MetricsError),
    #[error("cannot set up the kernel flow table: {0}")]
    FlowTable(#[source] aya::maps::MapError),
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| crate::escape::escape_bytes(s.trim().as_bytes()))
        .unwrap_or_else(|_| "unknown".into())
}

fn load_names(args: &RunArgs) -> Result<StaticNames, RunError> {
    let Some(path) = &args.identity_file else { return Ok(StaticNames::default()) };
    let names = StaticNames::load(path)?;
    tracing::info!(path = %path.display(), entries = names.len(), "identity file loaded");
    Ok(names)
}

/// The keys whose signatures the DFD needs (`--dfd-trust-key`), if any.
fn load_trust(args: &RunArgs) -> Result<Option<Arc<Trust>>, RunError> {
    if args.dfd_trust_keys.is_empty() {
        return Ok(None);
    }
    let trust = Trust::from_files(&args.dfd_trust_keys, args.dfd_required_signatures)
        .map_err(|e| RunError::Policy(e.into()))?;
    for k in trust.keys() {
        tracing::info!(key = %crate::escape::escape_bytes(k.name.as_bytes()), key_id = %k.id, "DFD signatures required: trusted key");
    }
    Ok(Some(Arc::new(trust)))
}

fn load_policy(args: &RunArgs, trust: Option<&Trust>) -> Result<Option<Policy>, RunError> {
    if args.dfd.is_empty() {
        return Ok(None);
    }
    let policy = Policy::load(&args.dfd, trust)?;
    let dfd = &policy.compiled.dfd;
    tracing::info!(nodes = dfd.nodes.len(), zones = dfd.zones.len(), flows = dfd.flows.len(), sha256 = %policy.revision.sha256, "approved DFD loaded");
    Ok(Some(policy))
}

async fn bind_metrics(args: &RunArgs, tls: bool) -> Result<Option<tokio::net::TcpListener>, RunError> {
    if args.no_metrics {
        return Ok(None);
    }
    let listen = |source| RunError::Listen { addr: args.metrics_addr, source };
    let l = http::bind(args.metrics_addr).await.map_err(listen)?;
    let addr = l.local_addr().map_err(listen)?;
    let scheme = if tls { "https" } else { "http" };
    tracing::info!(%addr, "metrics listening on {scheme}://{addr}/metrics");
    Ok(Some(l))
}

/// The signals the daemon answers, installed before any probe is attached.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    /// SIGHUP when no DFD is loaded (the reloader takes it otherwise): logged, so that a HUP meant
    /// for a reload does not kill a daemon that has nothing to reload.
    hangup: Option<Signal>,
}

impl Signals {
    fn install(with_reloader: bool) -> Result<Self, RunError> {
        let install = |kind| signal(kind).map_err(RunError::Signal);
        let hangup = if with_reloader { None } else { Some(install(SignalKind::hangup())?) };
        Ok(Self { interrupt: install(SignalKind::interrupt())?, terminate: install(SignalKind::terminate())?, hangup })
    }
}

/// What the watchdog looks after.
struct Watched<'a> {
    probes: &'a mut Probes,
    watchdog: Watchdog,
    health: &'a Health,
}

/// Waits for SIGINT or SIGTERM while reporting kernel loss counters, re-counting the approvals'
/// expiry states and running the watchdog; returns the signal's name.
async fn wait_for_termination(
    mut signals: Signals,
    kernel_stats: &mut KernelStats,
    metrics: &Metrics,
    stats_every: Duration,
    watched: &mut Watched<'_>,
) -> &'static str {
    let mut stats_tick = tokio::time::interval(stats_every);
    let mut approvals_tick = tokio::time::interval(APPROVAL_CHECK);
    let mut heartbeat_tick = tokio::time::interval(watched.watchdog.interval());
    loop {
        let hangup = async {
            match signals.hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signals.interrupt.recv() => break "SIGINT",
            _ = signals.terminate.recv() => break "SIGTERM",
            _ = hangup => tracing::info!("SIGHUP: no approved DFD to reload (the daemon runs without --dfd)"),
            _ = stats_tick.tick() => kernel_stats.report_increases(metrics),
            _ = approvals_tick.tick() => {
                metrics.refresh_approval_states();
                metrics.save_last_seen();
            }
            _ = heartbeat_tick.tick() => watched.watchdog.tick(watched.probes, watched.health, metrics),
        }
    }
}

/// Runs the daemon until a termination signal.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let mut probe_config = args.validate()?;
    let signals = Signals::install(!args.dfd.is_empty())?;
    // Written into every event and Alertmanager label: escaped like every outside string.
    let node = args.node_name.as_deref().map_or_else(host_name, |n| crate::escape::escape_bytes(n.as_bytes()));
    let counters = Arc::new(Counters::default());
    let mut metrics = Metrics::new(counters.clone())?;
    // Created by AliveFile::open below when missing; a first start has nothing to load anyway.
    metrics.keep_last_seen(Some(&args.state_dir));
    let metrics = Arc::new(metrics);
    let shutdown = Shutdown::new();
    let health = Arc::new(Health::default());

    let names = load_names(&args)?;
    let trust = load_trust(&args)?;
    let policy = load_policy(&args, trust.as_deref())?;
    if let Some(policy) = &policy {
        metrics.set_dfd(policy);
    }
    let sinks = Sinks::open(&args, &counters, &metrics)?;
    let web = match &args.web_config_file {
        Some(path) => Some(Arc::new(WebConfig::load(path)?)),
        None => None,
    };
    let listener = bind_metrics(&args, web.as_ref().is_some_and(|w| w.tls.is_some())).await?;
    let cgroups = cgroupfs::v2_mount().map(|mount| CgroupPaths::new(mount, Duration::from_secs(1)));
    if cgroups.is_none() {
        tracing::warn!("no cgroup v2 mount: events carry no cgroup path, container or pod");
    }
    let mut resolver = Resolver::new(cgroups, Arc::new(names), counters.clone()).with_host_name(node.clone());
    let mut identity_generation: Option<Box<dyn Fn() -> u64 + Send>> = None;
    let kube_task = match kube::start(&args, &node, &health, shutdown.signal()).await? {
        Some((identity, task)) => {
            let watched = identity.clone();
            identity_generation = Some(Box::new(move || watched.generation()));
            resolver = resolver.with_kubernetes(identity);
            Some(task)
        }
        None => None,
    };

    let liveness = Arc::new(Liveness::reserve().map_err(RunError::Heartbeat)?);
    probe_config.heartbeat_port = liveness.port();
    let alive = match AliveFile::open(&args.state_dir) {
        Ok(f) => Some(f),
        Err(e) => {
            let dir = crate::escape::escape_bytes(args.state_dir.as_os_str().as_encoded_bytes());
            tracing::warn!(%dir, error = %e, "cannot use the state directory: restarts will show no gap record");
            None
        }
    };
    let mut probes = Probes::load(&probe_config)?;
    let watching_since = std::time::SystemTime::now();
    let ring = probes.take_events()?;
    let mut kernel_stats = KernelStats::new(probes.take_stats()?, probes.prog_info()?);
    let flow_maps = probes.take_flow_maps()?;
    if let Some(execs) = probes.take_exec_maps() {
        resolver = resolver.with_exec_maps(execs);
    }
    let mut watchdog = Watchdog::new(liveness.clone(), Duration::from_millis(args.heartbeat_interval_ms), alive);
    // Once the probes are attached, what they cannot have seen: connections already established.
    let found_at_start = crate::source::snapshot::established(std::process::id());
    let found = found_at_start.len();
    let parts =
        Parts { ring, resolver, policy, trust, sinks, node, flow_maps, identity_generation, liveness, found_at_start };
    let pipeline = Pipeline::start(&args, parts, &counters, &metrics, &shutdown)?;
    watchdog.start(pipeline.outside(), watching_since, found);
    let server =
        listener.map(|l| tokio::spawn(http::serve(l, metrics.clone(), health.clone(), web, shutdown.signal())));
    health.set_ready(true);
    tracing::info!(
        attach_point = probes.attach_point.name(),
        ring_buffer_bytes = probe_config.ring_bytes,
        seeded_listeners = probes.seeded_listeners,
        pid = std::process::id(),
        "dfdwatch ready"
    );

    let stats_every = Duration::from_millis(args.stats_interval_ms);
    let mut watched = Watched { probes: &mut probes, watchdog, health: &health };
    let signal_name = wait_for_termination(signals, &mut kernel_stats, &metrics, stats_every, &mut watched).await;
    tracing::info!(signal = signal_name, "shutting down");
    metrics.save_last_seen();
    watched.watchdog.stopping();
    health.set_ready(false);
    drop(probes);
    tracing::info!("probes detached");
    shutdown.fire();
    pipeline.stop().await;
    if let Some(task) = kube_task
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "kubernetes watch task failed");
    }
    kernel_stats.report_increases(&metrics);
    if let Some(server) = server
        && let Err(e) = server.await
    {
        tracing::error!(error = %e, "metrics server task failed");
    }
    let summary = serde_json::json!({ "pipeline": counters.snapshot(), "kernel": kernel_stats.totals() });
    tracing::info!("final counters: {summary}");
    Ok(())
}
