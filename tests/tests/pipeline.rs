//! Kernel-to-event pipeline on the real kernel: a real nginx in one pod, a real curl in another,
//! the real daemon watching; the exact connect and accept events for IPv4 and IPv6, a refused
//! connect, both attach points, a listener that predates the daemon, and a connection storm.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::daemon::{Finished, connections, counter};
use tests::{Daemon, DaemonOptions, Lab, Pod, lab, sys};

const HTTP_PORT: u16 = 80;
const CLOSED_PORT: u16 = 81;

/// Events of one kind whose local end is in `pod`'s network namespace.
fn of_kind<'a>(events: &'a [Value], kind: &str, pod: &Pod) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind && e["local"]["netns"].as_u64() == Some(pod.netns_inode)).collect()
}

/// A lab with a client pod and a server pod running nginx.
struct Scene {
    lab: Lab,
    client: Pod,
    server: Pod,
    nginx_pid: u32,
}

fn scene(tag: &str) -> Result<Scene> {
    let mut lab = Lab::new(tag)?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let dir = sys::scratch_dir(&format!("nginx-{tag}"))?;
    let nginx_pid = lab.start_nginx(&server, &dir, &[HTTP_PORT])?;
    Ok(Scene { lab, client, server, nginx_pid })
}

/// curl from the client pod; returns curl's pid.
fn curl(scene: &Scene, url: &str) -> Result<u32> {
    let (pid, out) = scene.lab.run(&scene.client, "curl", &["-s", "-g", "-m", "5", "-o", "/dev/null", url])?;
    ensure!(out.status.success(), "curl {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(pid)
}

/// Asserts the connect / accept pair of one request from `curl_pid` to the server.
fn assert_pair(scene: &Scene, events: &[Value], curl_pid: u32, ipv6: bool) -> Result<()> {
    let (client_addr, server_addr, ip_version) = if ipv6 {
        (scene.client.ipv6.to_string(), scene.server.ipv6.to_string(), 6)
    } else {
        (scene.client.ipv4.to_string(), scene.server.ipv4.to_string(), 4)
    };
    let connects: Vec<_> = of_kind(events, "connect", &scene.client)
        .into_iter()
        .filter(|e| e["local"]["tgid"].as_u64() == Some(u64::from(curl_pid)))
        .collect();
    ensure!(connects.len() == 1, "want one connect by curl pid {curl_pid}, got {connects:#?}\nall: {events:#?}");
    let c = connects[0];
    ensure!(c["schema"] == "dfdwatch.connection.v1" && c["node"] == "test-node", "envelope: {c}");
    ensure!(c["ip_version"] == ip_version, "ip_version: {c}");
    ensure!(c["local_side"] == "src", "local_side: {c}");
    ensure!(c["src"]["addr"] == client_addr.as_str(), "src addr: {c}");
    ensure!(c["dst"]["addr"] == server_addr.as_str(), "dst addr: {c}");
    ensure!(c["dst"]["port"] == HTTP_PORT, "dst port: {c}");
    let client_port = c["src"]["port"].as_u64().context("src port")?;
    ensure!(client_port != 0, "client port unknown: {c}");
    let l = &c["local"];
    ensure!(l["pid"].as_u64() == Some(u64::from(curl_pid)), "pid: {c}");
    ensure!(l["comm"] == "curl", "comm: {c}");
    ensure!(l["uid"] == 0, "uid: {c}");
    ensure!(
        l["cgroup_id"].as_u64() == Some(scene.client.cgroup_id),
        "cgroup_id (want {}): {c}",
        scene.client.cgroup_id
    );
    ensure!(l["attribution"] == "task", "attribution: {c}");

    let accepts: Vec<_> = of_kind(events, "accept", &scene.server)
        .into_iter()
        .filter(|e| e["src"]["port"].as_u64() == Some(client_port))
        .collect();
    ensure!(accepts.len() == 1, "want one accept from port {client_port}, got {accepts:#?}\nall: {events:#?}");
    let a = accepts[0];
    ensure!(a["ip_version"] == ip_version, "ip_version: {a}");
    ensure!(a["local_side"] == "dst", "local_side: {a}");
    ensure!(a["src"]["addr"] == client_addr.as_str(), "src addr: {a}");
    ensure!(a["dst"]["addr"] == server_addr.as_str() && a["dst"]["port"] == HTTP_PORT, "dst: {a}");
    let l = &a["local"];
    ensure!(l["tgid"].as_u64() == Some(u64::from(scene.nginx_pid)), "tgid (want nginx {}): {a}", scene.nginx_pid);
    ensure!(l["comm"] == "nginx", "comm: {a}");
    ensure!(
        l["cgroup_id"].as_u64() == Some(scene.server.cgroup_id),
        "cgroup_id (want {}): {a}",
        scene.server.cgroup_id
    );
    ensure!(l["attribution"] == "listener", "attribution: {a}");
    Ok(())
}

fn clean_stop(daemon: Daemon) -> Result<Finished> {
    let done = daemon.stop()?;
    ensure!(done.clean_exit, "dfdwatch did not exit cleanly:\n{}", done.log);
    ensure!(done.log.contains("probes detached"), "no detach in log:\n{}", done.log);
    ensure!(counter(&done.counters, "pipeline", "decode_errors") == 0, "decode errors: {}", done.counters);
    Ok(done)
}

/// Connect and accept, IPv4 and IPv6, with the daemon started before the server listens.
fn exact_events(attach: &str) -> Result<()> {
    let _serial = lab::exclusive();
    let daemon = Daemon::start(attach, &DaemonOptions { attach: Some(attach.to_owned()), ..Default::default() })?;
    let scene = scene(attach)?;
    let pid4 = curl(&scene, &format!("http://{}:{HTTP_PORT}/", scene.server.ipv4))?;
    let pid6 = curl(&scene, &format!("http://[{}]:{HTTP_PORT}/", scene.server.ipv6))?;
    let server = scene.server.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| of_kind(ev, "accept", &server).len() >= 2)?;
    let done = clean_stop(daemon)?;
    assert_pair(&scene, &done.events, pid4, false)?;
    assert_pair(&scene, &done.events, pid6, true)?;
    ensure!(
        done.log.contains(&format!(
            "attach_point=\"{}",
            if attach == "tracepoint" { "tracepoint" } else { "raw_tracepoint" }
        )),
        "attach point not logged:\n{}",
        done.log
    );
    Ok(())
}

#[test]
fn connect_and_accept_events_via_tracepoint() -> Result<()> {
    exact_events("tracepoint")
}

#[test]
fn connect_and_accept_events_via_raw_tracepoint() -> Result<()> {
    exact_events("raw-tracepoint")
}

/// The server listens before the daemon starts: the accept is attributed through the listener
/// table seeded from /proc.
#[test]
fn listener_that_predates_the_daemon() -> Result<()> {
    let _serial = lab::exclusive();
    let scene = scene("seeded")?;
    let daemon = Daemon::start("seeded", &DaemonOptions::default())?;
    let pid = curl(&scene, &format!("http://{}:{HTTP_PORT}/", scene.server.ipv4))?;
    let server = scene.server.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| !of_kind(ev, "accept", &server).is_empty())?;
    let done = clean_stop(daemon)?;
    assert_pair(&scene, &done.events, pid, false)
}

/// A connect to a closed port: one connect_failed event with ECONNREFUSED, no accept.
#[test]
fn refused_connect() -> Result<()> {
    let _serial = lab::exclusive();
    let daemon = Daemon::start("refused", &DaemonOptions::default())?;
    let scene = scene("refused")?;
    let url = format!("http://{}:{CLOSED_PORT}/", scene.server.ipv4);
    let (pid, out) = scene.lab.run(&scene.client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
    ensure!(out.status.code() == Some(7), "curl to a closed port should fail to connect: {out:?}");
    let client = scene.client.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| !of_kind(ev, "connect_failed", &client).is_empty())?;
    let done = clean_stop(daemon)?;
    let failed = of_kind(&done.events, "connect_failed", &scene.client);
    ensure!(failed.len() == 1, "want one connect_failed, got {failed:#?}");
    let f = failed[0];
    ensure!(f["error"]["errno"] == 111 && f["error"]["name"] == "ECONNREFUSED", "error: {f}");
    ensure!(f["dst"]["addr"] == scene.server.ipv4.to_string().as_str() && f["dst"]["port"] == CLOSED_PORT, "dst: {f}");
    ensure!(f["src"]["addr"] == scene.client.ipv4.to_string().as_str(), "src: {f}");
    ensure!(f["local"]["pid"].as_u64() == Some(u64::from(pid)) && f["local"]["comm"] == "curl", "process: {f}");
    ensure!(f["local"]["cgroup_id"].as_u64() == Some(scene.client.cgroup_id), "cgroup: {f}");
    ensure!(of_kind(&done.events, "accept", &scene.server).is_empty(), "no accept expected");
    Ok(())
}

/// N connections of one flow give flow records that add up to N connects and N accepts (or the
/// loss counters account for each one missing), and only the flow's first connect and accept
/// are recorded one by one.
#[test]
fn connection_storm_is_counted() -> Result<()> {
    const N: usize = 3000;
    let _serial = lab::exclusive();
    let daemon = Daemon::start("storm", &DaemonOptions::default())?;
    let scene = scene("storm")?;
    // curl opens one connection per URL; N URLs in one curl keep the storm fast.
    let scratch = sys::scratch_dir("storm-urls")?;
    let config_path = scratch.join("urls.txt");
    let url = format!("url = \"http://{}:{HTTP_PORT}/\"\noutput = \"/dev/null\"\n", scene.server.ipv4);
    std::fs::write(&config_path, url.repeat(N))?;
    let config = config_path.display().to_string();
    let (_, out) =
        scene.lab.run(&scene.client, "curl", &["-s", "--no-keepalive", "-H", "Connection: close", "-K", &config])?;
    ensure!(out.status.success(), "storm client failed: {out:?}");
    let (client, server) = (scene.client.clone(), scene.server.clone());
    let sum = |flows: &[Value], kind: &str, pod: &Pod| {
        let of_pod = |f: &Value| f["kind"] == kind && f["local"]["netns"].as_u64() == Some(pod.netns_inode);
        connections(flows, of_pod) as usize
    };
    daemon.wait_for_flows(Duration::from_secs(10), |flows| {
        sum(flows, "connect", &client) >= N && sum(flows, "accept", &server) >= N
    })?;
    let done = clean_stop(daemon)?;
    let connects = sum(&done.flows, "connect", &scene.client);
    let accepts = sum(&done.flows, "accept", &scene.server);
    let recorded =
        of_kind(&done.events, "connect", &scene.client).len() + of_kind(&done.events, "accept", &scene.server).len();
    ensure!(recorded == 2, "one flow each way: its first connect and accept recorded, not {recorded}");
    // Runs the kernel skipped (the probe already running on that CPU) lose both ends' events.
    ensure!(
        done.counters["kernel"]["skipped_recursion"].is_u64(),
        "the kernel's recursion_misses is reported: {}",
        done.counters
    );
    ensure!(!done.log.contains("recursion_misses failed"), "reading recursion_misses works:\n{}", done.log);
    let skipped = counter(&done.counters, "kernel", "skipped_recursion") as usize;
    let lost_connect = counter(&done.counters, "kernel", "lost_connect") as usize + skipped;
    let lost_accept = counter(&done.counters, "kernel", "lost_accept") as usize + skipped;
    eprintln!(
        "storm: {N} connections, {connects} connects (+{lost_connect} lost), {accepts} accepts (+{lost_accept} lost)"
    );
    ensure!(connects <= N && accepts <= N, "more events than connections: {connects} / {accepts}");
    ensure!(connects + lost_connect >= N, "{} connects unaccounted for", N - connects);
    ensure!(accepts + lost_accept >= N, "{} accepts unaccounted for", N - accepts);
    let read = counter(&done.counters, "pipeline", "records_read") - counter(&done.counters, "pipeline", "heartbeats");
    ensure!(read < 100, "{N} connections of one flow took {read} ring-buffer records: {}", done.counters);
    Ok(())
}

/// With a one-entry listener table, a second listening port does not fit: the probe says so
/// through aya-log (the message must reach the daemon's log), the counter records it, and accepts
/// on the port that did not fit are attributed from the socket (cgroup, uid), without a process.
#[test]
fn full_listener_table_is_logged_counted_and_attributed_from_the_socket() -> Result<()> {
    let _serial = lab::exclusive();
    let options = DaemonOptions { extra_args: vec!["--max-listeners".into(), "1".into()], ..Default::default() };
    let daemon = Daemon::start("full-listeners", &options)?;
    let mut lab = Lab::new("full-listeners")?;
    let client = lab.add_pod("client")?;
    let server = lab.add_pod("server")?;
    let dir = sys::scratch_dir("nginx-full-listeners")?;
    lab.start_nginx(&server, &dir, &[8081, 8082])?;
    for port in [8081, 8082] {
        let url = format!("http://{}:{port}/", server.ipv4);
        let (_, out) = lab.run(&client, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url])?;
        ensure!(out.status.success(), "curl {url}: {out:?}");
    }
    let srv = server.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| of_kind(ev, "accept", &srv).len() >= 2)?;
    let done = clean_stop(daemon)?;
    ensure!(counter(&done.counters, "kernel", "listener_map_full") >= 1, "counters: {}", done.counters);
    ensure!(
        done.log.contains("listener map full, accepts on port"),
        "the probe's aya-log warning did not reach the daemon log:\n{}",
        done.log
    );
    let from_socket: Vec<_> = of_kind(&done.events, "accept", &server)
        .into_iter()
        .filter(|e| e["local"]["attribution"] == "socket")
        .collect();
    ensure!(!from_socket.is_empty(), "no accept attributed from the socket: {:#?}", done.events);
    for e in from_socket {
        let l = &e["local"];
        ensure!(l.get("tgid").is_none() && l.get("comm").is_none(), "process fields must be absent: {e}");
        ensure!(l["cgroup_id"].as_u64() == Some(server.cgroup_id) && l["uid"] == 0, "socket identity: {e}");
    }
    ensure!(counter(&done.counters, "kernel", "accept_no_listener") >= 1, "counters: {}", done.counters);
    Ok(())
}

/// A connect to an address where nothing answers, abandoned by the client after its timeout:
/// a failed attempt is still reported (`aborted` when the application gives up first).
#[test]
fn abandoned_connect_to_a_silent_address() -> Result<()> {
    let _serial = lab::exclusive();
    let daemon = Daemon::start("silent", &DaemonOptions::default())?;
    let mut lab = Lab::new("silent")?;
    let client = lab.add_pod("client")?;
    // An address on the lab subnet that no pod holds: the SYN gets no answer at all.
    let silent =
        std::net::Ipv4Addr::new(client.ipv4.octets()[0], client.ipv4.octets()[1], client.ipv4.octets()[2], 250);
    let url = format!("http://{silent}:443/");
    let (pid, out) = lab.run(&client, "curl", &["-s", "--connect-timeout", "1", "-o", "/dev/null", &url])?;
    ensure!(out.status.code() == Some(28), "curl should time out: {out:?}");
    let c = client.clone();
    daemon.wait_for(Duration::from_secs(5), |ev| !of_kind(ev, "connect_failed", &c).is_empty())?;
    let done = clean_stop(daemon)?;
    let failed = of_kind(&done.events, "connect_failed", &client);
    ensure!(failed.len() == 1, "want one connect_failed: {failed:#?}");
    let f = failed[0];
    ensure!(f["dst"]["addr"] == silent.to_string().as_str() && f["dst"]["port"] == 443, "dst: {f}");
    ensure!(f["local"]["pid"].as_u64() == Some(u64::from(pid)), "pid: {f}");
    ensure!(matches!(f["error"]["name"].as_str(), Some("aborted" | "ETIMEDOUT" | "EHOSTUNREACH")), "error: {f}");
    Ok(())
}
