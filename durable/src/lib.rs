//! Crash-safe file primitives shared by every on-disk format of tsem-stream
//! (the model store, the archive, the fleet's publish buffer) and by the
//! commands that write models and keys.
//!
//! The rules they carry, once for all formats:
//! - a format's directory is private (mode 0700) and has one writer at a
//!   time ([`lock_dir`], an `flock` that the kernel drops when the process
//!   dies, so a crash never leaves a stale lock);
//! - files are created new, mode 0600, never through a symbolic link
//!   ([`create_private_file`]);
//! - a file is replaced atomically and durably ([`replace_file`]): a fresh
//!   temporary file opened with `O_CREAT|O_EXCL|O_NOFOLLOW`, `fsync`, `rename`,
//!   `fsync` of the directory (as SQLite does), so a reader sees the old or
//!   the new content, never a mix, and a crash never loses a renamed file;
//! - a record that must survive a torn write is framed with its length and a
//!   CRC ([`frame`]), so recovery can tell a complete record from the tail of
//!   an interrupted write.
#![warn(missing_docs)]

pub mod frame;
pub mod trusted;

pub use trusted::{check_private_dir, read_trusted_file, TrustError};

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why a directory's writer lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{} is in use by another process", dir.display())]
    Busy {
        /// The directory.
        dir: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The exclusive writer lock of a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

/// Takes the exclusive lock of `dir` on its lock file `name` (created mode
/// 0600 if missing), without waiting.
pub fn lock_dir(dir: &Path, name: &str) -> Result<DirLock, LockError> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DirLock { _lock: lock }),
        Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy {
            dir: dir.to_path_buf(),
        }),
        Err((_, e)) => Err(LockError::Io {
            path,
            source: io::Error::from(e),
        }),
    }
}

/// Creates `dir` with mode 0700 (its parents as usual) unless it exists.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Creates a new file, mode 0600, refusing to follow a symbolic link or to
/// open anything that already exists.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Opens `path` for appending, creating it mode 0600 if missing; never
/// through a symbolic link.
pub fn open_append_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Makes the directory entries of `dir` durable (new or renamed files).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `path`; a file that is already gone is fine.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The prefix of every temporary file [`replace_file`] makes, so that a
/// format can recognise (and remove) those a crash left behind.
pub const TEMP_PREFIX: &str = ".tsem-tmp-";

/// Replaces `path` with `bytes` atomically and durably; the new file has
/// mode 0600.
///
/// The temporary file is created beside `path` under a name no one else
/// uses (pid and a counter, and `O_EXCL|O_NOFOLLOW`, so a file or link
/// planted under that name makes this fail instead of writing through it);
/// it is fsynced before the rename, so `path` never names a file whose
/// content did not reach the disk, and the directory after it, so the
/// rename itself survives a crash. On failure the temporary file is removed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = write_and_rename(path, bytes, Sync::FileAndDirectory)?;
    sync_dir(dir)
}

/// Replaces `path` with `bytes` atomically but without waiting for the disk:
/// after a crash it holds the old or the new content, never a mix. For
/// positions that may lag behind after a crash at no cost but repeated work
/// (a publish cursor: entries past it are sent again and deduplicated).
pub fn replace_file_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_and_rename(path, bytes, Sync::Nothing).map(|_| ())
}

/// Removes the temporary files that [`replace_file`] calls of processes
/// that no longer run left in `dir` (a crash between creating and renaming
/// them); returns how many. Those of live processes may be in use and stay,
/// and so do those of other users (in a shared directory).
pub fn remove_stale_temporaries(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut removed = 0;
    let me = nix::unistd::geteuid().as_raw();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        if entry.metadata()?.uid() != me {
            continue;
        }
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| {
            p > 0
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) != Err(Errno::ESRCH)
        });
        if !alive {
            remove_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// How [`write_output`] wrote a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// A new regular file replaced the path ([`replace_file`]).
    Replaced,
    /// The path names something that is not a regular file (a device, a
    /// FIFO, a terminal): the bytes were written into it.
    Through,
}

/// Writes a command's output to `path`: a regular file (or a path that does
/// not exist yet) is replaced atomically and durably, so a crash or a
/// failure leaves the old content whole; anything else that exists there
/// (`/dev/null`, a FIFO, `/dev/stdout`) is written into, never replaced. A
/// symbolic link to a regular file is itself replaced, as `mv` would: a link
/// planted in a shared directory cannot make us write elsewhere. Temporary
/// files that our own dead processes left beside it are removed first.
pub fn write_output(path: &Path, bytes: &[u8]) -> io::Result<Written> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => {
            let mut f = OpenOptions::new().write(true).open(path)?;
            f.write_all(bytes)?;
            return Ok(Written::Through);
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    remove_stale_temporaries(parent_dir(path))?;
    replace_file(path, bytes)?;
    Ok(Written::Replaced)
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// What [`write_and_rename`] waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    FileAndDirectory,
    Nothing,
}

/// Writes `bytes` to a fresh temporary file beside `path` and renames it
/// over `path`; returns the directory.
fn write_and_rename<'p>(path: &'p Path, bytes: &[u8], sync: Sync) -> io::Result<&'p Path> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        name.to_string_lossy()
    ));
    let written = (|| {
        let mut f = create_private_file(&tmp)?;
        f.write_all(bytes)?;
        if sync == Sync::FileAndDirectory {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn a_replaced_file_has_the_new_content_and_mode_0600_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        replace_file(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model")]);
    }

    #[test]
    fn temporaries_of_dead_writers_are_removed_and_those_of_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir
            .path()
            .join(format!("{TEMP_PREFIX}{}-0-model", i32::MAX));
        let live = dir
            .path()
            .join(format!("{TEMP_PREFIX}{}-0-model", std::process::id()));
        fs::write(&dead, b"half").unwrap();
        fs::write(&live, b"busy").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.exists());
    }

    #[test]
    fn an_output_over_a_device_is_written_through_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        assert_eq!(write_output(&fifo, b"model\n").unwrap(), Written::Through);
        assert_eq!(reader.join().unwrap(), b"model\n");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(
            write_output(Path::new("/dev/null"), b"x").unwrap(),
            Written::Through
        );
    }

    #[test]
    fn an_output_through_a_planted_link_replaces_the_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("model.out");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(write_output(&link, b"new").unwrap(), Written::Replaced);
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&link).unwrap(), b"new");
    }

    #[test]
    fn a_second_lock_of_a_directory_is_refused_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_dir(dir.path(), "LOCK").unwrap();
        assert!(matches!(
            lock_dir(dir.path(), "LOCK"),
            Err(LockError::Busy { .. })
        ));
    }

    #[test]
    fn a_private_file_is_never_created_through_a_symbolic_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_private_file(&link).is_err());
        assert!(open_append_private(&link).is_err());
        assert!(!target.exists());
    }
}
