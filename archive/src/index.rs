//! The on-disk layout: file names, the index of closed segments, segment
//! statistics and the SHA-256 chain.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::header::record_info;
use crate::ArchiveError;

/// The file that marks a directory as an archive, with its format version.
pub const FORMAT_FILE: &str = "FORMAT";
/// The content of [`FORMAT_FILE`].
pub const FORMAT_TEXT: &str = "tsem-archive 1\n";
/// The index: one JSON line per closed segment, in sequence order.
pub const INDEX_FILE: &str = "index.jsonl";
/// The writer's lock file (an exclusive `flock` while a writer runs).
pub const LOCK_FILE: &str = "lock";
/// The key under which records without a type are counted.
pub const NO_TYPE: &str = "-";

/// The name of the segment whose first record has sequence number `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.zst")
}

/// The first sequence number a segment file name stands for.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".zst")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a segment was closed by a later writer instead of the one that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// Complete records kept.
    pub records: u64,
    /// Bytes of an incomplete last record that were dropped.
    pub dropped_bytes: u64,
    /// What was found (a torn stream, or a complete segment without an entry).
    pub reason: String,
}

/// One closed segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// File name in the archive directory.
    pub segment: String,
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// Sequence number of its last record.
    pub last_seq: u64,
    /// Number of records (`last_seq - first_seq + 1`).
    pub records: u64,
    /// Uncompressed bytes (records and their `\n`).
    pub bytes: u64,
    /// Compressed bytes (the file's size).
    pub file_bytes: u64,
    /// Smallest `event.ts` of the segment (records without `ts` do not count).
    pub ts_min: Option<u64>,
    /// Largest `event.ts`.
    pub ts_max: Option<u64>,
    /// Records per type (`event.type`, see [`crate::header::RecordInfo::kind`]).
    pub types: BTreeMap<String, u64>,
    /// Records per process (`event.process`).
    pub processes: BTreeMap<String, u64>,
    /// zstd level it was written with.
    pub level: i32,
    /// When it was closed (seconds since the Unix epoch).
    pub closed_unix: u64,
    /// SHA-256 of the file's bytes (hex).
    pub sha256: String,
    /// The chain digest: covers this file's digest, its sequence range and
    /// the previous segment's chain digest (hex; see [`chain`]).
    pub chain: String,
    /// Set when a later writer closed the segment after an unclean stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovery>,
}

/// The chain digest of a segment: `SHA-256("tsem-archive chain v1\n" ‖
/// previous chain (32 zero bytes for the first segment) ‖ SHA-256(file) ‖
/// u64le(first_seq) ‖ u64le(last_seq))`. Deleting, reordering or changing a
/// segment (or its index entry) breaks the chain at that point.
pub fn chain(
    previous: &[u8; 32],
    file_sha256: &[u8; 32],
    first_seq: u64,
    last_seq: u64,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tsem-archive chain v1\n");
    h.update(previous);
    h.update(file_sha256);
    h.update(first_seq.to_le_bytes());
    h.update(last_seq.to_le_bytes());
    h.finalize().into()
}

/// The magic number of the skippable zstd frame every segment starts with
/// (zstd reserves 0x184D2A50..=0x184D2A5F for skippable frames, which
/// decoders pass over: the records are unchanged).
const HEADER_MAGIC: u32 = 0x184D_2A5A;
/// The payload's first bytes.
const HEADER_TAG: &[u8; 24] = b"tsem-archive segment v1\n";
/// Bytes of a segment header: magic, payload length, tag, previous chain
/// digest, first sequence number.
pub const SEGMENT_HEADER_LEN: usize = 8 + 24 + 32 + 8;

/// The header a writer puts at the start of a segment: where in the chain
/// the segment was begun (the chain digest it continues and its first
/// sequence number). A segment without an index entry (the open segment)
/// is in no chain yet; its header lets the next writer and readers refuse
/// one that was not begun at the archive's end (a stale copy, another
/// archive's segment, one planted by hand) instead of sealing it.
pub fn segment_header(previous: &[u8; 32], first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&((SEGMENT_HEADER_LEN - 8) as u32).to_le_bytes());
    h[8..32].copy_from_slice(HEADER_TAG);
    h[32..64].copy_from_slice(previous);
    h[64..72].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// What the start of a segment file says about where it was begun.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentStart {
    /// A header: the chain digest it continues and its first sequence number.
    Header {
        /// The chain digest of the segment before it (zeros for the first).
        previous: [u8; 32],
        /// Its first sequence number.
        first_seq: u64,
    },
    /// Fewer bytes than a header, all of them a header's (a writer stopped
    /// right after creating the file): no records.
    Partial,
    /// No header (another program's file, or a writer older than headers).
    Absent,
}

/// Reads the header at the start of a segment's bytes.
pub fn segment_start(data: &[u8]) -> SegmentStart {
    let magic = HEADER_MAGIC.to_le_bytes();
    let fixed_len = ((SEGMENT_HEADER_LEN - 8) as u32).to_le_bytes();
    let fixed: Vec<u8> = magic
        .iter()
        .chain(&fixed_len)
        .chain(HEADER_TAG.iter())
        .copied()
        .collect();
    if data.len() < SEGMENT_HEADER_LEN {
        let n = data.len().min(fixed.len());
        return if data[..n] == fixed[..n] {
            SegmentStart::Partial
        } else {
            SegmentStart::Absent
        };
    }
    if data[..fixed.len()] != fixed[..] {
        return SegmentStart::Absent;
    }
    let mut previous = [0u8; 32];
    previous.copy_from_slice(&data[32..64]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&data[64..72]);
    SegmentStart::Header {
        previous,
        first_seq: u64::from_le_bytes(seq),
    }
}

/// Why a segment without an index entry may not be sealed into the chain at
/// `first_seq` after `previous`; `None` when its header says it was begun
/// exactly there (or it holds no records yet).
pub fn open_segment_mismatch(data: &[u8], previous: &[u8; 32], first_seq: u64) -> Option<String> {
    match segment_start(data) {
        SegmentStart::Partial => None,
        SegmentStart::Absent => Some(
            "it has no segment header: not begun by a writer of this archive at its end \
             (planted, copied, or left by a writer older than segment headers)"
                .to_owned(),
        ),
        SegmentStart::Header {
            previous: p,
            first_seq: f,
        } if (p, f) != (*previous, first_seq) => Some(format!(
            "its header says it continues chain {} at seq {f}, but the index ends at chain {} \
             (next seq {first_seq}): it does not continue this archive",
            tsem_ingest::hex::encode(&p),
            tsem_ingest::hex::encode(previous)
        )),
        SegmentStart::Header { .. } => None,
    }
}

/// Decodes a 64-character hex digest of the index.
pub fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    tsem_ingest::hex::decode_array(hex.as_bytes()).ok()
}

/// Statistics of the records of one segment, as the index keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Records.
    pub records: u64,
    /// Uncompressed bytes, `\n` included.
    pub bytes: u64,
    /// Smallest `ts`.
    pub ts_min: Option<u64>,
    /// Largest `ts`.
    pub ts_max: Option<u64>,
    /// Records per type.
    pub types: BTreeMap<String, u64>,
    /// Records per process.
    pub processes: BTreeMap<String, u64>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

impl SegmentStats {
    /// Counts one record (without its `\n`).
    pub fn add(&mut self, line: &[u8]) {
        let info = record_info(line);
        self.records += 1;
        self.bytes += line.len() as u64 + 1;
        if let Some(ts) = info.ts {
            self.ts_min = Some(self.ts_min.map_or(ts, |m| m.min(ts)));
            self.ts_max = Some(self.ts_max.map_or(ts, |m| m.max(ts)));
        }
        bump(&mut self.types, info.kind.as_deref().unwrap_or(NO_TYPE));
        if let Some(p) = &info.process {
            bump(&mut self.processes, p);
        }
    }

    /// True when `entry` records exactly these statistics.
    pub fn matches(&self, entry: &IndexEntry) -> bool {
        self.records == entry.records
            && self.bytes == entry.bytes
            && self.ts_min == entry.ts_min
            && self.ts_max == entry.ts_max
            && self.types == entry.types
            && self.processes == entry.processes
    }
}

/// The index as read: its entries, and the length of an incomplete last line
/// (a writer stopped while appending it), which readers ignore.
#[derive(Debug, Default)]
pub struct IndexRead {
    /// Complete entries, in file order.
    pub entries: Vec<IndexEntry>,
    /// Bytes of complete lines.
    pub valid_len: u64,
    /// Bytes of an unterminated last line.
    pub torn_bytes: u64,
}

/// Reads the index of the archive in `dir`.
pub fn read_index(dir: &Path) -> Result<IndexRead, ArchiveError> {
    let path = dir.join(INDEX_FILE);
    let data = fs::read(&path).map_err(|e| ArchiveError::io(&path, e))?;
    let mut read = IndexRead::default();
    let mut pos = 0usize;
    for (n, line) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        let Some(body) = line.strip_suffix(b"\n") else {
            read.torn_bytes = line.len() as u64;
            break;
        };
        pos += line.len();
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: IndexEntry =
            serde_json::from_slice(body).map_err(|e| ArchiveError::Damaged {
                path: path.clone(),
                what: format!("index line {}: {e}", n + 1),
            })?;
        read.entries.push(entry);
    }
    read.valid_len = pos as u64;
    Ok(read)
}

/// Appends one entry to the open index file and makes it durable.
pub fn append_entry(index: &mut File, entry: &IndexEntry) -> io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
    line.push(b'\n');
    index.write_all(&line)?;
    index.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_header_says_where_the_segment_was_begun() {
        let h = segment_header(&[7; 32], 42);
        assert_eq!(
            segment_start(&h),
            SegmentStart::Header {
                previous: [7; 32],
                first_seq: 42
            }
        );
        assert_eq!(segment_start(&h[..10]), SegmentStart::Partial);
        assert_eq!(segment_start(b""), SegmentStart::Partial);
        assert_eq!(segment_start(b"(\xb5/\xfd"), SegmentStart::Absent);
        assert_eq!(open_segment_mismatch(&h, &[7; 32], 42), None);
        assert!(open_segment_mismatch(&h, &[7; 32], 43).is_some());
        assert!(open_segment_mismatch(&h, &[8; 32], 42).is_some());
        assert!(open_segment_mismatch(b"(\xb5/\xfd....", &[7; 32], 42).is_some());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "seg-00000000000000000001.zst");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("seg-1.zst"), None);
        assert_eq!(parse_segment_name("seg-0000000000000000000a.zst"), None);
        assert_eq!(parse_segment_name("index.jsonl"), None);
    }

    #[test]
    fn the_chain_depends_on_every_input() {
        let z = [0u8; 32];
        let a = chain(&z, &[1; 32], 1, 10);
        assert_ne!(a, chain(&[1; 32], &[1; 32], 1, 10));
        assert_ne!(a, chain(&z, &[2; 32], 1, 10));
        assert_ne!(a, chain(&z, &[1; 32], 2, 10));
        assert_ne!(a, chain(&z, &[1; 32], 1, 11));
        let hex = tsem_ingest::hex::encode(&a);
        assert_eq!(digest_from_hex(&hex), Some(a));
    }

    #[test]
    fn stats_count_types_processes_and_time() {
        let mut s = SegmentStats::default();
        s.add(br#"{"event": {"process": "a", "type": "capable", "task_id": "00", "ts": "5"}}"#);
        s.add(br#"{"event": {"process": "a", "type": "file_open", "task_id": "00", "ts": "3"}}"#);
        s.add(br#"{"export": {"type": "aggregate"}, "aggregate": {"value": "00"}}"#);
        s.add(b"garbage");
        assert_eq!(s.records, 4);
        assert_eq!((s.ts_min, s.ts_max), (Some(3), Some(5)));
        assert_eq!(s.processes.get("a"), Some(&2));
        assert_eq!(s.types.get("aggregate"), Some(&1));
        assert_eq!(s.types.get(NO_TYPE), Some(&1));
    }

    #[test]
    fn a_torn_last_index_line_is_ignored_and_a_bad_one_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let entry = IndexEntry {
            segment: segment_name(1),
            first_seq: 1,
            last_seq: 1,
            records: 1,
            bytes: 2,
            file_bytes: 3,
            ts_min: None,
            ts_max: None,
            types: BTreeMap::new(),
            processes: BTreeMap::new(),
            level: 3,
            closed_unix: 0,
            sha256: String::new(),
            chain: String::new(),
            recovered: None,
        };
        let mut text = serde_json::to_string(&entry).unwrap();
        text.push('\n');
        let complete = text.len() as u64;
        text.push_str("{\"segm");
        fs::write(dir.path().join(INDEX_FILE), &text).unwrap();
        let read = read_index(dir.path()).unwrap();
        assert_eq!(read.entries, vec![entry]);
        assert_eq!((read.valid_len, read.torn_bytes), (complete, 6));
        text.push('\n');
        fs::write(dir.path().join(INDEX_FILE), &text).unwrap();
        assert!(matches!(
            read_index(dir.path()),
            Err(ArchiveError::Damaged { .. })
        ));
    }
}
