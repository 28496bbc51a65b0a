//! Signed DFDs with the real `minisign` tool and the real daemon: `dfdwatch sign` and minisign
//! read each other's keys and signatures; `dfdwatch verify` refuses one changed byte; a daemon
//! that requires signatures refuses an unsigned DFD at start, and on reload refuses a change no
//! approver signed and a signed change while it is only half written, keeping the running DFD.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tests::daemon::run_to_exit;
use tests::lab::ClientServer;
use tests::{Daemon, DaemonOptions, lab, sys};

/// A minisign key pair without password, made by the minisign tool: (public, secret).
fn keypair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let (public, secret) = (dir.join(format!("{name}.pub")), dir.join(format!("{name}.key")));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .output()
        .context("run minisign (Debian package minisign)")?;
    ensure!(out.status.success(), "minisign -G: {out:?}");
    Ok((public, secret))
}

fn sign(dir: &Path, secret: &Path, name: &str) -> Result<()> {
    let out = run_to_exit(&[
        "sign".as_ref(),
        dir.as_os_str(),
        "--key".as_ref(),
        secret.as_os_str(),
        "--name".as_ref(),
        name.as_ref(),
        "--comment".as_ref(),
        format!("approved by {name}, SEC-42").as_ref(),
    ])?;
    ensure!(out.status.success(), "dfdwatch sign: {out:?}");
    Ok(())
}

fn verify(dir: &Path, keys: &[&Path], required: usize) -> Result<std::process::Output> {
    let mut args: Vec<std::ffi::OsString> = vec!["verify".into(), dir.into()];
    for k in keys {
        args.extend(["--trust-key".into(), k.as_os_str().to_owned()]);
    }
    args.extend(["--required".into(), required.to_string().into()]);
    run_to_exit(&args)
}

#[test]
fn dfdwatch_and_minisign_read_each_others_signatures_and_one_byte_is_refused() -> Result<()> {
    let scratch = sys::scratch_dir("signing-cli")?;
    // The shipped demo DFD, copied.
    let dfd = scratch.join("dfd");
    std::fs::create_dir_all(&dfd)?;
    let demo = sys::workspace_root().join("approved-dfd/demo");
    let mut first = None;
    for entry in std::fs::read_dir(&demo)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().context("file name")?.to_owned();
            std::fs::copy(&path, dfd.join(&name))?;
            first = first.max(Some(name));
        }
    }
    let changed = first.context("no demo DFD file")?;
    let (alice_pub, alice_key) = keypair(&scratch, "alice")?;
    let (bob_pub, bob_key) = keypair(&scratch, "bob")?;

    sign(&dfd, &alice_key, "alice")?;
    // The minisign tool verifies what dfdwatch signed ...
    let sig = dfd.join("dfd.sha256.alice.minisig");
    let out = Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&alice_pub)
        .arg("-m")
        .arg(dfd.join("dfd.sha256"))
        .arg("-x")
        .arg(&sig)
        .output()?;
    ensure!(out.status.success(), "minisign -V on dfdwatch's signature: {out:?}");
    // ... and dfdwatch verifies what the minisign tool signed.
    let out = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(&bob_key)
        .arg("-m")
        .arg(dfd.join("dfd.sha256"))
        .arg("-x")
        .arg(dfd.join("dfd.sha256.bob.minisig"))
        .args(["-t", "bob approves SEC-42"])
        .output()?;
    ensure!(out.status.success(), "minisign -S: {out:?}");
    let out = verify(&dfd, &[&alice_pub, &bob_pub], 2)?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "two approvers verify: {out:?}");
    ensure!(text.contains("approved by alice, SEC-42") && text.contains("bob approves SEC-42"), "{text}");
    // Only one trusted key signed for --required 2 with alice and a stranger.
    let (stranger, _) = keypair(&scratch, "stranger")?;
    ensure!(verify(&dfd, &[&alice_pub, &stranger], 2)?.status.code() == Some(1), "one of two required");

    // One byte changed after signing.
    let mut bytes = std::fs::read(dfd.join(&changed))?;
    let at = bytes.iter().position(u8::is_ascii_digit).context("a digit")?;
    bytes[at] = if bytes[at] == b'9' { b'8' } else { b'9' };
    std::fs::write(dfd.join(&changed), &bytes)?;
    let out = verify(&dfd, &[&alice_pub], 1)?;
    let want = format!("{} differs from the signed content", changed.to_string_lossy());
    ensure!(out.status.code() == Some(1), "a changed byte is refused: {out:?}");
    ensure!(String::from_utf8_lossy(&out.stderr).contains(&want), "{out:?}");
    Ok(())
}

#[test]
fn a_daemon_that_requires_signatures_refuses_unsigned_and_half_written_dfds() -> Result<()> {
    let _serial = lab::exclusive();
    let s = ClientServer::with_nginx("signing-daemon", &[80, 8080])?;
    let dfd = s.dir.join("dfd");
    std::fs::create_dir_all(&dfd)?;
    let port80 =
        s.worker_web_dfd("signed", &ClientServer::flow("worker-to-web", "worker", "web", "{port: 80, protocol: TCP}"));
    std::fs::write(dfd.join("dfd.yaml"), &port80)?;
    let (public, secret) = keypair(&s.dir, "approver")?;
    let args = |dfd: &Path| -> Vec<String> {
        vec![
            "--dfd".into(),
            dfd.display().to_string(),
            "--dfd-trust-key".into(),
            public.display().to_string(),
            "--dfd-watch-interval-secs".into(),
            "1".into(),
        ]
    };

    // Unsigned: refused at start, with the reason.
    let mut run: Vec<String> =
        vec!["run".into(), "--no-metrics".into(), "--state-dir".into(), s.dir.join("state").display().to_string()];
    run.extend(args(&dfd));
    let out = run_to_exit(&run)?;
    ensure!(out.status.code() == Some(78), "an unsigned DFD is refused at start: {out:?}");
    ensure!(String::from_utf8_lossy(&out.stderr).contains("the DFD is not signed"), "{out:?}");

    sign(&dfd, &secret, "approver")?;
    let daemon = Daemon::start("signing-daemon", &DaemonOptions { extra_args: args(&dfd), ..Default::default() })?;
    daemon.wait_log("approved DFD signed by a trusted key", 1)?;

    // A change no approver signed (port 8080 added): refused, the running DFD stays.
    let port8080 =
        port80.replace("{port: 80, protocol: TCP}", "{port: 80, protocol: TCP}, {port: 8080, protocol: TCP}");
    ensure!(port8080 != port80, "the DFD text changed");
    std::fs::write(dfd.join("dfd.yaml"), &port8080)?;
    daemon.wait_metric("dfdwatch_dfd_reloads_total{result=\"refused\"}", |v| v == 1.0)?;
    daemon.wait_log("dfd.yaml differs from the signed content", 1)?;

    // The approver signs the change elsewhere; the manifest and signature arrive first, then the
    // DFD file in two halves with a pause: the half file never verifies, so it is never applied.
    let staging = s.dir.join("staging");
    std::fs::create_dir_all(&staging)?;
    std::fs::write(staging.join("dfd.yaml"), &port8080)?;
    sign(&staging, &secret, "approver")?;
    let half = port80.len() / 2;
    std::fs::write(dfd.join("dfd.yaml"), &port8080.as_bytes()[..half])?;
    for name in ["dfd.sha256", "dfd.sha256.approver.minisig"] {
        std::fs::copy(staging.join(name), dfd.join(name))?;
    }
    daemon.wait_metric("dfdwatch_dfd_reloads_total{result=\"refused\"}", |v| v == 2.0)?;
    std::thread::sleep(Duration::from_millis(2500));
    let text = daemon.metrics()?;
    ensure!(
        tests::daemon::metric(&text, "dfdwatch_dfd_reloads_total{result=\"applied\"}") == Some(0.0),
        "nothing applied:\n{text}"
    );
    std::fs::write(dfd.join("dfd.yaml"), &port8080)?;
    daemon.wait_metric("dfdwatch_dfd_reloads_total{result=\"applied\"}", |v| v == 1.0)?;
    let done = daemon.stop()?;
    ensure!(done.log.matches("approved DFD signed by a trusted key").count() == 2, "{}", done.log);
    Ok(())
}
