//! Whole JSON lines to a file or a stream, for the events and alert sinks. A sink hands over
//! whole lines ([`LineSink::push`]); they wait in a bounded buffer until [`LineSink::flush`]
//! writes them. What reaches the output is whole lines only: when a file write stops part-way
//! (a full disk), the partial line is cut off again (`ftruncate`) and the unwritten lines stay
//! buffered for the next flush, so a file never holds a spliced or cut line, and the sinks count
//! a line as written only once the kernel took all of it. A buffer that is full drops new lines
//! and says so to the caller, which counts them.
//!
//! Files rotate by size between flushes (`alerts.jsonl` becomes `.1`, `.1` becomes `.2`, up to
//! `keep` old files), are synced as the [`FsyncPolicy`] says, and are opened 0600 without
//! following a symbolic link.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
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

/// Lines a sink keeps while its output refuses them (a full disk): about a minute of a busy
/// node's records. Beyond it, new lines are dropped and counted.
pub const PENDING_BYTES: usize = 4 << 20;

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

/// Where a [`LineSink`] writes.
pub trait LineOutput: Send {
    /// Writes from the start of `buf` (whole lines); returns how many bytes the output holds
    /// now, and the error that stopped it short, if any. A file cuts a partial line off again,
    /// so its count always ends at a line boundary; a stream cannot, and the rest of the line
    /// follows on the next call.
    fn write_lines(&mut self, buf: &[u8]) -> (usize, Option<std::io::Error>);

    /// Forces written lines to stable storage, if the output and its policy want that.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// Bytes of `buf` written with repeated `write` calls until done or an error.
fn write_some(out: &mut impl Write, buf: &[u8]) -> (usize, Option<std::io::Error>) {
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => return (done, Some(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// A stream output (stdout, or anything that implements `Write`): no rotation, no truncation.
pub struct Stream<W>(pub W);

impl<W: Write + Send> LineOutput for Stream<W> {
    fn write_lines(&mut self, buf: &[u8]) -> (usize, Option<std::io::Error>) {
        let (n, error) = write_some(&mut self.0, buf);
        match error {
            Some(e) => (n, Some(e)),
            None => (n, self.0.flush().err()),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An append-only file with size-based rotation and an fsync policy.
pub struct LineFile {
    path: PathBuf,
    file: File,
    size: u64,
    /// Rotate once the file holds this many bytes; 0 never rotates.
    max_bytes: u64,
    keep: u32,
    fsync: FsyncPolicy,
    last_sync: Instant,
}

impl LineFile {
    /// Opens `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, keep: u32, fsync: FsyncPolicy) -> std::io::Result<Self> {
        let file = open_for_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), file, size, max_bytes, keep, fsync, last_sync: Instant::now() })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.fsync != FsyncPolicy::Never {
            self.file.sync_data()?;
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
        self.file = open_for_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }
}

impl LineOutput for LineFile {
    fn write_lines(&mut self, buf: &[u8]) -> (usize, Option<std::io::Error>) {
        if self.max_bytes > 0
            && self.size >= self.max_bytes
            && let Err(e) = self.rotate()
        {
            return (0, Some(e));
        }
        let (n, error) = write_some(&mut self.file, buf);
        let Some(error) = error else {
            self.size += n as u64;
            return (n, None);
        };
        // Cut the partial line off again: the file ends at a line boundary.
        let whole = buf[..n].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < n
            && let Err(e) = self.file.set_len(self.size + whole as u64)
        {
            // Nothing more can be done for this line; the next one starts on a line of its own
            // so that readers lose one line, not two.
            tracing::error!(file = %crate::escape::escape_bytes(self.path.as_os_str().as_encoded_bytes()), error = %e, "could not cut off a partial line");
            let _ = self.file.write_all(b"\n");
        }
        self.size += whole as u64;
        (whole, Some(error))
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let due = match self.fsync {
            FsyncPolicy::Every => true,
            FsyncPolicy::Interval => self.last_sync.elapsed() >= SYNC_INTERVAL,
            FsyncPolicy::Never => false,
        };
        if due {
            self.file.sync_data()?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }
}

/// Whole lines waiting for their output, each with what the caller wants back once it is
/// written (`T`: a timestamp for the latency histogram, or nothing).
pub struct LineSink<T> {
    out: Box<dyn LineOutput>,
    pending: Vec<u8>,
    /// Each pending line's end offset in `pending`, and its tag.
    lines: VecDeque<(usize, T)>,
    limit: usize,
    /// When the output last refused lines; `None` once it takes them again.
    refused_at: Option<Instant>,
}

/// Pending bytes that make a write due even while lines keep coming (a busy stream must not fill
/// the buffer before the queue runs empty).
const WRITE_AT: usize = 64 * 1024;
/// After the output refused lines, how long before a size-due write is tried again (the
/// writers also retry every second on their own).
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl<T> LineSink<T> {
    /// A sink writing to `out`, buffering at most `limit` bytes.
    pub fn new(out: Box<dyn LineOutput>, limit: usize) -> Self {
        Self { out, pending: Vec::new(), lines: VecDeque::new(), limit, refused_at: None }
    }

    /// Queues one line (a newline is added). Returns false, queuing nothing, when the buffer
    /// is full.
    pub fn push(&mut self, line: &[u8], tag: T) -> bool {
        if !self.pending.is_empty() && self.pending.len() + line.len() + 1 > self.limit {
            return false;
        }
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
        self.lines.push_back((self.pending.len(), tag));
        true
    }

    /// Whether enough is pending to write now, without waiting for the queue to run empty;
    /// not while the output refuses lines (until [`RETRY_AFTER`] has passed).
    pub fn due(&self) -> bool {
        self.pending.len() >= WRITE_AT && self.refused_at.is_none_or(|t| t.elapsed() >= RETRY_AFTER)
    }

    /// Lines waiting.
    pub fn pending_lines(&self) -> usize {
        self.lines.len()
    }

    /// Writes what is pending; `written` gets the tag of each line now whole in the output.
    /// Lines not written stay for the next call.
    pub fn flush(&mut self, mut written: impl FnMut(T)) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (n, error) = self.out.write_lines(&self.pending);
        self.pending.drain(..n);
        while let Some((end, _)) = self.lines.front()
            && *end <= n
        {
            if let Some((_, tag)) = self.lines.pop_front() {
                written(tag);
            }
        }
        for (end, _) in &mut self.lines {
            *end -= n;
        }
        match error {
            Some(e) => {
                self.refused_at = Some(Instant::now());
                Err(e)
            }
            None => {
                self.refused_at = None;
                self.out.sync()
            }
        }
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
        let file = LineFile::open(&path, 100, 2, FsyncPolicy::Every).unwrap();
        let mut sink = LineSink::new(Box::new(file), PENDING_BYTES);
        let mut written = 0;
        for i in 0..40 {
            assert!(sink.push(format!("{{\"line\":{i:3},\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}").as_bytes(), ()));
            sink.flush(|()| written += 1).unwrap();
        }
        assert_eq!(written, 40);
        drop(sink);
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

    /// A stream that takes `room` bytes, then refuses everything until given more room.
    struct Cramped {
        taken: std::sync::Arc<std::sync::Mutex<(Vec<u8>, usize)>>,
    }

    impl Write for Cramped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut t = self.taken.lock().unwrap();
            if t.1 == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(t.1);
            t.0.extend_from_slice(&buf[..n]);
            t.1 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_busy_stream_is_written_by_size_and_a_refusing_output_is_not_hammered() {
        let taken = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), usize::MAX)));
        let mut sink = LineSink::new(Box::new(Stream(Cramped { taken: taken.clone() })), PENDING_BYTES);
        let line = [b'x'; 1000];
        let mut pushed = 0;
        while !sink.due() {
            assert!(sink.push(&line, ()));
            pushed += 1;
        }
        assert_eq!(pushed, WRITE_AT.div_ceil(1001), "due once 64 KiB wait");
        sink.flush(|()| {}).unwrap();
        assert!(!sink.due());
        taken.lock().unwrap().1 = 0;
        for _ in 0..pushed {
            assert!(sink.push(&line, ()));
        }
        assert!(sink.flush(|()| {}).is_err(), "refused");
        assert!(!sink.due(), "not tried again at once after a refusal");
    }

    #[test]
    fn lines_are_counted_once_whole_kept_while_refused_and_dropped_beyond_the_limit() {
        let taken = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), 10)));
        let mut sink = LineSink::new(Box::new(Stream(Cramped { taken: taken.clone() })), 32);
        let mut done = Vec::new();
        assert!(sink.push(b"aaaaaa", 1));
        assert!(sink.push(b"bbbbbb", 2));
        assert!(sink.flush(|t| done.push(t)).is_err(), "the output ran out of room");
        assert_eq!(done, [1], "the first line is whole, the second is not");
        assert_eq!(sink.pending_lines(), 1);
        assert!(sink.push(b"cccccc", 3));
        assert!(!sink.push(&[b'd'; 30], 4), "the buffer is full: the line is refused");
        taken.lock().unwrap().1 = 100;
        sink.flush(|t| done.push(t)).unwrap();
        assert_eq!(done, [1, 2, 3]);
        assert_eq!(taken.lock().unwrap().0, b"aaaaaa\nbbbbbb\ncccccc\n", "the partial line was completed, in order");
    }
}
