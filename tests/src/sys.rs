//! Small system helpers for the harness: running commands, the root check, inode numbers.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Runs a command to completion and fails with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and ignores its outcome (cleanup paths).
pub fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

/// Fails unless the process runs as root: these tests load eBPF programs and build network
/// namespaces. CI runs them as root; they never skip.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the dfdwatch kernel tests need root (they load eBPF programs and create network \
             namespaces and cgroups); run them with `sudo cargo xtask test`"
        );
    }
    Ok(())
}

/// The inode number of a path (a cgroup directory's inode is its cgroup id; a netns file's inode
/// is the namespace's number).
pub fn inode(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?.ino())
}

/// The cgroup v2 mount point, read from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mount) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mount));
        }
    }
    bail!("no cgroup2 mount in /proc/self/mountinfo")
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch directory under target/lab, removed when dropped (also when a test fails). Derefs
/// to its path.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh, empty scratch directory named after `tag`.
    pub fn new(tag: &str) -> Result<Self> {
        scratch_dir(tag)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty scratch directory under the target directory, named after `tag`; removed when
/// the returned guard drops.
pub fn scratch_dir(tag: &str) -> Result<Scratch> {
    let dir = workspace_root().join("target").join("lab").join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(Scratch(dir))
}

/// A TCP port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `path` holds `needle` at least `times` times; returns the text then.
pub fn wait_for_text(path: &Path, needle: &str, times: usize, timeout: std::time::Duration) -> Result<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return Ok(text);
        }
        if std::time::Instant::now() > deadline {
            bail!("no {times}x `{needle}` in {} after {timeout:?}:\n{text}", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A kubeconfig for the API server at `url`, without credentials (the stand-in's).
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: stand-in, user: u}}\ncurrent-context: c\n"
    )
}

/// Sends `signal` to `pid` (a process this harness started).
pub fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory preconditions; the pid is one of our own children.
        unsafe { libc::kill(pid, signal) };
    }
}

/// The source of every metric the daemon defines (the files of `monitor-user/src/telemetry/`,
/// and the flow store's `metrics.rs` and `clickhouse.rs`), for tests that check that
/// dashboards and rules query only metrics that exist.
pub fn metric_definitions() -> Result<String> {
    let src = workspace_root().join("monitor-user/src");
    let dir = src.join("telemetry");
    let mut text = String::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    text.push_str(&std::fs::read_to_string(src.join("store/metrics.rs"))?);
    text.push_str(&std::fs::read_to_string(src.join("store/clickhouse.rs"))?);
    Ok(text)
}

/// Waits (5 s at most) until process `pid` runs a program whose path ends with `name`, and the
/// kernel's exec tracking has recorded it.
pub fn wait_until_exe(pid: u32, name: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/exe")).map(|e| !e.ends_with(name)).unwrap_or(true) {
        if std::time::Instant::now() > deadline {
            bail!("process {pid} did not exec {name}");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // /proc shows the new image a moment before the exec tracepoint has recorded it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    Ok(())
}

/// A thread of `pid` by its name (`/proc/PID/task/*/comm`).
pub fn thread_named(pid: u32, name: &str) -> Result<i32> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        if std::fs::read_to_string(entry.path().join("comm"))?.trim() == name {
            return Ok(entry.file_name().to_string_lossy().parse()?);
        }
    }
    bail!("no thread {name} in process {pid}")
}

/// Stops one thread of another process with ptrace (PTRACE_SEIZE, PTRACE_INTERRUPT: no signal,
/// the other threads run on) until dropped.
pub struct FrozenThread(i32);

impl FrozenThread {
    /// Stops thread `tid`; it runs on when the value is dropped.
    pub fn freeze(tid: i32) -> Result<Self> {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: ptrace requests on a thread id, with no memory passed.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, null, null) } != 0 {
            bail!("PTRACE_SEIZE {tid}: {}", std::io::Error::last_os_error());
        }
        let frozen = Self(tid);
        // SAFETY: as above.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null) } != 0 {
            bail!("PTRACE_INTERRUPT {tid}: {}", std::io::Error::last_os_error());
        }
        let mut status = 0;
        // SAFETY: waits for the tracee's stop; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(tid, &raw mut status, libc::__WALL) } != tid {
            bail!("waitpid {tid}: {}", std::io::Error::last_os_error());
        }
        Ok(frozen)
    }
}

impl Drop for FrozenThread {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaching our own tracee lets it run on.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, null, null) };
    }
}

/// A tmpfs of 1 MiB, filled to the last byte but one page; unmounted when dropped, also on
/// failure.
pub struct FullFs(pub PathBuf);

impl FullFs {
    /// Mounts it at `at` and fills it.
    pub fn mount(at: &Path) -> Result<Self> {
        std::fs::create_dir_all(at)?;
        run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &at.display().to_string()])?;
        let fs = Self(at.to_owned());
        let filler = fs.filler();
        let out = std::process::Command::new("dd")
            .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
            .output()?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stderr).contains("No space left"),
            "dd did not fill the tmpfs: {out:?}"
        );
        // One page left: the first lines fit, and the one that crosses the page's end is cut
        // by the full disk, as when a real disk fills up under a busy writer.
        let f = std::fs::OpenOptions::new().write(true).open(&filler)?;
        f.set_len(f.metadata()?.len().saturating_sub(4096))?;
        Ok(fs)
    }

    /// The file that fills it.
    pub fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }

    /// Space is back.
    pub fn free(&self) -> Result<()> {
        Ok(std::fs::remove_file(self.filler())?)
    }
}

impl Drop for FullFs {
    fn drop(&mut self) {
        run_quiet("umount", &[&self.0.display().to_string()]);
    }
}
