//! Verdicts to the kernel's control file (kernel-interface.md K2, K5): one command per
//! `write()`, `\n`-terminated.
//!
//! Which thread writes them matters on v4 kernels (kernel-interface.md K6): the kernel
//! accepts `trusted`/`untrusted` only from the one thread that forked the
//! namespace's creator, and answers `EINVAL` to any other (the task then
//! sleeps forever). The writer itself writes on the calling thread; process
//! mode arranges for that thread to be the right one
//! (`tsem_pipeline::run_answering_here`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub use tsem_ingest::Task;

/// Which release protocol the kernel speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlProtocol {
    /// `trusted pid=P tnum=T` (Quixote v1.8, 2025 kernels).
    Tnum,
    /// `trusted pid=P key=HEX` (Quixote v1.7, v3/v4 kernels).
    Key(String),
}

/// Room for the longest verdict (`untrusted pid=… key=<64 hex>\n` is 102
/// bytes); the kernel takes at most 127 [K-v3 fs.c].
const MAX_VERDICT: usize = 160;

/// Writes `trusted`/`untrusted` commands to the control file. Shared by all
/// workers: each command is a single `write()` on the same descriptor, which
/// the kernel (and a pipe, below PIPE_BUF) treats atomically, so no lock is needed.
#[derive(Debug)]
pub struct VerdictWriter {
    file: File,
    protocol: ControlProtocol,
    trusted: AtomicU64,
    untrusted: AtomicU64,
}

impl VerdictWriter {
    /// Opens `<tsem-root>/control` write-only; verdicts are written by the
    /// thread that calls [`VerdictWriter::release`].
    pub fn open(control: &Path, protocol: ControlProtocol) -> io::Result<VerdictWriter> {
        let file = OpenOptions::new().write(true).open(control)?;
        Ok(VerdictWriter::from_file(file, protocol))
    }

    /// A writer over an open control file.
    pub fn from_file(file: File, protocol: ControlProtocol) -> VerdictWriter {
        VerdictWriter {
            file,
            protocol,
            trusted: AtomicU64::new(0),
            untrusted: AtomicU64::new(0),
        }
    }

    /// Writes one control command (e.g. `enforce`), adding the `\n`.
    pub fn command(&self, text: &str) -> io::Result<()> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        write_once(&self.file, &line)
    }

    /// Releases a task as trusted or untrusted.
    pub fn release(&self, task: Task, trusted: bool) -> io::Result<()> {
        let mut bytes = [0u8; MAX_VERDICT];
        let word = if trusted { "trusted" } else { "untrusted" };
        let mut cursor = io::Cursor::new(&mut bytes[..]);
        match (&self.protocol, task.tnum) {
            (ControlProtocol::Key(key), _) => {
                writeln!(cursor, "{word} pid={} key={key}", task.pid)?
            }
            (ControlProtocol::Tnum, Some(tnum)) => {
                writeln!(cursor, "{word} pid={} tnum={tnum}", task.pid)?
            }
            (ControlProtocol::Tnum, None) => writeln!(cursor, "{word} pid={}", task.pid)?,
        }
        let len = cursor.position() as usize;
        write_once(&self.file, &bytes[..len])?;
        let counter = if trusted {
            &self.trusted
        } else {
            &self.untrusted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts of (trusted, untrusted) verdicts written.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.trusted.load(Ordering::Relaxed),
            self.untrusted.load(Ordering::Relaxed),
        )
    }
}

/// One `write()` of a whole command; a short write would split the command, so it is an error.
fn write_once(mut file: &File, bytes: &[u8]) -> io::Result<()> {
    loop {
        match file.write(bytes) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "short write of a control command ({n} of {} bytes)",
                        bytes.len()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_use_the_configured_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        std::fs::write(&path, b"").unwrap();
        let w = VerdictWriter::open(&path, ControlProtocol::Tnum).unwrap();
        w.command("enforce").unwrap();
        w.release(
            Task {
                pid: 7,
                tnum: Some(51),
            },
            true,
        )
        .unwrap();
        w.release(
            Task {
                pid: 8,
                tnum: Some(52),
            },
            false,
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "enforce\ntrusted pid=7 tnum=51\nuntrusted pid=8 tnum=52\n"
        );
        assert_eq!(w.counts(), (1, 1));

        let path = dir.path().join("control-v3");
        std::fs::write(&path, b"").unwrap();
        let k = VerdictWriter::open(&path, ControlProtocol::Key("ab".into())).unwrap();
        k.release(Task { pid: 9, tnum: None }, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "untrusted pid=9 key=ab\n"
        );
    }
}
