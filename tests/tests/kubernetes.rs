//! Kubernetes identity in the real daemon: a stand-in API server over real HTTP (the one
//! kube-identity's tests use), the daemon watching it through a kubeconfig with the real kube
//! client, and real connections between lab pods whose addresses the API server assigns to
//! pods. Both ends get namespace, pod, service account and SPIFFE ID; the DFD matches them by
//! Kubernetes selectors; the cache keeps answering while the API server is down. A pod that two
//! nodes claim (one by labels, one by SPIFFE ID: kinds of identity `check` cannot compare) gets
//! the `ambiguous_endpoint` verdict.

use dfdwatch_kube_standin as support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use support::{FakeApiServer, Kind};
use tests::{Daemon, DaemonOptions, Lab, lab, sys};

const DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: kube-test
spec:
  tiers:
    - {id: T1, name: Public, level: 1}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: shop, name: Shop, tier: T1, match: {k8s: {namespace: shop}}}
    - {id: batch, name: Batch, tier: T1, match: {k8s: {namespace: batch}}}
    - {id: ops, name: Ops, tier: T1, match: {anyOf: [{k8s: {namespace: ops}}, {spiffe: ["spiffe://cluster.local/ns/ops/*"]}]}}
  nodes:
    - {id: web, name: Web, kind: process, zone: shop, match: {k8s: {namespace: shop, serviceAccount: web-sa, labels: {app: web}}}}
    - {id: worker, name: Worker, kind: process, zone: batch, match: {k8s: {namespace: batch, serviceAccount: worker-sa}}}
    # Both claim the pod `prober` in namespace ops: by its labels, and by its SPIFFE ID.
    - {id: prober, name: Prober, kind: process, zone: ops, match: {k8s: {namespace: ops, labels: {app: prober}}}}
    - {id: ops-tools, name: Ops tools, kind: process, zone: ops, match: {spiffe: ["spiffe://cluster.local/ns/ops/*"]}}
  flows:
    - id: prober-to-web
      from: prober
      to: web
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
    - id: tools-to-web
      from: ops-tools
      to: web
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
    - id: worker-to-web
      from: worker
      to: web
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
"#;

#[test]
fn both_ends_carry_kubernetes_identity_and_survive_an_api_outage() -> Result<()> {
    let _serial = lab::exclusive();
    let rt = tokio::runtime::Runtime::new()?;
    let mut api = rt.block_on(FakeApiServer::start());
    let mut lab = Lab::new("kube")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let prober = lab.add_pod("prober")?;
    // A second worker: its first connection comes during the API outage, so it is resolved then,
    // from the cache (the first worker's flow is judged already and only counted).
    let client2 = lab.add_pod("client2")?;
    let start = "2026-11-23T00:00:00Z";
    api.apply(Kind::Namespaces, support::namespace("shop", json!({"team": "shop"})));
    api.apply(Kind::Namespaces, support::namespace("batch", json!({})));
    api.apply(
        Kind::Pods,
        support::pod("shop", "web", "uid-web", "test-node", Some(&server.ipv4.to_string()), "Running", start),
    );
    api.apply(
        Kind::Pods,
        support::pod("batch", "worker", "uid-worker", "test-node", Some(&client.ipv4.to_string()), "Running", start),
    );
    let mut worker2 = support::pod(
        "batch",
        "worker-2",
        "uid-worker-2",
        "test-node",
        Some(&client2.ipv4.to_string()),
        "Running",
        start,
    );
    worker2["spec"]["serviceAccountName"] = json!("worker-sa");
    api.apply(Kind::Pods, worker2);
    api.apply(Kind::Namespaces, support::namespace("ops", json!({})));
    api.apply(
        Kind::Pods,
        support::pod("ops", "prober", "uid-prober", "test-node", Some(&prober.ipv4.to_string()), "Running", start),
    );

    let dir = sys::scratch_dir("kube")?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, sys::kubeconfig(&api.url()))?;
    std::fs::write(dir.join("dfd.yaml"), DFD)?;
    let options = DaemonOptions {
        extra_args: vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--dfd".into(),
            dir.join("dfd.yaml").display().to_string(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("kube", &options)?;
    daemon.wait_log("kubernetes identity synced and connected", 1)?;

    lab.start_nginx(&server, &dir, &[80])?;
    let url = format!("http://{}/", server.ipv4);
    let (first, _) = lab.run(&client, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;
    let (ambiguous, _) = lab.run(&prober, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;

    // The API server goes away: the daemon says so and keeps answering from its cache.
    rt.block_on(api.stop());
    daemon.wait_log("answering from the cached identities", 1)?;
    let readyz =
        std::process::Command::new("curl").args(["-s", &format!("{}/readyz", daemon.metrics_base()?)]).output()?;
    let body = String::from_utf8_lossy(&readyz.stdout);
    ensure!(
        body.starts_with("ready\n") && body.contains("API server unreachable, answering from cache"),
        "/readyz during the outage: {body}"
    );
    let (second, _) = lab.run(&client2, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;

    daemon.wait_for(Duration::from_secs(5), |ev| {
        [first, second, ambiguous].iter().all(|p| ev.iter().any(|e| e["local"]["tgid"].as_u64() == Some(u64::from(*p))))
    })?;
    let daemon_pid = daemon.pid().context("daemon pid")?;
    let api_port: u64 = api.url().rsplit(':').next().and_then(|p| p.parse().ok()).context("API port")?;
    let done = daemon.stop()?;
    // The daemon's own connections to the API server are dropped in the kernel.
    ensure!(
        !done.events.iter().any(|e| e["local"]["tgid"].as_u64() == Some(u64::from(daemon_pid))),
        "the daemon's own connections must not be reported"
    );
    ensure!(
        !done.events.iter().any(|e| e["dst"]["port"].as_u64() == Some(api_port) && e["kind"] == "connect"),
        "no connect to the API server may appear"
    );
    let connect_of = |pid: u32| -> Result<&Value> {
        done.events
            .iter()
            .find(|e| e["kind"] == "connect" && e["local"]["tgid"].as_u64() == Some(u64::from(pid)))
            .context("connect event")
    };
    for (pid, pod) in [(first, "worker"), (second, "worker-2")] {
        let c = connect_of(pid)?;
        ensure!(
            c["src"]["k8s"]
                == json!({"namespace": "batch", "pod": pod, "pod_uid": format!("uid-{pod}"), "service_account": "worker-sa", "spiffe_id": "spiffe://cluster.local/ns/batch/sa/worker-sa", "node": "test-node"}),
            "client identity: {c}"
        );
        ensure!(
            c["dst"]["k8s"]["pod"] == "web"
                && c["dst"]["k8s"]["spiffe_id"] == "spiffe://cluster.local/ns/shop/sa/web-sa",
            "server identity: {c}"
        );
        ensure!(
            c["src"]["dfd"]["node"] == "worker" && c["dst"]["dfd"]["node"] == "web",
            "placed by k8s selectors: {c}"
        );
        ensure!(c["verdict"]["kind"] == "approved", "verdict: {c}");
    }
    let a = connect_of(ambiguous)?;
    ensure!(a["src"]["k8s"]["pod"] == "prober", "prober identity: {a}");
    ensure!(
        a["src"]["dfd"]["ambiguous"] == json!(["prober", "ops-tools"])
            || a["src"]["dfd"]["ambiguous"] == json!(["ops-tools", "prober"]),
        "both claimants named: {a}"
    );
    ensure!(
        a["verdict"]["kind"] == "ambiguous_endpoint"
            && a["verdict"]["alert"] == true
            && a["verdict"]["severity"] == "medium",
        "verdict: {a}"
    );
    let accept = done
        .events
        .iter()
        .find(|e| e["kind"] == "accept" && e["local"]["netns"].as_u64() == Some(server.netns_inode))
        .context("accept")?;
    ensure!(accept["dst"]["k8s"]["pod"] == "web" && accept["src"]["k8s"]["pod"] == "worker", "accept side: {accept}");
    drop(rt);
    Ok(())
}

/// The kernel counts an approved flow's repeats without asking the daemon. When the server pod's
/// labels change so that it is no longer the DFD's `web`, and later when it is deleted, the
/// flow's next connection is judged again, with the identity in force then: no approval outlives
/// the identity that earned it.
#[test]
fn an_identity_change_re_judges_the_flows_it_touches() -> Result<()> {
    let _serial = lab::exclusive();
    let rt = tokio::runtime::Runtime::new()?;
    let api = rt.block_on(FakeApiServer::start());
    let mut lab = Lab::new("kube-change")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let start = "2026-11-23T00:00:00Z";
    let web = |app: &str| {
        let mut p =
            support::pod("shop", "web", "uid-web", "test-node", Some(&server.ipv4.to_string()), "Running", start);
        p["metadata"]["labels"]["app"] = json!(app);
        p
    };
    api.apply(Kind::Namespaces, support::namespace("shop", json!({})));
    api.apply(Kind::Namespaces, support::namespace("batch", json!({})));
    api.apply(Kind::Pods, web("web"));
    api.apply(
        Kind::Pods,
        support::pod("batch", "worker", "uid-worker", "test-node", Some(&client.ipv4.to_string()), "Running", start),
    );
    let dir = sys::scratch_dir("kube-change")?;
    std::fs::write(dir.join("kubeconfig"), sys::kubeconfig(&api.url()))?;
    std::fs::write(dir.join("dfd.yaml"), DFD)?;
    let options = DaemonOptions {
        extra_args: vec![
            "--kubeconfig".into(),
            dir.join("kubeconfig").display().to_string(),
            "--dfd".into(),
            dir.join("dfd.yaml").display().to_string(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("kube-change", &options)?;
    daemon.wait_log("kubernetes identity synced and connected", 1)?;
    lab.start_nginx(&server, &dir, &[80])?;
    let url = format!("http://{}/", server.ipv4);
    let curl = || lab.run(&client, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url]).map(|(pid, _)| pid);
    let to_web = |r: &Value| r["kind"] == "connect" && r["local"]["netns"].as_u64() == Some(client.netns_inode);
    let withdrawn = |d: &Daemon| -> Result<f64> {
        let text = d.metrics()?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("dfdwatch_flow_verdicts_withdrawn_total ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0))
    };
    for _ in 0..3 {
        curl()?;
    }
    let flows = daemon.wait_for_flows(Duration::from_secs(5), |f| tests::daemon::connections(f, to_web) >= 3)?;
    ensure!(flows.iter().filter(|f| to_web(f)).all(|f| f["verdict"]["kind"] == "approved"), "{flows:#?}");

    // After each change to the API server's pods: wait until the daemon withdrew its kernel
    // verdicts, then connect once more; return that connection's record.
    let after_change = |change: &dyn Fn()| -> Result<Value> {
        let before = withdrawn(&daemon)?;
        change();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while withdrawn(&daemon)? <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = curl()?;
        let events = daemon.wait_for(Duration::from_secs(5), |ev| ev.iter().any(|e| e["local"]["tgid"] == pid))?;
        events.into_iter().find(|e| e["local"]["tgid"] == pid).context("the next connection is recorded")
    };
    // The server pod's labels change: it is no longer `web`.
    let e = after_change(&|| {
        api.apply(Kind::Pods, web("other"));
    })?;
    ensure!(e["dst"]["dfd"]["node"].is_null() && e["verdict"]["alert"] == true, "judged with the new labels: {e}");
    // Back to `web`: approved again, and counted in the kernel again.
    let e = after_change(&|| {
        api.apply(Kind::Pods, web("web"));
    })?;
    ensure!(e["verdict"]["kind"] == "approved", "judged with the labels restored: {e}");
    curl()?;
    // The pod is deleted: its address is nobody's now, and the approved flow is judged again.
    let e = after_change(&|| {
        api.delete(Kind::Pods, "shop", "web");
    })?;
    ensure!(
        e["dst"]["k8s"].get("pod").is_none() && e["verdict"]["alert"] == true,
        "the deleted pod no longer names the server: {e}"
    );
    daemon.stop()?;
    drop(rt);
    Ok(())
}

const SERVICE_DFD: &str = r#"apiVersion: dfd.dfdwatch.dev/v1alpha1
kind: ApprovedDataFlowDiagram
metadata:
  name: kube-service-test
spec:
  tiers:
    - {id: T1, name: Public, level: 1}
    - {id: T3, name: Restricted, level: 3}
  dataClasses:
    - {id: public, level: 0}
  zones:
    - {id: shop, name: Shop, tier: T1, match: {k8s: {namespace: shop}}}
    - {id: data, name: Data, tier: T3, match: {k8s: {namespace: data}}}
  nodes:
    - {id: web, name: Web, kind: process, zone: shop, match: {k8s: {namespace: shop}}}
    - {id: db, name: Database, kind: datastore, zone: data, match: {k8s: {namespace: data}}}
  flows:
    - id: db-to-web
      from: db
      to: web
      ports: [{port: 80, protocol: TCP}]
      appProtocol: http
      encryption: {required: none}
      data: [public]
"#;

/// A connection through a ClusterIP Service, both of whose ends are on this node: the client's
/// connect sees the ClusterIP (kube-proxy's DNAT in the client's namespace, here nftables), the
/// backend's accept sees the pod. It is one connection: a violation gives one alert and one count,
/// and the second sighting's record names the Service and the backend pod.
#[test]
fn a_violation_through_a_service_alerts_once_and_counts_once() -> Result<()> {
    let _serial = lab::exclusive();
    let rt = tokio::runtime::Runtime::new()?;
    let api = rt.block_on(FakeApiServer::start());
    let mut lab = Lab::new("kube-svc")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let start = "2026-11-23T00:00:00Z";
    let (client_ip, server_ip) = (client.ipv4.to_string(), server.ipv4.to_string());
    api.apply(Kind::Namespaces, support::namespace("shop", json!({})));
    api.apply(Kind::Namespaces, support::namespace("data", json!({})));
    api.apply(Kind::Pods, support::pod("shop", "web", "uid-web", "test-node", Some(&client_ip), "Running", start));
    api.apply(Kind::Pods, support::pod("data", "db", "uid-db", "test-node", Some(&server_ip), "Running", start));
    api.apply(Kind::Services, support::service("data", "db", "10.96.0.10", &[("http", 80)]));
    api.apply(
        Kind::EndpointSlices,
        support::endpoint_slice("data", "db-x1", "db", ("http", 8080), &[(&server_ip, "db", "uid-db")]),
    );
    lab.dnat(&client, "10.96.0.10:80".parse()?, std::net::SocketAddrV4::new(server.ipv4, 8080))?;

    let dir = sys::scratch_dir("kube-svc")?;
    std::fs::write(dir.join("kubeconfig"), sys::kubeconfig(&api.url()))?;
    std::fs::write(dir.join("dfd.yaml"), SERVICE_DFD)?;
    let alerts = dir.join("alerts.jsonl");
    let arg = |p: &std::path::Path| p.display().to_string();
    let options = DaemonOptions {
        extra_args: vec![
            "--kubeconfig".into(),
            arg(&dir.join("kubeconfig")),
            "--dfd".into(),
            arg(&dir.join("dfd.yaml")),
            "--alerts-file".into(),
            arg(&alerts),
            "--alert-window-secs".into(),
            "1".into(),
        ],
        ..Default::default()
    };
    let daemon = Daemon::start("kube-svc", &options)?;
    daemon.wait_log("kubernetes identity synced and connected", 1)?;
    lab.start_nginx(&server, &dir, &[8080])?;
    let (_, out) = lab.run(&client, "curl", &["-s", "-m", "3", "-o", "/dev/null", "http://10.96.0.10/"])?;
    ensure!(out.status.success(), "curl through the Service: {out:?}");

    let sightings = |ev: &[Value]| {
        ev.iter().any(|e| e["kind"] == "connect" && e["local"]["netns"].as_u64() == Some(client.netns_inode))
            && ev.iter().any(|e| e["kind"] == "accept" && e["local"]["netns"].as_u64() == Some(server.netns_inode))
    };
    daemon.wait_for(Duration::from_secs(5), sightings)?;
    // Both sightings' flows reach an interval, and the alert window (1 s) closes.
    daemon.wait_for_flows(Duration::from_secs(5), |f| f.len() >= 2)?;
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = daemon.metrics()?;
    let done = daemon.stop()?;

    let connect = done.events.iter().find(|e| e["kind"] == "connect").context("the connect")?;
    ensure!(
        connect["dst"]["k8s"]["service"] == "data/db" && connect["dst"]["dfd"]["node"] == "db",
        "the connect sees the Service, placed on the database's node: {connect}"
    );
    ensure!(connect["verdict"]["alert"] == true, "web -> db is not approved: {connect}");
    let paired: Vec<&Value> = done.events.iter().filter(|e| e["other_end_seen"] == true).collect();
    ensure!(paired.len() == 1, "one of the two sightings is the second: {:#?}", done.events);
    let dnat = &paired[0]["dnat"];
    ensure!(
        dnat["original_dst"]["addr"] == "10.96.0.10"
            && dnat["original_dst"]["port"] == 80
            && dnat["original_dst"]["k8s"]["service"] == "data/db",
        "names the Service: {dnat}"
    );
    ensure!(
        dnat["backend_dst"]["addr"] == server_ip.as_str()
            && dnat["backend_dst"]["port"] == 8080
            && dnat["backend_dst"]["k8s"]["pod"] == "db"
            && dnat["backend_dst"]["dfd"]["node"] == "db",
        "names the backend pod: {dnat}"
    );
    let text = std::fs::read_to_string(&alerts).unwrap_or_default();
    let lines: Vec<Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    // (The daemon's own connection to the stand-in API server is an unmodelled accept on loopback.)
    let pods = [client.netns_inode, server.netns_inode];
    let lines: Vec<&Value> =
        lines.iter().filter(|l| l["event"]["local"]["netns"].as_u64().is_some_and(|n| pods.contains(&n))).collect();
    ensure!(lines.len() == 1, "one alert, no repeat from the other end: {lines:#?}");
    let shown = || {
        let flows = |l: &&str| l.starts_with("dfdwatch_flows_total") || l.starts_with("dfdwatch_violations_total");
        metrics.lines().filter(flows).collect::<Vec<_>>().join("\n")
    };
    let verdict = lines[0]["verdict"]["kind"].as_str().context("verdict kind")?;
    let flows = tests::daemon::metric(&metrics, &format!("dfdwatch_flows_total{{verdict=\"{verdict}\"}}"));
    let severity = lines[0]["verdict"]["severity"].as_str().context("severity")?;
    let violations = tests::daemon::metric(
        &metrics,
        &format!("dfdwatch_violations_total{{dst_zone=\"data\",severity=\"{severity}\",src_zone=\"shop\"}}"),
    );
    ensure!(flows == Some(1.0) && violations == Some(1.0), "one connection, one count: {}", shown());
    drop(rt);
    Ok(())
}
