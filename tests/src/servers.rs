//! Real servers from Debian, configured to run in the foreground inside a lab pod.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes an nginx configuration that runs as one foreground process (no master/worker split,
/// so the listening process is the accepting one), listening on `port` on every address of the
/// pod, IPv4 and IPv6. Returns the arguments for `nginx`.
pub fn nginx_args(dir: &Path, port: u16) -> Result<Vec<String>> {
    nginx_args_ports(dir, &[port])
}

/// As [`nginx_args`], listening on several ports.
pub fn nginx_args_ports(dir: &Path, ports: &[u16]) -> Result<Vec<String>> {
    let d = dir.display();
    let listen: String = ports.iter().map(|p| format!("    listen {p};\n    listen [::]:{p};\n")).collect();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n{listen}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).with_context(|| format!("write {}", path.display()))?;
    Ok(vec!["-p".into(), d.to_string(), "-e".into(), format!("{d}/error.log"), "-c".into(), path.display().to_string()])
}

/// Arguments for a foreground `redis-server` on `bind:port` with no persistence.
pub fn redis_args(dir: &Path, bind: &str, port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        bind,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Creates a PostgreSQL cluster in `dir` (owned by the `postgres` user, trust authentication)
/// and returns the command that runs it in the foreground on `listen:5432`, as `postgres`.
/// Stop it with SIGINT or SIGTERM.
pub fn postgres_command(dir: &Path, listen: &str) -> Result<Vec<String>> {
    let bin = "/usr/lib/postgresql/15/bin";
    let data = dir.join("data");
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    crate::sys::run("chown", &["-R", "postgres:postgres", &dir.display().to_string()])?;
    crate::sys::run(
        "setpriv",
        &[
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            &format!("{bin}/initdb"),
            "-D",
            &data.display().to_string(),
            "--auth=trust",
            "-U",
            "postgres",
        ],
    )?;
    // Accept the lab's clients from any address of their namespaces (the lab is closed).
    let hba = data.join("pg_hba.conf");
    let mut rules = std::fs::read_to_string(&hba).with_context(|| format!("read {}", hba.display()))?;
    rules.push_str("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n");
    std::fs::write(&hba, rules).with_context(|| format!("write {}", hba.display()))?;
    Ok(vec![
        "--reuid=postgres".into(),
        "--regid=postgres".into(),
        "--init-groups".into(),
        format!("{bin}/postgres"),
        "-D".into(),
        data.display().to_string(),
        "-k".into(),
        dir.display().to_string(),
        "-c".into(),
        format!("listen_addresses={listen}"),
        "-p".into(),
        "5432".into(),
    ])
}
