//! The memory-mapped, crash-safe model store.
//!
//! The in-memory model is authoritative while the agent runs; this store
//! mirrors it durably so that a restarted agent (or an operator tool, through
//! [`StoreSnapshot`]) finds every acknowledged batch of updates. Updates are
//! staged in memory ([`ModelStore::upsert_point`], [`ModelStore::append_trajectory`],
//! …) and made durable all together by [`ModelStore::commit`]: a batch is all
//! or nothing, and once `commit` returns `Ok` it survives `kill -9` and power
//! loss.
//!
//! # Files
//!
//! A store is a directory (mode 0700; every file 0600, as the model reveals
//! what the workload does):
//!
//! | file | contents |
//! |------|----------|
//! | `lock` | empty; the writer holds an exclusive `flock` on it |
//! | `header` | the *checkpoint*: format version, generation, last applied batch, which table file, table capacity, point count, trajectory/forensics lengths (bytes, lines, CRC32 of the whole log), the [`StoreMeta`], the pseudonyms; a CRC32 over all of it |
//! | `table.<n>` | the points: an open-addressing hash table (linear probing, keyed SipHash-1-3 of the coefficient) in a memory-mapped file: a 4096-byte table header, then 64-byte slots `flags, CRC32, order, count, coefficient` (see the `table` submodule) |
//! | `trajectory`, `forensics` | append-only logs, one event description per `'\n'`-terminated line |
//! | `wal` | the write-ahead log: one record per batch since the checkpoint |
//!
//! All integers are little-endian. A WAL record is
//! `magic "TWAL" | body length u64 | sequence u64 | body | CRC32` where the body
//! holds *absolute* values: the number of points after the batch, the whole
//! new meta, for each log its new state (length, lines, CRC) and the bytes
//! appended, the new pseudonym list when it changed, and every touched point
//! `(coefficient, count, order, valid)`, new points in insertion order.
//! Replaying a record is therefore idempotent: it can be applied to a table
//! that already holds some or all of it.
//!
//! # Durability policy
//!
//! **Commit** (one `fdatasync`, no `msync`):
//! 1. If the batch would push the table past 3/4 load, *grow first*: build
//!    `table.<n+1>` with twice (or more) the slots by rehashing every point,
//!    and checkpoint onto it (below). Growing before anything of the batch
//!    is written means a failure here (e.g. a full disk) leaves the batch
//!    staged and the store untouched. Likewise, a WAL past its size limit is
//!    checkpointed before the batch, not after, so that checkpoint errors are
//!    never reported for a batch that is already durable.
//! 2. `pwrite` the new log lines to `trajectory`/`forensics` at their
//!    committed lengths (not synced: the WAL record carries the same bytes,
//!    so recovery can rewrite them).
//! 3. `pwrite` the WAL record and `fdatasync` the WAL. **This is the
//!    acknowledgement point**: after it the batch is recoverable from the
//!    WAL alone, before it nothing refers to the batch's bytes.
//! 4. Apply the points to the mapped table (plain memory writes; the kernel
//!    writes the pages back whenever it likes, which is harmless because
//!    every page change since the checkpoint is covered by a durable WAL
//!    record and is rewritten by replay).
//!
//! **Checkpoint** (when the WAL exceeds [`DEFAULT_CHECKPOINT_BYTES`], on
//! growth, or on [`ModelStore::checkpoint`]):
//! 1. `msync` the table and `fdatasync` the logs: the header about to be
//!    written claims they hold every batch so far, and the WAL that could
//!    rebuild them is cut just after, so they must be on disk first.
//! 2. Write a fresh temporary file, `fsync` it, `rename` it over `header`, `fsync`
//!    the directory ([`tsem_durable::replace_file`]): the switch is atomic, and a crash leaves either the old
//!    or the new checkpoint, each consistent with the files it names.
//! 3. After a growth, unlink the old table (a crash first leaves a stray
//!    file that the next open removes).
//! 4. Truncate the WAL (no sync: if the truncation is lost, its records are
//!    numbered at or below the checkpoint and are skipped as stale).
//!
//! **Recovery** on [`ModelStore::open`]: take the lock, remove a leftover
//! temporary header and any `table.<n>` the header does not name (an interrupted growth),
//! read the header, map its table, then replay the WAL records numbered
//! after the checkpoint in order, rewriting their log bytes and points. The
//! first incomplete or damaged record ends the log and is cut off: it is the
//! tail of a commit that never returned (a damaged record *followed* by an
//! intact one cannot come from a crash and is reported as corruption; a
//! damaged *last* record cannot be told from a torn write, so media damage
//! there loses that one batch).
//! Finally the logs are truncated to the recovered lengths, dropping lines
//! of unacknowledged batches, and every slot of the table is checked (CRC,
//! orders unique and dense, count): O(capacity), ≈30 ms for a million
//! points. Anything inconsistent is a [`StoreError::Corrupt`] naming the
//! file and the reason, never a panic. The logs' content is checked
//! against its CRC when it is read ([`ModelStore::trajectory`]).
//!
//! Torn slots: a slot's flags word is written last, after a fence, and
//! 64-byte slots never straddle a sector, so after a crash an unfinished
//! insert reads as empty and an unfinished update as the same coefficient
//! with a bad CRC, both rewritten by replay. Anything else is corruption.
//!
//! **Readers** ([`StoreSnapshot`]) take no lock and write nothing. They read
//! the header, the table with `read(2)` (slots with a bad CRC, i.e. caught
//! mid-update, are dropped), the checkpointed log prefixes and the WAL, then
//! the header again: if its generation changed, a checkpoint or growth ran
//! concurrently and they retry. Otherwise the WAL records overlay the table
//! read: any slot change a reader can see was applied after its WAL record
//! was written, and the WAL is read after the table, so the overlay yields
//! exactly the state after the last complete record. That record has been
//! written but its `fdatasync` may still be in flight: a snapshot may show a
//! batch a moment before its `commit` returns (it survives `kill -9`, as the
//! page cache does, but not a power loss in that instant).

mod format;
mod snapshot;
mod table;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use format::{
    decode_header, encode_header, encode_record, scan_wal, Header, HeaderError, LogAppend,
    LogState, RecordParts, FORMAT_VERSION,
};
use table::{parse_table_file_name, Table, MAX_CAPACITY};
use tsem_durable::{DirLock, LockError};
use tsem_model::{Digest, Profile};

pub use snapshot::{model_from_parts, model_from_snapshot, StoreSnapshot};

/// Scalar model state persisted with each batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    /// The mapping profile of the model.
    pub profile: Profile,
    /// Raw hardware aggregate in force, if any.
    pub aggregate: Option<Digest>,
    /// `AGG_EXT` the measurement/state start from, once fixed.
    pub host_aggregate: Option<Digest>,
    /// The base value.
    pub base: Digest,
    /// The running measurement.
    pub measurement: Digest,
    /// True once the model is sealed.
    pub sealed: bool,
    /// True when violations are enforced.
    pub enforcing: bool,
    /// Events processed.
    pub events: u64,
    /// Security violations seen.
    pub violations: u64,
    /// Events with an unknown name.
    pub unknown_event_names: u64,
    /// Events that could not be processed.
    pub errors: u64,
}

/// A security state point as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredPoint {
    /// The security state coefficient.
    pub coefficient: Digest,
    /// How many times it was seen.
    pub count: u64,
    /// False for a point recorded as a violation (forensics).
    pub valid: bool,
    /// Insertion index, 0-based: the position of the point in the model.
    pub order: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could have been planted or changed by another user.
    #[error(transparent)]
    Untrusted(#[from] tsem_durable::TrustError),
    /// A system call on a store file failed.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A store file holds something that cannot be right.
    #[error("corrupt store file {}: {reason}", .path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process (or another handle in this one) is the writer.
    #[error("store {} is locked by another writer", .path.display())]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The store was written in another format version.
    #[error("store {} has format version {found}; this program reads version {expected}", .path.display())]
    Version {
        /// The header file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The directory is not a model store.
    #[error("{} is not a model store: {reason}", .path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// `create` was given a directory that already has files.
    #[error("cannot create a store in {}: the directory is not empty", .path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A write, sync or checkpoint failed earlier: what is on disk is no
    /// longer known to match this handle (after a failed `fsync` the kernel
    /// may have dropped the data), so it refuses further commits.
    #[error("store {} is unusable after a failed write; reopen it to recover", .path.display())]
    Poisoned {
        /// The store directory.
        path: PathBuf,
    },
    /// The table would need more slots than the format allows.
    #[error("store {} cannot hold {points} points", .path.display())]
    TooLarge {
        /// The store directory.
        path: PathBuf,
        /// How many points were asked for.
        points: u64,
    },
    /// The store was made under another mapping profile than the one asked for.
    #[error("the store was made with profile {store}, not {requested}: give --profile {store}")]
    ProfileMismatch {
        /// The store's profile.
        store: Profile,
        /// The profile in force.
        requested: Profile,
    },
    /// A snapshot kept racing with checkpoints and gave up.
    #[error("no consistent snapshot of {} after many attempts: {reason}", .path.display())]
    Busy {
        /// The store directory.
        path: PathBuf,
        /// What changed under the last attempt.
        reason: String,
    },
}

/// `map_err` helper: an I/O error on `path`.
pub(crate) fn io_err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const LOCK_FILE: &str = "lock";
const HEADER_FILE: &str = "header";
const WAL_FILE: &str = "wal";
const TRAJECTORY_FILE: &str = "trajectory";
const FORENSICS_FILE: &str = "forensics";

/// Slots of a new store's table.
const INITIAL_CAPACITY: u64 = 1024;

/// WAL size past which the next commit first checkpoints. Bounds both the
/// disk the WAL takes and the replay work of a recovery, while keeping
/// checkpoints (an `msync` of the dirty table pages plus four syncs) rare.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 32 << 20;

/// Points a table of `capacity` slots holds before it grows: linear probing
/// stays short (≈2.5 probes per hit, ≈8.5 per miss) up to 3/4 load.
fn max_points(capacity: u64) -> u64 {
    capacity / 4 * 3
}

/// The smallest power-of-two capacity (at least the initial one) holding
/// `points` points.
fn capacity_for(points: u64) -> Option<u64> {
    let mut c = INITIAL_CAPACITY;
    while max_points(c) < points {
        c = c.checked_mul(2).filter(|&c| c <= MAX_CAPACITY)?;
    }
    Some(c)
}

/// Reads and decodes `dir/header`.
fn read_header(dir: &Path) -> Result<Header, StoreError> {
    let path = dir.join(HEADER_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let reason = if dir.is_dir() {
                "it has no header file (an interrupted create leaves none)"
            } else {
                "no such directory"
            };
            return Err(StoreError::NotAStore {
                path: dir.to_path_buf(),
                reason: reason.into(),
            });
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    decode_header(&bytes).map_err(|e| match e {
        HeaderError::NotAStore(reason) => StoreError::NotAStore {
            path: dir.to_path_buf(),
            reason,
        },
        HeaderError::Version(found) => StoreError::Version {
            path,
            found,
            expected: FORMAT_VERSION,
        },
        HeaderError::Corrupt(reason) => StoreError::Corrupt { path, reason },
    })
}

/// Replaces the header atomically and durably ([`tsem_durable::replace_file`]):
/// `header` can never name a file whose content did not reach the disk.
fn write_header(dir: &Path, h: &Header) -> Result<(), StoreError> {
    let path = dir.join(HEADER_FILE);
    tsem_durable::replace_file(&path, &encode_header(h)).map_err(io_err(&path))
}

fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    tsem_durable::remove_if_exists(path).map_err(io_err(path))
}

fn create_file(path: &Path) -> Result<File, StoreError> {
    tsem_durable::create_private_file(path).map_err(io_err(path))
}

/// Opens an existing store file for reading and writing; a missing one is
/// corruption (the store creates them all before its header).
fn open_existing(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: "the file is missing".into(),
            },
            _ => io_err(path)(e),
        })
}

/// Takes the writer lock of `dir`.
fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    tsem_durable::lock_dir(dir, LOCK_FILE).map_err(|e| match e {
        LockError::Busy { dir } => StoreError::Locked { path: dir },
        LockError::Io { path, source } => io_err(&path)(source),
    })
}

/// Checks a log's bytes against its recorded state and splits its lines.
fn split_log(path: &Path, bytes: &[u8], state: &LogState) -> Result<Vec<Vec<u8>>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 != state.len {
        return Err(corrupt(format!(
            "log has {} bytes, expected {}",
            bytes.len(),
            state.len
        )));
    }
    if crc32fast::hash(bytes) != state.crc {
        return Err(corrupt("log checksum mismatch".into()));
    }
    let Some((&last, body)) = bytes.split_last() else {
        return if state.lines == 0 {
            Ok(Vec::new())
        } else {
            Err(corrupt(format!(
                "empty log, expected {} lines",
                state.lines
            )))
        };
    };
    if last != b'\n' {
        return Err(corrupt("log does not end with a newline".into()));
    }
    let lines: Vec<Vec<u8>> = body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.len() as u64 != state.lines {
        return Err(corrupt(format!(
            "log has {} lines, expected {}",
            lines.len(),
            state.lines
        )));
    }
    Ok(lines)
}

/// An append-only log file and its committed extent.
struct Log {
    path: PathBuf,
    file: File,
    /// Bytes, lines and CRC of everything committed.
    committed: LogState,
    /// Length made durable by the last checkpoint (or sync).
    synced_len: u64,
}

impl Log {
    fn open(dir: &Path, name: &str, checkpoint: LogState) -> Result<Log, StoreError> {
        let path = dir.join(name);
        let file = open_existing(&path)?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        if size < checkpoint.len {
            return Err(StoreError::Corrupt {
                path,
                reason: format!(
                    "log is {size} bytes but the checkpoint says {}",
                    checkpoint.len
                ),
            });
        }
        Ok(Log {
            path,
            file,
            committed: checkpoint,
            synced_len: checkpoint.len,
        })
    }

    /// Rewrites one batch's appended bytes during recovery.
    fn replay(&mut self, append: &LogAppend<'_>, seq: u64, wal: &Path) -> Result<(), StoreError> {
        if self.committed.extended(append.bytes) != append.after {
            return Err(StoreError::Corrupt {
                path: wal.to_path_buf(),
                reason: format!(
                    "batch {seq}: its {} bytes do not follow the log's committed state",
                    self.path.display()
                ),
            });
        }
        self.file
            .write_all_at(append.bytes, self.committed.len)
            .map_err(io_err(&self.path))?;
        self.committed = append.after;
        Ok(())
    }

    /// Drops bytes past the committed length: lines of a batch whose
    /// commit never returned.
    fn truncate_tail(&self) -> Result<(), StoreError> {
        let size = self.file.metadata().map_err(io_err(&self.path))?.len();
        if size > self.committed.len {
            self.file
                .set_len(self.committed.len)
                .map_err(io_err(&self.path))?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.synced_len != self.committed.len {
            self.file.sync_data().map_err(io_err(&self.path))?;
            self.synced_len = self.committed.len;
        }
        Ok(())
    }

    fn lines(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let len = usize::try_from(self.committed.len).map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            reason: "log too large for memory".into(),
        })?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, 0).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::Corrupt {
                    path: self.path.clone(),
                    reason: "log is shorter than its committed length".into(),
                }
            } else {
                io_err(&self.path)(e)
            }
        })?;
        split_log(&self.path, &buf, &self.committed)
    }
}

/// Checks every slot of the table after recovery: intact, orders unique
/// and below `len`, exactly `len` points.
fn validate_table(table: &Table, len: u64) -> Result<(), StoreError> {
    if len > table.capacity() {
        return Err(StoreError::Corrupt {
            path: table.path.clone(),
            reason: format!("{len} points cannot fit in {} slots", table.capacity()),
        });
    }
    let mut seen = vec![0u64; len.div_ceil(64) as usize];
    let mut count = 0u64;
    let mut problem: Option<String> = None;
    table.for_each(|i, p, intact| {
        if problem.is_some() {
            return;
        }
        if !intact {
            problem = Some(format!("slot {i} is damaged (checksum or flags mismatch)"));
            return;
        }
        if p.order >= len {
            problem = Some(format!(
                "slot {i} has order {} but the store holds {len} points",
                p.order
            ));
            return;
        }
        let (word, bit) = ((p.order / 64) as usize, p.order % 64);
        if seen[word] & (1 << bit) != 0 {
            problem = Some(format!("slot {i} repeats order {}", p.order));
            return;
        }
        seen[word] |= 1 << bit;
        count += 1;
    });
    if problem.is_none() && count != len {
        problem = Some(format!("the table holds {count} points, expected {len}"));
    }
    match problem {
        None => Ok(()),
        Some(reason) => Err(StoreError::Corrupt {
            path: table.path.clone(),
            reason,
        }),
    }
}

/// The single writer of a model store.
///
/// Staged changes are visible through this handle's getters at once and
/// reach the disk, all together, at [`commit`](Self::commit). Dropping the
/// handle without committing discards the staged batch, like a crash.
pub struct ModelStore {
    dir: PathBuf,
    /// Held for the life of the handle: the flock is the single-writer rule.
    _lock: DirLock,
    /// The checkpoint as last written.
    header: Header,
    table: Table,
    /// Committed points.
    len: u64,
    /// Last committed batch.
    seq: u64,
    committed_meta: StoreMeta,
    committed_pseudonyms: Vec<Digest>,
    trajectory: Log,
    forensics: Log,
    wal: File,
    wal_path: PathBuf,
    wal_len: u64,
    checkpoint_bytes: u64,
    poisoned: bool,
    // The staged batch.
    meta: StoreMeta,
    pseudonyms: Vec<Digest>,
    pseudonyms_staged: bool,
    /// Touched points in first-touch order (so new points are in insertion
    /// order), with an index by coefficient.
    staged_points: Vec<StoredPoint>,
    staged_index: HashMap<Digest, usize>,
    staged_new: u64,
    staged_trajectory: Vec<u8>,
    staged_forensics: Vec<u8>,
    dirty: bool,
    /// Reused WAL record buffer.
    record: Vec<u8>,
}

impl ModelStore {
    /// True when `dir` holds a store (its header exists).
    pub fn exists(dir: &Path) -> bool {
        dir.join("header").exists()
    }

    /// Creates a new store in `dir`, which must not exist or be empty; it
    /// is created (or narrowed to) mode 0700, and its files mode 0600.
    ///
    /// The header is written last, so a crash during `create` leaves a
    /// directory that [`open`](Self::open) rejects as not a store.
    pub fn create(dir: &Path, meta: &StoreMeta) -> Result<ModelStore, StoreError> {
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(StoreError::NotEmpty {
                        path: dir.to_path_buf(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err(dir))?;
            }
            Err(e) => return Err(io_err(dir)(e)),
        }
        // An existing empty directory must be ours (or root's) and closed to
        // others; it may still be wider than 0700 for reading.
        tsem_durable::check_private_dir(dir)?;
        fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        let table = Table::create(dir, 1, INITIAL_CAPACITY)?;
        table.flush()?;
        table.sync_file()?;
        for name in [WAL_FILE, TRAJECTORY_FILE, FORENSICS_FILE] {
            create_file(&dir.join(name))?;
        }
        let header = Header {
            generation: 1,
            applied_seq: 0,
            table_gen: 1,
            capacity: INITIAL_CAPACITY,
            len: 0,
            trajectory: LogState::default(),
            forensics: LogState::default(),
            meta: meta.clone(),
            pseudonyms: Vec::new(),
        };
        drop(table);
        write_header(dir, &header)?;
        Self::recover(dir, lock)
    }

    /// Opens an existing store as its writer, recovering from a crash: see
    /// the module documentation. Fails with [`StoreError::Locked`] while
    /// another writer has it open.
    pub fn open(dir: &Path) -> Result<ModelStore, StoreError> {
        // Check for a header before creating a lock file in a directory
        // that may not be a store at all.
        read_header(dir)?;
        // A store another user could write may hold any model: refuse it
        // before using a byte of it.
        tsem_durable::check_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        Self::recover(dir, lock)
    }

    fn recover(dir: &Path, lock: DirLock) -> Result<ModelStore, StoreError> {
        let header = read_header(dir)?;
        let header_path = dir.join(HEADER_FILE);
        if header.len > max_points(header.capacity) {
            return Err(StoreError::Corrupt {
                path: header_path,
                reason: format!(
                    "{} points cannot fit in {} slots",
                    header.len, header.capacity
                ),
            });
        }
        // Tables the header does not name: an interrupted growth, or an old
        // table whose unlink did not happen.
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // A header replacement a crash interrupted.
            if name.starts_with(tsem_durable::TEMP_PREFIX) {
                remove_if_exists(&entry.path())?;
            }
            if let Some(gen) = parse_table_file_name(name) {
                if gen != header.table_gen {
                    remove_if_exists(&entry.path())?;
                }
            }
        }
        let mut table = Table::open(dir, header.table_gen, header.capacity)?;
        let mut trajectory = Log::open(dir, TRAJECTORY_FILE, header.trajectory)?;
        let mut forensics = Log::open(dir, FORENSICS_FILE, header.forensics)?;
        let wal_path = dir.join(WAL_FILE);
        let wal = open_existing(&wal_path)?;
        let mut bytes = Vec::new();
        (&wal).read_to_end(&mut bytes).map_err(io_err(&wal_path))?;
        let scan = scan_wal(&bytes, header.applied_seq).map_err(|reason| StoreError::Corrupt {
            path: wal_path.clone(),
            reason,
        })?;

        let mut len = header.len;
        let mut seq = header.applied_seq;
        let mut meta = header.meta.clone();
        let mut pseudonyms = header.pseudonyms.clone();
        for rec in &scan.records {
            trajectory.replay(&rec.trajectory, rec.seq, &wal_path)?;
            forensics.replay(&rec.forensics, rec.seq, &wal_path)?;
            for p in &rec.points {
                table
                    .put(p, &mut len, header.len)
                    .map_err(|reason| StoreError::Corrupt {
                        path: table.path.clone(),
                        reason: format!("replaying batch {}: {reason}", rec.seq),
                    })?;
            }
            if len != rec.len_after {
                return Err(StoreError::Corrupt {
                    path: wal_path,
                    reason: format!(
                        "batch {} says {} points, replay gives {len}",
                        rec.seq, rec.len_after
                    ),
                });
            }
            meta = rec.meta.clone();
            if let Some(p) = &rec.pseudonyms {
                pseudonyms = p.clone();
            }
            seq = rec.seq;
        }
        // Cut the torn tail so the next record directly follows the last
        // good one.
        let wal_len = scan.end as u64;
        if wal_len != bytes.len() as u64 {
            wal.set_len(wal_len).map_err(io_err(&wal_path))?;
        }
        drop(bytes);
        validate_table(&table, len)?;
        trajectory.truncate_tail()?;
        forensics.truncate_tail()?;

        Ok(ModelStore {
            dir: dir.to_path_buf(),
            _lock: lock,
            header,
            table,
            len,
            seq,
            committed_meta: meta.clone(),
            committed_pseudonyms: pseudonyms.clone(),
            trajectory,
            forensics,
            wal,
            wal_path,
            wal_len,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            poisoned: false,
            meta,
            pseudonyms,
            pseudonyms_staged: false,
            staged_points: Vec::new(),
            staged_index: HashMap::new(),
            staged_new: 0,
            staged_trajectory: Vec::new(),
            staged_forensics: Vec::new(),
            dirty: false,
            record: Vec::new(),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The meta as of the last staged [`set_meta`](Self::set_meta).
    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }

    /// The point for `coefficient`, staged changes included. O(1): a staged
    /// map probe, then a probe of the mapped table.
    pub fn get(&self, coefficient: &Digest) -> Option<StoredPoint> {
        match self.staged_index.get(coefficient) {
            Some(&i) => self.staged_points.get(i).copied(),
            None => self.table.get(coefficient),
        }
    }

    /// Number of points, staged ones included.
    pub fn len(&self) -> usize {
        (self.len + self.staged_new) as usize
    }

    /// True when there are no points, staged or committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All points in insertion order, staged changes included. O(table
    /// capacity): a scan of the mapped table.
    pub fn points(&self) -> Vec<StoredPoint> {
        let mut by_order: Vec<Option<StoredPoint>> = vec![None; self.len()];
        self.table.for_each(|_, p, _| {
            if let Some(slot) = by_order.get_mut(p.order as usize) {
                *slot = Some(p);
            }
        });
        for p in &self.staged_points {
            if let Some(slot) = by_order.get_mut(p.order as usize) {
                *slot = Some(*p);
            }
        }
        by_order.into_iter().flatten().collect()
    }

    /// The pseudonyms as of the last staged [`set_pseudonyms`](Self::set_pseudonyms).
    pub fn pseudonyms(&self) -> Vec<Digest> {
        self.pseudonyms.clone()
    }

    /// Stages a point with its absolute values (`count` is the new total).
    ///
    /// The store owns insertion order: `point.order` is ignored; a new
    /// coefficient gets the next index and an existing one keeps its own.
    pub fn upsert_point(&mut self, point: StoredPoint) {
        self.dirty = true;
        if let Some(&i) = self.staged_index.get(&point.coefficient) {
            if let Some(p) = self.staged_points.get_mut(i) {
                p.count = point.count;
                p.valid = point.valid;
            }
            return;
        }
        let order = match self.table.get(&point.coefficient) {
            Some(old) => old.order,
            None => {
                self.staged_new += 1;
                self.len + self.staged_new - 1
            }
        };
        self.staged_index
            .insert(point.coefficient, self.staged_points.len());
        self.staged_points.push(StoredPoint { order, ..point });
    }

    /// Stages a trajectory line (without its `'\n'`; a `'\n'` inside the
    /// line would split it on reading, so it is stored as a space).
    pub fn append_trajectory(&mut self, line: &[u8]) {
        Self::append_line(&mut self.staged_trajectory, line);
        self.dirty = true;
    }

    /// Stages a forensics line (same rules as the trajectory).
    pub fn append_forensics(&mut self, line: &[u8]) {
        Self::append_line(&mut self.staged_forensics, line);
        self.dirty = true;
    }

    fn append_line(buf: &mut Vec<u8>, line: &[u8]) {
        debug_assert!(!line.contains(&b'\n'), "a log line must not contain '\\n'");
        buf.extend(line.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        buf.push(b'\n');
    }

    /// Stages new scalar state.
    pub fn set_meta(&mut self, meta: StoreMeta) {
        self.meta = meta;
        self.dirty = true;
    }

    /// Stages a new pseudonym list (replacing the old one).
    pub fn set_pseudonyms(&mut self, pseudonyms: &[Digest]) {
        self.pseudonyms = pseudonyms.to_vec();
        self.pseudonyms_staged = true;
        self.dirty = true;
    }

    /// Sets the WAL size past which a commit checkpoints first (default
    /// [`DEFAULT_CHECKPOINT_BYTES`]). Smaller means faster recovery and more
    /// frequent checkpoints.
    pub fn set_checkpoint_threshold(&mut self, bytes: u64) {
        self.checkpoint_bytes = bytes;
    }

    /// Makes the staged batch durable and returns its sequence number (the
    /// number of batches committed since the store was created). With
    /// nothing staged it writes nothing and returns the last number.
    ///
    /// On `Ok` the batch, and every earlier one, survives `kill -9` and
    /// power loss. On `Err` the batch may or may not be durable; the
    /// handle is then poisoned unless the failure came before anything of
    /// the batch was written (e.g. the table could not grow), in which case
    /// the batch stays staged and `commit` may be retried.
    pub fn commit(&mut self) -> Result<u64, StoreError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        if !self.dirty {
            return Ok(self.seq);
        }
        let needed = self.len + self.staged_new;
        if needed > max_points(self.table.capacity()) {
            self.grow(needed)?;
        } else if self.wal_len >= self.checkpoint_bytes {
            self.checkpoint_now(None)?;
        }

        let seq = self.seq + 1;
        let trajectory_after = self.trajectory.committed.extended(&self.staged_trajectory);
        let forensics_after = self.forensics.committed.extended(&self.staged_forensics);
        let mut record = std::mem::take(&mut self.record);
        encode_record(
            &mut record,
            RecordParts {
                seq,
                len_after: needed,
                meta: &self.meta,
                trajectory: (trajectory_after, &self.staged_trajectory),
                forensics: (forensics_after, &self.staged_forensics),
                pseudonyms: self.pseudonyms_staged.then_some(&self.pseudonyms[..]),
                points: &mut self.staged_points.iter().copied(),
                point_count: self.staged_points.len(),
            },
        );
        let written = self.write_batch(&record);
        self.record = record;
        if let Err(e) = written {
            self.poisoned = true;
            return Err(e);
        }

        // Durable: now apply to the mapped table.
        for p in &self.staged_points {
            let floor = self.len;
            if let Err(reason) = self.table.put(p, &mut self.len, floor) {
                self.poisoned = true;
                return Err(StoreError::Corrupt {
                    path: self.table.path.clone(),
                    reason: format!("applying batch {seq}: {reason}"),
                });
            }
        }
        debug_assert_eq!(self.len, needed);
        self.seq = seq;
        self.trajectory.committed = trajectory_after;
        self.forensics.committed = forensics_after;
        self.committed_meta.clone_from(&self.meta);
        if self.pseudonyms_staged {
            self.committed_pseudonyms.clone_from(&self.pseudonyms);
        }
        self.clear_staged();
        Ok(seq)
    }

    /// Steps 2 and 3 of a commit: log bytes, WAL record, `fdatasync`.
    fn write_batch(&mut self, record: &[u8]) -> Result<(), StoreError> {
        for (log, bytes) in [
            (&self.trajectory, &self.staged_trajectory),
            (&self.forensics, &self.staged_forensics),
        ] {
            if !bytes.is_empty() {
                log.file
                    .write_all_at(bytes, log.committed.len)
                    .map_err(io_err(&log.path))?;
            }
        }
        self.wal
            .write_all_at(record, self.wal_len)
            .map_err(io_err(&self.wal_path))?;
        // The acknowledgement point.
        self.wal.sync_data().map_err(io_err(&self.wal_path))?;
        self.wal_len += record.len() as u64;
        Ok(())
    }

    fn clear_staged(&mut self) {
        self.staged_points.clear();
        self.staged_index.clear();
        self.staged_new = 0;
        self.staged_trajectory.clear();
        self.staged_forensics.clear();
        self.pseudonyms_staged = false;
        self.dirty = false;
    }

    fn poisoned_error(&self) -> StoreError {
        StoreError::Poisoned {
            path: self.dir.clone(),
        }
    }

    /// Rehashes the committed points into a table big enough for `needed`
    /// points and checkpoints onto it.
    fn grow(&mut self, needed: u64) -> Result<(), StoreError> {
        let capacity = capacity_for(needed).ok_or_else(|| StoreError::TooLarge {
            path: self.dir.clone(),
            points: needed,
        })?;
        // Failing here changes nothing the store relies on (the new file is
        // not named by the header), so the handle is not poisoned.
        let mut new = Table::create(&self.dir, self.table.header.gen + 1, capacity)?;
        let mut problem = None;
        self.table.for_each(|_, p, _| {
            if problem.is_none() {
                problem = new.insert_moved(&p).err();
            }
        });
        if let Some(reason) = problem {
            let _ = fs::remove_file(&new.path);
            return Err(StoreError::Corrupt {
                path: self.table.path.clone(),
                reason: format!("growing the table: {reason}"),
            });
        }
        self.checkpoint_now(Some(new))
    }

    /// Checkpoints the committed state now (staged changes stay staged):
    /// afterwards the WAL is empty and a reopen has nothing to replay. Worth
    /// calling before a clean shutdown.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(self.poisoned_error());
        }
        self.checkpoint_now(None)
    }

    fn checkpoint_now(&mut self, new_table: Option<Table>) -> Result<(), StoreError> {
        let result = self.checkpoint_steps(new_table);
        if result.is_err() {
            // After a failed msync/fsync the kernel may have marked the
            // unwritten pages clean; a later "successful" checkpoint would
            // then truncate the WAL that still holds their data.
            self.poisoned = true;
        }
        result
    }

    fn checkpoint_steps(&mut self, new_table: Option<Table>) -> Result<(), StoreError> {
        // 1. Data before the header that vouches for it.
        match &new_table {
            Some(t) => {
                t.flush()?;
                t.sync_file()?;
            }
            None => self.table.flush()?,
        }
        self.trajectory.sync()?;
        self.forensics.sync()?;
        // 2. The atomic switch.
        let target = new_table.as_ref().unwrap_or(&self.table);
        let header = Header {
            generation: self.header.generation + 1,
            applied_seq: self.seq,
            table_gen: target.header.gen,
            capacity: target.capacity(),
            len: self.len,
            trajectory: self.trajectory.committed,
            forensics: self.forensics.committed,
            meta: self.committed_meta.clone(),
            pseudonyms: self.committed_pseudonyms.clone(),
        };
        write_header(&self.dir, &header)?;
        self.header = header;
        // 3. The old table is garbage now; a failed unlink is retried by the
        // next open, so it is not an error of this checkpoint.
        if let Some(t) = new_table {
            let old = std::mem::replace(&mut self.table, t);
            let _ = fs::remove_file(&old.path);
        }
        // 4. Every WAL record is in the checkpoint.
        self.wal.set_len(0).map_err(io_err(&self.wal_path))?;
        self.wal_len = 0;
        Ok(())
    }

    /// The committed trajectory lines.
    pub fn trajectory(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.trajectory.lines()
    }

    /// The committed forensics lines.
    pub fn forensics(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.forensics.lines()
    }

    /// The sequence number of the last committed batch (0 for a new store).
    pub fn committed_batches(&self) -> u64 {
        self.seq
    }
}
