//! The daemon's only listening socket: `/metrics` (Prometheus text format), `/healthz` (the
//! process serves) and `/readyz` (probes attached, the pipeline running, and the heartbeat
//! coming through the probes). Bound to `--metrics-addr`, loopback by default; TLS and basic auth
//! as the `--web-config-file` says ([`super::web_config`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::shutdown::ShutdownSignal;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::web_config::WebConfig;

/// Readiness shared with the server.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    blind: AtomicBool,
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

    /// Marks the daemon blind (no heartbeat through the probes) or not.
    pub fn set_blind(&self, blind: bool) {
        self.blind.store(blind, Ordering::Relaxed);
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
    web: Option<Arc<WebConfig>>,
}

/// Connections served at once; more are closed at once and counted. Prometheus needs one.
pub const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this time of connecting or of its last answer.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, busy or idle: an idle client cannot hold a slot.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Binds `addr`; returns the listener (its local address may differ for port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until `stop` fires, at most [`MAX_CONNECTIONS`] connections at once, each bounded in
/// time: a client that connects and says nothing, or keeps a connection open, cannot use up the
/// daemon's file descriptors (which the probes and DFD reloads need too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    web: Option<Arc<WebConfig>>,
    stop: ShutdownSignal,
) {
    let tls = web.as_ref().and_then(|w| w.tls.clone()).map(tokio_rustls::TlsAcceptor::from);
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics: metrics.clone(), health, web });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let stop = stop.wait();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let n = metrics.record_http_refused();
            if n.is_power_of_two() {
                tracing::warn!(
                    total = n,
                    "metrics endpoint: {MAX_CONNECTIONS} connections open, a new one closed unserved"
                );
            }
            continue;
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let served = async move {
                match tls {
                    // The handshake is bounded like the request headers.
                    Some(tls) => {
                        if let Ok(Ok(stream)) = tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                            serve_connection(stream, app).await;
                        }
                    }
                    None => serve_connection(stream, app).await,
                }
            };
            // Errors here are the client's (a reset, a failed handshake, a timeout).
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
            drop(slot);
        });
    }
}

/// One HTTP/1.1 connection, over TCP or TLS.
async fn serve_connection<IO>(io: IO, app: Router)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn metrics_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(web) = s.web.filter(|w| w.needs_auth()) {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // bcrypt is slow by design: off the runtime's threads.
        let ok = tokio::task::spawn_blocking(move || web.authorized(given.as_deref())).await.unwrap_or(false);
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"dfdwatch\"")],
                "unauthorized\n",
            )
                .into_response();
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    // Ready means events flow. A Kubernetes outage does not make the node unready: identities
    // come from the cache meanwhile, and the body says so.
    let kube = s.health.kube_status();
    if s.health.blind.load(Ordering::Relaxed) {
        // Attached but seeing nothing is worse than not ready: say which.
        (StatusCode::SERVICE_UNAVAILABLE, format!("blind: no heartbeat came through the probes\n{kube}"))
    } else if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready\n{kube}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{kube}"))
    }
}
