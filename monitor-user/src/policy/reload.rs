//! Reloading the approved DFD, on SIGHUP and when the content of its files changes (polled every
//! `--dfd-watch-interval-secs`; polling content rather than watching inodes also catches a
//! Kubernetes ConfigMap's symlink swap). A change is taken once it has been stable for one poll,
//! so an editor's half-written save is not loaded. A DFD that fails `check`, or changes while it
//! is read, never replaces the running one: the refusal is logged with its report and counted
//! in `dfdwatch_dfd_reloads_total{result="refused"}`; the running policy stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use super::{Policy, content_hash};
use crate::metrics::Metrics;

/// What started a reload, for the log.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Sighup,
    FileChange,
}

/// Watches the DFD files and SIGHUP, and publishes each accepted revision.
pub struct Reloader {
    paths: Vec<PathBuf>,
    interval: Duration,
    policy: watch::Sender<Arc<Policy>>,
    metrics: Arc<Metrics>,
    hangup: Signal,
}

impl Reloader {
    /// A reloader publishing to `policy`; installs the SIGHUP handler now, so a failure shows at
    /// start-up.
    pub fn new(
        paths: Vec<PathBuf>,
        interval: Duration,
        policy: watch::Sender<Arc<Policy>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let hangup = signal(SignalKind::hangup())?;
        Ok(Self { paths, interval, policy, metrics, hangup })
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = self.policy.borrow().revision.sha256.clone();
        let mut refused: Option<String> = None;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the approved DFD");
                    refused = self.reload(Trigger::Sighup).await;
                }
                _ = tick.tick() => {
                    let paths = self.paths.clone();
                    let Ok(hash) = tokio::task::spawn_blocking(move || content_hash(&paths)).await else { continue };
                    let stable = hash == last_seen;
                    last_seen = hash.clone();
                    let running = self.policy.borrow().revision.sha256.clone();
                    if stable && hash != running && refused.as_deref() != Some(hash.as_str()) {
                        refused = self.reload(Trigger::FileChange).await;
                    }
                }
            }
        }
    }

    /// Loads the files and, if they pass, publishes them. Returns the content hash of a refused
    /// DFD (so the same content is not retried and logged every poll), or `None`.
    async fn reload(&mut self, trigger: Trigger) -> Option<String> {
        let paths = self.paths.clone();
        let loaded = tokio::task::spawn_blocking(move || Policy::load_hashed(&paths)).await;
        let (hash, result) = match loaded {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the DFD reload task failed; the running DFD stays");
                self.metrics.record_reload(false);
                return None;
            }
        };
        match result {
            Ok(policy) => {
                let old = self.policy.borrow().revision.sha256.clone();
                tracing::info!(
                    ?trigger,
                    name = %policy.revision.name,
                    old_sha256 = %old,
                    new_sha256 = %policy.revision.sha256,
                    nodes = policy.compiled.dfd.nodes.len(),
                    flows = policy.compiled.dfd.flows.len(),
                    "approved DFD reloaded"
                );
                self.metrics.set_dfd(&policy);
                self.metrics.record_reload(true);
                self.policy.send_replace(Arc::new(policy));
                None
            }
            Err(e) => {
                tracing::error!(?trigger, sha256 = %hash, "approved DFD refused, the running one stays: {e}");
                self.metrics.record_reload(false);
                Some(hash)
            }
        }
    }
}
