//! Workload identity of the local end on the real kernel: executable from /proc, cgroup path,
//! container runtime and id, pod UID and systemd unit from real cgroups shaped like a container
//! runtime's and a host service's; static names for addresses from the identity file.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::daemon::counter;
use tests::{Daemon, DaemonOptions, Lab, lab, servers, sys};

const CONTAINER_ID: &str = "4f8e2a9b1c3d5e7f4f8e2a9b1c3d5e7f4f8e2a9b1c3d5e7f4f8e2a9b1c3d5e7f";
const POD_UID: &str = "0d6f3a52-8c4e-4b8a-9f1e-2a3b4c5d6e7f";
const REDIS_PORT: u16 = 6379;

fn exe(name: &str) -> Result<String> {
    let path = std::fs::canonicalize(format!("/usr/bin/{name}")).with_context(|| format!("{name} is not installed"))?;
    Ok(path.display().to_string())
}

#[test]
fn local_and_remote_identity_from_cgroups_proc_and_the_identity_file() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::new("identity")?;
    let client_cgroup = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
        POD_UID.replace('-', "_")
    );
    let client = lab.add_pod_in("client", &client_cgroup)?;
    let server = lab.add_pod_in("server", "system.slice/billing-cache.service")?;

    let dir = sys::scratch_dir("identity")?;
    let names = dir.join("identities.toml");
    std::fs::write(&names, format!("[[host]]\nname = \"billing-cache\"\ncidrs = [\"{}/32\"]\n", server.ipv4))?;
    let options =
        DaemonOptions { extra_args: vec!["--identity-file".into(), names.display().to_string()], ..Default::default() };
    let daemon = Daemon::start("identity", &options)?;

    let port = REDIS_PORT.to_string();
    let bind = server.ipv4.to_string();
    let redis = lab.spawn(&server, "redis-server", &servers::redis_args(&dir, &bind, REDIS_PORT))?;
    lab.wait_listening(&server, REDIS_PORT)?;
    // BLPOP keeps redis-cli alive for a second, so its /proc entry is there when the event is
    // enriched (a process that is already gone keeps the kernel's fields only: see the miss test).
    let (cli_pid, out) = lab.run(&client, "redis-cli", &["-h", &bind, "-p", &port, "BLPOP", "dfdwatch-test", "1"])?;
    ensure!(out.status.success(), "redis-cli failed: {out:?}");
    let s = server.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| {
        ev.iter().any(|e| e["kind"] == "accept" && e["local"]["netns"].as_u64() == Some(s.netns_inode))
    })?;
    let done = daemon.stop()?;
    let find = |kind: &str, netns: u64| -> Result<&Value> {
        done.events
            .iter()
            .find(|e| e["kind"] == kind && e["local"]["netns"].as_u64() == Some(netns))
            .with_context(|| format!("no {kind} event: {:#?}", done.events))
    };

    let c = find("connect", client.netns_inode)?;
    let l = &c["local"];
    ensure!(l["tgid"].as_u64() == Some(u64::from(cli_pid)), "pid: {c}");
    ensure!(l["exe"] == exe("redis-cli")?.as_str(), "exe: {c}");
    ensure!(l["container"]["runtime"] == "containerd" && l["container"]["id"] == CONTAINER_ID, "container: {c}");
    ensure!(l["pod_uid"] == POD_UID, "pod uid: {c}");
    ensure!(l["cgroup_path"].as_str().is_some_and(|p| p.ends_with(&client_cgroup)), "cgroup path: {c}");
    ensure!(l.get("systemd_unit").is_none(), "no unit for a container: {c}");
    ensure!(c["dst"]["name"] == "billing-cache" && c["src"].get("name").is_none(), "names: {c}");

    let a = find("accept", server.netns_inode)?;
    let l = &a["local"];
    ensure!(l["tgid"].as_u64() == Some(u64::from(redis)), "pid: {a}");
    ensure!(l["exe"] == exe("redis-server")?.as_str(), "exe: {a}");
    ensure!(l["systemd_unit"] == "billing-cache.service", "unit: {a}");
    ensure!(l.get("container").is_none() && l.get("pod_uid").is_none(), "not a container: {a}");
    ensure!(a["dst"]["name"] == "billing-cache", "names: {a}");
    ensure!(counter(&done.counters, "pipeline", "identity_cgroup_misses") == 0, "{}", done.counters);
    Ok(())
}

/// A client that has exited before its event is enriched: the kernel's fields stand, the cgroup
/// still resolves (its directory lives on), and the exe miss is counted, not hidden.
/// A client that is gone within a millisecond still has its executable: the kernel recorded the
/// exec, and the event names the program that connected.
#[test]
fn a_short_lived_client_keeps_its_executable() -> Result<()> {
    let _serial = lab::exclusive();
    let mut lab = Lab::new("identity-miss")?;
    let client = lab.add_pod("client")?;
    let daemon = Daemon::start("identity-miss", &DaemonOptions::default())?;
    // `sh -c 'exec curl ...'` in a pod whose connect fails at once; curl is gone within a
    // millisecond, usually before the identity stage looks at /proc.
    // Each to its own closed port: a new flow each time, so each is identified (repeats of one
    // flow are only counted).
    for port in 9..29 {
        let url = format!("http://{}:{port}/", client.ipv4);
        lab.run(&client, "curl", &["-s", "-m", "1", "-o", "/dev/null", &url])?;
    }
    let c = client.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| {
        ev.iter().filter(|e| e["local"]["netns"].as_u64() == Some(c.netns_inode)).count() >= 20
    })?;
    let done = daemon.stop()?;
    let ours: Vec<&Value> =
        done.events.iter().filter(|e| e["local"]["netns"].as_u64() == Some(client.netns_inode)).collect();
    ensure!(ours.len() == 20, "want 20 failed connects: {ours:#?}");
    for e in &ours {
        ensure!(
            e["local"]["comm"] == "curl" && e["local"]["cgroup_id"].as_u64() == Some(client.cgroup_id),
            "kernel fields: {e}"
        );
        ensure!(e["local"]["cgroup_path"].as_str().is_some_and(|p| p.ends_with("/client")), "cgroup path: {e}");
        ensure!(e["local"]["exe"].as_str().is_some_and(|p| p.ends_with("/curl")), "the executable is there: {e}");
    }
    let from_exec = ours.iter().filter(|e| e["local"]["exe_source"] == "exec").count();
    eprintln!("{from_exec} of 20 executables came from the kernel's exec record (the process was gone)");
    ensure!(counter(&done.counters, "pipeline", "identity_exe_misses") == 0, "no miss: {}", done.counters);
    Ok(())
}

/// A program that connects and then execs an approved one does not borrow its identity: the
/// event names the program that connected, and says the process exec'd since.
#[test]
fn the_program_that_connected_is_judged_not_the_one_it_execs() -> Result<()> {
    let _serial = lab::exclusive();
    let mut s = tests::lab::ClientServer::with_nginx("identity-exec", &[80])?;
    let daemon = Daemon::start("identity-exec", &DaemonOptions::default())?;
    // The identity stage is held (ptrace) while bash connects and execs sleep, so the daemon
    // looks only once the process runs the other program, as an attacker would arrange it.
    let identity = sys::thread_named(daemon.pid().context("daemon pid")?, "identity")?;
    let frozen = sys::FrozenThread::freeze(identity)?;
    let script = format!("exec 3<>/dev/tcp/{}/80; exec sleep 1", s.server.ipv4);
    let client = s.client.clone();
    let pid = s.lab.spawn(&client, "bash", &["-c", &script])?;
    sys::wait_until_exe(pid, "sleep")?;
    drop(frozen);
    let server = s.server.ipv4.to_string();
    let events = daemon.wait_for(Duration::from_secs(5), |ev| {
        ev.iter().any(|e| e["kind"] == "connect" && e["dst"]["addr"] == server.as_str())
    })?;
    daemon.stop()?;
    let e = events
        .iter()
        .find(|e| e["kind"] == "connect" && e["dst"]["addr"] == server.as_str())
        .context("no connect event")?;
    ensure!(e["local"]["tgid"].as_u64() == Some(u64::from(pid)), "{e}");
    ensure!(e["local"]["exe"].as_str().is_some_and(|p| p.ends_with("/bash")), "bash connected, not sleep: {e}");
    ensure!(e["local"]["exe_source"] == "exec" && e["local"]["exec_since"] == true, "{e}");
    Ok(())
}

/// A broken identity file stops the daemon before it loads anything, with status 78 and a
/// message that names the file and the problem.
#[test]
fn broken_identity_file_is_refused() -> Result<()> {
    let dir = sys::scratch_dir("identity-bad")?;
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[[host]]\nname = \"x\"\ncidrs = [\"10.0.0.0/33\"]\n")?;
    let out = tests::daemon::run_to_exit(&["run".as_ref(), "--identity-file".as_ref(), path.as_os_str()])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(78), "exit status {:?}: {stderr}", out.status.code());
    ensure!(stderr.contains("bad.toml") && stderr.contains("10.0.0.0/33"), "message: {stderr}");
    Ok(())
}
