//! The daemon's only listening socket: `/metrics` (Prometheus text format), `/healthz` (the
//! process serves) and `/readyz` (probes attached and the pipeline running). Bound to
//! `--metrics-addr`, loopback by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::shutdown::ShutdownSignal;
use crate::telemetry::metrics::Metrics;

/// Readiness shared with the server.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    kube: std::sync::OnceLock<dfdwatch_kube::KubeIdentity>,
}

impl Health {
    /// Reports the Kubernetes watch's state on /readyz too.
    pub fn watch_kubernetes(&self, kube: dfdwatch_kube::KubeIdentity) {
        let _ = self.kube.set(kube);
    }

    /// The body of /readyz after its first line: the Kubernetes watch's state, if any.
    fn kube_status(&self) -> String {
        let Some(kube) = self.kube.get() else {
            return String::new();
        };
        let h = kube.health();
        match (h.synced, h.connected) {
            (true, true) => "kubernetes: synced, connected\n".into(),
            (true, false) => format!(
                "kubernetes: API server unreachable, answering from cache (last error: {})\n",
                h.last_error.unwrap_or_default()
            ),
            (false, true) => "kubernetes: connected, first list not complete\n".into(),
            (false, false) => format!(
                "kubernetes: API server unreachable, no identities yet (last error: {})\n",
                h.last_error.unwrap_or_default()
            ),
        }
    }

    /// Marks the daemon ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Binds `addr`; returns the listener (its local address may differ for port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: ShutdownSignal,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.wait()).await {
        tracing::error!(error = %e, "metrics server failed");
    }
}

async fn metrics_page(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    // Ready means events flow. A Kubernetes outage does not make the node unready: identities
    // come from the cache meanwhile, and the body says so.
    let kube = s.health.kube_status();
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready\n{kube}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{kube}"))
    }
}
