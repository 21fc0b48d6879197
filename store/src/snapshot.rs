//! Lock-free, read-only snapshots of the last committed batch.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::format::{scan_wal, LogState};
use super::table::{decode_slot, table_file_len, table_file_name, Slot, TableHeader};
use super::table::{SLOT_SIZE, TABLE_HEADER_SIZE};
use super::{
    io_err, read_header, split_log, StoreError, StoreMeta, StoredPoint, FORENSICS_FILE,
    TRAJECTORY_FILE, WAL_FILE,
};
use tsem_model::state::Point;
use tsem_model::{Digest, Model};

/// A read-only, consistent snapshot of the last committed batch.
///
/// It can be taken while a writer runs: it takes no lock, writes nothing,
/// never blocks the writer, and never sees a half-written batch (see the
/// module documentation for how).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// The scalar state.
    pub meta: StoreMeta,
    /// The points, in insertion order.
    pub points: Vec<StoredPoint>,
    /// The pseudonyms.
    pub pseudonyms: Vec<Digest>,
    /// The trajectory lines.
    pub trajectory: Vec<Vec<u8>>,
    /// The forensics lines.
    pub forensics: Vec<Vec<u8>>,
    /// The sequence number of the batch this is the state after.
    pub batch: u64,
}

/// Why one attempt did not produce a snapshot.
enum Attempt {
    /// A checkpoint or growth ran while we read: try again.
    Raced(String),
    /// The files disagree although no checkpoint ran: damage, most likely,
    /// but retried a few times in case of a race we cannot see.
    Inconsistent(StoreError),
    /// Certainly hopeless (no store, I/O error, wrong version).
    Fatal(StoreError),
}

/// Attempts before giving up on a writer that checkpoints faster than we
/// can read.
const MAX_RACES: u32 = 200;
/// Inconsistent reads with a stable header before reporting corruption.
const MAX_INCONSISTENT: u32 = 5;
/// Table bytes read per `pread`.
const CHUNK_SLOTS: u64 = 16 * 1024;

impl StoreSnapshot {
    /// Reads the last committed batch of the store in `dir`.
    pub fn open(dir: &Path) -> Result<StoreSnapshot, StoreError> {
        let mut races = 0u32;
        let mut inconsistent = 0u32;
        loop {
            match attempt(dir) {
                Ok(s) => return Ok(s),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Inconsistent(e)) => {
                    inconsistent += 1;
                    if inconsistent >= MAX_INCONSISTENT {
                        return Err(e);
                    }
                }
                Err(Attempt::Raced(reason)) => {
                    races += 1;
                    if races >= MAX_RACES {
                        return Err(StoreError::Busy {
                            path: dir.to_path_buf(),
                            reason,
                        });
                    }
                }
            }
            // Back off a little so the writer can finish its checkpoint.
            std::thread::sleep(Duration::from_millis(u64::from(
                (races + inconsistent).min(10),
            )));
        }
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Attempt {
    Attempt::Inconsistent(StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    })
}

/// Reads `len` bytes at the start of a log file.
fn read_log_prefix(path: &Path, state: &LogState) -> Result<Vec<u8>, Attempt> {
    let file = File::open(path).map_err(|e| Attempt::Fatal(io_err(path)(e)))?;
    let size = file
        .metadata()
        .map_err(|e| Attempt::Fatal(io_err(path)(e)))?
        .len();
    // Check before allocating: the length comes from disk.
    if size < state.len {
        return Err(corrupt(path, "log is shorter than the checkpoint says"));
    }
    let len = usize::try_from(state.len).map_err(|_| corrupt(path, "log too large"))?;
    let mut buf = vec![0u8; len];
    match file.read_exact_at(&mut buf, 0) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(corrupt(path, "log is shorter than the checkpoint says"))
        }
        Err(e) => Err(Attempt::Fatal(io_err(path)(e))),
    }
}

/// Reads the intact occupied slots of a table file.
fn read_table(path: &Path, gen: u64, capacity: u64) -> Result<Vec<StoredPoint>, Attempt> {
    let file = match File::open(path) {
        Ok(f) => f,
        // Renamed away by a growth after we read the header.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Attempt::Raced("the table file was replaced".into()))
        }
        Err(e) => return Err(Attempt::Fatal(io_err(path)(e))),
    };
    let size = file
        .metadata()
        .map_err(|e| Attempt::Fatal(io_err(path)(e)))?
        .len();
    let mut head = vec![0u8; TABLE_HEADER_SIZE as usize];
    if size != table_file_len(capacity) {
        return Err(corrupt(path, format!("table file is {size} bytes")));
    }
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Attempt::Fatal(io_err(path)(e)))?;
    TableHeader::decode(&head, gen, capacity).map_err(|r| corrupt(path, r))?;
    let mut points = Vec::new();
    let mut buf = vec![0u8; (CHUNK_SLOTS * SLOT_SIZE) as usize];
    let mut first = 0u64;
    while first < capacity {
        let n = CHUNK_SLOTS.min(capacity - first);
        let chunk = &mut buf[..(n * SLOT_SIZE) as usize];
        file.read_exact_at(chunk, TABLE_HEADER_SIZE + first * SLOT_SIZE)
            .map_err(|e| Attempt::Fatal(io_err(path)(e)))?;
        for s in chunk.chunks_exact(SLOT_SIZE as usize) {
            // A slot with a bad CRC may be one the writer is updating right
            // now; the WAL overlay below supplies its value.
            if let Slot::Occupied {
                point,
                intact: true,
            } = decode_slot(s)
            {
                points.push(point);
            }
        }
        first += n;
    }
    Ok(points)
}

fn attempt(dir: &Path) -> Result<StoreSnapshot, Attempt> {
    // Order matters: header, table, logs, WAL, header again (module docs).
    let header = read_header(dir).map_err(Attempt::Fatal)?;
    let table_path = dir.join(table_file_name(header.table_gen));
    let slots = read_table(&table_path, header.table_gen, header.capacity)?;
    let trajectory_path = dir.join(TRAJECTORY_FILE);
    let forensics_path = dir.join(FORENSICS_FILE);
    let trajectory_base = read_log_prefix(&trajectory_path, &header.trajectory)?;
    let forensics_base = read_log_prefix(&forensics_path, &header.forensics)?;
    let wal_path = dir.join(WAL_FILE);
    let wal = match fs::read(&wal_path) {
        Ok(w) => w,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(corrupt(&wal_path, "the file is missing"))
        }
        Err(e) => return Err(Attempt::Fatal(io_err(&wal_path)(e))),
    };
    let again = read_header(dir).map_err(Attempt::Fatal)?;
    if again.generation != header.generation {
        return Err(Attempt::Raced("a checkpoint ran during the read".into()));
    }
    let scan = scan_wal(&wal, header.applied_seq).map_err(|r| corrupt(&wal_path, r))?;

    let len = scan.records.last().map_or(header.len, |r| r.len_after);
    if len > header.capacity {
        return Err(corrupt(&wal_path, format!("{len} points exceed the table")));
    }
    let mut by_order: Vec<Option<StoredPoint>> = vec![None; len as usize];
    for p in slots {
        match by_order.get_mut(p.order as usize) {
            Some(slot @ None) => *slot = Some(p),
            Some(Some(_)) => {
                return Err(corrupt(
                    &table_path,
                    format!("two slots have order {}", p.order),
                ))
            }
            None => {
                return Err(corrupt(
                    &table_path,
                    format!("a slot has order {} but there are {len} points", p.order),
                ))
            }
        }
    }
    let mut meta = header.meta;
    let mut pseudonyms = header.pseudonyms;
    let mut trajectory_state = header.trajectory;
    let mut forensics_state = header.forensics;
    let mut trajectory = trajectory_base;
    let mut forensics = forensics_base;
    // The checkpointed prefixes must match the header before being extended.
    split_log(&trajectory_path, &trajectory, &trajectory_state).map_err(Attempt::Inconsistent)?;
    split_log(&forensics_path, &forensics, &forensics_state).map_err(Attempt::Inconsistent)?;
    for rec in &scan.records {
        for p in &rec.points {
            match by_order.get_mut(p.order as usize) {
                Some(Some(old)) if old.coefficient != p.coefficient => {
                    return Err(corrupt(
                        &table_path,
                        format!("order {} belongs to two coefficients", p.order),
                    ))
                }
                Some(slot) => *slot = Some(*p),
                None => {
                    return Err(corrupt(
                        &wal_path,
                        format!("batch {}: order {} beyond {len} points", rec.seq, p.order),
                    ))
                }
            }
        }
        for (state, bytes, append) in [
            (&mut trajectory_state, &mut trajectory, &rec.trajectory),
            (&mut forensics_state, &mut forensics, &rec.forensics),
        ] {
            *state = state.extended(append.bytes);
            if *state != append.after {
                return Err(corrupt(
                    &wal_path,
                    format!(
                        "batch {}: log bytes do not follow the previous state",
                        rec.seq
                    ),
                ));
            }
            bytes.extend_from_slice(append.bytes);
        }
        meta = rec.meta.clone();
        if let Some(p) = &rec.pseudonyms {
            pseudonyms = p.clone();
        }
    }
    let mut points = Vec::with_capacity(by_order.len());
    for (order, p) in by_order.into_iter().enumerate() {
        match p {
            Some(p) => points.push(p),
            None => {
                return Err(corrupt(
                    &table_path,
                    format!("the point with order {order} is missing"),
                ))
            }
        }
    }
    Ok(StoreSnapshot {
        meta,
        points,
        pseudonyms,
        trajectory: split_log(&trajectory_path, &trajectory, &trajectory_state)
            .map_err(Attempt::Inconsistent)?,
        forensics: split_log(&forensics_path, &forensics, &forensics_state)
            .map_err(Attempt::Inconsistent)?,
        batch: scan.records.last().map_or(header.applied_seq, |r| r.seq),
    })
}

/// Rebuilds a model from persisted parts: scalars, points in insertion order, pseudonyms.
pub fn model_from_parts(meta: &StoreMeta, points: &[StoredPoint], pseudonyms: &[Digest]) -> Model {
    let mut ordered: Vec<&StoredPoint> = points.iter().collect();
    ordered.sort_by_key(|p| p.order);
    let points = ordered
        .into_iter()
        .map(|p| Point {
            coefficient: p.coefficient,
            count: p.count,
            valid: p.valid,
        })
        .collect();
    let mut model = Model::restore(
        meta.profile,
        meta.base,
        meta.aggregate,
        meta.host_aggregate,
        meta.measurement,
        points,
        meta.sealed,
        meta.enforcing,
        meta.events,
        meta.violations,
    );
    for p in pseudonyms {
        model.add_pseudonym(*p);
    }
    model
}

/// Rebuilds a model, descriptions included, from a store snapshot.
pub fn model_from_snapshot(s: &StoreSnapshot) -> Model {
    let mut model = model_from_parts(&s.meta, &s.points, &s.pseudonyms);
    model.set_descriptions(
        s.trajectory
            .iter()
            .map(|l| l.clone().into_boxed_slice())
            .collect(),
        s.forensics
            .iter()
            .map(|l| l.clone().into_boxed_slice())
            .collect(),
    );
    model
}
