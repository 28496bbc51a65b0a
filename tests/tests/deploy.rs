//! The Helm chart and the manifests rendered from it, offline: real Helm renders and lints it,
//! kubernetes-validate --strict checks it for several Kubernetes versions, the Prometheus Operator
//! objects match their CRD models and promtool, yamllint passes, the dashboard and rules query
//! only metrics the daemon defines, and the plain manifests are what the chart renders.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::chart::{self, Rendered, Scratch, metric_names, path_str};
use tests::{daemon, sys};

/// Kubernetes versions whose schemas the manifests must pass (the chart's kubeVersion floor up).
const KUBERNETES_VERSIONS: [&str; 4] = ["1.30.0", "1.32.0", "1.34.0", "1.37.0"];

fn root_path(rel: &str) -> String {
    sys::workspace_root().join(rel).display().to_string()
}

/// `--set-file` arguments putting every file of approved-dfd/ into the DFD ConfigMap.
fn dfd_files() -> Result<Vec<String>> {
    let mut args = Vec::new();
    for entry in std::fs::read_dir(sys::workspace_root().join("approved-dfd"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().and_then(|n| n.to_str()).context("file name")?.replace('.', "\\.");
            args.extend(["--set-file".to_owned(), format!("dfd.files.{name}={}", path.display())]);
        }
    }
    Ok(args)
}

/// The scenarios every check runs on: defaults (no DFD), a DFD with file destinations and
/// Alertmanager, and the plain manifests' values.
fn scenarios(dir: &Path) -> Result<Vec<(&'static str, Rendered)>> {
    let mut full = dfd_files()?;
    for set in [
        "events.destination=/var/log/dfdwatch/events.jsonl",
        "alerts.destination=/var/log/dfdwatch/alerts.jsonl",
        "alerts.alertmanagerUrl=http://alertmanager.monitoring:9093",
        // Signed DFDs: an approver's minisign public key.
        "dfd.trustedKeys[0]=RWSNQwhLF70aCK/qeXgsO1VZUbfXAguVMyrrNM/AZCeK1Lh6tmSaREFo",
        // TLS and basic auth on the metrics endpoint.
        "metrics.webConfig.secretName=dfdwatch-web",
        "serviceMonitor.tlsConfig.serverName=dfdwatch",
        "serviceMonitor.basicAuth.username.name=dfdwatch-web",
        "serviceMonitor.basicAuth.username.key=username",
        "serviceMonitor.basicAuth.password.name=dfdwatch-web",
        "serviceMonitor.basicAuth.password.key=password",
    ] {
        full.extend(["--set".to_owned(), set.to_owned()]);
    }
    Ok(vec![
        ("defaults", chart::render(dir, "defaults", &[])?),
        ("full", chart::render(dir, "full", &full)?),
        ("plain", chart::render(dir, "plain", &["--values".to_owned(), root_path("deploy/kubernetes/values.yaml")])?),
    ])
}

#[test]
fn chart_lints_and_its_manifests_pass_strict_schemas_and_yamllint() -> Result<()> {
    let scratch = Scratch::new("deploy-schemas")?;
    chart::deploy_check(&["lint", path_str(&chart::chart_dir())?])?;
    let validate = chart::tool("kubernetes-validate")?;
    let yamllint = chart::tool("yamllint")?;
    let config = root_path("tools/deploy-check/yamllint.yaml");
    for (name, r) in scenarios(&scratch.0)? {
        for version in KUBERNETES_VERSIONS {
            let out = chart::run_ok(&validate, &["--strict", "--quiet", "-k", version, path_str(&r.main)?])?;
            ensure!(!out.contains("WARN"), "{name}: kubernetes-validate {version}: {out}");
            // The Prometheus Operator kinds have no schema here; they are checked against the CRD
            // models below. Anything else without a schema is an error.
            let out = chart::run_ok(&validate, &["--strict", "--quiet", "-k", version, path_str(&r.monitoring)?])?;
            for line in out.lines().filter(|l| l.contains("WARN")) {
                ensure!(
                    line.contains("kind PrometheusRule with api version monitoring.coreos.com/v1")
                        || line.contains("kind ServiceMonitor with api version monitoring.coreos.com/v1"),
                    "{name}: kubernetes-validate {version}: {line}"
                );
            }
        }
        chart::run_ok(&yamllint, &["-s", "-c", &config, path_str(&r.main)?, path_str(&r.monitoring)?])?;
    }
    // The hand-written YAML; the config's `ignore` (the templates) is relative to the root.
    let out = std::process::Command::new(&yamllint)
        .args(["-s", "-c", &config, "deploy"])
        .current_dir(sys::workspace_root())
        .output()?;
    ensure!(out.status.success(), "yamllint deploy: {}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

#[test]
fn prometheus_operator_objects_match_their_crds_and_the_rules_pass_promtool() -> Result<()> {
    let scratch = Scratch::new("deploy-crds")?;
    let rules_file = root_path("deploy/prometheus/dfdwatch-rules.yaml");
    for (name, r) in scenarios(&scratch.0)? {
        let rules = scratch.0.join(format!("{name}-rules.yaml"));
        chart::deploy_check(&[
            "crds",
            path_str(&r.monitoring)?,
            "--rules-out",
            path_str(&rules)?,
            "--expect-rules",
            &rules_file,
        ])?;
        let out = std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules)
            .output()
            .context("run promtool (Debian package prometheus, installed by cargo xtask setup)")?;
        ensure!(out.status.success(), "{name}: promtool check rules: {}", String::from_utf8_lossy(&out.stderr));
    }
    // One source of truth: the chart's copies are links to the files in deploy/.
    for (link, target) in [
        ("files/dfdwatch-rules.yaml", "deploy/prometheus/dfdwatch-rules.yaml"),
        ("files/dfdwatch-dashboard.json", "deploy/grafana/dfdwatch-dashboard.json"),
    ] {
        let link = chart::chart_dir().join(link);
        ensure!(
            link.symlink_metadata()?.file_type().is_symlink(),
            "{} must be a symbolic link to {target}",
            link.display()
        );
        ensure!(
            link.canonicalize()? == sys::workspace_root().join(target).canonicalize()?,
            "{} does not point to {target}",
            link.display()
        );
    }
    Ok(())
}

/// Every PromQL expression of the dashboard: panel targets and template variable queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.extend(target["expr"].as_str().map(str::to_owned));
        }
    }
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            out.extend(var["query"].as_str().map(str::to_owned));
        }
    }
    out
}

#[test]
fn dashboard_and_rules_query_only_metrics_the_daemon_exports() -> Result<()> {
    let root = sys::workspace_root();
    let defined = metric_names(&sys::metric_definitions()?);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/dfdwatch-dashboard.json"))?)?;
    let queries = dashboard_queries(&dashboard);
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/dfdwatch-rules.yaml"))?;
    let used = metric_names(&queries.join("\n"));
    for name in used.iter().chain(&metric_names(&rules)) {
        // A histogram's series are NAME_bucket, NAME_sum and NAME_count.
        let base =
            ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|b| defined.contains(*b));
        ensure!(
            defined.contains(name) || base.is_some(),
            "{name} is queried but monitor-user/src/telemetry/ (or store/metrics.rs) does not define it"
        );
    }
    // What the dashboard must show (issue 7): flows by verdict, violations by zone pair and
    // severity, kernel loss, decode errors, identity misses, latency p99, the DFD and its reloads.
    for needed in [
        "dfdwatch_flows_total",
        "dfdwatch_violations_total",
        "dfdwatch_kernel_stats_total",
        "dfdwatch_decode_errors_total",
        "dfdwatch_identity_misses_total",
        "dfdwatch_processing_latency_seconds_bucket",
        "dfdwatch_dfd_info",
        "dfdwatch_dfd_loaded_timestamp_seconds",
    ] {
        ensure!(used.contains(needed), "the dashboard has no panel on {needed}");
    }
    Ok(())
}

#[test]
fn plain_manifests_are_what_the_chart_renders() -> Result<()> {
    let scratch = Scratch::new("deploy-plain")?;
    let r = chart::render(&scratch.0, "plain", &["--values".to_owned(), root_path("deploy/kubernetes/values.yaml")])?;
    let root = sys::workspace_root();
    for (fresh, committed) in
        [(&r.main, "deploy/kubernetes/dfdwatch.yaml"), (&r.monitoring, "deploy/kubernetes/monitoring.yaml")]
    {
        let want = std::fs::read_to_string(fresh)?;
        let have = std::fs::read_to_string(root.join(committed))?;
        ensure!(
            want == have,
            "{committed} is not what the chart renders; regenerate it with the command in docs/deploy.md (\"Plain manifests\")"
        );
    }
    Ok(())
}

fn args_of(r: &Rendered) -> Result<Vec<String>> {
    let ds = r.object("DaemonSet", None)?;
    let args = ds["spec"]["template"]["spec"]["containers"][0]["args"].as_array().context("container args")?;
    Ok(args.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect())
}

#[test]
fn daemonset_is_least_privilege_and_wired_for_kubernetes_and_hot_reload() -> Result<()> {
    let scratch = Scratch::new("deploy-daemonset")?;
    let docs = std::fs::read_to_string(sys::workspace_root().join("docs/deploy.md"))?;
    for (name, r) in scenarios(&scratch.0)? {
        let ds = r.object("DaemonSet", None)?;
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        ensure!(
            pod["hostPID"] == true && pod["hostNetwork"] == false,
            "{name}: host PID namespace, own network namespace"
        );
        ensure!(
            sc["privileged"] == false
                && sc["allowPrivilegeEscalation"] == false
                && sc["readOnlyRootFilesystem"] == true,
            "{name}: {sc}"
        );
        ensure!(
            sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
            "{name}: every capability must be dropped first"
        );
        for cap in sc["capabilities"]["add"].as_array().context("capabilities.add")? {
            let cap = cap.as_str().context("capability")?;
            ensure!(
                docs.contains(&format!("| `CAP_{cap}` |")),
                "{name}: CAP_{cap} is added but docs/deploy.md does not justify it"
            );
        }
        ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "{name}: seccomp");
        // Only the monitoring namespace reaches the metrics port; nothing else reaches the pods.
        let np = r.object("NetworkPolicy", None)?;
        let ingress = np["spec"]["ingress"].as_array().context("ingress rules")?;
        ensure!(
            np["spec"]["policyTypes"] == serde_json::json!(["Ingress"])
                && ingress.len() == 1
                && ingress[0]["from"]
                    == serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
                && ingress[0]["ports"] == serde_json::json!([{"port": "metrics", "protocol": "TCP"}])
                && np["spec"]["podSelector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"],
            "{name}: {np}"
        );
        ensure!(
            c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string(),
            "{name}: memory request and limit"
        );
        ensure!(
            pod["tolerations"] == serde_json::json!([{"operator": "Exists"}]),
            "{name}: every node, tainted ones included"
        );
        let args = args_of(&r)?;
        for want in ["run", "--node-name=$(NODE_NAME)", "--kube-in-cluster"] {
            ensure!(args.iter().any(|a| a == want), "{name}: no {want} in {args:?}");
        }
        ensure!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName",
            "{name}: NODE_NAME from the downward API"
        );
        // Hot reload: the ConfigMap is mounted as a directory (a subPath mount never updates).
        if name != "defaults" {
            ensure!(args.iter().any(|a| a == "--dfd=/etc/dfdwatch/dfd"), "{name}: no --dfd");
            let mount =
                c["volumeMounts"].as_array().into_iter().flatten().find(|m| m["name"] == "dfd").context("dfd mount")?;
            ensure!(mount.get("subPath").is_none(), "{name}: the DFD mount must not use subPath");
        }
        let role = r.object("ClusterRole", None)?;
        let want = serde_json::json!([
            {"apiGroups": [""], "resources": ["pods", "namespaces", "services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        ]);
        ensure!(role["rules"] == want, "{name}: ClusterRole rules {}", role["rules"]);
        // The rules' DfdwatchDown alert selects job="dfdwatch": the ServiceMonitor must yield it.
        let sm = r.object("ServiceMonitor", None)?;
        let job_label = sm["spec"]["jobLabel"].as_str().context("jobLabel")?;
        ensure!(r.object("Service", None)?["metadata"]["labels"][job_label] == "dfdwatch", "{name}: job label");
    }
    Ok(())
}

#[test]
fn dfd_configmap_holds_the_files_verbatim_and_they_pass_check() -> Result<()> {
    let scratch = Scratch::new("deploy-dfd")?;
    let r = chart::render(&scratch.0, "dfd", &dfd_files()?)?;
    let cm = r.object("ConfigMap", Some("dfdwatch-dfd"))?;
    let data = cm["data"].as_object().context("data")?;
    let dir = scratch.0.join("dfd");
    std::fs::create_dir_all(&dir)?;
    for (file, content) in data {
        let source = std::fs::read_to_string(sys::workspace_root().join("approved-dfd").join(file))?;
        ensure!(content.as_str() == Some(source.as_str()), "{file} differs in the ConfigMap");
        std::fs::write(dir.join(file), &source)?;
    }
    // A fixed day: the shipped approvals expire, and this test must not fail on that day.
    let out = daemon::run_to_exit(&["check".as_ref(), "--today".as_ref(), "2026-11-23".as_ref(), dir.as_os_str()])?;
    ensure!(out.status.success(), "dfdwatch check on the ConfigMap's files: {}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

#[test]
fn daemon_accepts_every_flag_the_chart_passes() -> Result<()> {
    let scratch = Scratch::new("deploy-flags")?;
    let out = daemon::run_to_exit(&["run", "--help"])?;
    let help = String::from_utf8_lossy(&out.stdout);
    for (name, r) in scenarios(&scratch.0)? {
        for arg in args_of(&r)?.iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap_or(arg);
            ensure!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{name}: the chart passes {flag}, which `dfdwatch run` does not know"
            );
        }
    }
    Ok(())
}
