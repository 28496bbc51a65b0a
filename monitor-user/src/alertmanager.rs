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

use crate::counters::Counters;

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
    /// Queues one alert line (schema `dfdwatch.alert.v1`) for Alertmanager.
    pub fn offer(&self, alert_line: &Value, window: Duration) {
        if self.tx.try_send(to_alertmanager(alert_line, window)).is_err() {
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

/// Builds one Alertmanager alert from an alert line.
pub fn to_alertmanager(line: &Value, window: Duration) -> Value {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let event = &line["event"];
    let verdict = &line["verdict"];
    let end = |side: &str, field: &str| text(&event[side]["dfd"][field]);
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("alertname", ALERT_NAME.to_owned()),
        ("verdict", text(&verdict["kind"])),
        ("severity", text(&verdict["severity"])),
        ("src_zone", end("src", "zone")),
        ("dst_zone", end("dst", "zone")),
        ("src_node", end("src", "node")),
        ("dst_node", end("dst", "node")),
        ("dst_port", text(&event["dst"]["port"])),
        ("flow_key", text(&line["flow_key"])),
        ("node", text(&event["node"])),
    ] {
        if !v.is_empty() {
            labels.insert(k.into(), Value::String(v));
        }
    }
    let ends = humantime::format_rfc3339_seconds(SystemTime::now() + window).to_string();
    let summary = format!(
        "{} {}:{} -> {}:{} ({})",
        text(&verdict["kind"]),
        text(&event["src"]["addr"]),
        text(&event["src"]["port"]),
        text(&event["dst"]["addr"]),
        text(&event["dst"]["port"]),
        text(&line["occurrence"]),
    );
    let nearest = verdict["nearest_flows"]
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let description = format!(
        "{} (tier direction: {}; attempt: {}); nearest approved flows: {}",
        text(&verdict["kind"]),
        if verdict["tier_direction"].is_null() { "none".into() } else { text(&verdict["tier_direction"]) },
        text(&verdict["attempt"]),
        if nearest.is_empty() { "none".into() } else { nearest },
    );
    json!({
        "labels": labels,
        "annotations": {
            "summary": summary,
            "description": description,
            "count": text(&line["count"]),
            "dfd_sha256": text(&line["dfd"]["sha256"]),
            "event": event.to_string(),
        },
        "startsAt": text(&line["first_seen"]),
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
        let line = json!({
            "flow_key": "abc", "occurrence": "first", "count": 1, "first_seen": "2026-11-23T10:00:00Z",
            "dfd": {"sha256": "ff"},
            "verdict": {"kind": "unapproved_crossing", "severity": "critical", "attempt": false, "nearest_flows": ["web-api"]},
            "event": {"node": "n1", "src": {"addr": "10.0.0.1", "port": 40000, "dfd": {"zone": "dmz", "node": "web"}},
                      "dst": {"addr": "10.0.0.2", "port": 5432, "dfd": {"zone": "data", "node": "db"}}},
        });
        let a = to_alertmanager(&line, Duration::from_secs(60));
        assert_eq!(a["labels"]["alertname"], ALERT_NAME);
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["src_node"], "web");
        assert_eq!(a["labels"]["dst_zone"], "data");
        assert_eq!(a["labels"]["dst_port"], "5432");
        assert_eq!(a["startsAt"], "2026-11-23T10:00:00Z");
        assert!(a["annotations"]["event"].as_str().unwrap().contains("10.0.0.2"));
        assert!(a["labels"].get("pid").is_none());
        assert!(a["annotations"]["description"].as_str().unwrap().contains("web-api"));
    }
}
