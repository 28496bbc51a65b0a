//! Builds the pipeline, each stage on its own thread joined by bounded queues:
//! ring reader (own thread and runtime) -> identity -> verdict (with a DFD) -> flow stage (with
//! the kernel counters' drain beside it) -> fan-out -> events writer, alert writer (->
//! Alertmanager, on the main runtime) and flow store writer. Stopping fires the shutdown for the reader and the
//! drain, then joins every stage in order as its input closes, so nothing queued is lost.

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::sync::{mpsc, watch};

use super::{RunArgs, RunError};
use crate::clock::WallClock;
use crate::flows::drain::CountsDrain;
use crate::flows::kernel::KernelFlows;
use crate::flows::table::FlowStage;
use crate::flows::{FlowInput, FlowOutput};
use crate::identity::{IdentityStage, Resolver};
use crate::policy::Policy;
use crate::policy::changes::ChangeReporter;
use crate::policy::reload::ReloadObserver;
use crate::policy::reload::Reloader;
use crate::policy::stage::VerdictStage;
use crate::probes::FlowMaps;
use crate::shutdown::{Shutdown, ShutdownSignal};
use crate::sinks::alertmanager;
use crate::sinks::alerts::{AlertFile, AlertWriter};
use crate::sinks::events::EventWriter;
use crate::sinks::fanout::FanOut;
use crate::source::reader::RingReader;
use crate::store::clickhouse::{self, ClickHouse, ShipQueue};
use crate::store::writer::StoreWriter;
use crate::telemetry::counters::Counters;
use crate::telemetry::liveness::Liveness;
use crate::telemetry::metrics::Metrics;

/// Connections waiting in each queue between stages.
const EVENT_QUEUE: usize = 8192;
/// Event records waiting for the events writer. Smaller than the stage queues: each holds a whole
/// record with its strings (about 2 KB), and the stages before it absorb a burst more cheaply.
const RECORD_QUEUE: usize = 1024;
/// Alert candidates waiting for the alert writer.
const ALERT_QUEUE: usize = 1024;
/// Records waiting for the flow store's writer (which batches them itself).
const STORE_QUEUE: usize = 4096;

/// The sinks, opened before any probe is loaded so that a bad path fails first.
pub struct Sinks {
    events: EventWriter,
    alerts: Option<AlertWriter>,
    alertmanager: Option<tokio::task::JoinHandle<()>>,
    /// The ClickHouse shipper's queue and task.
    cluster: Option<(ShipQueue, tokio::task::JoinHandle<()>)>,
}

impl Sinks {
    /// Opens the events file, the alert file and the Alertmanager queue the options name.
    pub fn open(args: &RunArgs, counters: &Arc<Counters>, metrics: &Arc<Metrics>) -> Result<Self, RunError> {
        let events = match &args.events_file {
            Some(path) => EventWriter::file(path, counters.clone(), metrics.clone())
                .map_err(|source| RunError::EventsFile { path: path.clone(), source })?,
            None => EventWriter::stdout(counters.clone(), metrics.clone()),
        }
        .with_format(args.events_format);
        let cluster = match ClickHouse::from_args(&args.clickhouse).map_err(|e| RunError::Usage(e.to_string()))? {
            Some(server) => {
                tracing::info!(url = %server.url(), "stored records are also shipped to ClickHouse");
                let (queue, task) = clickhouse::start(server, metrics.ship_counters());
                Some((queue, tokio::spawn(task)))
            }
            None => None,
        };
        if args.alerts_file.is_none() && args.alertmanager_url.is_none() {
            return Ok(Self { events, alerts: None, alertmanager: None, cluster });
        }
        let window = Duration::from_secs(args.alert_window_secs);
        let mut alerts = match &args.alerts_file {
            Some(path) => {
                let file = AlertFile {
                    path: path.clone(),
                    max_bytes: args.alerts_max_bytes,
                    keep: args.alerts_keep,
                    fsync: args.alerts_fsync,
                };
                AlertWriter::open(&file, window, args.alert_max_windows, counters.clone())
                    .map_err(|source| RunError::EventsFile { path: path.clone(), source })?
            }
            None => AlertWriter::new(
                Box::new(crate::sinks::line_file::Stream(std::io::sink())),
                window,
                args.alert_max_windows,
                counters.clone(),
            ),
        };
        alerts = alerts.with_format(args.alerts_format);
        let mut task = None;
        if let Some(url) = &args.alertmanager_url {
            let uri = alertmanager::alerts_uri(url).map_err(|e| RunError::Usage(e.to_string()))?;
            tracing::info!(%uri, "alerts are also posted to Alertmanager");
            let (queue, delivery) = alertmanager::start(uri, counters.clone());
            alerts = alerts.with_alertmanager(queue);
            task = Some(tokio::spawn(delivery));
        }
        Ok(Self { events, alerts: Some(alerts), alertmanager: task, cluster })
    }
}

/// What the pipeline is built from.
pub struct Parts {
    /// The kernel's ring buffer.
    pub ring: RingBuf<MapData>,
    /// The identity stage's resolver.
    pub resolver: Resolver,
    /// The approved DFD, if one is loaded.
    pub policy: Option<Policy>,
    /// The keys a reloaded DFD must be signed with, if signatures are required.
    pub trust: Option<Arc<dfdwatch_dfd::sign::Trust>>,
    /// The opened sinks.
    pub sinks: Sinks,
    /// Node name written in events.
    pub node: String,
    /// The kernel flow table's maps.
    pub flow_maps: FlowMaps,
    /// The Kubernetes identity cache's change count, when the daemon watches a cluster.
    pub identity_generation: Option<Box<dyn Fn() -> u64 + Send>>,
    /// The heartbeat, taken out of the stream by the reader.
    pub liveness: Arc<Liveness>,
    /// Connections established before the probes were attached, sent before the ring's.
    pub found_at_start: Vec<crate::source::decode::Connection>,
}

/// The running pipeline.
pub struct Pipeline {
    reader: JoinHandle<()>,
    stages: Vec<(&'static str, JoinHandle<()>)>,
    reloader: Option<tokio::task::JoinHandle<()>>,
    alertmanager: Option<tokio::task::JoinHandle<()>>,
    /// The ClickHouse shipper.
    cluster: Option<tokio::task::JoinHandle<()>>,
    /// The fan-out's input, for records from outside the stages (gap records).
    outside: mpsc::WeakSender<FlowOutput>,
}

fn spawn(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(&'static str, JoinHandle<()>), RunError> {
    let handle = std::thread::Builder::new().name(name.into()).spawn(f).map_err(RunError::Thread)?;
    Ok((name, handle))
}

impl Pipeline {
    /// Starts every stage; the reader stops when `shutdown` fires.
    pub fn start(
        args: &RunArgs,
        parts: Parts,
        counters: &Arc<Counters>,
        metrics: &Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> Result<Self, RunError> {
        let (conn_tx, conn_rx) = mpsc::channel(EVENT_QUEUE);
        let (flow_tx, flow_rx) = mpsc::channel::<FlowInput>(EVENT_QUEUE);
        let (output_tx, output_rx) = mpsc::channel::<FlowOutput>(EVENT_QUEUE);
        let outside = output_tx.downgrade();
        let (events_tx, events_rx) = sync_channel(RECORD_QUEUE);
        let maps = parts.flow_maps;
        let kernel = Arc::new(
            KernelFlows::start(
                maps.verdicts,
                maps.config,
                crate::flows::key_mask(parts.policy.as_ref()),
                args.flow_report_limit,
                parts.policy.as_ref().map(|p| p.revision.clone()),
                counters.clone(),
            )
            .map_err(RunError::FlowTable)?,
        );
        let mut stages = Vec::new();
        let mut reloader = None;
        match parts.policy {
            Some(policy) => {
                let changes = Arc::new(ChangeReporter::new(&policy, outside.clone()));
                let (identified_tx, identified_rx) = mpsc::channel(EVENT_QUEUE);
                stages.push(spawn("identity", {
                    let stage = IdentityStage::new(parts.resolver, conn_rx, identified_tx);
                    move || stage.run()
                })?);
                let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
                let stage = VerdictStage::new(policy_rx, identified_rx, flow_tx.clone(), counters.clone());
                stages.push(spawn("verdict", move || stage.run())?);
                let interval = Duration::from_secs(args.dfd_watch_interval_secs);
                // The kernel's verdicts are withdrawn before the metrics report the reload.
                let observers: Vec<Arc<dyn ReloadObserver>> = vec![kernel.clone(), metrics.clone(), changes];
                let r = Reloader::new(args.dfd.clone(), parts.trust, interval, policy_tx, Arc::new(observers))
                    .map_err(RunError::Signal)?;
                reloader = Some(tokio::spawn(r.run(shutdown.signal())));
            }
            None => {
                let stage = IdentityStage::new(parts.resolver, conn_rx, flow_tx.clone());
                stages.push(spawn("identity", move || stage.run())?);
            }
        }
        let drain =
            CountsDrain::new(maps.counts, kernel.clone(), flow_tx, Duration::from_millis(args.flow_interval_ms));
        let stop = shutdown.signal();
        stages.push(spawn("flow-drain", move || drain.run(stop))?);
        let mut flow_stage =
            FlowStage::new(Some(kernel), args.flow_table_entries as usize, flow_rx, output_tx, counters.clone());
        if let Some(generation) = parts.identity_generation {
            flow_stage = flow_stage.with_identity_generation(generation);
        }
        stages.push(spawn("flows", move || flow_stage.run())?);
        // The writers are joined after the fan-out: their queues close when it ends.
        let mut writers = Vec::new();
        let alerts = match parts.sinks.alerts {
            Some(writer) => {
                let (tx, rx) = sync_channel(ALERT_QUEUE);
                writers.push(spawn("alert-writer", move || writer.run(rx))?);
                Some(tx)
            }
            None => None,
        };
        let events = parts.sinks.events;
        writers.push(spawn("event-writer", move || events.run(events_rx))?);
        let mut fanout =
            FanOut::new(WallClock::new(), parts.node, metrics.clone(), counters.clone(), events_tx, alerts);
        let (cluster_queue, cluster) = parts.sinks.cluster.unzip();
        if args.store_options().is_some() || cluster_queue.is_some() {
            let (tx, rx) = sync_channel(STORE_QUEUE);
            let mut writer = StoreWriter::new(args.store_options(), metrics.store_counters());
            if let Some(queue) = cluster_queue {
                writer = writer.with_cluster(queue);
            }
            writers.push(spawn("store-writer", move || writer.run(rx))?);
            fanout = fanout.with_store(tx);
        }
        stages.push(spawn("fan-out", move || fanout.run(output_rx))?);
        stages.extend(writers);
        let flush = Duration::from_millis(args.flush_interval_ms);
        let reader = spawn_reader(
            parts.ring,
            conn_tx,
            flush,
            counters.clone(),
            parts.liveness,
            parts.found_at_start,
            shutdown.signal(),
        )?;
        Ok(Self { reader, stages, reloader, alertmanager: parts.sinks.alertmanager, cluster, outside })
    }

    /// A handle for records from outside the stages; it does not keep the pipeline running.
    pub fn outside(&self) -> mpsc::WeakSender<FlowOutput> {
        self.outside.clone()
    }

    /// Waits for every stage to drain and end (after the shutdown fired and the probes were
    /// detached).
    pub async fn stop(self) {
        join("ring-reader", self.reader).await;
        for (name, handle) in self.stages {
            join(name, handle).await;
        }
        if let Some(task) = self.reloader
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "DFD reload task failed");
        }
        // The alert writer dropped its queue handle: delivery ends once the queue is posted.
        if let Some(task) = self.alertmanager
            && tokio::time::timeout(Duration::from_secs(30), task).await.is_err()
        {
            tracing::error!(
                "Alertmanager delivery did not finish within 30 s of shutdown; undelivered alerts are in the alert file"
            );
        }
        // The store writer dropped the shipper's queue: it ends once the backlog is sent (or,
        // ClickHouse being away, dropped and counted after a few tries).
        if let Some(task) = self.cluster
            && tokio::time::timeout(Duration::from_secs(60), task).await.is_err()
        {
            tracing::error!("shipping to ClickHouse did not finish within 60 s of shutdown");
        }
    }
}

/// Waits for a stage's thread off the runtime, so that the tasks still on it (Alertmanager
/// delivery of the alert writer's last summaries) keep running meanwhile.
async fn join(name: &'static str, handle: JoinHandle<()>) {
    match tokio::task::spawn_blocking(move || handle.join()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::error!(stage = name, "pipeline stage panicked"),
        Err(e) => tracing::error!(stage = name, error = %e, "cannot wait for a pipeline stage"),
    }
}

/// The ring reader on a thread with its own single-threaded runtime: nothing else runs there, so
/// neither a Kubernetes relist nor an HTTP scrape can delay a read.
fn spawn_reader(
    ring: RingBuf<MapData>,
    out: mpsc::Sender<crate::source::decode::Connection>,
    flush: Duration,
    counters: Arc<Counters>,
    liveness: Arc<Liveness>,
    found_at_start: Vec<crate::source::decode::Connection>,
    stop: ShutdownSignal,
) -> Result<JoinHandle<()>, RunError> {
    let (started_tx, started_rx) = sync_channel::<std::io::Result<()>>(1);
    let (_, handle) = spawn("ring-reader", move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = started_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            match RingReader::new(ring, out, flush, counters, liveness) {
                Ok(reader) => {
                    let _ = started_tx.send(Ok(()));
                    reader.run(found_at_start, stop).await;
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
        });
    })?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(RunError::Poll(e)),
        Err(_) => Err(RunError::Poll(std::io::Error::other("the ring reader thread ended before it started"))),
    }
}
