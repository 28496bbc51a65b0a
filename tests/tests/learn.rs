//! `dfdwatch learn` and `dfdwatch drift` on what the real daemon stored: pods in namespaces make
//! traffic with no DFD; `learn` drafts a DFD that `check` parses, with the decisions left to a
//! person reported (L001) until the test makes them; the daemon running that draft raises nothing
//! for the learned traffic and alerts on a new move; `learn --base` then proposes only the new
//! workload and its flow, as a fragment that checks together with the base; `drift` reports the
//! unapproved flow, the unmodelled workload, and the approved flow left unused.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::daemon::run_to_exit;
use tests::{Daemon, DaemonOptions, Lab, Pod, lab, servers, sys};

fn dfdwatch(args: &[&str]) -> Result<std::process::Output> {
    run_to_exit(args)
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Makes every decision the draft left to a person: here, to approve what was seen as it is.
fn review(draft: &str) -> String {
    draft
        .lines()
        .map(|l| match l.find("description: \"TODO") {
            Some(i) => {
                let end = l[i + 14..].find('"').map_or(l.len(), |j| i + 14 + j + 1);
                format!("{}description: \"reviewed by the test\"{}", &l[..i], &l[end..])
            }
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn store_daemon(tag: &str, store: &Path, extra: &[String]) -> Result<Daemon> {
    let mut extra_args = vec!["--store".to_owned(), store.display().to_string()];
    extra_args.extend(extra.iter().cloned());
    Daemon::start(tag, &DaemonOptions { extra_args, ..Default::default() })
}

/// The traffic to learn: the client's curl to nginx and redis-cli to redis.
fn usual(lab: &Lab, client: &Pod, server: &Pod, cache: &Pod) -> Result<()> {
    let url = format!("http://{}/", server.ipv4);
    for _ in 0..3 {
        let (_, out) = lab.run(client, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;
        ensure!(out.status.success(), "curl: {out:?}");
        let (_, out) = lab.run(client, "redis-cli", &["-h", &cache.ipv4.to_string(), "ping"])?;
        ensure!(out.status.success(), "redis-cli: {out:?}");
    }
    Ok(())
}

fn alert_lines(path: &Path, pods: &[&Pod]) -> Result<Vec<Value>> {
    let lines = tests::daemon::json_lines(path)?;
    let ours = |v: &Value| pods.iter().any(|p| v["event"]["local"]["netns"].as_u64() == Some(p.netns_inode));
    Ok(lines.into_iter().filter(ours).collect())
}

#[test]
fn a_learned_and_reviewed_draft_approves_what_was_seen_and_alerts_on_the_new() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::new("learn")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let cache = lab.add_pod("cache")?;
    let intruder = lab.add_pod("intruder")?;
    let dir = sys::scratch_dir("learn")?;
    lab.start_nginx(&server, &dir.join("nginx"), &[80])?;
    lab.spawn(&cache, "redis-server", &servers::redis_args(&dir, &cache.ipv4.to_string(), 6379))?;
    lab.wait_listening(&cache, 6379)?;

    // No DFD: the daemon only stores what it sees.
    let store = dir.join("learn.db");
    let daemon = store_daemon("learn", &store, &[])?;
    usual(&lab, &client, &server, &cache)?;
    daemon.wait_for_flows(Duration::from_secs(5), |f| f.len() >= 4)?;
    daemon.stop()?;

    let draft = dir.join("draft.yaml");
    let (store_arg, draft_arg) = (store.display().to_string(), draft.display().to_string());
    let out = dfdwatch(&["learn", "--store", &store_arg, "--since", "10m", "--output", &draft_arg])?;
    ensure!(out.status.success(), "learn: {}", text(&out));
    let drafted = std::fs::read_to_string(&draft)?;
    for want in [
        "cgroupPaths",
        "/client\"",
        "executables",
        "/curl\"",
        "/redis-cli\"",
        "port: 80",
        "port: 6379",
        "kind: datastore",
        "connection(s), first seen",
    ] {
        ensure!(drafted.contains(want), "the draft lacks {want:?}:\n{drafted}");
    }
    // It parses; what is left to decide is reported, and the daemon would refuse it as it is.
    let out = dfdwatch(&["check", &draft_arg])?;
    ensure!(
        out.status.code() == Some(1) && text(&out).contains("[L001]") && !text(&out).contains("[P0"),
        "check of the draft: {}",
        text(&out)
    );

    let reviewed = dir.join("reviewed.yaml");
    std::fs::write(&reviewed, review(&drafted))?;
    let out = dfdwatch(&["check", &reviewed.display().to_string()])?;
    ensure!(out.status.success(), "check of the reviewed draft: {}\n{}", text(&out), review(&drafted));

    // The daemon with the reviewed draft: the learned traffic is approved, a new move alerts.
    let alerts = dir.join("alerts.jsonl");
    let store2 = dir.join("second.db");
    let dfd_args =
        ["--dfd".to_owned(), reviewed.display().to_string(), "--alerts-file".into(), alerts.display().to_string()];
    let daemon = store_daemon("learn-run", &store2, &dfd_args)?;
    usual(&lab, &client, &server, &cache)?;
    let url = format!("http://{}/", server.ipv4);
    let (_, out) = lab.run(&intruder, "curl", &["-s", "-m", "3", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "the intruder's curl: {out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alert_lines(&alerts, &[&intruder, &server])?.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.wait_for_flows(Duration::from_secs(5), |f| f.iter().any(|r| r["verdict"]["kind"] == "approved"))?;
    let done = daemon.stop()?;
    let learned = |e: &Value| [&client, &cache].iter().any(|p| e["local"]["netns"].as_u64() == Some(p.netns_inode));
    let flows: Vec<&Value> = done.flows.iter().filter(|f| learned(f)).collect();
    ensure!(
        !flows.is_empty() && flows.iter().all(|f| f["verdict"]["kind"] == "approved"),
        "the learned traffic is approved: {flows:#?}"
    );
    let lines = alert_lines(&alerts, &[&client, &server, &cache, &intruder])?;
    ensure!(!lines.is_empty(), "the intruder raised an alert");
    ensure!(
        lines.iter().all(|l| l["event"]["src"]["addr"] == intruder.ipv4.to_string().as_str()),
        "only the intruder's connection alerts: {lines:#?}"
    );

    // Only what the reviewed DFD lacks: the intruder and its flow.
    let additions = dir.join("additions.yaml");
    let out = dfdwatch(&[
        "learn",
        "--store",
        &store2.display().to_string(),
        "--since",
        "10m",
        "--base",
        &reviewed.display().to_string(),
        "--output",
        &additions.display().to_string(),
    ])?;
    ensure!(out.status.success(), "learn --base: {}", text(&out));
    let added = std::fs::read_to_string(&additions)?;
    ensure!(
        added.contains(&format!("{}/32", intruder.ipv4)) && added.contains("to: server"),
        "the intruder and its flow to the base's server:\n{added}"
    );
    ensure!(!added.contains(&format!("\"{}/32\"", client.ipv4)), "nothing the base has is proposed again:\n{added}");
    let reviewed_additions = dir.join("additions-reviewed.yaml");
    std::fs::write(&reviewed_additions, review(&added))?;
    let out = dfdwatch(&["check", &reviewed.display().to_string(), &reviewed_additions.display().to_string()])?;
    ensure!(out.status.success(), "the additions check with the base: {}\n{added}", text(&out));

    // Drift of the reviewed DFD against the second run: the intruder's flow and workload; the
    // learned flows were all used.
    let out = dfdwatch(&[
        "drift",
        "--dfd",
        &reviewed.display().to_string(),
        "--store",
        &store2.display().to_string(),
        "--since",
        "10m",
        "--format",
        "json",
    ])?;
    ensure!(out.status.success(), "drift: {}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let kinds: Vec<(&str, &str)> = report["findings"]
        .as_array()
        .context("findings")?
        .iter()
        .map(|f| (f["kind"].as_str().unwrap_or(""), f["subject"].as_str().unwrap_or("")))
        .collect();
    // The intruder is named by its cgroup: the connect was seen on this node.
    ensure!(kinds.iter().any(|(k, s)| *k == "unapproved_flow" && s.contains("/intruder -> server:80")), "{report:#}");
    ensure!(kinds.iter().any(|(k, s)| *k == "unmodelled_workload" && s.ends_with("/intruder")), "{report:#}");
    ensure!(!kinds.iter().any(|(k, _)| *k == "stale_approval"), "every learned flow was used: {report:#}");
    drop(lab);
    Ok(())
}

/// `learn --for`: the daemon watches live into a scratch store (removed afterwards), and the
/// draft holds what was seen meanwhile.
#[test]
fn learning_live_drafts_what_was_seen_while_watching() -> Result<()> {
    use std::io::{BufRead, BufReader};
    let _serial = lab::exclusive();
    let mut lab = Lab::new("learn-live")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let dir = sys::scratch_dir("learn-live")?;
    lab.start_nginx(&server, &dir.join("nginx"), &[80])?;
    let draft = dir.join("draft.yaml");
    let mut learn = std::process::Command::new(tests::daemon::binary()?)
        .args(["learn", "--for", "3s", "--output", &draft.display().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = learn.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let watching = lines.by_ref().map_while(Result::ok).any(|l| l.contains("watching for"));
    ensure!(watching, "learn did not start watching");
    let url = format!("http://{}/", server.ipv4);
    let (_, out) = lab.run(&client, "curl", &["-s", "-m", "2", "-o", "/dev/null", &url])?;
    ensure!(out.status.success(), "curl: {out:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = learn.wait()?;
    ensure!(status.success(), "learn --for: {status}: {rest:?}");
    let drafted = std::fs::read_to_string(&draft)?;
    ensure!(
        drafted.contains(&format!("\"{}/32\"", client.ipv4))
            && drafted.contains("port: 80")
            && drafted.contains("/usr/bin/curl"),
        "{drafted}"
    );
    ensure!(
        !std::fs::read_dir(std::env::temp_dir())?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(&format!("dfdwatch-learn-{}", learn.id()))),
        "the scratch store is removed"
    );
    Ok(())
}
