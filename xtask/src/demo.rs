//! `cargo xtask demo`: runs the real daemon over two scripted pods (a web server and a client,
//! each in its own network namespace and cgroup), drives a few connections, and prints the events
//! dfdwatch wrote. Everything it creates is removed at the end.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use dfdwatch_tests::{Daemon, DaemonOptions, Lab, servers, sys};
use serde_json::Value;

use crate::{cmd, setup};

pub fn run() -> Result<()> {
    if !cmd::is_root() {
        bail!("cargo xtask demo needs root: it loads eBPF programs and creates network namespaces");
    }
    setup::run()?;
    cmd::build_daemon()?;
    // SAFETY: setting an environment variable before any thread starts.
    unsafe { std::env::set_var("DFDWATCH_BIN", cmd::daemon_binary()) };

    println!("\n== dfdwatch demo: two pods, one nginx, one client ==");
    let mut lab = Lab::new("demo")?;
    let web = lab.add_pod("web")?;
    let client = lab.add_pod("client")?;
    println!("pod web:    netns {} ({}), cgroup {} (id {}), {} / {}", web.netns, web.netns_inode, web.cgroup_dir.display(), web.cgroup_id, web.ipv4, web.ipv6);
    println!("pod client: netns {} ({}), cgroup {} (id {}), {} / {}", client.netns, client.netns_inode, client.cgroup_dir.display(), client.cgroup_id, client.ipv4, client.ipv6);

    let daemon = Daemon::start("demo", &DaemonOptions::default())?;
    println!("dfdwatch running (pid {})", daemon.pid().unwrap_or(0));

    let dir = sys::scratch_dir("demo-nginx")?;
    let args = servers::nginx_args(&dir, 80)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nginx = lab.spawn(&web, "nginx", &args)?;
    lab.wait_listening(&web, 80)?;
    println!("nginx listening in pod web (pid {nginx})");

    let steps = [
        ("client -> web over IPv4", format!("http://{}:80/", web.ipv4)),
        ("client -> web over IPv6", format!("http://[{}]:80/", web.ipv6)),
        ("client -> web:5432, nothing listens (refused)", format!("http://{}:5432/", web.ipv4)),
    ];
    for (what, url) in &steps {
        let (pid, out) = lab.run(&client, "curl", &["-s", "-g", "-m", "3", "-o", "/dev/null", url])?;
        println!("{what}: curl pid {pid}, exit {}", out.status.code().unwrap_or(-1));
    }
    let pods = [web.netns_inode, client.netns_inode];
    let ours = |e: &Value| e["local"]["netns"].as_u64().is_some_and(|n| pods.contains(&n));
    daemon.wait_for(Duration::from_secs(5), |ev| ev.iter().filter(|e| ours(e)).count() >= 5)?;
    let done = daemon.stop()?;

    println!("\n== events from the two pods ({} in all on this node) ==", done.events.len());
    for e in done.events.iter().filter(|e| ours(e)) {
        println!("{}", serde_json::to_string(e).context("print event")?);
    }
    println!("\n== summary ==");
    for e in done.events.iter().filter(|e| ours(e)) {
        let l = &e["local"];
        println!(
            "{:<15} {:>28} -> {:<28} by {} (pid {}, cgroup {}, netns {}){}",
            e["kind"].as_str().unwrap_or("?"),
            endpoint(&e["src"]),
            endpoint(&e["dst"]),
            l["comm"].as_str().unwrap_or("?"),
            l["tgid"],
            l["cgroup_id"],
            l["netns"],
            e["error"]["name"].as_str().map(|n| format!(" error {n}")).unwrap_or_default(),
        );
    }
    println!("\nfinal counters: {}", done.counters);
    println!("(pods, bridge and cgroups are removed now)");
    drop(lab);
    Ok(())
}

fn endpoint(v: &Value) -> String {
    let addr = v["addr"].as_str().unwrap_or("?");
    if addr.contains(':') { format!("[{addr}]:{}", v["port"]) } else { format!("{addr}:{}", v["port"]) }
}
