//! An append-only JSON Lines file with size-based rotation and an fsync policy, for the alert
//! file. Rotation happens only between lines, once the file has reached its size: `alerts.jsonl`
//! becomes `alerts.jsonl.1`, `.1` becomes `.2`, and so on up to `keep` old files; the oldest is
//! removed. Files are created 0600.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// When written lines are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// fdatasync after every batch of lines, before the writer waits for more.
    Every,
    /// fdatasync at most once per second (a crash loses at most about a second of lines).
    Interval,
    /// Leave it to the kernel's writeback.
    Never,
}

/// How often [`FsyncPolicy::Interval`] syncs.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The file and its rotation settings.
pub struct RotatingFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    /// Rotate once the file holds this many bytes; 0 never rotates.
    max_bytes: u64,
    keep: u32,
    fsync: FsyncPolicy,
    last_sync: Instant,
    at_line_start: bool,
}

/// Opens `path` for appending, created 0600 if missing, refusing to follow a symbolic link: a
/// link planted where the daemon writes would make it append to any file it names. The one way
/// every sink opens its file.
pub fn open_for_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other("it is a symbolic link, and dfdwatch does not follow links for the files it writes: give the link's target")
            } else {
                e
            }
        })
}

fn open_append(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let file = open_for_append(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

impl RotatingFile {
    /// Opens `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, keep: u32, fsync: FsyncPolicy) -> std::io::Result<Self> {
        let (out, size) = open_append(path)?;
        Ok(Self {
            path: path.to_owned(),
            out,
            size,
            max_bytes,
            keep,
            fsync,
            last_sync: Instant::now(),
            at_line_start: true,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.fsync != FsyncPolicy::Never {
            self.out.get_ref().sync_data()?;
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let (out, size) = open_append(&self.path)?;
        self.out = out;
        self.size = size;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.at_line_start && self.max_bytes > 0 && self.size >= self.max_bytes {
            self.rotate()?;
        }
        let n = self.out.write(buf)?;
        self.size += n as u64;
        self.at_line_start = buf[n - 1] == b'\n';
        Ok(n)
    }

    /// Flushes the buffer, then syncs as the policy says.
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let due = match self.fsync {
            FsyncPolicy::Every => true,
            FsyncPolicy::Interval => self.last_sync.elapsed() >= SYNC_INTERVAL,
            FsyncPolicy::Never => false,
        };
        if due {
            self.out.get_ref().sync_data()?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_between_lines_and_keeps_the_newest_files() {
        let dir = std::env::temp_dir().join(format!("dfdwatch-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alerts.jsonl");
        let mut f = RotatingFile::open(&path, 100, 2, FsyncPolicy::Every).unwrap();
        for i in 0..40 {
            // Written in two pieces, as serde does: rotation must not split a line.
            write!(f, "{{\"line\":{i:3},").unwrap();
            writeln!(f, "\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}").unwrap();
            f.flush().unwrap();
        }
        drop(f);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let (cur, one, two) = (read(&path), read(&dir.join("alerts.jsonl.1")), read(&dir.join("alerts.jsonl.2")));
        assert!(!dir.join("alerts.jsonl.3").exists(), "only `keep` old files stay");
        for text in [&cur, &one, &two] {
            assert!(text.len() <= 100 + 40, "a file stops growing at the first line boundary past the limit");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(v["line"].is_u64());
            }
        }
        let last: Vec<u64> = cur
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_u64().unwrap())
            .collect();
        assert_eq!(last.last(), Some(&39), "the newest line is in the current file");
        let first_of_one: serde_json::Value = serde_json::from_str(one.lines().next().unwrap()).unwrap();
        let first_of_two: serde_json::Value = serde_json::from_str(two.lines().next().unwrap()).unwrap();
        assert!(first_of_two["line"].as_u64() < first_of_one["line"].as_u64(), ".2 is older than .1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
