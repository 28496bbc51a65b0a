//! JSON builders for the objects the stand-in API server serves.

use serde_json::{Value, json};

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "uid": format!("ns-{name}"), "labels": labels}})
}

/// A pod on `node` with one container `app` (`containerd://cid-UID`).
pub fn pod(ns: &str, name: &str, uid: &str, node: &str, ip: Option<&str>, phase: &str, start: &str) -> Value {
    let mut status = json!({"phase": phase, "startTime": start,
        "containerStatuses": [{"name": "app", "image": "registry.example/app:1", "imageID": "",
            "ready": true, "restartCount": 0, "containerID": format!("containerd://cid-{uid}")}]});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    json!({
        "metadata": {"namespace": ns, "name": name, "uid": uid, "labels": {"app": name}},
        "spec": {"nodeName": node, "serviceAccountName": format!("{name}-sa"),
                 "containers": [{"name": "app", "image": "registry.example/app:1"}]},
        "status": status
    })
}

pub fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> =
        ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP", "targetPort": 8080})).collect();
    json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("svc-{name}"), "labels": {"tier": "backend"}},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "selector": {"app": name}, "ports": ports}
    })
}

/// An EndpointSlice of `svc` with one named port and endpoints `(ip, pod name, pod uid)`.
pub fn endpoint_slice(ns: &str, name: &str, svc: &str, port: (&str, u16), endpoints: &[(&str, &str, &str)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod, uid)| {
            json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-b",
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": uid}})
        })
        .collect();
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}]
    })
}
