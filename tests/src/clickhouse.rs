//! A real ClickHouse server (Debian's clickhouse-server) for the tests, started on loopback in a
//! scratch directory with one user, `dfdwatch`, whose password the tests pass the way an operator
//! would (a password file). It can be stopped and started again on the same data, to play a
//! cluster store that goes away and comes back. Dropping it ends the server (by pid) and removes
//! its directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sys;

/// The test user's password.
pub const PASSWORD: &str = "dfdwatch-test-secret";

/// A running (or stopped) ClickHouse server.
pub struct ClickHouseServer {
    child: Option<Child>,
    dir: sys::Scratch,
    ports: [u16; 3],
}

impl ClickHouseServer {
    /// Starts a server for test `tag`.
    pub fn start(tag: &str) -> Result<Self> {
        let dir = sys::scratch_dir(&format!("clickhouse-{tag}"))?;
        for sub in ["data", "tmp", "uf", "fs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let hash = sys::run("sh", &["-c", &format!("printf %s '{PASSWORD}' | sha256sum | cut -d' ' -f1")])?;
        let users = format!(
            "<yandex>\n  <profiles><default></default></profiles>\n  <users>\n    <dfdwatch>\n      \
             <password_sha256_hex>{}</password_sha256_hex>\n      <networks><ip>127.0.0.1</ip></networks>\n      \
             <profile>default</profile>\n      <quota>default</quota>\n    </dfdwatch>\n  </users>\n  \
             <quotas><default></default></quotas>\n</yandex>\n",
            hash.trim()
        );
        std::fs::write(dir.join("users.xml"), users)?;
        std::fs::write(dir.join("password"), format!("{PASSWORD}\n"))?;
        let ports = [sys::free_port()?, sys::free_port()?, sys::free_port()?];
        let mut server = Self { child: None, dir, ports };
        server.resume()?;
        Ok(server)
    }

    /// The HTTP interface's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    /// The password file for `--clickhouse-password-file`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("password")
    }

    /// The login options of every dfdwatch command that talks to this server.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--clickhouse-url".into(),
            self.url(),
            "--clickhouse-user".into(),
            "dfdwatch".into(),
            "--clickhouse-password-file".into(),
            self.password_file().display().to_string(),
        ]
    }

    /// Starts the server (again, on the same data) and waits until it answers.
    pub fn resume(&mut self) -> Result<()> {
        let d = self.dir.display().to_string();
        let [http, tcp, interserver] = self.ports;
        let child = Command::new("clickhouse-server")
            .args(["--config-file=/etc/clickhouse-server/config.xml", "--"])
            .arg(format!("--path={d}/data/"))
            .arg(format!("--tmp_path={d}/tmp/"))
            .arg(format!("--user_files_path={d}/uf/"))
            .arg(format!("--format_schema_path={d}/fs/"))
            .arg(format!("--logger.log={d}/log"))
            .arg(format!("--logger.errorlog={d}/err"))
            .arg(format!("--http_port={http}"))
            .arg(format!("--tcp_port={tcp}"))
            .arg(format!("--interserver_http_port={interserver}"))
            .arg("--listen_host=127.0.0.1")
            .arg(format!("--users_config={d}/users.xml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start clickhouse-server (Debian package clickhouse-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.query("SELECT 1").map(|s| s.trim() != "1").unwrap_or(true) {
            if Instant::now() > deadline {
                let err = std::fs::read_to_string(self.dir.join("err")).unwrap_or_default();
                bail!("clickhouse-server did not answer in 30 s:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops the server (SIGTERM to the pid this harness started) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sys::signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `sql` as the test user (curl over loopback); returns the answer.
    pub fn query(&self, sql: &str) -> Result<String> {
        let out = Command::new("curl")
            .args(["-sf", "-m", "10", "--data-binary", "@-", "-H", "X-ClickHouse-User: dfdwatch"])
            .arg("-H")
            .arg(format!("X-ClickHouse-Key: {PASSWORD}"))
            .arg(format!("{}/", self.url()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(sql.as_bytes())?;
                }
                child.wait_with_output()
            })
            .context("curl")?;
        if !out.status.success() {
            bail!("ClickHouse refused {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.stop();
    }
}
