//! The Kubernetes identity watch inside the daemon: started on the main runtime (apart from the
//! ring reader, which has a thread and runtime of its own, so a large relist cannot stall it),
//! stopped by the shutdown, and its health changes logged.

use std::time::Duration;

use super::{RunArgs, RunError};
use crate::shutdown::ShutdownSignal;
use crate::telemetry::http::Health;

/// Starts the watch when the options ask for one; returns its identity handle and its task.
pub async fn start(
    args: &RunArgs,
    node: &str,
    health: &Health,
    stop: ShutdownSignal,
) -> Result<Option<(dfdwatch_kube::KubeIdentity, tokio::task::JoinHandle<()>)>, RunError> {
    if args.kubeconfig.is_none() && !args.kube_in_cluster {
        return Ok(None);
    }
    let mut cfg = dfdwatch_kube::KubeConfig::for_node(node.to_owned());
    cfg.trust_domain = args.trust_domain.clone();
    cfg.source = match &args.kubeconfig {
        Some(path) => dfdwatch_kube::ClientSource::Kubeconfig { path: path.clone(), context: None },
        None => dfdwatch_kube::ClientSource::InCluster,
    };
    let (identity, service) = dfdwatch_kube::start(cfg).await.map_err(|e| RunError::Kube(e.to_string()))?;
    let task = tokio::spawn(service.run(stop.wait()));
    health.watch_kubernetes(identity.clone());
    tokio::spawn(report_kube_health(identity.clone()));
    Ok(Some((identity, task)))
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
