//! Files and directories tsem-stream trusts: what it reads as a model, a key
//! or a store, and where it keeps its formats. Another user of the host must
//! not be able to plant or change them (the local attacker of SECURITY.md),
//! so, as PostgreSQL does with its data directory and OpenSSH with its keys:
//! - a format's directory is a real directory (not a symbolic link), owned
//!   by the effective user (or root) and not writable by group or others;
//! - a trusted file is a regular file (no FIFO or device, which could block
//!   or feed endless data), owned by the effective user (or root), not
//!   writable by group or others, not in a directory others may write
//!   without the sticky bit, and not larger than a cap; it is checked with
//!   `fstat` on the descriptor it is read from, so it cannot be swapped
//!   between the check and the read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file or directory is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// It could not be examined or read. (The error is part of the message,
    /// not a `source`: a report that prints the chain would say it twice.)
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// It is there, but another user could have planted or changed it.
    #[error("{}: {problem}; {fix}", path.display())]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
}

fn unsafe_path(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> TrustError {
    TrustError::Unsafe {
        path: path.to_path_buf(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> TrustError + '_ {
    move |error| TrustError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Owned by the effective user, or by root.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Checks the owner and the write permissions of `meta`, the metadata of `path`.
fn check_owner_and_mode(path: &Path, meta: &fs::Metadata) -> Result<(), TrustError> {
    if !trusted_owner(meta.uid()) {
        return Err(unsafe_path(
            path,
            format!("owned by uid {}, another user", meta.uid()),
            format!(
                "it must belong to uid {} (or root): `chown {} {}`",
                nix::unistd::geteuid(),
                nix::unistd::geteuid(),
                path.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "world-writable"
        } else {
            "group-writable"
        };
        return Err(unsafe_path(
            path,
            format!("{who} (mode {mode:04o})"),
            format!(
                "only its owner may write it: `chmod go-w {}`",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Checks an existing directory a format keeps its files in: a real
/// directory, of a trusted owner, not writable by group or others.
pub fn check_private_dir(dir: &Path) -> Result<(), TrustError> {
    let meta = fs::symlink_metadata(dir).map_err(io_error(dir))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_path(
            dir,
            "a symbolic link",
            "give the directory it points to instead",
        ));
    }
    if !meta.is_dir() {
        return Err(unsafe_path(dir, "not a directory", "give a directory"));
    }
    check_owner_and_mode(dir, &meta)
}

/// The most a trusted key file may hold.
pub const MAX_KEY_FILE: u64 = 1 << 16;
/// The most a trusted model file may hold (about 7 million points).
pub const MAX_MODEL_FILE: u64 = 1 << 29;

/// Reads a trusted file whole, at most `max_len` bytes.
pub fn read_trusted_file(path: &Path, max_len: u64) -> Result<Vec<u8>, TrustError> {
    // Resolve links first: the checks below then apply to the file itself,
    // and the open refuses a link swapped in meanwhile (O_NOFOLLOW).
    let real = fs::canonicalize(path).map_err(io_error(path))?;
    if let Some(parent) = real.parent() {
        let meta = fs::metadata(parent).map_err(io_error(parent))?;
        let mode = meta.mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(unsafe_path(
                path,
                format!(
                    "it lies in {}, which every user may write",
                    parent.display()
                ),
                "keep it in a directory only its owner may write",
            ));
        }
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&real)
        .map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.is_file() {
        return Err(unsafe_path(
            path,
            "not a regular file",
            "give a regular file",
        ));
    }
    check_owner_and_mode(path, &meta)?;
    if meta.len() > max_len {
        return Err(unsafe_path(
            path,
            format!("{} bytes, more than the {max_len} allowed", meta.len()),
            "is this the right file?",
        ));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(max_len + 1)
        .read_to_end(&mut data)
        .map_err(io_error(path))?;
    if data.len() as u64 > max_len {
        return Err(unsafe_path(
            path,
            "it grew past the size allowed while being read",
            "is something writing it?",
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_group_or_world_writable_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model");
        fs::write(&path, b"end\n").unwrap();
        chmod(&path, 0o644);
        assert_eq!(read_trusted_file(&path, 100).unwrap(), b"end\n");
        for mode in [0o664, 0o646] {
            chmod(&path, mode);
            let e = read_trusted_file(&path, 100).unwrap_err().to_string();
            assert!(e.contains("writable") && e.contains("chmod go-w"), "{e}");
        }
    }

    #[test]
    fn a_fifo_or_an_oversized_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_trusted_file(&fifo, 100).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 101]).unwrap();
        chmod(&big, 0o600);
        let e = read_trusted_file(&big, 100).unwrap_err().to_string();
        assert!(e.contains("101 bytes"), "{e}");
    }

    #[test]
    fn a_file_in_a_directory_everyone_may_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let path = open.join("model");
        fs::write(&path, b"end\n").unwrap();
        chmod(&path, 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        for p in [&path, &link] {
            let e = read_trusted_file(p, 100).unwrap_err().to_string();
            assert!(e.contains("every user may write"), "{e}");
        }
    }

    #[test]
    fn a_directory_must_be_real_and_private_to_be_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        fs::create_dir(&store).unwrap();
        chmod(&store, 0o700);
        check_private_dir(&store).unwrap();
        chmod(&store, 0o770);
        let e = check_private_dir(&store).unwrap_err().to_string();
        assert!(e.contains("group-writable"), "{e}");
        chmod(&store, 0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&store, &link).unwrap();
        let e = check_private_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_directory_of_another_user_is_not_trusted() {
        if !nix::unistd::geteuid().is_root() {
            return; // Giving a directory away takes root (CI runs as root).
        }
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("planted");
        fs::create_dir(&planted).unwrap();
        chmod(&planted, 0o700);
        nix::unistd::chown(&planted, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = check_private_dir(&planted).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
}
