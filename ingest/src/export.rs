//! Reading the kernel's export file `external_tma/<id>` (kernel-interface.md K3), or a
//! FIFO standing in for it (the simulator, tests).
//!
//! The kernel file is a `seq_file` opened with `single_open` (v3/v4
//! `fs.c`): a `read()` at offset 0 dequeues one record into the kernel's
//! buffer and copies as much of it as fits; further reads *without* a seek
//! return the rest of that record and then 0. An empty queue makes the read
//! fail with `ENODATA`, and `poll()` reports `POLLIN` once a record has been
//! queued since the last poll. The reader therefore seeks back to 0 only at
//! a record boundary, never in the middle of a record: a seek would drop the
//! rest of the record held by the kernel.
//!
//! Caveat (read in `seq_read_iter` and v4 `export.c`, and observed on the
//! real v4 kernel by `tests/real_kernel.rs`): when a record does not fit the kernel's `seq_file` buffer (one page at
//! first), the kernel grows the buffer and calls `show` again, which dequeues
//! the *next* record: the long one is lost. The buffer keeps its new size
//! for later reads of the same open file. Nothing a reader does can avoid it.
//!
//! A FIFO is a plain byte stream: one read may carry several records or a
//! piece of one, it cannot seek (`ESPIPE`), and a read of 0 bytes means that
//! every writer has gone (the end of the input).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::source::OVERSIZED_HEAD_LEN;

/// First size of the read buffer. Kernel records are a few hundred bytes to
/// a few KiB, so one read normally takes a whole record; the buffer grows
/// (up to the record limit) only for longer ones.
const INITIAL_BUFFER: usize = 64 * 1024;

/// What a reader produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// One record (a line without its `\n`; an empty line is reported too,
    /// the caller skips it like other line readers' callers do).
    Record(&'a [u8]),
    /// A record longer than the limit, of this many bytes; its bytes were
    /// dropped while reading, never buffered whole.
    Oversized(usize),
    /// Nothing arrived within the timeout; call again (e.g. after checking
    /// for shutdown).
    Idle,
    /// Follow mode only: the file shrank, so reading started again from its
    /// beginning (a partially read line was discarded, numbering restarts).
    Truncated,
    /// The input has ended (every FIFO writer closed, end of a plain file,
    /// or the follow reader was told to stop). Sticky.
    End,
}

/// How an export source behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMode {
    /// The kernel's export file: one record per read at offset 0, seek to 0
    /// after each record, `ENODATA` when the queue is empty.
    Kernel,
    /// A byte stream (FIFO, pipe, plain file): read on, split on `\n`; a read
    /// of 0 bytes ends the input.
    Stream,
}

/// System-call counts of a reader, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// `read()` calls that returned data or end of file.
    pub reads: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Seeks to offset 0.
    pub seeks: u64,
    /// Waits for data (`poll()` for export readers, size checks in follow mode).
    pub polls: u64,
    /// Reads that found nothing (`ENODATA` from the kernel, `EAGAIN` from a FIFO).
    pub empty: u64,
    /// Records returned (oversized ones included).
    pub records: u64,
    /// Oversized records skipped.
    pub oversized: u64,
}

/// The three operations an [`ExportReader`] needs from its file, so that the
/// kernel's behaviour (one record per read, `ENODATA`) can be imitated in tests.
pub trait ExportIo {
    /// Reads like `read(2)`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Seeks to offset 0; an `ESPIPE` error means the file cannot seek.
    fn rewind(&mut self) -> io::Result<()>;
    /// Waits until a read may find data (or end of file), at most `timeout`
    /// (`None`: no limit). Returns false when the time ran out.
    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool>;
}

impl ExportIo for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn rewind(&mut self) -> io::Result<()> {
        self.seek(SeekFrom::Start(0)).map(|_| ())
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        wait_fd(self.as_fd(), timeout)
    }
}

/// `poll(POLLIN)` on one descriptor with a `Duration` timeout rounded up to
/// whole milliseconds (rounding down would turn short waits into busy loops).
pub(crate) fn wait_fd(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms)
                .ok()
                .and_then(|ms| PollTimeout::try_from(ms).ok())
                .unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        // POLLHUP/POLLERR count as readable: the next read reports what happened.
        Ok(n) => match fds[0].revents() {
            Some(r) if r.contains(PollFlags::POLLNVAL) => Err(io::Error::from(Errno::EBADF)),
            _ => Ok(n > 0),
        },
        // A signal: let the caller read again and re-check its deadline.
        Err(Errno::EINTR) => Ok(true),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// True for the errors that mean "nothing to read now".
fn is_empty_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == Errno::ENODATA as i32 || c == Errno::EAGAIN as i32)
}

/// The time left until `deadline`, `None` for no deadline.
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// A result of [`Framer::frame`]: positions, not slices, so that the caller
/// can keep using the framer before borrowing the line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete line at `buf[start..end]` (without the `\n`).
    Line(usize, usize),
    /// An oversized line ended; its length.
    Oversized(usize),
    /// No complete line is buffered.
    NeedMore,
}

/// Splits bytes read in arbitrary pieces into lines, with bounded memory: a
/// line longer than `max_len` is counted and skipped, not buffered whole.
pub(crate) struct Framer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// `buf[start..scanned]` holds no `\n` (not searched again after a read).
    scanned: usize,
    max_len: usize,
    /// Bytes seen so far of an oversized line being skipped.
    skipping: Option<usize>,
    /// The first bytes of the last oversized line (at most
    /// [`OVERSIZED_HEAD_LEN`]): its header names the task that waits for a
    /// verdict, so it must survive the skipping of the rest.
    head: Vec<u8>,
}

impl Framer {
    /// A framer for lines of at most `max_len` bytes.
    pub(crate) fn new(max_len: usize) -> Framer {
        let cap = max_len.saturating_add(1);
        Framer {
            buf: vec![0; INITIAL_BUFFER.min(cap)],
            start: 0,
            end: 0,
            scanned: 0,
            max_len,
            skipping: None,
            head: Vec::new(),
        }
    }

    /// Keeps the first bytes of an oversized line starting at `buf[start]`
    /// (the rest is dropped unseen).
    fn keep_head(&mut self, start: usize, end: usize) {
        let end = end.min(start.saturating_add(OVERSIZED_HEAD_LEN));
        self.head.clear();
        self.head.extend_from_slice(&self.buf[start..end]);
    }

    /// The first bytes of the oversized line returned last (see
    /// [`crate::RecordSource::oversized_head`]).
    pub(crate) fn oversized_head(&self) -> &[u8] {
        &self.head
    }

    /// True at a line boundary: nothing of an unfinished line is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end && self.skipping.is_none()
    }

    /// Drops everything buffered.
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        self.skipping = None;
    }

    /// The next complete line among the buffered bytes.
    pub(crate) fn frame(&mut self) -> Frame {
        let chunk = &self.buf[self.start..self.end];
        if let Some(seen) = self.skipping {
            return match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    self.skipping = None;
                    self.start += i + 1;
                    self.scanned = self.start;
                    Frame::Oversized(seen + i)
                }
                None => {
                    self.skipping = Some(seen + chunk.len());
                    self.clear_bytes();
                    Frame::NeedMore
                }
            };
        }
        let from = self.scanned.max(self.start);
        match memchr::memchr(b'\n', &self.buf[from..self.end]) {
            Some(i) => {
                let (s, e) = (self.start, from + i);
                self.start = e + 1;
                self.scanned = self.start;
                if e - s > self.max_len {
                    // Possible only when the buffer held more than the limit
                    // (it never grows past it, but it may start larger).
                    self.keep_head(s, e);
                    Frame::Oversized(e - s)
                } else {
                    Frame::Line(s, e)
                }
            }
            None => {
                self.scanned = self.end;
                let held = self.end - self.start;
                if held > self.max_len {
                    // Already longer than any record may be: stop keeping it
                    // (but for its head).
                    self.keep_head(self.start, self.end);
                    self.skipping = Some(held);
                    self.clear_bytes();
                }
                Frame::NeedMore
            }
        }
    }

    /// The final line when the input ends without a `\n` (the crate's policy:
    /// it is a record like any other), then `None`.
    pub(crate) fn take_rest(&mut self) -> Option<Frame> {
        if let Some(seen) = self.skipping.take() {
            self.clear();
            return Some(Frame::Oversized(seen));
        }
        if self.start == self.end {
            return None;
        }
        let (s, e) = (self.start, self.end);
        self.start = e;
        self.scanned = e;
        Some(if e - s > self.max_len {
            self.keep_head(s, e);
            Frame::Oversized(e - s)
        } else {
            Frame::Line(s, e)
        })
    }

    /// The bytes of a line returned by [`Framer::frame`] or [`Framer::take_rest`].
    pub(crate) fn slice(&self, start: usize, end: usize) -> &[u8] {
        &self.buf[start..end]
    }

    /// Free space to read into (never empty after `frame` returned `NeedMore`).
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.clear_bytes();
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            } else {
                // The limit plus one byte is enough to tell that a line is too long.
                let cap = self.max_len.saturating_add(1);
                let grown = self.buf.len().saturating_mul(2).clamp(1, cap.max(1));
                self.buf.resize(grown.max(self.buf.len() + 1), 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into the slice returned by [`Framer::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    fn clear_bytes(&mut self) {
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
    }
}

/// Reads export records from the kernel's `external_tma/<id>` file, or from a
/// FIFO or plain file in the same format.
pub struct ExportReader<I = File> {
    io: I,
    mode: ExportMode,
    framer: Framer,
    /// A record was completed: seek to 0 before the next read (kernel mode).
    rewind_pending: bool,
    ended: bool,
    stats: ReadStats,
    /// How long to keep retrying reads of an empty queue before sleeping in poll.
    spin: Duration,
    /// End of the current spin, once the queue was found empty.
    spin_until: Option<Instant>,
    /// The last read found the input empty: a caller that waits goes
    /// straight to `poll` (a second read would only find it empty again).
    drained: bool,
}

impl ExportReader<File> {
    /// Opens `path` with the default record limit
    /// ([`crate::DEFAULT_MAX_RECORD_LEN`]). Opening a FIFO blocks until a
    /// writer opens it too (use [`ExportReader::from_file`] to open otherwise).
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::from_file(File::open(path)?, crate::DEFAULT_MAX_RECORD_LEN)
    }

    /// A reader over an open file; the mode is found from the file: a FIFO,
    /// pipe or socket (no seeking) is a stream and is switched to
    /// `O_NONBLOCK` so that waits can time out; a securityfs file is the
    /// kernel's export file; anything else (a plain file of records) is a
    /// stream read to its end. A FIFO must already have a writer (as after a
    /// blocking open): without one a read reports the end of input at once.
    pub fn from_file(file: File, max_len: usize) -> io::Result<Self> {
        let mode = match nix::unistd::lseek(&file, 0, nix::unistd::Whence::SeekCur) {
            Err(Errno::ESPIPE) => {
                let flags = fcntl(&file, FcntlArg::F_GETFL)?;
                let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
                fcntl(&file, FcntlArg::F_SETFL(flags))?;
                ExportMode::Stream
            }
            Err(e) => return Err(e.into()),
            Ok(_) if is_securityfs(&file) => ExportMode::Kernel,
            Ok(_) => ExportMode::Stream,
        };
        Ok(Self::with_mode(file, mode, max_len))
    }
}

fn is_securityfs(file: &File) -> bool {
    use nix::sys::statfs::{fstatfs, SECURITYFS_MAGIC};
    fstatfs(file).is_ok_and(|s| s.filesystem_type() == SECURITYFS_MAGIC)
}

impl<I: ExportIo> ExportReader<I> {
    /// A reader over `io` in the given mode, with a record limit of `max_len` bytes.
    pub fn with_mode(io: I, mode: ExportMode, max_len: usize) -> Self {
        ExportReader {
            io,
            mode,
            framer: Framer::new(max_len),
            rewind_pending: false,
            ended: false,
            stats: ReadStats::default(),
            spin: Duration::ZERO,
            spin_until: None,
            drained: false,
        }
    }

    /// Retry an empty queue for up to `spin` before sleeping in `poll`.
    ///
    /// A task waiting for its verdict pays for the TMA's wake-up from `poll`
    /// (tens of µs on a virtual machine); retrying the read briefly first keeps
    /// bursts of events on the fast path, at the cost of up to `spin` of CPU
    /// after each burst.
    pub fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// The mode in force (a kernel-mode reader whose file cannot seek
    /// switches itself to stream mode).
    pub fn mode(&self) -> ExportMode {
        self.mode
    }

    /// System-call counts so far.
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// The underlying file.
    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// The first bytes (at most [`OVERSIZED_HEAD_LEN`]) of the record last
    /// returned as [`Next::Oversized`], so that its header can still name
    /// the task that waits for a verdict.
    pub fn oversized_head(&self) -> &[u8] {
        self.framer.oversized_head()
    }

    /// The next record, waiting at most `timeout` for one to arrive (`None`:
    /// wait as long as it takes; `Some(ZERO)`: only what is available now).
    pub fn next_record(&mut self, timeout: Option<Duration>) -> io::Result<Next<'_>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let unlimited = timeout.is_none() || deadline.is_none();
        loop {
            let frame = match self.framer.frame() {
                Frame::NeedMore if self.ended => match self.framer.take_rest() {
                    Some(f) => f,
                    None => return Ok(Next::End),
                },
                f => f,
            };
            match frame {
                Frame::Line(s, e) => return Ok(self.deliver(Some((s, e)), 0)),
                Frame::Oversized(n) => return Ok(self.deliver(None, n)),
                Frame::NeedMore => {}
            }
            if self.rewind_pending {
                self.rewind_pending = false;
                match self.io.rewind() {
                    Ok(()) => self.stats.seeks += 1,
                    Err(e) if e.raw_os_error() == Some(Errno::ESPIPE as i32) => {
                        self.mode = ExportMode::Stream;
                    }
                    Err(e) => return Err(e),
                }
            }
            let mid_record = !self.framer.is_empty();
            if self.drained && self.spin.is_zero() {
                let left = remaining(deadline);
                if !unlimited && left == Some(Duration::ZERO) {
                    return Ok(Next::Idle);
                }
                self.drained = false;
                self.stats.polls += 1;
                let wait = if unlimited { None } else { left };
                if !self.io.wait_readable(wait)? && !unlimited {
                    return Ok(Next::Idle);
                }
            }
            match self.io.read(self.framer.spare()) {
                Ok(0) => {
                    self.stats.reads += 1;
                    if self.mode == ExportMode::Kernel && mid_record {
                        // The kernel served the whole record but no `\n`
                        // (it always writes one): take the bytes as the record.
                        if let Some(f) = self.framer.take_rest() {
                            return Ok(match f {
                                Frame::Line(s, e) => self.deliver(Some((s, e)), 0),
                                Frame::Oversized(n) => self.deliver(None, n),
                                Frame::NeedMore => Next::Idle,
                            });
                        }
                    }
                    self.ended = true;
                }
                Ok(n) => {
                    self.stats.reads += 1;
                    self.stats.bytes += n as u64;
                    // A stream (pipe, FIFO) that gave less than asked for
                    // had no more at that moment: once its lines are taken,
                    // the next caller that does not wait is told Idle
                    // without a read that would only fail with EAGAIN.
                    self.drained = self.mode == ExportMode::Stream && n < self.framer.spare().len();
                    self.framer.filled(n);
                    self.spin_until = None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_empty_error(&e) => {
                    self.stats.empty += 1;
                    let left = remaining(deadline);
                    if !unlimited && left == Some(Duration::ZERO) {
                        self.drained = true;
                        return Ok(Next::Idle);
                    }
                    if !self.spin.is_zero() {
                        let now = Instant::now();
                        let until = *self.spin_until.get_or_insert(now + self.spin);
                        if now < until {
                            std::thread::yield_now();
                            continue;
                        }
                    }
                    self.stats.polls += 1;
                    let wait = if unlimited { None } else { left };
                    if !self.io.wait_readable(wait)? && !unlimited {
                        return Ok(Next::Idle);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Counts a finished record and, in kernel mode at a record boundary,
    /// arranges the seek to 0 that asks the kernel for the next one.
    fn deliver(&mut self, line: Option<(usize, usize)>, oversized: usize) -> Next<'_> {
        self.stats.records += 1;
        if self.mode == ExportMode::Kernel && self.framer.is_empty() {
            self.rewind_pending = true;
        }
        match line {
            Some((s, e)) => Next::Record(self.framer.slice(s, e)),
            None => {
                self.stats.oversized += 1;
                Next::Oversized(oversized)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::Write;

    /// Imitates the kernel's export file: a `seq_file` that dequeues one
    /// record per read at offset 0, continues it on reads without a seek,
    /// returns 0 after it, and fails with `ENODATA` when the queue is empty.
    struct FakeKernel {
        queue: VecDeque<Vec<u8>>,
        /// Records that "arrive" when the reader waits.
        later: VecDeque<Vec<u8>>,
        /// The record being served and how much of it was copied out.
        current: Option<(Vec<u8>, usize)>,
        pos: u64,
        /// Most bytes one read copies (imitates a small user buffer too).
        max_read: usize,
        rewinds_mid_record: u64,
    }

    impl FakeKernel {
        fn new(records: &[&[u8]]) -> Self {
            FakeKernel {
                queue: records.iter().map(|r| r.to_vec()).collect(),
                later: VecDeque::new(),
                current: None,
                pos: 0,
                max_read: usize::MAX,
                rewinds_mid_record: 0,
            }
        }
    }

    impl ExportIo for FakeKernel {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == 0 && self.current.is_none() {
                match self.queue.pop_front() {
                    None => return Err(io::Error::from_raw_os_error(Errno::ENODATA as i32)),
                    Some(mut r) => {
                        r.push(b'\n');
                        self.current = Some((r, 0));
                    }
                }
            }
            let Some((rec, done)) = self.current.as_mut() else {
                return Ok(0);
            };
            let n = (rec.len() - *done).min(buf.len()).min(self.max_read);
            buf[..n].copy_from_slice(&rec[*done..*done + n]);
            *done += n;
            self.pos += n as u64;
            Ok(n)
        }

        fn rewind(&mut self) -> io::Result<()> {
            if let Some((rec, done)) = &self.current {
                if done < &rec.len() {
                    self.rewinds_mid_record += 1;
                }
            }
            // seq_lseek to 0 drops whatever the kernel still held.
            self.current = None;
            self.pos = 0;
            Ok(())
        }

        fn wait_readable(&mut self, _timeout: Option<Duration>) -> io::Result<bool> {
            match self.later.pop_front() {
                Some(r) => {
                    self.queue.push_back(r);
                    Ok(true)
                }
                None => Ok(!self.queue.is_empty()),
            }
        }
    }

    fn record(r: Next<'_>) -> Vec<u8> {
        match r {
            Next::Record(b) => b.to_vec(),
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn kernel_mode_reads_one_record_per_read_and_seeks_between() {
        let fake = FakeKernel::new(&[b"{\"a\": \"1\"}", b"{\"b\": \"2\"}", b"{\"c\": \"3\"}"]);
        let mut r = ExportReader::with_mode(fake, ExportMode::Kernel, 1 << 20);
        assert_eq!(
            record(r.next_record(Some(Duration::ZERO)).unwrap()),
            b"{\"a\": \"1\"}"
        );
        assert_eq!(
            record(r.next_record(Some(Duration::ZERO)).unwrap()),
            b"{\"b\": \"2\"}"
        );
        assert_eq!(record(r.next_record(None).unwrap()), b"{\"c\": \"3\"}");
        assert_eq!(r.next_record(Some(Duration::ZERO)).unwrap(), Next::Idle);
        let s = r.stats();
        assert_eq!((s.records, s.reads, s.seeks, s.empty), (3, 3, 3, 1));
        assert_eq!(r.get_ref().rewinds_mid_record, 0);
    }

    #[test]
    fn kernel_mode_waits_after_enodata() {
        let mut fake = FakeKernel::new(&[b"first"]);
        fake.later.push_back(b"second".to_vec());
        let mut r = ExportReader::with_mode(fake, ExportMode::Kernel, 1 << 20);
        assert_eq!(record(r.next_record(None).unwrap()), b"first");
        assert_eq!(
            record(r.next_record(Some(Duration::from_secs(5))).unwrap()),
            b"second"
        );
        assert_eq!(r.stats().polls, 1);
        assert_eq!(
            r.next_record(Some(Duration::from_millis(1))).unwrap(),
            Next::Idle
        );
    }

    #[test]
    fn kernel_mode_continues_a_long_record_without_seeking() {
        let big = {
            let mut v = b"{\"path\": \"".to_vec();
            v.extend(vec![b'x'; 100 * 1024]);
            v.extend_from_slice(b"\"}");
            v
        };
        let mut fake = FakeKernel::new(&[b"small", &big, b"after"]);
        // Imitate a reader whose reads return at most 4 KiB of a record.
        fake.max_read = 4096;
        let mut r = ExportReader::with_mode(fake, ExportMode::Kernel, 1 << 20);
        assert_eq!(record(r.next_record(None).unwrap()), b"small");
        assert_eq!(record(r.next_record(None).unwrap()), big);
        assert_eq!(record(r.next_record(None).unwrap()), b"after");
        assert_eq!(r.get_ref().rewinds_mid_record, 0);
        // The seek after a record happens before the next read, not eagerly.
        assert_eq!(r.stats().seeks, 2);
    }

    #[test]
    fn kernel_mode_skips_an_oversized_record() {
        let big = vec![b'y'; 5000];
        let fake = FakeKernel::new(&[b"ok", &big, b"next"]);
        let mut r = ExportReader::with_mode(fake, ExportMode::Kernel, 1000);
        assert_eq!(record(r.next_record(None).unwrap()), b"ok");
        assert_eq!(r.next_record(None).unwrap(), Next::Oversized(5000));
        assert_eq!(record(r.next_record(None).unwrap()), b"next");
        assert_eq!(r.get_ref().rewinds_mid_record, 0);
        assert_eq!(r.stats().oversized, 1);
    }

    #[test]
    fn stream_mode_splits_and_joins_pieces() {
        struct Pieces(VecDeque<Vec<u8>>);
        impl ExportIo for Pieces {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.front_mut() {
                    None => Ok(0),
                    Some(p) => {
                        let n = p.len().min(buf.len());
                        buf[..n].copy_from_slice(&p[..n]);
                        p.drain(..n);
                        if p.is_empty() {
                            self.0.pop_front();
                        }
                        Ok(n)
                    }
                }
            }
            fn rewind(&mut self) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(Errno::ESPIPE as i32))
            }
            fn wait_readable(&mut self, _: Option<Duration>) -> io::Result<bool> {
                Ok(true)
            }
        }
        let pieces = [&b"a\nb"[..], b"c\n", b"\nd\ne", b"f"];
        let io = Pieces(pieces.iter().map(|p| p.to_vec()).collect());
        // Kernel mode on a file that cannot seek falls back to stream mode.
        let mut r = ExportReader::with_mode(io, ExportMode::Kernel, 100);
        let mut got = Vec::new();
        loop {
            match r.next_record(None).unwrap() {
                Next::Record(b) => got.push(String::from_utf8_lossy(b).into_owned()),
                Next::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, ["a", "bc", "", "d", "ef"]);
        assert_eq!(r.mode(), ExportMode::Stream);
        assert_eq!(r.next_record(None).unwrap(), Next::End);
    }

    #[test]
    fn framer_bounds_memory_for_long_lines() {
        let mut f = Framer::new(10);
        let feed = |f: &mut Framer, data: &[u8]| {
            let mut data = data;
            let mut out = Vec::new();
            while !data.is_empty() {
                let spare = f.spare();
                let n = spare.len().min(data.len());
                spare[..n].copy_from_slice(&data[..n]);
                f.filled(n);
                data = &data[n..];
                loop {
                    match f.frame() {
                        Frame::Line(s, e) => out.push(Ok(f.slice(s, e).to_vec())),
                        Frame::Oversized(n) => out.push(Err(n)),
                        Frame::NeedMore => break,
                    }
                }
                assert!(f.buf.len() <= 11);
            }
            out
        };
        let out = feed(
            &mut f,
            b"short\nxxxxxxxxxxxxxxxxxxxxxxxxx\n0123456789\nrest",
        );
        assert_eq!(
            out,
            vec![Ok(b"short".to_vec()), Err(25), Ok(b"0123456789".to_vec())]
        );
        assert_eq!(f.take_rest(), Some(Frame::Line(0, 4)));
        assert_eq!(f.take_rest(), None);
    }

    #[test]
    fn framer_keeps_the_head_of_an_oversized_line() {
        // The header that names a waiting task is at the start of a record:
        // those bytes survive the skipping of the rest, memory stays bounded.
        let mut f = Framer::new(10_000);
        let mut long: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        long.push(b'\n');
        long.extend_from_slice(b"next\n");
        let mut data = &long[..];
        let mut got = Vec::new();
        while !data.is_empty() {
            let spare = f.spare();
            let n = spare.len().min(data.len()).min(3000);
            spare[..n].copy_from_slice(&data[..n]);
            f.filled(n);
            data = &data[n..];
            loop {
                match f.frame() {
                    Frame::Line(s, e) => got.push(Ok(f.slice(s, e).to_vec())),
                    Frame::Oversized(n) => got.push(Err((n, f.oversized_head().to_vec()))),
                    Frame::NeedMore => break,
                }
            }
            assert!(f.buf.len() <= 10_001);
        }
        assert_eq!(
            got,
            vec![
                Err((50_000, long[..OVERSIZED_HEAD_LEN].to_vec())),
                Ok(b"next".to_vec())
            ]
        );
    }

    fn fifo_pair(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("export");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tsem-export-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn fifo_records_in_pieces_including_a_long_one() {
        let dir = temp_dir("pieces");
        let path = fifo_pair(&dir);
        let big = format!(
            "{{\"event\": {{\"path\": \"{}\"}}}}",
            "p".repeat(100 * 1024)
        );
        let expected = vec![
            "{\"export\": {\"type\": \"aggregate\"}}".to_string(),
            big.clone(),
            "{\"a\": \"1\"}".to_string(),
            "{\"b\": \"2\"}".to_string(),
        ];
        let writer = {
            let path = path.clone();
            let big = big.clone();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                w.write_all(b"{\"export\": {\"type\": \"aggregate\"}}\n{\"event\"")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
                w.write_all(&big.as_bytes()[8..]).unwrap();
                w.write_all(b"\n{\"a\": ").unwrap();
                std::thread::sleep(Duration::from_millis(20));
                w.write_all(b"\"1\"}\n{\"b\": \"2\"}\n").unwrap();
                std::thread::sleep(Duration::from_millis(150));
            })
        };
        let mut r = ExportReader::open(&path).unwrap();
        assert_eq!(r.mode(), ExportMode::Stream);
        let mut got = Vec::new();
        let mut idle = 0;
        loop {
            match r.next_record(Some(Duration::from_millis(50))).unwrap() {
                Next::Record(b) => got.push(String::from_utf8(b.to_vec()).unwrap()),
                Next::Idle => idle += 1,
                Next::End => break,
                other => panic!("{other:?}"),
            }
        }
        writer.join().unwrap();
        let lens = |v: &[String]| v.iter().map(String::len).collect::<Vec<_>>();
        assert!(
            got == expected,
            "lengths {:?} != {:?}",
            lens(&got),
            lens(&expected)
        );
        assert!(
            idle >= 1,
            "the writer paused for 150 ms: the reader must have gone idle"
        );
        assert_eq!(r.stats().seeks, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_drained_pipe_is_idle_without_another_read() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = File::from(w);
        let mut reader = ExportReader::from_file(File::from(r), 1 << 20).unwrap();
        w.write_all(b"{\"a\": \"1\"}\n").unwrap();
        assert_eq!(
            record(reader.next_record(Some(Duration::from_secs(5))).unwrap()),
            b"{\"a\": \"1\"}"
        );
        let reads = reader.stats().reads;
        // The short read said the pipe was empty: not waiting costs no read.
        assert_eq!(
            reader.next_record(Some(Duration::ZERO)).unwrap(),
            Next::Idle
        );
        assert_eq!(
            reader.next_record(Some(Duration::ZERO)).unwrap(),
            Next::Idle
        );
        assert_eq!(reader.stats().reads, reads);
        assert_eq!(reader.stats().empty, 0);
        // Waiting goes straight to poll, and finds what arrives.
        w.write_all(b"{\"b\": \"2\"}\n").unwrap();
        assert_eq!(
            record(reader.next_record(Some(Duration::from_secs(5))).unwrap()),
            b"{\"b\": \"2\"}"
        );
        assert_eq!(reader.stats().empty, 0);
        drop(w);
        assert_eq!(
            reader.next_record(Some(Duration::from_secs(5))).unwrap(),
            Next::End
        );
    }

    #[test]
    fn plain_file_is_read_as_a_stream() {
        let dir = temp_dir("plain");
        let path = dir.join("records");
        std::fs::write(&path, b"one\ntwo").unwrap();
        let mut r = ExportReader::open(&path).unwrap();
        assert_eq!(r.mode(), ExportMode::Stream);
        assert_eq!(record(r.next_record(None).unwrap()), b"one");
        assert_eq!(record(r.next_record(None).unwrap()), b"two");
        assert_eq!(r.next_record(None).unwrap(), Next::End);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
