//! Verdicts to the kernel's control file (spec §1.1, §7): one command per
//! `write()`, `\n`-terminated.
//!
//! Two ways to write them, because the kernel generations disagree on *who*
//! may write:
//!
//! * 2025 kernels (spec §7): any thread of the TMA may release a task, so
//!   the workers write each verdict the moment they map the event
//!   ([`VerdictWriter::open`]).
//! * v4 kernels (spec §7.1): the kernel accepts `trusted`/`untrusted` only
//!   from the one thread that forked the namespace's creator
//!   (`tma_for_ns` is set on that thread and is inherited by nobody);
//!   from any other thread the write fails with `EINVAL` and the task
//!   sleeps forever. There the workers hand their verdicts to a
//!   [`VerdictRelay`] that the forking thread serves
//!   ([`VerdictWriter::relayed`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, Sender};

/// Identity of a task waiting for (or owed) a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// Global PID.
    pub pid: u64,
    /// Task number (2025 kernels); `None` on kernels that do not print it.
    pub tnum: Option<u64>,
}

/// Which release protocol the kernel speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlProtocol {
    /// `trusted pid=P tnum=T` (Quixote v1.8, 2025 kernels).
    Tnum,
    /// `trusted pid=P key=HEX` (Quixote v1.7, v3/v4 kernels).
    Key(String),
}

/// The longest command a verdict can be (`untrusted pid=… key=<64 hex>\n`
/// is 102 bytes); the kernel takes at most 127 [K-v3 fs.c].
const MAX_VERDICT: usize = 160;

/// One verdict command, formatted without allocating.
#[derive(Clone, Copy)]
struct Command {
    bytes: [u8; MAX_VERDICT],
    len: u8,
    trusted: bool,
}

/// Verdict counters, shared by the writer and its relay.
#[derive(Debug, Default)]
struct Counters {
    trusted: AtomicU64,
    untrusted: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn count(&self, trusted: bool) {
        let c = if trusted {
            &self.trusted
        } else {
            &self.untrusted
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where the commands go.
#[derive(Debug)]
enum Output {
    /// Written by the calling thread.
    Direct(File),
    /// Sent to the thread that serves the [`VerdictRelay`].
    Relay(Sender<Command>),
}

/// Writes `trusted`/`untrusted` commands to the control file. Shared by all
/// workers: each command is a single `write()` on the same descriptor, which
/// the kernel (and a pipe, below PIPE_BUF) treats atomically, so no lock is needed.
#[derive(Debug)]
pub struct VerdictWriter {
    output: Output,
    protocol: ControlProtocol,
    counters: Arc<Counters>,
}

/// The writing end of a relayed [`VerdictWriter`]: serve it on the thread
/// that the kernel accepts verdicts from (spec §7.1).
pub struct VerdictRelay {
    file: File,
    commands: Receiver<Command>,
    counters: Arc<Counters>,
}

impl VerdictRelay {
    /// Writes every verdict the writer's users send, until the writer and
    /// all its clones are dropped. Must run on the thread that forked the
    /// namespace's creator. A refused verdict is counted (see
    /// [`VerdictWriter::failures`]) and logged; the relay goes on, so one
    /// refusal does not leave every later task asleep too. Returns the
    /// counts of verdicts written: (trusted, untrusted, refused).
    pub fn serve(self) -> (u64, u64, u64) {
        for c in self.commands.iter() {
            match write_once(&self.file, &c.bytes[..c.len as usize]) {
                Ok(()) => self.counters.count(c.trusted),
                Err(e) => {
                    let n = self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if n < 8 {
                        tracing::warn!(
                            "verdict {:?} refused: {e}",
                            String::from_utf8_lossy(&c.bytes[..c.len as usize]).trim_end()
                        );
                    }
                }
            }
        }
        let c = &self.counters;
        (
            c.trusted.load(Ordering::Relaxed),
            c.untrusted.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        )
    }
}

impl VerdictWriter {
    /// Opens `<tsem-root>/control` write-only; verdicts are written by the
    /// thread that calls [`VerdictWriter::release`].
    pub fn open(control: &Path, protocol: ControlProtocol) -> io::Result<VerdictWriter> {
        let file = OpenOptions::new().write(true).open(control)?;
        Ok(VerdictWriter::direct(file, protocol))
    }

    /// A writer over an open control file, written by the calling thread.
    pub fn direct(file: File, protocol: ControlProtocol) -> VerdictWriter {
        VerdictWriter {
            output: Output::Direct(file),
            protocol,
            counters: Arc::default(),
        }
    }

    /// A writer whose commands are written by whichever thread serves the
    /// returned [`VerdictRelay`] (spec §7.1: only the forking thread may).
    pub fn relayed(file: File, protocol: ControlProtocol) -> (VerdictWriter, VerdictRelay) {
        let (tx, rx) = unbounded();
        let counters = Arc::<Counters>::default();
        (
            VerdictWriter {
                output: Output::Relay(tx),
                protocol,
                counters: Arc::clone(&counters),
            },
            VerdictRelay {
                file,
                commands: rx,
                counters,
            },
        )
    }

    /// Writes one control command (e.g. `enforce`), adding the `\n`.
    pub fn command(&self, text: &str) -> io::Result<()> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        match &self.output {
            Output::Direct(file) => write_once(file, &line),
            Output::Relay(_) => Err(io::Error::other(
                "control commands other than verdicts are not relayed",
            )),
        }
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
        match &self.output {
            Output::Direct(file) => {
                write_once(file, &bytes[..len])?;
                self.counters.count(trusted);
                Ok(())
            }
            Output::Relay(tx) => tx
                .send(Command {
                    bytes,
                    len: len as u8,
                    trusted,
                })
                .map_err(|_| io::Error::other("the verdict relay has stopped")),
        }
    }

    /// Counts of (trusted, untrusted) verdicts written.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.trusted.load(Ordering::Relaxed),
            self.counters.untrusted.load(Ordering::Relaxed),
        )
    }

    /// Verdicts the relay could not write (always 0 for a direct writer,
    /// whose failures are returned by [`VerdictWriter::release`]).
    pub fn failures(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
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

    #[test]
    fn a_relayed_writer_writes_on_the_serving_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        std::fs::write(&path, b"").unwrap();
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        let (writer, relay) = VerdictWriter::relayed(file, ControlProtocol::Key("cd".into()));
        let writer = Arc::new(writer);
        let workers: Vec<_> = (0..4u64)
            .map(|i| {
                let w = Arc::clone(&writer);
                std::thread::spawn(move || w.release(Task { pid: i, tnum: None }, i != 2))
            })
            .collect();
        for w in workers {
            w.join().unwrap().unwrap();
        }
        // Other commands must come from the namespace's own monitor (spec §7.1).
        assert!(writer.command("enforce").is_err());
        drop(writer);
        assert_eq!(relay.serve(), (3, 1, 0));
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "trusted pid=0 key=cd",
                "trusted pid=1 key=cd",
                "trusted pid=3 key=cd",
                "untrusted pid=2 key=cd"
            ]
        );
    }
}
