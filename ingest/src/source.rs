//! Input sources that deliver whole lines: a memory-mapped file, or a stream
//! (stdin, a pipe, a non-regular file) read with bounded memory.

use std::fs::File;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::Path;

use memmap2::Mmap;

use crate::lines::{Line, LineReader, Lines};

/// A line that is too long to be a record (its bytes were not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized(pub usize);

/// Where lines come from.
pub enum LineSource {
    /// A regular file, memory-mapped (no copy, no read syscalls per line).
    Mapped {
        /// The mapping (`None` for an empty file, which cannot be mapped).
        map: Option<Mmap>,
        /// Lines longer than this are reported as [`Oversized`].
        max_len: usize,
    },
    /// Any readable stream.
    Stream(LineReader<Box<dyn Read + Send>>),
}

impl LineSource {
    /// Opens `path` (`-` is stdin): regular files are mapped, anything else is streamed.
    pub fn open(path: &Path, max_len: usize) -> io::Result<LineSource> {
        if path.as_os_str() == "-" {
            return Ok(Self::stream(Box::new(io::stdin()), max_len));
        }
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() {
            let map = if meta.len() == 0 {
                None
            } else {
                // SAFETY: the map is read-only; a file truncated by someone else
                // while mapped is the same hazard as for `grep` or `ripgrep`.
                Some(unsafe { Mmap::map(&file)? })
            };
            Ok(LineSource::Mapped { map, max_len })
        } else {
            Ok(Self::stream(Box::new(file), max_len))
        }
    }

    /// A source over any stream.
    pub fn stream(reader: Box<dyn Read + Send>, max_len: usize) -> LineSource {
        LineSource::Stream(LineReader::new(reader, max_len))
    }

    /// Calls `f` with each line's 1-based number and bytes (without `\n`),
    /// until the input ends or `f` breaks.
    pub fn for_each_line<B>(
        &mut self,
        mut f: impl FnMut(u64, Result<&[u8], Oversized>) -> ControlFlow<B>,
    ) -> io::Result<Option<B>> {
        match self {
            LineSource::Mapped { map, max_len } => {
                let data: &[u8] = map.as_deref().unwrap_or(&[]);
                for (n, line) in Lines::new(data) {
                    let item = if line.len() > *max_len {
                        Err(Oversized(line.len()))
                    } else {
                        Ok(line)
                    };
                    if let ControlFlow::Break(b) = f(n, item) {
                        return Ok(Some(b));
                    }
                }
                Ok(None)
            }
            LineSource::Stream(reader) => loop {
                let n = reader.line_number() + 1;
                let line = match reader.next_line()? {
                    None => return Ok(None),
                    Some(Line::Text(t)) => Ok(t),
                    Some(Line::TooLong(n)) => Err(Oversized(n)),
                };
                if let ControlFlow::Break(b) = f(n, line) {
                    return Ok(Some(b));
                }
            },
        }
    }
}
