//! `start()` from a typed configuration: a kubeconfig file pointing at the stand-in API server
//! gives a working watcher; an invalid configuration is refused with every error at once.

use dfdwatch_kube_standin as support;

use std::time::Duration;

use dfdwatch_kube::{ClientSource, ConfigError, KubeConfig, StartError};
use support::{FakeApiServer, Kind, WAIT, eventually, pod};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_a_kubeconfig_file_watches_the_server_it_names() {
    let api = FakeApiServer::start().await;
    api.apply(Kind::Pods, pod("shop", "a", "uid-a", "node-a", Some("10.1.0.1"), "Running", "2026-11-23T10:00:00Z"));
    let dir = std::env::temp_dir().join(format!("dfdwatch-kube-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n\
             current-context: c\n",
            api.url()
        ),
    )
    .unwrap();
    let config: KubeConfig = serde_json::from_value(serde_json::json!({
        "node_name": "node-a",
        "trust_domain": "prod.example",
        "source": {"mode": "kubeconfig", "path": path, "context": "c"},
        "probe_interval_secs": 1
    }))
    .unwrap();
    assert!(matches!(config.source, ClientSource::Kubeconfig { .. }));
    let (identity, service) = dfdwatch_kube::start(config).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async move {
        let _ = rx.await;
    }));
    let got = eventually("pod via kubeconfig client", WAIT, || identity.pod_by_uid("uid-a")).await;
    assert_eq!(got.pod.spiffe_id.as_ref().map(|s| s.as_str()), Some("spiffe://prod.example/ns/shop/sa/a-sa"));
    eventually("synced", WAIT, || identity.health().synced.then_some(())).await;
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn start_refuses_an_invalid_configuration_with_every_error() {
    let unknown = serde_json::from_value::<KubeConfig>(serde_json::json!({"node_name": "n", "nodename": "x"}));
    assert!(unknown.is_err(), "unknown fields are refused");
    let mut config = KubeConfig::for_node("");
    config.trust_domain = "Example.ORG".into();
    match dfdwatch_kube::start(config).await {
        Err(StartError::Config(errors)) => {
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(errors.contains(&ConfigError::EmptyNodeName));
            assert!(errors.iter().any(|e| matches!(e, ConfigError::TrustDomain { .. })));
        }
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error, got a service"),
    }
}
