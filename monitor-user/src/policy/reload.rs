//! Reloading the approved DFD, on SIGHUP and when the content of its files changes (polled every
//! `--dfd-watch-interval-secs`; polling content rather than watching inodes also catches a
//! Kubernetes ConfigMap's symlink swap). Each poll reads the files once and hashes those bytes; a
//! change is taken once it has been stable for one poll, so an editor's half-written save is not
//! loaded, and the DFD is then parsed from the very bytes that were hashed. A DFD that fails
//! admission never replaces the running one: the refusal is logged with its report and reported
//! to the [`ReloadObserver`] (the daemon's metrics count it); the running policy stays, and the
//! same refused content is not retried every poll.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dfdwatch_dfd::sign::{Bundle, Trust, read_bundle};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use super::Policy;
use crate::shutdown::ShutdownSignal;

/// Who hears of each reload's outcome (the daemon's metrics), so that this module need not know
/// them.
pub trait ReloadObserver: Send + Sync {
    /// A new revision was applied.
    fn applied(&self, policy: &Policy);
    /// A reload was refused; the running revision stays.
    fn refused(&self);
}

/// Several observers, told in order (the kernel's flow verdicts first, then the metrics, so that
/// a reload is reported applied only once no verdict of the old revision is left).
impl ReloadObserver for Vec<Arc<dyn ReloadObserver>> {
    fn applied(&self, policy: &Policy) {
        for o in self {
            o.applied(policy);
        }
    }

    fn refused(&self) {
        for o in self {
            o.refused();
        }
    }
}

/// What started a reload, for the log.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Sighup,
    FileChange,
}

/// Watches the DFD files and SIGHUP, and publishes each accepted revision.
pub struct Reloader {
    paths: Vec<PathBuf>,
    trust: Option<Arc<Trust>>,
    interval: Duration,
    policy: watch::Sender<Arc<Policy>>,
    observer: Arc<dyn ReloadObserver>,
    hangup: Signal,
}

impl Reloader {
    /// A reloader publishing to `policy`; installs the SIGHUP handler now, so a failure shows at
    /// start-up.
    pub fn new(
        paths: Vec<PathBuf>,
        trust: Option<Arc<Trust>>,
        interval: Duration,
        policy: watch::Sender<Arc<Policy>>,
        observer: Arc<dyn ReloadObserver>,
    ) -> std::io::Result<Self> {
        let hangup = signal(SignalKind::hangup())?;
        Ok(Self { paths, trust, interval, policy, observer, hangup })
    }

    /// Runs until `stop` fires.
    pub async fn run(mut self, stop: ShutdownSignal) {
        let stop = stop.wait();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Change detection is over everything read (a new signature is a change too); the
        // revision's own hash is over the DFD files only.
        let mut running = self.policy.borrow().read_hash.clone();
        let mut last_seen = running.clone();
        let mut refused: Option<String> = None;
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the approved DFD");
                    if let Some(bundle) = self.read().await {
                        let hash = bundle.hash();
                        refused = self.reload(Trigger::Sighup, bundle).await;
                        if refused.is_none() {
                            running = hash;
                        }
                    }
                }
                _ = tick.tick() => {
                    let Some(bundle) = self.read().await else { continue };
                    let hash = bundle.hash();
                    let stable = hash == last_seen;
                    last_seen = hash.clone();
                    if stable && hash != running && refused.as_deref() != Some(hash.as_str()) {
                        refused = self.reload(Trigger::FileChange, bundle).await;
                        if refused.is_none() {
                            running = hash;
                        }
                    }
                }
            }
        }
    }

    /// Reads the DFD files once, off the runtime; `None` (logged) when they cannot be read.
    async fn read(&self) -> Option<Bundle> {
        let paths = self.paths.clone();
        match tokio::task::spawn_blocking(move || read_bundle(&paths)).await {
            Ok(Ok(sources)) => Some(sources),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the approved DFD's files; the running DFD stays");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "the DFD read task failed; the running DFD stays");
                None
            }
        }
    }

    /// Admits `sources` and, if they pass, publishes them. Returns the content hash of a refused
    /// DFD (so the same content is not retried and logged every poll), or `None`.
    async fn reload(&mut self, trigger: Trigger, bundle: Bundle) -> Option<String> {
        let hash = bundle.hash();
        let trust = self.trust.clone();
        let result = match tokio::task::spawn_blocking(move || Policy::admit(&bundle, trust.as_deref())).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the DFD reload task failed; the running DFD stays");
                self.observer.refused();
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
                let policy = Arc::new(policy);
                self.policy.send_replace(policy.clone());
                self.observer.applied(&policy);
                None
            }
            Err(e) => {
                // The report quotes the DFD files: escaped, so it stays one log record.
                let report = crate::escape::escape_bytes(e.to_string().as_bytes());
                tracing::error!(?trigger, sha256 = %hash, "approved DFD refused, the running one stays: {report}");
                self.observer.refused();
                Some(hash)
            }
        }
    }
}
