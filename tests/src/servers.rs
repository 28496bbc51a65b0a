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
    let listen: String =
        ports.iter().map(|p| format!("    listen {p};\n    listen [::]:{p};\n")).collect();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n{listen}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).with_context(|| format!("write {}", path.display()))?;
    Ok(vec![
        "-p".into(),
        d.to_string(),
        "-e".into(),
        format!("{d}/error.log"),
        "-c".into(),
        path.display().to_string(),
    ])
}
