//! Every verdict the demo DFD can give, from real connections between real servers: approved,
//! wrong port (an attempt), an unapproved crossing skipping a tier, lateral movement inside the
//! restricted zone, egress to the external zone, and an unmodelled workload.
//! Uses `approved-dfd/demo/` (pods on 10.213.99.0/24, the payment provider at 203.0.113.10).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::{Daemon, DaemonOptions, Lab, Pod, lab, sys};

fn connect(lab: &Lab, from: &Pod, to: Ipv4Addr, port: u16) -> Result<u32> {
    let (pid, _) = lab.run(from, "curl", &["-s", "-m", "2", "-o", "/dev/null", &format!("http://{to}:{port}/")])?;
    Ok(pid)
}

#[test]
fn verdicts_for_real_connections() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::with_subnet("verdicts", 99)?;
    let front = lab.add_pod("front")?;
    let api = lab.add_pod("api")?;
    let postgres = lab.add_pod("postgres")?;
    let redis = lab.add_pod("redis")?;
    let payments = lab.add_external_pod("payments", Ipv4Addr::new(203, 0, 113, 10))?;
    let intruder = lab.add_pod("intruder")?;
    let dfd = sys::workspace_root().join("approved-dfd/demo");
    let daemon = Daemon::start(
        "verdicts",
        &DaemonOptions { extra_args: vec!["--dfd".into(), dfd.display().to_string()], ..Default::default() },
    )?;
    let scratch = sys::scratch_dir("verdicts")?;
    for (pod, port) in [(&api, 8080), (&postgres, 5432), (&payments, 443)] {
        lab.start_nginx(pod, &scratch.join(&pod.name), &[port])?;
    }

    // (client pid, expected verdict kind, attempt)
    let cases = [
        (connect(&lab, &front, api.ipv4, 8080)?, "approved", false),
        (connect(&lab, &api, postgres.ipv4, 5432)?, "approved", false),
        (connect(&lab, &front, api.ipv4, 9999)?, "wrong_port", true),
        (connect(&lab, &front, postgres.ipv4, 5432)?, "unapproved_crossing", false),
        (connect(&lab, &redis, postgres.ipv4, 5432)?, "lateral_movement", false),
        (connect(&lab, &postgres, payments.ipv4, 443)?, "unapproved_crossing", false),
        (connect(&lab, &intruder, api.ipv4, 8080)?, "unmodelled_endpoint", false),
    ];
    let pids: Vec<u32> = cases.iter().map(|c| c.0).collect();
    daemon.wait_for(Duration::from_secs(5), |ev| {
        pids.iter().all(|p| ev.iter().any(|e| e["local"]["tgid"].as_u64() == Some(u64::from(*p))))
    })?;
    let done = daemon.stop()?;
    let by_pid = |pid: u32| -> Result<&Value> {
        done.events
            .iter()
            .find(|e| e["local"]["tgid"].as_u64() == Some(u64::from(pid)))
            .with_context(|| format!("no event of pid {pid}"))
    };
    for (pid, kind, attempt) in cases {
        let e = by_pid(pid)?;
        let v = &e["verdict"];
        ensure!(v["kind"] == kind && v["attempt"] == attempt, "want {kind} (attempt {attempt}): {e}");
        ensure!(v["alert"] == (kind != "approved"), "alert flag: {e}");
    }
    let skip = &by_pid(pids[3])?["verdict"];
    ensure!(skip["tier_direction"] == "skipping_up" && skip["severity"] == "critical", "front -> postgres: {skip}");
    let egress = &by_pid(pids[5])?["verdict"];
    ensure!(
        egress["tier_direction"] == "down" && egress["capitals"].as_array().is_some_and(|c| c.iter().any(|x| x == "I")),
        "exfiltration: {egress}"
    );
    let stranger = by_pid(pids[6])?;
    ensure!(
        stranger["src"]["dfd"] == serde_json::json!({}) && stranger["dst"]["dfd"]["node"] == "api",
        "unmodelled: {stranger}"
    );
    Ok(())
}
