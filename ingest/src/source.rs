//! Record sources: the one way every reader of tsem-stream gets "the next
//! record". Each hands out one line at a time (without its `\n`, numbered
//! from 1) and can say "nothing more right now" (`Idle`), so that the
//! pipeline never holds a batch back waiting to fill while the input is idle.
//!
//! Every kind of input implements [`RecordSource`] directly: a mapped file, a
//! stream, bytes in memory, the kernel's export file and a followed file
//! (through [`TimedSource`]); the archive and NATS readers in their crates.

use std::fs::File;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use memmap2::Mmap;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::export::Next;
use crate::lines::{Line, LineReader};

/// How many leading bytes of an oversized record a source keeps (see
/// [`RecordSource::oversized_head`]). The kernel writes the export wrapper
/// and the `pid`/`tnum`/`context`/`number` of `event{}` first, in well under
/// 200 bytes (kernel-interface.md K4.1, K4.2); 4 KiB leaves room for any
/// spacing while staying small next to the batch arenas.
pub const OVERSIZED_HEAD_LEN: usize = 4096;

/// A line that is too long to be a record (its bytes were not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized(pub usize);

/// What a source produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetch<'a> {
    /// One line (without `\n`), with its 1-based number in the source.
    Record {
        /// Line (record) number.
        number: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A line longer than the record limit (its bytes were dropped).
    Oversized {
        /// Line number.
        number: u64,
        /// Its length.
        len: usize,
    },
    /// No complete record is available now (only when not asked to wait).
    Idle,
    /// The input has ended.
    End,
}

/// A source of records.
pub trait RecordSource: Send {
    /// The next record. With `wait == false` a source that would block returns
    /// [`Fetch::Idle`] instead.
    fn fetch(&mut self, wait: bool) -> io::Result<Fetch<'_>>;
    /// The name used in messages (`FILE:LINE: …`).
    fn name(&self) -> &str;
    /// The first bytes (at most [`OVERSIZED_HEAD_LEN`]) of the record last
    /// returned as [`Fetch::Oversized`]; empty when the source kept none.
    ///
    /// An oversized synchronous event still has a task sleeping until it is
    /// answered: its header, at the start of the line, names that task
    /// (`lenient::scan_header`), so sources keep these bytes of a line whose
    /// rest they drop. Only valid until the next `fetch`.
    fn oversized_head(&self) -> &[u8] {
        &[]
    }
    /// Total bytes, when known in advance (for a progress bar).
    fn size_hint(&self) -> Option<u64> {
        None
    }
}

/// A regular file, memory-mapped: never idle, no copies, no syscalls per line.
pub struct MappedFile {
    map: Option<Mmap>,
    cursor: SliceCursor,
    name: String,
}

/// Where a source over bytes it holds whole (a map, a buffer) stands.
struct SliceCursor {
    pos: usize,
    number: u64,
    max_len: usize,
    /// Where the last oversized line starts and how many of its first bytes
    /// are its head.
    oversized: (usize, usize),
}

impl SliceCursor {
    fn new(max_len: usize) -> SliceCursor {
        SliceCursor {
            pos: 0,
            number: 0,
            max_len,
            oversized: (0, 0),
        }
    }

    /// The head of the last oversized line of `data`.
    fn oversized_head<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        let (start, len) = self.oversized;
        data.get(start..start + len).unwrap_or(&[])
    }

    /// The line of `data` at the cursor; the last line needs no `\n`.
    fn next<'a>(&mut self, data: &'a [u8]) -> Fetch<'a> {
        if self.pos >= data.len() {
            return Fetch::End;
        }
        let rest = &data[self.pos..];
        let (line, advance) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        let start = self.pos;
        self.pos += advance;
        self.number += 1;
        if line.len() > self.max_len {
            self.oversized = (start, line.len().min(OVERSIZED_HEAD_LEN));
            return Fetch::Oversized {
                number: self.number,
                len: line.len(),
            };
        }
        Fetch::Record {
            number: self.number,
            bytes: line,
        }
    }
}

impl MappedFile {
    /// Maps `path` (an empty file yields no records).
    pub fn open(path: &Path, max_len: usize) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        let map = if file.metadata()?.len() == 0 {
            None
        } else {
            // SAFETY: the map is read-only; a file truncated by someone else
            // while mapped is the same hazard as for `grep` or `ripgrep`.
            Some(unsafe { Mmap::map(&file)? })
        };
        Ok(MappedFile {
            map,
            cursor: SliceCursor::new(max_len),
            name: path.display().to_string(),
        })
    }
}

impl RecordSource for MappedFile {
    fn size_hint(&self) -> Option<u64> {
        Some(self.map.as_ref().map_or(0, |m| m.len() as u64))
    }

    fn fetch(&mut self, _wait: bool) -> io::Result<Fetch<'_>> {
        let data: &[u8] = self.map.as_deref().unwrap_or(&[]);
        Ok(self.cursor.next(data))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn oversized_head(&self) -> &[u8] {
        self.cursor
            .oversized_head(self.map.as_deref().unwrap_or(&[]))
    }
}

/// A stream (stdin, a pipe, a character device) read with bounded memory.
pub struct StreamSource<R> {
    reader: LineReader<R>,
    name: String,
}

impl<R: Read + AsFd + Send> StreamSource<R> {
    /// Reads lines from `inner`.
    pub fn new(inner: R, max_len: usize, name: impl Into<String>) -> Self {
        StreamSource {
            reader: LineReader::new(inner, max_len),
            name: name.into(),
        }
    }

    fn readable_now(&self) -> io::Result<bool> {
        let fd: BorrowedFd<'_> = self.reader.get_ref().as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

impl<R: Read + AsFd + Send> RecordSource for StreamSource<R> {
    fn fetch(&mut self, wait: bool) -> io::Result<Fetch<'_>> {
        if !wait
            && !self.reader.has_buffered_line()
            && !self.reader.at_eof()
            && !self.readable_now()?
        {
            return Ok(Fetch::Idle);
        }
        let number = self.reader.line_number() + 1;
        Ok(match self.reader.next_line()? {
            None => Fetch::End,
            Some(Line::Text(bytes)) => Fetch::Record { number, bytes },
            Some(Line::TooLong(len)) => Fetch::Oversized { number, len },
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn oversized_head(&self) -> &[u8] {
        self.reader.oversized_head()
    }
}

/// Opens a path as a source: `-` is stdin, regular files are mapped, anything
/// else (FIFOs, devices) is streamed.
pub fn open_path(path: &Path, max_len: usize) -> io::Result<Box<dyn RecordSource>> {
    if path.as_os_str() == "-" {
        let stdin = File::from(io::stdin().as_fd().try_clone_to_owned()?);
        return Ok(Box::new(StreamSource::new(stdin, max_len, "<stdin>")));
    }
    let file = File::open(path)?;
    if file.metadata()?.is_file() {
        return Ok(Box::new(MappedFile::open(path, max_len)?));
    }
    Ok(Box::new(StreamSource::new(
        file,
        max_len,
        path.display().to_string(),
    )))
}

/// A source over bytes in memory (tests, benchmarks, the bundled example).
pub struct MemorySource {
    data: Vec<u8>,
    cursor: SliceCursor,
    name: String,
}

impl MemorySource {
    /// Lines of `data`.
    pub fn new(data: Vec<u8>, max_len: usize, name: impl Into<String>) -> Self {
        MemorySource {
            data,
            cursor: SliceCursor::new(max_len),
            name: name.into(),
        }
    }
}

impl RecordSource for MemorySource {
    fn fetch(&mut self, _wait: bool) -> io::Result<Fetch<'_>> {
        Ok(self.cursor.next(&self.data))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn oversized_head(&self) -> &[u8] {
        self.cursor.oversized_head(&self.data)
    }
}

/// Calls `f` with each record's number and bytes (or [`Oversized`]) until the
/// input ends or `f` breaks, waiting for input as needed: the simple,
/// sequential way to read a source (the commands that need no pipeline).
pub fn for_each_record<B>(
    source: &mut dyn RecordSource,
    mut f: impl FnMut(u64, Result<&[u8], Oversized>) -> ControlFlow<B>,
) -> io::Result<Option<B>> {
    loop {
        let flow = match source.fetch(true)? {
            Fetch::Record { number, bytes } => f(number, Ok(bytes)),
            Fetch::Oversized { number, len } => f(number, Err(Oversized(len))),
            Fetch::Idle => continue,
            Fetch::End => return Ok(None),
        };
        if let ControlFlow::Break(b) = flow {
            return Ok(Some(b));
        }
    }
}

/// Adapts a reader with `next_record(timeout)` semantics (the kernel's export
/// file, follow mode) to [`RecordSource`].
pub struct TimedSource<R> {
    reader: R,
    name: String,
    number: u64,
    /// Set from outside (a signal) to end the input at the next wait step.
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// How often a stoppable [`TimedSource`] looks at its stop flag while the
/// input is idle.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The line `next` delivered (a record or an oversized line), numbered
/// after `number`, which it advances; `None` for what is not a line.
pub fn numbered<'a>(next: &Next<'a>, number: &mut u64) -> Option<Fetch<'a>> {
    let line = match *next {
        Next::Record(bytes) => Fetch::Record {
            number: *number + 1,
            bytes,
        },
        Next::Oversized(len) => Fetch::Oversized {
            number: *number + 1,
            len,
        },
        Next::Idle | Next::Truncated | Next::End => return None,
    };
    *number += 1;
    Some(line)
}

/// Readers that deliver records with a timeout (see [`Next`]).
pub trait TimedReader: Send {
    /// The next record, waiting at most `timeout` (`None`: block).
    fn next_timed(&mut self, timeout: Option<std::time::Duration>) -> io::Result<Next<'_>>;
    /// The first bytes of the record last returned as [`Next::Oversized`]
    /// (see [`RecordSource::oversized_head`]).
    fn oversized_head(&self) -> &[u8] {
        &[]
    }
}

impl TimedReader for crate::export::ExportReader {
    fn next_timed(&mut self, timeout: Option<std::time::Duration>) -> io::Result<Next<'_>> {
        self.next_record(timeout)
    }

    fn oversized_head(&self) -> &[u8] {
        crate::export::ExportReader::oversized_head(self)
    }
}

impl TimedReader for crate::follow::FollowReader {
    fn next_timed(&mut self, timeout: Option<std::time::Duration>) -> io::Result<Next<'_>> {
        self.next_record(timeout)
    }

    fn oversized_head(&self) -> &[u8] {
        crate::follow::FollowReader::oversized_head(self)
    }
}

impl<R: TimedReader> TimedSource<R> {
    /// Wraps `reader`, naming it `name` in messages.
    pub fn new(reader: R, name: impl Into<String>) -> Self {
        TimedSource {
            reader,
            name: name.into(),
            number: 0,
            stop: None,
        }
    }

    /// Ends the input (as at end of file) once `stop` (if any) is set: a live source
    /// (the kernel's export file, a followed file) has no end of its own,
    /// and SIGINT/SIGTERM should still finish the run cleanly.
    pub fn with_stop(
        mut self,
        stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    ) -> Self {
        self.stop = stop;
        self
    }
}

impl<R: TimedReader> RecordSource for TimedSource<R> {
    fn fetch(&mut self, wait: bool) -> io::Result<Fetch<'_>> {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Ok(Fetch::End);
        }
        let timeout = match (wait, &self.stop) {
            (false, _) => Some(std::time::Duration::ZERO),
            (true, None) => None,
            (true, Some(_)) => Some(STOP_POLL),
        };
        // Idle and a restart after truncation come back as Idle: the reader
        // stage simply asks again.
        let next = self.reader.next_timed(timeout)?;
        if let Some(line) = numbered(&next, &mut self.number) {
            return Ok(line);
        }
        Ok(match next {
            Next::Record(_) | Next::Oversized(_) | Next::Idle => Fetch::Idle,
            Next::Truncated => {
                self.number = 0;
                Fetch::Idle
            }
            Next::End => Fetch::End,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn oversized_head(&self) -> &[u8] {
        self.reader.oversized_head()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_source_keeps_the_head_of_an_oversized_line() {
        let mut data = b"{\"export\": {\"type\": \"event\"}, ".to_vec();
        data.extend(std::iter::repeat_n(b'x', 2 * OVERSIZED_HEAD_LEN));
        data.extend_from_slice(b"\nshort\n");
        let mut s = MemorySource::new(data.clone(), OVERSIZED_HEAD_LEN, "m");
        assert_eq!(
            s.fetch(true).unwrap(),
            Fetch::Oversized {
                number: 1,
                len: data.len() - 7
            }
        );
        assert_eq!(s.oversized_head(), &data[..OVERSIZED_HEAD_LEN]);
        assert!(matches!(
            s.fetch(true).unwrap(),
            Fetch::Record { number: 2, .. }
        ));
    }
}
