//! The container image without a Docker engine: deploy/Dockerfile pins what xtask pins and builds
//! the way xtask does, that build runs here and its binary needs only what the runtime stage has,
//! and the daemon works with exactly the capabilities the chart grants.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tests::chart::{self, Scratch, path_str};
use tests::{daemon, sys};

fn read(rel: &str) -> Result<String> {
    std::fs::read_to_string(sys::workspace_root().join(rel)).with_context(|| format!("read {rel}"))
}

/// The string value of `pub const NAME: &str = "...";` (or `const NAME`) in Rust source.
fn rust_const(source: &str, name: &str) -> Result<String> {
    let line = source
        .lines()
        .find(|l| l.contains(&format!("const {name}: &str = ")))
        .with_context(|| format!("no const {name}"))?;
    Ok(line.split('"').nth(1).context("const value")?.to_owned())
}

fn dockerfile_arg(dockerfile: &str, name: &str) -> Result<String> {
    let prefix = format!("ARG {name}=");
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(&prefix))
        .with_context(|| format!("no {prefix} in deploy/Dockerfile"))?;
    Ok(line[prefix.len()..].trim().to_owned())
}

/// The Dockerfile's `RUN cargo build ...` command, as words.
fn dockerfile_build(dockerfile: &str) -> Result<Vec<String>> {
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with("RUN cargo build "))
        .context("no `RUN cargo build` in deploy/Dockerfile")?;
    Ok(line["RUN ".len()..].split_whitespace().map(str::to_owned).collect())
}

#[test]
fn dockerfile_pins_and_build_match_xtask() -> Result<()> {
    let docker = read("deploy/Dockerfile")?;
    let pins = read("xtask/src/toolchain.rs")?;
    for (arg, constant) in [
        ("RUST_STABLE", "STABLE"),
        ("EBPF_NIGHTLY", "EBPF_NIGHTLY"),
        ("BPF_LINKER_VERSION", "BPF_LINKER_VERSION"),
        ("LLVM_PREFIX", "LLVM_PREFIX"),
    ] {
        let (want, have) = (rust_const(&pins, constant)?, dockerfile_arg(&docker, arg)?);
        ensure!(want == have, "deploy/Dockerfile ARG {arg}={have}, but xtask/src/toolchain.rs {constant} is {want}");
    }
    ensure!(
        rust_const(&read("monitor-user/build.rs")?, "EBPF_TOOLCHAIN")? == rust_const(&pins, "EBPF_NIGHTLY")?,
        "monitor-user/build.rs and xtask disagree on the eBPF nightly"
    );
    // bpf-linker's build packages: DEBIAN_PACKAGES up to the tests' own.
    let packages = pins
        .split("DEBIAN_PACKAGES")
        .nth(1)
        .and_then(|s| s.split("// tests and demo").next())
        .context("DEBIAN_PACKAGES")?;
    for package in packages.split('"').skip(1).step_by(2) {
        ensure!(
            docker.contains(&format!(" {package}")),
            "deploy/Dockerfile does not install {package}, which xtask's bpf-linker build needs"
        );
    }
    let llvm = rust_const(&pins, "LLVM_PREFIX")?.rsplit('-').next().context("LLVM version")?.to_owned();
    ensure!(
        docker.contains(&format!("--features llvm-{llvm}"))
            && read("xtask/src/setup.rs")?.contains(&format!("\"llvm-{llvm}\"")),
        "bpf-linker's LLVM feature"
    );
    // The build: xtask's `cargo build --package monitor-user`, in release.
    let xtask = read("xtask/src/cmd.rs")?;
    let build = xtask
        .split("pub fn build_daemon")
        .nth(1)
        .and_then(|s| s.split("args([").nth(1))
        .and_then(|s| s.split("])").next())
        .context("build_daemon's args")?;
    let xtask_args: Vec<&str> = build.split('"').skip(1).step_by(2).collect();
    let docker_args = dockerfile_build(&docker)?;
    let docker_args: Vec<&str> =
        docker_args[1..].iter().map(String::as_str).filter(|a| *a != "--release" && *a != "--locked").collect();
    ensure!(docker_args == xtask_args, "deploy/Dockerfile builds with {docker_args:?}, xtask with {xtask_args:?}");
    ensure!(
        docker.contains("COPY --from=build /src/target/release/dfdwatch "),
        "the runtime stage must take the release binary"
    );
    Ok(())
}

/// Shared libraries the runtime stage (distroless/cc-debian12: glibc, libgcc_s) provides.
const RUNTIME_LIBRARIES: [&str; 8] = [
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
];

#[test]
fn image_binary_builds_as_the_dockerfile_does_and_needs_only_the_runtime_libraries() -> Result<()> {
    let words = dockerfile_build(&read("deploy/Dockerfile")?)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status =
        Command::new(cargo).args(&words[1..]).current_dir(sys::workspace_root()).status().context("run cargo")?;
    ensure!(status.success(), "`{}` failed", words.join(" "));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| sys::workspace_root().join("target"), PathBuf::from);
    let binary = target.join("release/dfdwatch");
    let ldd = sys::run("ldd", &[path_str(&binary)?])?;
    for lib in ldd.lines().filter_map(|l| l.split_whitespace().next()) {
        let name = lib.rsplit('/').next().unwrap_or(lib);
        ensure!(
            RUNTIME_LIBRARIES.contains(&name),
            "the release binary needs {name}, which the runtime image does not have:\n{ldd}"
        );
    }
    let help = sys::run(path_str(&binary)?, &["run", "--help"])?;
    ensure!(help.contains("--kube-in-cluster"), "dfdwatch run --help");
    Ok(())
}

/// The capabilities the chart's DaemonSet adds, as setpriv names (`+bpf,+perfmon,...`).
fn chart_capabilities(dir: &std::path::Path) -> Result<String> {
    let r = chart::render(dir, "caps", &[])?;
    let ds = r.object("DaemonSet", None)?;
    let add = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
        .as_array()
        .context("capabilities")?;
    let caps: Vec<String> =
        add.iter().filter_map(|c| c.as_str()).map(|c| format!("+{}", c.to_ascii_lowercase())).collect();
    Ok(caps.join(","))
}

/// A free loopback port.
/// A child process ended (SIGTERM, then reaped) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        sys::signal(self.0.id(), libc::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Runs `argv` as the unprivileged user nobody (65534), as another user's workloads run.
fn as_nobody(argv: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).args(argv);
    cmd
}

#[test]
fn daemon_works_with_only_the_charts_capabilities() -> Result<()> {
    sys::require_root()?;
    let scratch = Scratch::new("image-caps")?;
    let dir = scratch.0.clone();
    let caps = chart_capabilities(&dir)?;
    let port = sys::free_port()?.to_string();
    // A server of another user that listens before the daemon starts (seeded from /proc).
    let python = "/usr/bin/python3";
    ensure!(std::path::Path::new(python).exists(), "{python} (Debian's python3) is needed for the test server");
    let _server = Child(
        as_nobody(&[python, "-m", "http.server", "--bind", "127.0.0.1", &port, "--directory", "/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the test server")?,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        ensure!(std::time::Instant::now() < deadline, "the test server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon as the container runs it: root with only the chart's capabilities (bounding set
    // and so permitted and effective set), no inheritable ones, no new privileges.
    let bin = daemon::binary()?;
    let wrapper = dir.join("dfdwatch-with-chart-caps");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set=-all,{caps} --inh-caps=-all --no-new-privs -- {} \"$@\"\n",
            bin.display()
        ),
    )?;
    sys::run("chmod", &["755", path_str(&wrapper)?])?;
    // SAFETY: set before any thread of this test reads DFDWATCH_BIN; each test binary is its own process.
    unsafe { std::env::set_var("DFDWATCH_BIN", &wrapper) };
    let d = daemon::Daemon::start("chart-caps", &daemon::DaemonOptions::default());
    let d = match d {
        Ok(d) => d,
        Err(e) => bail!("the daemon did not start with the chart's capabilities ({caps}): {e:#}"),
    };
    // Two requests a second apart keep curl alive after its first connect, so the daemon can read
    // its /proc/PID/exe even on a loaded machine (a process gone by then has no exe to read).
    let url = format!("http://127.0.0.1:{port}/");
    let client =
        as_nobody(&["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "--rate", "1/s", &url, &url]).status()?;
    ensure!(client.success(), "curl to the test server failed");
    let port_num: u64 = port.parse()?;
    let events =
        d.wait_for(Duration::from_secs(5), |ev| ev.iter().filter(|e| e["dst"]["port"] == port_num).count() >= 2)?;
    // The harness keeps its daemon's scratch directory (events, log); this test removes it.
    let daemon_dir = d.log_path().parent().map(std::path::Path::to_path_buf);
    let finished = d.stop();
    if let Some(daemon_dir) = daemon_dir {
        let _ = std::fs::remove_dir_all(daemon_dir);
    }
    let finished = finished?;
    let find = |kind: &str| events.iter().find(|e| e["dst"]["port"] == port_num && e["kind"] == kind).cloned();
    let connect = find("connect").with_context(|| format!("no connect event; log:\n{}", finished.log))?;
    let accept = find("accept").with_context(|| format!("no accept event; log:\n{}", finished.log))?;
    // Another user's executable needs CAP_SYS_PTRACE; its cgroup path needs nothing.
    ensure!(connect["local"]["exe"] == "/usr/bin/curl", "with {caps}, the client's exe is unknown: {connect}");
    ensure!(connect["local"]["cgroup_path"].is_string(), "with {caps}, the client's cgroup is unknown: {connect}");
    // Seeding another user's listener reads its /proc/PID/fd: CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE.
    ensure!(
        accept["local"]["attribution"] == "listener",
        "with {caps}, the server's listener was not seeded: {accept}"
    );
    ensure!(
        accept["local"]["exe"].as_str().is_some_and(|e| e.contains("python3")),
        "with {caps}, the server's exe is unknown: {accept}"
    );
    Ok(())
}
