//! Delivery of alerts to Alertmanager's v2 API (`POST /api/v2/alerts`), so that SOC routing,
//! silences and inhibition work with the tools people already run. The alert writer hands each
//! alert line over without waiting (a full queue drops the alert, counted and logged: a slow
//! Alertmanager must never hold back the kernel pipeline; the alert file keeps every line). A
//! task on the runtime posts them in batches, retrying a failed POST with backoff.
//!
//! Each alert's labels come from closed sets or from the DFD (verdict, severity, zones, nodes,
//! port, flow key, reporting node); the whole event goes in the `event` annotation. `endsAt` is
//! the end of the de-duplication window, so an alert resolves by itself once its flow stops, and
//! each repeat summary extends it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::alerts::AlertRecord;
use crate::telemetry::counters::Counters;

/// Alerts waiting for delivery.
const QUEUE: usize = 4096;
/// Alerts per POST, at most.
const BATCH: usize = 256;
/// POST attempts per batch.
const ATTEMPTS: u32 = 4;
/// Time allowed for one POST.
const TIMEOUT: Duration = Duration::from_secs(5);
/// `alertname` of every alert.
pub const ALERT_NAME: &str = "DfdwatchUnauthorizedFlow";

/// Why the Alertmanager URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("--alertmanager-url {0}: not a URL ({1})")]
    Invalid(String, String),
    #[error("--alertmanager-url {0}: only http:// is supported (terminate TLS in a sidecar or proxy)")]
    Scheme(String),
}

/// The address alerts are posted to: `<base>/api/v2/alerts`.
pub fn alerts_uri(base: &str) -> Result<hyper::Uri, UrlError> {
    let joined = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    let uri: hyper::Uri =
        joined.parse().map_err(|e: hyper::http::uri::InvalidUri| UrlError::Invalid(base.into(), e.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(UrlError::Scheme(base.into()));
    }
    Ok(uri)
}

/// The alert writer's side: hands alerts over without blocking.
#[derive(Clone)]
pub struct AlertmanagerQueue {
    tx: mpsc::Sender<Value>,
    counters: Arc<Counters>,
}

impl AlertmanagerQueue {
    /// Queues one alert for Alertmanager.
    pub fn offer(&self, alert: &AlertRecord, window: Duration) {
        if self.tx.try_send(to_alertmanager(alert, window)).is_err() {
            let n = self.counters.record_alertmanager_dropped(1);
            if n.is_power_of_two() {
                tracing::error!(
                    total = n,
                    "Alertmanager queue full or closed: alert dropped (it is still in the alert file)"
                );
            }
        }
    }
}

/// Builds one Alertmanager alert from an alert record: labels from its typed fields (closed sets
/// and DFD ids), the whole event as an annotation.
pub fn to_alertmanager(alert: &AlertRecord, window: Duration) -> Value {
    let event = &alert.event;
    let verdict = &alert.verdict;
    let zone = |a: &super::record::Address| a.dfd.as_ref().and_then(|p| p.zone.as_deref().map(str::to_owned));
    let node = |a: &super::record::Address| a.dfd.as_ref().and_then(|p| p.node.as_deref().map(str::to_owned));
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("alertname", Some(ALERT_NAME.to_owned())),
        ("verdict", Some(verdict.kind.as_str().to_owned())),
        ("severity", Some(verdict.severity.as_str().to_owned())),
        ("src_zone", zone(&event.src)),
        ("dst_zone", zone(&event.dst)),
        ("src_node", node(&event.src)),
        ("dst_node", node(&event.dst)),
        // A scan has many ports: its `scan` annotation lists them.
        ("dst_port", alert.scan.is_none().then(|| event.dst.port.map(|p| p.to_string())).flatten()),
        ("flow_key", Some(alert.flow_key.clone())),
        ("node", Some(event.node.clone())),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            labels.insert(k.into(), Value::String(v));
        }
    }
    let ends = humantime::format_rfc3339_seconds(SystemTime::now() + window).to_string();
    let occurrence = match alert.occurrence {
        super::alerts::Occurrence::First => "first",
        super::alerts::Occurrence::Repeats => "repeats",
        super::alerts::Occurrence::Scan => "scan",
    };
    let summary = match &alert.scan {
        Some(scan) => format!(
            "{} scan from {}: {} targets, {} ports, {} peers",
            verdict.kind.as_str(),
            event.src.addr,
            scan.targets.len(),
            scan.ports.len(),
            scan.peers.len()
        ),
        None => format!(
            "{} {}:{} -> {}:{} ({occurrence})",
            verdict.kind.as_str(),
            event.src.addr,
            event.src.port.unwrap_or_default(),
            event.dst.addr,
            event.dst.port.unwrap_or_default(),
        ),
    };
    let nearest = if verdict.nearest_flows.is_empty() { "none".into() } else { verdict.nearest_flows.join(", ") };
    let direction = verdict
        .tier_direction
        .and_then(|d| serde_json::to_value(d).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "none".into());
    let description = format!(
        "{} (tier direction: {direction}; attempt: {}); nearest approved flows: {nearest}",
        verdict.kind.as_str(),
        verdict.attempt,
    );
    let mut annotations = json!({
        "summary": summary,
        "description": description,
        "count": alert.count.to_string(),
        "dfd_sha256": alert.dfd.sha256,
        "event": serde_json::to_string(&**event).unwrap_or_default(),
    });
    if let Some(scan) = &alert.scan {
        annotations["scan"] = Value::String(serde_json::to_string(scan).unwrap_or_default());
    }
    json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": alert.first_seen,
        "endsAt": ends,
    })
}

/// Starts delivery to `uri`; returns the writer's queue and the task to run on the runtime. The
/// task ends once every queue handle is dropped and what was queued is posted (or dropped).
pub fn start(uri: hyper::Uri, counters: Arc<Counters>) -> (AlertmanagerQueue, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let queue = AlertmanagerQueue { tx, counters: counters.clone() };
    (queue, deliver(uri, rx, counters))
}

async fn deliver(uri: hyper::Uri, mut rx: mpsc::Receiver<Value>, counters: Arc<Counters>) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len() as u64;
        let body = Bytes::from(Value::Array(std::mem::take(&mut batch)).to_string());
        let mut delay = Duration::from_millis(250);
        let mut delivered = false;
        for attempt in 1..=ATTEMPTS {
            match post(&client, &uri, body.clone()).await {
                Ok(()) => {
                    counters.record_alertmanager_sent(n);
                    delivered = true;
                    break;
                }
                Err(error) => {
                    let total = counters.record_alertmanager_post_error();
                    if total.is_power_of_two() || attempt == ATTEMPTS {
                        tracing::warn!(%error, attempt, total_errors = total, "POST to Alertmanager failed");
                    }
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        if !delivered {
            let total = counters.record_alertmanager_dropped(n);
            tracing::error!(
                alerts = n,
                total_dropped = total,
                "alerts not delivered to Alertmanager after {ATTEMPTS} attempts (they are still in the alert file)"
            );
        }
    }
}

async fn post(client: &Client<HttpConnector, Full<Bytes>>, uri: &hyper::Uri, body: Bytes) -> Result<(), String> {
    let request = hyper::Request::post(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer in {} s", TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = crate::escape::escape_bytes(&text[..text.len().min(200)]);
    Err(format!("HTTP {status}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert_eq!(alerts_uri("http://127.0.0.1:9093/").unwrap().to_string(), "http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(alerts_uri("http://am.monitoring:9093/prefix").unwrap().path(), "/prefix/api/v2/alerts");
        assert!(matches!(alerts_uri("https://am:9093"), Err(UrlError::Scheme(_))));
        assert!(alerts_uri("am:9093").is_err());
        assert!(alerts_uri("http://a b").is_err());
    }

    #[test]
    fn labels_come_from_the_verdict_and_the_dfd_and_the_event_is_an_annotation() {
        let c = crate::sinks::fixture::candidate(5432, 0);
        let alert = AlertRecord {
            schema: super::super::alerts::SCHEMA,
            time: c.event.time.clone(),
            flow_key: c.key.clone(),
            occurrence: super::super::alerts::Occurrence::First,
            count: 1,
            first_seen: "2026-11-23T10:00:00Z".into(),
            last_seen: "2026-11-23T10:00:00Z".into(),
            window_seconds: 60,
            dfd: c.dfd.clone(),
            verdict: c.verdict.clone(),
            event: c.event.clone(),
            scan: None,
        };
        let a = to_alertmanager(&alert, Duration::from_secs(60));
        assert_eq!(a["labels"]["alertname"], ALERT_NAME);
        assert_eq!(a["labels"]["verdict"], "lateral_movement");
        assert_eq!(a["labels"]["severity"], "high");
        assert_eq!(a["labels"]["src_node"], "api");
        assert_eq!(a["labels"]["dst_zone"], "data");
        assert_eq!(a["labels"]["dst_port"], "5432");
        assert_eq!(a["labels"]["node"], "n1");
        assert_eq!(a["labels"]["flow_key"], c.key.as_str());
        assert_eq!(a["startsAt"], "2026-11-23T10:00:00Z");
        assert_eq!(a["annotations"]["dfd_sha256"], "ff");
        assert!(a["annotations"]["event"].as_str().unwrap().contains("10.0.0.2"));
        assert!(a["labels"].get("pid").is_none());
        assert!(a["annotations"]["description"].as_str().unwrap().contains("api-to-db"));
    }
}
