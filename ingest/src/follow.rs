//! Follow mode (`--follow`, like `tail -f`): read a regular file from the
//! start and, at its end, wait for more lines instead of ending.
//!
//! Waiting is done by checking the file's size every `poll_interval` (50 ms
//! by default): it needs no inotify support, works on every file system
//! (NFS and overlay included) and costs one `fstat` per interval while idle.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::export::{Frame, Framer, Next, ReadStats};

/// Default interval between two size checks while waiting for more data.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Reads complete lines of a file that another process is appending to.
///
/// A last line without `\n` is held until its `\n` arrives (a writer may be
/// in the middle of it). When the file shrinks below what was read, reading
/// starts again from offset 0 and [`Next::Truncated`] is returned once. When
/// the stop flag is set, the reader returns what the file holds at that
/// moment (a final line without `\n` included, the crate's policy) and then
/// [`Next::End`].
pub struct FollowReader {
    file: File,
    framer: Framer,
    /// File offset of the next read.
    pos: u64,
    line: u64,
    stop: Option<Arc<AtomicBool>>,
    poll_interval: Duration,
    /// The stop flag was seen: read to the current end of file, then end.
    stopping: bool,
    ended: bool,
    stats: ReadStats,
}

impl FollowReader {
    /// Opens `path` for following, with lines of at most `max_len` bytes.
    pub fn open(path: &Path, max_len: usize) -> io::Result<FollowReader> {
        Ok(Self::from_file(File::open(path)?, max_len))
    }

    /// Follows an open file from its beginning (the file is rewound first).
    pub fn from_file(mut file: File, max_len: usize) -> FollowReader {
        // A fresh `File` is at offset 0; a seek failure (not a regular
        // file) shows up again at the first read.
        let _ = file.seek(SeekFrom::Start(0));
        FollowReader {
            file,
            framer: Framer::new(max_len),
            pos: 0,
            line: 0,
            stop: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            stopping: false,
            ended: false,
            stats: ReadStats::default(),
        }
    }

    /// Stops following once `stop` becomes true (checked while waiting).
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> FollowReader {
        self.stop = Some(stop);
        self
    }

    /// Sets the interval between two size checks while waiting.
    pub fn with_poll_interval(mut self, interval: Duration) -> FollowReader {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The 1-based number of the line returned last (restarts after truncation).
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// The first bytes (at most [`crate::OVERSIZED_HEAD_LEN`]) of the line
    /// last returned as [`Next::Oversized`].
    pub fn oversized_head(&self) -> &[u8] {
        self.framer.oversized_head()
    }

    /// System-call counts so far (`polls` counts size checks).
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// The next line, waiting at most `timeout` for one to be completed
    /// (`None`: until one is, or until the stop flag is set).
    pub fn next_record(&mut self, timeout: Option<Duration>) -> io::Result<Next<'_>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let frame = match self.framer.frame() {
                Frame::NeedMore if self.ended => match self.framer.take_rest() {
                    Some(f) => f,
                    None => return Ok(Next::End),
                },
                f => f,
            };
            match frame {
                Frame::Line(s, e) => {
                    self.line += 1;
                    self.stats.records += 1;
                    return Ok(Next::Record(self.framer.slice(s, e)));
                }
                Frame::Oversized(n) => {
                    self.line += 1;
                    self.stats.records += 1;
                    self.stats.oversized += 1;
                    return Ok(Next::Oversized(n));
                }
                Frame::NeedMore => {}
            }
            let n = match self.file.read(self.framer.spare()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.stats.reads += 1;
            if n > 0 {
                self.stats.bytes += n as u64;
                self.pos += n as u64;
                self.framer.filled(n);
                continue;
            }
            // At the end of the file, as far as it has been written.
            if self.stopping {
                self.ended = true;
                continue;
            }
            self.stats.polls += 1;
            if self.file.metadata()?.len() < self.pos {
                self.file.seek(SeekFrom::Start(0))?;
                self.stats.seeks += 1;
                self.framer.clear();
                self.pos = 0;
                self.line = 0;
                return Ok(Next::Truncated);
            }
            if self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Acquire))
            {
                // One more read takes what was appended before the stop.
                self.stopping = true;
                continue;
            }
            let wait = match deadline {
                // No timeout (or one too large to represent): wait on.
                None => self.poll_interval,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Next::Idle);
                    }
                    left.min(self.poll_interval)
                }
            };
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tsem-follow-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        std::fs::write(&path, b"").unwrap();
        path
    }

    fn text(n: Next<'_>) -> String {
        match n {
            Next::Record(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("expected a line, got {other:?}"),
        }
    }

    #[test]
    fn follows_appends_and_holds_partial_lines() {
        let path = temp_file("append");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(b"one\ntw").unwrap();
                std::thread::sleep(Duration::from_millis(80));
                f.write_all(b"o\nthree\n").unwrap();
                std::thread::sleep(Duration::from_millis(80));
                f.write_all(b"four").unwrap();
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut r = FollowReader::open(&path, 1 << 20)
            .unwrap()
            .with_stop(stop.clone())
            .with_poll_interval(Duration::from_millis(5));
        let mut got = Vec::new();
        while got.len() < 3 {
            match r.next_record(Some(Duration::from_secs(5))).unwrap() {
                Next::Record(b) => got.push(String::from_utf8(b.to_vec()).unwrap()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, ["one", "two", "three"]);
        writer.join().unwrap();
        // "four" has no `\n` yet: held back while following.
        assert_eq!(
            r.next_record(Some(Duration::from_millis(30))).unwrap(),
            Next::Idle
        );
        stop.store(true, Ordering::Release);
        assert_eq!(text(r.next_record(None).unwrap()), "four");
        assert_eq!(r.line_number(), 4);
        assert_eq!(r.next_record(None).unwrap(), Next::End);
        assert_eq!(r.next_record(None).unwrap(), Next::End);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn starts_again_after_truncation() {
        let path = temp_file("truncate");
        std::fs::write(&path, b"old 1\nold 2\npart").unwrap();
        let mut r = FollowReader::open(&path, 1 << 20)
            .unwrap()
            .with_poll_interval(Duration::from_millis(5));
        assert_eq!(text(r.next_record(None).unwrap()), "old 1");
        assert_eq!(text(r.next_record(None).unwrap()), "old 2");
        assert_eq!(
            r.next_record(Some(Duration::from_millis(10))).unwrap(),
            Next::Idle
        );
        std::fs::write(&path, b"new\n").unwrap();
        assert_eq!(
            r.next_record(Some(Duration::from_secs(5))).unwrap(),
            Next::Truncated
        );
        assert_eq!(
            text(r.next_record(Some(Duration::from_secs(5))).unwrap()),
            "new"
        );
        assert_eq!(r.line_number(), 1);
        assert_eq!(r.stats().seeks, 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn stop_ends_an_idle_reader_and_oversized_lines_are_skipped() {
        let path = temp_file("stop");
        std::fs::write(&path, format!("{}\nok\n", "z".repeat(300))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut r = FollowReader::open(&path, 100)
            .unwrap()
            .with_stop(stop.clone());
        assert_eq!(r.next_record(None).unwrap(), Next::Oversized(300));
        assert_eq!(text(r.next_record(None).unwrap()), "ok");
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(60));
                stop.store(true, Ordering::Release);
            })
        };
        let t = Instant::now();
        assert_eq!(r.next_record(None).unwrap(), Next::End);
        assert!(t.elapsed() < Duration::from_secs(5));
        setter.join().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
