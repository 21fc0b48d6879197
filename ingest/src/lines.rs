//! Line framing: one record per `\n`-terminated line.
//!
//! Policy (spec "Decisions"): a final line without `\n` is a record like any
//! other; a `\r` before the `\n` is ignored by the parser; empty lines are
//! reported to the caller, which skips them (they are not records).

use std::io::{self, Read};

use crate::source::OVERSIZED_HEAD_LEN;

/// Splits an in-memory buffer (for example a memory-mapped file) into lines.
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    rest: &'a [u8],
    number: u64,
}

impl<'a> Lines<'a> {
    /// Lines of `data`, numbered from 1.
    pub fn new(data: &'a [u8]) -> Self {
        Lines {
            rest: data,
            number: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    /// The 1-based line number and the line without its `\n`.
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        self.number += 1;
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some((self.number, line))
    }
}

/// One line read by a [`LineReader`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line (without its `\n`) within the length limit.
    Text(&'a [u8]),
    /// A line longer than the limit; its bytes were discarded without being stored.
    TooLong(usize),
}

/// Reads lines from a stream (stdin, a pipe, a file) with bounded memory: a
/// line longer than the limit is skipped, not buffered.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    line: Vec<u8>,
    max_len: usize,
    number: u64,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    /// A reader that reports lines longer than `max_len` bytes as [`Line::TooLong`].
    pub fn new(inner: R, max_len: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            line: Vec::new(),
            max_len,
            number: 0,
            eof: false,
        }
    }

    /// The number of the line returned last (1-based).
    pub fn line_number(&self) -> u64 {
        self.number
    }

    /// True when a complete line is already buffered (the next call will not read).
    pub fn has_buffered_line(&self) -> bool {
        memchr::memchr(b'\n', &self.buf[self.start..self.end]).is_some()
    }

    /// The first bytes (at most [`OVERSIZED_HEAD_LEN`]) of the line last
    /// returned as [`Line::TooLong`].
    pub fn oversized_head(&self) -> &[u8] {
        &self.line
    }

    /// The underlying stream (e.g. to poll its file descriptor).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// True once the underlying stream reported end of file.
    pub fn at_eof(&self) -> bool {
        self.eof && self.start == self.end
    }

    /// Returns the next line, `None` at end of input.
    ///
    /// A final line without `\n` is returned when the stream ends.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.line.clear();
        let mut len = 0usize;
        let mut any = false;
        loop {
            if self.start == self.end {
                if self.eof {
                    break;
                }
                match self.inner.read(&mut self.buf) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.start = 0;
                        self.end = n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            any = true;
            let chunk = &self.buf[self.start..self.end];
            let (part, found) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], Some(i)),
                None => (chunk, None),
            };
            // Keep up to the limit (or, for a short limit, the head an
            // oversized line is still answered by): never more.
            let room = self
                .max_len
                .max(OVERSIZED_HEAD_LEN)
                .saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            len += part.len();
            match found {
                Some(i) => {
                    self.start += i + 1;
                    return Ok(Some(self.finish(len)));
                }
                None => self.start = self.end,
            }
        }
        if any && len > 0 {
            Ok(Some(self.finish(len)))
        } else {
            Ok(None)
        }
    }

    fn finish(&mut self, len: usize) -> Line<'_> {
        self.number += 1;
        if len > self.max_len {
            self.line.truncate(OVERSIZED_HEAD_LEN);
            Line::TooLong(len)
        } else {
            Line::Text(&self.line)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_include_a_final_line_without_newline() {
        let v: Vec<_> = Lines::new(b"a\n\nb\r\nc").collect();
        assert_eq!(
            v,
            vec![
                (1, &b"a"[..]),
                (2, &b""[..]),
                (3, &b"b\r"[..]),
                (4, &b"c"[..])
            ]
        );
        assert_eq!(Lines::new(b"a\n").count(), 1);
    }

    #[test]
    fn reader_bounds_memory_for_long_lines() {
        let data = format!("short\n{}\nnext\nlast", "x".repeat(100));
        let mut r = LineReader::new(data.as_bytes(), 10);
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"short")));
        assert_eq!(r.next_line().unwrap(), Some(Line::TooLong(100)));
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"next")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"last")));
        assert_eq!(r.line_number(), 4);
        assert_eq!(r.next_line().unwrap(), None);
    }

    #[test]
    fn reader_keeps_the_head_of_a_too_long_line() {
        let long: String = "y".repeat(3 * OVERSIZED_HEAD_LEN);
        let data = format!("{long}\nok\n");
        let mut r = LineReader::new(data.as_bytes(), OVERSIZED_HEAD_LEN + 1);
        assert_eq!(
            r.next_line().unwrap(),
            Some(Line::TooLong(3 * OVERSIZED_HEAD_LEN))
        );
        assert_eq!(r.oversized_head(), &long.as_bytes()[..OVERSIZED_HEAD_LEN]);
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"ok")));
    }

    #[test]
    fn reader_handles_lines_spanning_reads() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(3).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = LineReader::new(Trickle(b"abcdefgh\nij\n"), 100);
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"abcdefgh")));
        assert_eq!(r.next_line().unwrap(), Some(Line::Text(b"ij")));
        assert_eq!(r.next_line().unwrap(), None);
    }
}
