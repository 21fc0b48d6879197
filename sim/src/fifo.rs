//! The fake securityfs tree and its two FIFOs: `control` (the TMA writes,
//! the simulator reads) and `external_tma/<id>` (the simulator writes, the
//! TMA reads).
//!
//! Opening a FIFO blocks until the other end is opened too. The simulator
//! opens both of its ends without blocking, so the TMA may open the files in
//! any order: `control` is opened for reading with `O_NONBLOCK` (succeeds at
//! once, and lets the TMA's blocking open for writing return), and the export
//! FIFO is opened for writing with `O_NONBLOCK`, retried on `ENXIO` (no
//! reader yet) until the TMA opens it or the open timeout passes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

use super::ledger::{parse_command, Command, Ledger};
use super::SimError;

/// Longest command line kept; the kernel accepts at most 127 bytes, anything
/// far longer is garbage and is cut (then reported as a malformed/other command).
const MAX_COMMAND: usize = 4096;

/// Paths of the fake tree.
pub struct Tree {
    /// `<root>/control`.
    pub control: PathBuf,
    /// `<root>/id`.
    pub id: PathBuf,
    /// `<root>/external_tma/<id>`.
    pub export: PathBuf,
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> SimError {
    move |source| SimError::Io { what, source }
}

/// Removes whatever is at `path` (a stale FIFO or file); absence is fine.
fn remove_stale(path: &Path) -> Result<(), SimError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing stale {}", path.display()))(e)),
    }
}

fn make_fifo(path: &Path) -> Result<(), SimError> {
    remove_stale(path)?;
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
        .map_err(|e| io_err(format!("creating FIFO {}", path.display()))(e.into()))
}

/// Creates `<root>/{control,id,aggregate}` and the `external_tma`
/// directory; `id` reads `shown_id`. The export FIFO of `namespace` comes
/// with [`create_export`].
pub fn create_host(
    root: &Path,
    namespace: u64,
    shown_id: u64,
    aggregate: &str,
) -> Result<Tree, SimError> {
    let ext = root.join("external_tma");
    std::fs::create_dir_all(&ext).map_err(io_err(format!("creating {}", ext.display())))?;
    let tree = Tree {
        control: root.join("control"),
        id: root.join("id"),
        export: ext.join(namespace.to_string()),
    };
    // A stale export FIFO of an earlier run must not be taken for a new namespace.
    remove_stale(&tree.export)?;
    for (path, text) in [
        (tree.id.clone(), shown_id.to_string()),
        (root.join("aggregate"), aggregate.to_owned()),
    ] {
        remove_stale(&path)?;
        std::fs::write(&path, format!("{text}\n"))
            .map_err(io_err(format!("writing {}", path.display())))?;
    }
    // `control` last: once it exists, the rest of the tree does too.
    make_fifo(&tree.control)?;
    Ok(tree)
}

/// Creates the export FIFO `external_tma/<id>`.
pub fn create_export(tree: &Tree) -> Result<(), SimError> {
    make_fifo(&tree.export)
}

/// Rewrites `id` in place (same inode: a reader that keeps the file open
/// and reads from offset 0 sees the new value; between the truncation and
/// the write it may read nothing, and reads again).
pub fn write_id(tree: &Tree, namespace: u64) -> Result<(), SimError> {
    std::fs::write(&tree.id, format!("{namespace}\n"))
        .map_err(io_err(format!("writing {}", tree.id.display())))
}

/// Keeps the export FIFO open until its reader has closed it, as the
/// kernel keeps a namespace's export file while the namespace lives.
pub fn hold_until_reader_closes(export: &File) -> Result<(), SimError> {
    loop {
        // No events asked for: POLLERR (no reader left) is always reported.
        let mut fds = [PollFd::new(export.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::from(50u8)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {
                let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
                if fds[0].revents().is_some_and(|r| r.intersects(gone)) {
                    return Ok(());
                }
            }
            Err(e) => {
                return Err(io_err(
                    "waiting for the TMA to close the export FIFO".into(),
                )(e.into()))
            }
        }
    }
}

fn set_blocking(file: &File, blocking: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL)?);
    let flags = if blocking {
        flags - OFlag::O_NONBLOCK
    } else {
        flags | OFlag::O_NONBLOCK
    };
    fcntl(file, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Opens the read end of `control` without waiting for a writer.
pub fn open_control(path: &Path) -> Result<File, SimError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))
}

/// Opens the write end of the export FIFO once the TMA has opened it for
/// reading, or fails after `timeout`. The returned file blocks on writes
/// (a full pipe is back-pressure from the TMA).
pub fn open_export(path: &Path, timeout: Duration) -> Result<File, SimError> {
    let start = Instant::now();
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(path)
        {
            Ok(f) => {
                set_blocking(&f, true)
                    .map_err(io_err(format!("configuring {}", path.display())))?;
                return Ok(f);
            }
            Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32) => {
                if start.elapsed() >= timeout {
                    return Err(SimError::OpenTimeout {
                        path: path.to_path_buf(),
                        waited: timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(io_err(format!("opening {}", path.display()))(e)),
        }
    }
}

/// When the control reader should stop.
pub struct Stop {
    /// Set by the sender once the export FIFO is closed.
    pub ending: AtomicBool,
    /// Read on for this long after `ending` unless the TMA closes `control` first.
    pub linger: Duration,
}

/// The control reader thread: reads commands until told to stop, applying
/// them to the ledger with the time they were read.
pub fn read_control(
    path: PathBuf,
    mut file: File,
    ledger: Arc<Ledger>,
    stop: Arc<Stop>,
) -> Result<(), SimError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut ending_since: Option<Instant> = None;
    loop {
        if ending_since.is_none() && stop.ending.load(Ordering::Acquire) {
            ending_since = Some(Instant::now());
        }
        if ending_since.is_some_and(|t| t.elapsed() >= stop.linger) {
            return Ok(());
        }
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(20u8)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(io_err(format!("polling {}", path.display()))(e.into())),
        }
        match file.read(&mut buf) {
            Ok(0) => {
                // Every writer closed `control`. After the export closed, that
                // is the TMA going away; before, it may reopen for each command.
                if ending_since.is_some() {
                    return Ok(());
                }
                // A fresh read end (opened before the old one is closed, so
                // that a writer never finds no reader) stops poll() reporting
                // the old hang-up over and over.
                file = open_control(&path)?;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(n) => {
                let at = Instant::now();
                let mut cmds = Vec::new();
                for &b in &buf[..n] {
                    if b == b'\n' {
                        cmds.push(parse_command(&line));
                        line.clear();
                    } else if line.len() < MAX_COMMAND {
                        line.push(b);
                    }
                }
                let cmds: Vec<Command> = cmds
                    .into_iter()
                    .filter(|c| !matches!(c, Command::Other(t) if t.is_empty()))
                    .collect();
                if !cmds.is_empty() {
                    ledger.apply(cmds, at);
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }
}
