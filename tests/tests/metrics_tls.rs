//! The metrics endpoint behind TLS and basic auth, configured with a web configuration file in
//! the Prometheus exporter toolkit's format, checked with curl and scraped by the real
//! Prometheus: the right credentials over TLS get the metrics, anything else does not, and the
//! health endpoints stay open for the kubelet. A bad file stops the daemon at start.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tests::daemon::run_to_exit;
use tests::{Daemon, DaemonOptions, lab, sys};

/// A self-signed certificate for 127.0.0.1 (openssl): (cert, key).
fn certificate(dir: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=dfdwatch"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .context("run openssl")?;
    ensure!(out.status.success(), "openssl: {out:?}");
    Ok(())
}

/// A bcrypt hash of `password`, by Apache's htpasswd (Debian package apache2-utils).
fn bcrypt(user: &str, password: &str) -> Result<String> {
    let out = Command::new("htpasswd").args(["-nbB", user, password]).output().context("run htpasswd")?;
    ensure!(out.status.success(), "htpasswd: {out:?}");
    let line = String::from_utf8(out.stdout)?;
    Ok(line.trim().split_once(':').context("user:hash")?.1.to_owned())
}

/// `curl` on the endpoint: (HTTP status, body), or the status 000 when no HTTP answer came.
fn curl(url: &str, ca: &Path, auth: Option<&str>) -> Result<(String, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "--cacert"]).arg(ca);
    if let Some(a) = auth {
        cmd.args(["-u", a]);
    }
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    Ok((code.to_owned(), body.to_owned()))
}

/// Prometheus, ended by pid when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        sys::signal(self.0.id(), libc::SIGTERM);
        let _ = self.0.wait();
    }
}

#[test]
fn metrics_need_tls_and_the_right_password_and_prometheus_scrapes_them() -> Result<()> {
    let _serial = lab::exclusive();
    let dir = sys::scratch_dir("metrics-tls")?;
    certificate(&dir)?;
    let hash = bcrypt("prometheus", "s3cret")?;
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {hash}\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    )?;
    let options =
        DaemonOptions { extra_args: vec!["--web-config-file".into(), web.display().to_string()], ..Default::default() };
    let daemon = Daemon::start("metrics-tls", &options)?;
    let log = daemon.wait_log("metrics listening on https://", 1)?;
    let addr = log
        .lines()
        .find_map(|l| l.split_once("metrics listening on https://").and_then(|(_, r)| r.split_once("/metrics")))
        .map(|(a, _)| a.to_owned())
        .context("https address in the log")?;
    let ca = dir.join("cert.pem");
    let https = |path: &str| format!("https://{addr}{path}");

    let (code, _) = curl(&https("/metrics"), &ca, None)?;
    ensure!(code == "401", "no credentials: {code}");
    let (code, _) = curl(&https("/metrics"), &ca, Some("prometheus:wrong"))?;
    ensure!(code == "401", "wrong password: {code}");
    let (code, body) = curl(&https("/metrics"), &ca, Some("prometheus:s3cret"))?;
    ensure!(code == "200" && body.contains("dfdwatch_flows_total"), "right password: {code}");
    let (code, _) = curl(&format!("http://{addr}/metrics"), &ca, Some("prometheus:s3cret"))?;
    ensure!(code != "200", "plain HTTP gets nothing: {code}");
    let (code, _) = curl(&https("/readyz"), &ca, None)?;
    ensure!(code == "200", "the kubelet's probe needs no password: {code}");

    // The real Prometheus, one job with the right password and one with a wrong one.
    let prom_port = sys::free_port()?;
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config: {{ca_file: {}}}\n    basic_auth: {{username: prometheus, password: {password}}}\n    static_configs: [{{targets: [\"{addr}\"]}}]\n",
            ca.display()
        )
    };
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n{}{}", job("good", "s3cret"), job("bad", "wrong")),
    )?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prom-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start prometheus (Debian package prometheus)")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-m", "2", &format!("http://127.0.0.1:{prom_port}/api/v1/targets")])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let health = |job: &str| {
            v["data"]["activeTargets"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["labels"]["job"] == job))
                .and_then(|t| t["health"].as_str())
                .unwrap_or("")
                .to_owned()
        };
        if health("good") == "up" && health("bad") == "down" {
            break;
        }
        if Instant::now() > deadline {
            bail!("targets: good {}, bad {}:\n{v}", health("good"), health("bad"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    daemon.stop()?;
    Ok(())
}

#[test]
fn a_bad_web_configuration_stops_the_daemon_at_start() -> Result<()> {
    let dir = sys::scratch_dir("metrics-tls-bad")?;
    let cases = [
        ("tls_server_config: {cert_file: /nonexistent.pem, key_file: /nonexistent.key}\n", "cert_file"),
        ("basic_auth_users: {prometheus: plaintext-password}\n", "not a bcrypt hash"),
        ("tls_server_confg: {}\n", "unknown field `tls_server_confg`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let web = dir.join(format!("web-{i}.yml"));
        std::fs::write(&web, text)?;
        let out = run_to_exit(&[
            "run",
            "--web-config-file",
            &web.display().to_string(),
            "--state-dir",
            &dir.join("state").display().to_string(),
        ])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(78) && err.contains(want), "{text}: {out:?}");
        ensure!(!err.contains("dfdwatch ready"), "stopped before anything was loaded: {err}");
    }
    Ok(())
}
