//! Reading an archive: its index, the records of its segments, and the
//! verification of every segment and of the chain.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::index::{
    chain, digest_from_hex, open_segment_mismatch, parse_segment_name, read_index, segment_name,
    IndexEntry, SegmentStats, FORMAT_FILE, FORMAT_TEXT,
};
use crate::ArchiveError;

/// A read-only view of an archive: the index as it is now, and the segment
/// a writer has open (or left open), if any. Needs no lock; safe while a
/// writer appends.
#[derive(Clone, Debug)]
pub struct Archive {
    dir: PathBuf,
    entries: Vec<IndexEntry>,
    open_segment: Option<String>,
    stray: Vec<String>,
    torn_index_bytes: u64,
}

/// One thing `verify` found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The segment (or `index.jsonl`) concerned.
    pub place: String,
    /// What is wrong.
    pub what: String,
}

/// The result of [`Archive::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Closed segments checked.
    pub segments: usize,
    /// Records in them.
    pub records: u64,
    /// The chain digest of the last closed segment (hex).
    pub head: Option<String>,
    /// Damage found; empty when the archive is intact.
    pub problems: Vec<Problem>,
    /// Observations that are not damage (an open segment, a torn index line).
    pub notes: Vec<String>,
    /// Records that the chain does not vouch for as written: the open
    /// segment, segments a later writer sealed after an unclean stop, and
    /// (with a head) everything after that head. Not damage: a live or
    /// crashed writer leaves them. `archive verify --strict` fails on them.
    pub unsealed: Vec<Unsealed>,
}

impl VerifyReport {
    /// True when nothing is damaged and every record is sealed into the
    /// chain by the writer that wrote it, up to the given head and no further.
    pub fn is_strictly_sealed(&self) -> bool {
        self.problems.is_empty() && self.unsealed.is_empty()
    }
}

/// Why records are listed in [`VerifyReport::unsealed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnsealedKind {
    /// The open segment: in no chain yet.
    Open,
    /// A segment closed by a later writer after an unclean stop (its index
    /// entry says `recovered`): the chain covers what that writer found in
    /// the file, not what the first one wrote.
    Recovered(String),
    /// A closed segment after the chain head given to `verify`.
    AfterHead,
}

/// Records [`VerifyReport::unsealed`] lists, one segment at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsealed {
    /// The segment.
    pub place: String,
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// Its records (complete ones, for the open segment).
    pub records: u64,
    /// Why it is listed.
    pub kind: UnsealedKind,
}

impl std::fmt::Display for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let range = match self.records {
            0 => format!("no records (seq {}..)", self.first_seq),
            n => format!(
                "{n} records (seq {}..={})",
                self.first_seq,
                self.first_seq + n - 1
            ),
        };
        match &self.kind {
            UnsealedKind::Open => write!(
                f,
                "{}: {range} in the open segment, not sealed into the chain",
                self.place
            ),
            UnsealedKind::Recovered(reason) => write!(
                f,
                "{}: {range} sealed by a later writer after an unclean stop ({reason})",
                self.place
            ),
            UnsealedKind::AfterHead => {
                write!(f, "{}: {range} after the given chain head", self.place)
            }
        }
    }
}

/// The longest record a segment may hold: the record limit of every reader
/// of records ([`tsem_ingest::DEFAULT_MAX_RECORD_LEN`]). Writers never archive
/// longer ones, so a longer line is damage (or a decompression bomb), and
/// decoding stops there instead of buffering it.
pub const MAX_RECORD_LEN: usize = tsem_ingest::DEFAULT_MAX_RECORD_LEN;

/// The most a segment without an index entry (the open segment) may expand
/// to, per compressed byte. Records compress about 12 to 16 times (see the
/// crate's numbers); a stream that expands a thousand times more than its
/// size is not a segment of records but a decompression bomb.
pub const MAX_EXPANSION: u64 = 1024;

/// A decoded segment, line by line, with bounded memory: a record longer
/// than [`MAX_RECORD_LEN`] or a stream longer than its bound stops decoding
/// (see [`SegmentLines::torn`]); nothing is ever buffered past them.
pub struct SegmentLines<B> {
    reader: BufReader<zstd::stream::read::Decoder<'static, Cursor<B>>>,
    line: Vec<u8>,
    /// Set once the stream ended without a complete last record or frame.
    torn: Option<Torn>,
    /// Most decoded bytes (records and their `\n`) accepted.
    max_bytes: u64,
    /// Decoded bytes so far.
    decoded: u64,
}

/// How a segment's stream ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torn {
    /// Bytes of the incomplete last record.
    pub dropped_bytes: u64,
    /// The decoder's complaint, if it had one.
    pub error: Option<String>,
    /// The limit the stream went past, if that is why decoding stopped (a
    /// record over [`MAX_RECORD_LEN`], or more bytes than the segment may
    /// hold): damage, never a torn tail a crash can leave.
    pub over_limit: Option<String>,
}

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.over_limit, &self.error) {
            (Some(limit), _) => write!(f, "decoding stopped: {limit}"),
            (None, Some(e)) => write!(f, "the stream breaks off ({e})"),
            (None, None) => write!(
                f,
                "the stream ends inside a record ({} bytes)",
                self.dropped_bytes
            ),
        }
    }
}

impl<B: AsRef<[u8]>> SegmentLines<B> {
    /// Decodes the compressed bytes of a segment that has no index entry:
    /// at most [`MAX_EXPANSION`] times their size (and 1 MiB) is decoded.
    pub fn new(compressed: B) -> io::Result<SegmentLines<B>> {
        let bound = (compressed.as_ref().len() as u64)
            .saturating_mul(MAX_EXPANSION)
            .saturating_add(MAX_RECORD_LEN as u64 + 1);
        let decoder = zstd::stream::read::Decoder::with_buffer(Cursor::new(compressed))?;
        Ok(SegmentLines {
            reader: BufReader::with_capacity(1 << 16, decoder),
            line: Vec::with_capacity(4096),
            torn: None,
            max_bytes: bound,
            decoded: 0,
        })
    }

    /// Decodes at most `max_bytes` (a closed segment: the size its index
    /// entry records; decoding more is damage).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> SegmentLines<B> {
        self.max_bytes = self.max_bytes.min(max_bytes);
        self
    }

    fn stop(&mut self, error: Option<String>, over_limit: Option<String>) -> bool {
        self.torn = Some(Torn {
            dropped_bytes: self.line.len() as u64,
            error,
            over_limit,
        });
        false
    }

    /// Moves to the next record; false at the end of the stream or where it
    /// breaks off (see [`SegmentLines::torn`]).
    pub fn advance(&mut self) -> bool {
        if self.torn.is_some() {
            return false;
        }
        self.line.clear();
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.stop(Some(e.to_string()), None),
            };
            if chunk.is_empty() {
                if self.line.is_empty() {
                    return false;
                }
                return self.stop(None, None);
            }
            let (take, complete) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            // Checked before the bytes are kept: a bomb's endless line never
            // grows the buffer past the limit.
            let record = self.line.len() + take - usize::from(complete);
            if record > MAX_RECORD_LEN {
                let what = format!("a record longer than the limit of {MAX_RECORD_LEN} bytes");
                return self.stop(None, Some(what));
            }
            self.decoded += take as u64;
            if self.decoded > self.max_bytes {
                let what = format!("the segment decodes to more than {} bytes", self.max_bytes);
                return self.stop(None, Some(what));
            }
            self.line.extend_from_slice(&chunk[..take]);
            self.reader.consume(take);
            if complete {
                self.line.pop();
                return true;
            }
        }
    }

    /// The current record (without its `\n`).
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The next record, or `None` at the end.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        if self.advance() {
            Some(&self.line)
        } else {
            None
        }
    }

    /// How the stream broke off, when it did.
    pub fn torn(&self) -> Option<&Torn> {
        self.torn.as_ref()
    }
}

/// Reads a segment file and checks it against its index entry and the
/// previous chain digest; returns the bytes and the entry's chain digest.
pub fn load_checked(
    dir: &Path,
    entry: &IndexEntry,
    previous: &[u8; 32],
) -> Result<(Vec<u8>, [u8; 32]), String> {
    let path = dir.join(&entry.segment);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("missing".to_owned()),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let sha: [u8; 32] = Sha256::digest(&data).into();
    if Some(sha) != digest_from_hex(&entry.sha256) {
        return Err(format!(
            "content digest differs from the index (modified, replaced or swapped; {} bytes, index says {})",
            data.len(),
            entry.file_bytes
        ));
    }
    let link = chain(previous, &sha, entry.first_seq, entry.last_seq);
    if Some(link) != digest_from_hex(&entry.chain) {
        return Err(
            "chain digest differs: a segment before it was removed, reordered or its entry changed"
                .to_owned(),
        );
    }
    Ok((data, link))
}

impl Archive {
    /// True when `dir` is an archive (it has the format marker).
    pub fn is_archive(dir: &Path) -> bool {
        dir.join(FORMAT_FILE).is_file()
    }

    /// Reads the index and lists the segments of the archive in `dir`.
    pub fn open(dir: &Path) -> Result<Archive, ArchiveError> {
        let format = dir.join(FORMAT_FILE);
        match fs::read_to_string(&format) {
            Ok(text) if text == FORMAT_TEXT => {}
            Ok(text) => {
                return Err(ArchiveError::Format {
                    path: dir.to_path_buf(),
                    found: text.trim().to_owned(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ArchiveError::NotAnArchive(dir.to_path_buf()))
            }
            Err(e) => return Err(ArchiveError::io(&format, e)),
        }
        let read = read_index(dir)?;
        let next = read.entries.last().map_or(1, |e| e.last_seq + 1);
        let indexed: BTreeSet<&str> = read.entries.iter().map(|e| e.segment.as_str()).collect();
        let mut open_segment = None;
        let mut stray = Vec::new();
        let mut names: Vec<String> = fs::read_dir(dir)
            .map_err(|e| ArchiveError::io(dir, e))?
            .filter_map(|item| item.ok())
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .filter(|name| parse_segment_name(name).is_some())
            .collect();
        names.sort();
        for name in names {
            if indexed.contains(name.as_str()) {
                continue;
            }
            if name == segment_name(next) {
                open_segment = Some(name);
            } else {
                stray.push(name);
            }
        }
        Ok(Archive {
            dir: dir.to_path_buf(),
            entries: read.entries,
            open_segment,
            stray,
            torn_index_bytes: read.torn_bytes,
        })
    }

    /// The archive directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The closed segments, in sequence order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The segment after the last closed one, which a writer has open (or
    /// left open when it stopped uncleanly): not yet in the index nor the chain.
    pub fn open_segment(&self) -> Option<&str> {
        self.open_segment.as_deref()
    }

    /// The first sequence number of the open segment.
    pub fn open_segment_first_seq(&self) -> u64 {
        self.entries.last().map_or(1, |e| e.last_seq + 1)
    }

    /// The chain digest of the last closed segment.
    pub fn head(&self) -> Option<&str> {
        self.entries.last().map(|e| e.chain.as_str())
    }

    /// Checks every closed segment (it exists, its bytes have the digest of
    /// the index, the chain links it to the one before, it decodes to
    /// complete records whose statistics are those of the index), the
    /// sequence numbers, and the files that are not in the index. With
    /// `head`, the last chain digest must also be that value (it catches
    /// the removal of the newest segments together with their entries).
    pub fn verify(&self, head: Option<&str>) -> Result<VerifyReport, ArchiveError> {
        let mut report = VerifyReport::default();
        let mut previous = [0u8; 32];
        let mut next_seq = 1u64;
        let mut problem = |place: &str, what: String| {
            report.problems.push(Problem {
                place: place.to_owned(),
                what,
            })
        };
        let mut checked = Vec::new();
        for entry in &self.entries {
            let place = entry.segment.as_str();
            if entry.first_seq != next_seq {
                problem(
                    place,
                    format!(
                        "sequence numbers jump from {} to {} (records missing or reordered)",
                        next_seq.saturating_sub(1),
                        entry.first_seq
                    ),
                );
            }
            if entry.segment != segment_name(entry.first_seq)
                || entry.last_seq < entry.first_seq
                || entry.records != entry.last_seq - entry.first_seq + 1
            {
                problem(place, "index entry is inconsistent".to_owned());
            }
            next_seq = entry.last_seq.saturating_add(1);
            let stored_chain = digest_from_hex(&entry.chain).unwrap_or_default();
            match load_checked(&self.dir, entry, &previous) {
                Err(what) => problem(place, what),
                Ok((data, _)) => match content_stats_bounded(&data, entry.bytes) {
                    Ok(stats) if stats.matches(entry) => {}
                    Ok(stats) => problem(
                        place,
                        format!(
                            "content ({} records) does not match its index entry ({} records)",
                            stats.records, entry.records
                        ),
                    ),
                    Err(torn) => problem(place, format!("does not decode: {torn}")),
                },
            }
            previous = stored_chain;
            checked.push(entry.records);
        }
        report.segments = checked.len();
        report.records = checked.iter().sum();
        report.head = self.head().map(str::to_owned);
        for e in &self.entries {
            if let Some(r) = &e.recovered {
                report.unsealed.push(Unsealed {
                    place: e.segment.clone(),
                    first_seq: e.first_seq,
                    records: e.records,
                    kind: UnsealedKind::Recovered(r.reason.clone()),
                });
            }
        }
        if let (Some(want), got) = (head, report.head.as_deref()) {
            if Some(want) != got {
                // The head given may be an earlier point of this chain (records
                // were sealed after it) or none of it (newest segments removed,
                // or another archive). Either way the archive does not end
                // where the caller says: damage, as before.
                let at = self.entries.iter().position(|e| e.chain == want);
                let what = match at {
                    Some(i) => {
                        let after = &self.entries[i + 1..];
                        for e in after {
                            report.unsealed.push(Unsealed {
                                place: e.segment.clone(),
                                first_seq: e.first_seq,
                                records: e.records,
                                kind: UnsealedKind::AfterHead,
                            });
                        }
                        format!(
                            "chain head is {}, not {want}: {} records in {} segments were sealed after it",
                            got.unwrap_or("(none)"),
                            after.iter().map(|e| e.records).sum::<u64>(),
                            after.len()
                        )
                    }
                    None => format!(
                        "chain head is {}, expected {want} (newest segments removed?)",
                        got.unwrap_or("(none)")
                    ),
                };
                report.problems.push(Problem {
                    place: "index.jsonl".to_owned(),
                    what,
                });
            }
        }
        for name in &self.stray {
            report.problems.push(Problem {
                place: name.clone(),
                what: "segment file not in the index and not the open segment".to_owned(),
            });
        }
        if self.torn_index_bytes > 0 {
            report.notes.push(format!(
                "index.jsonl ends with an incomplete line of {} bytes (a writer stopped while closing a segment; the next writer removes it)",
                self.torn_index_bytes
            ));
        }
        if let Some(name) = &self.open_segment {
            let path = self.dir.join(name);
            let data = match fs::read(&path) {
                Ok(d) => d,
                // Closed by its writer meanwhile: its entry is for the next verify.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
                Err(e) => return Err(ArchiveError::io(&path, e)),
            };
            let first = self.open_segment_first_seq();
            let previous = self
                .entries
                .last()
                .and_then(|e| digest_from_hex(&e.chain))
                .unwrap_or_default();
            // One not begun at the archive's end is not its tail: damage.
            if let Some(what) = open_segment_mismatch(&data, &previous, first) {
                report.problems.push(Problem {
                    place: name.clone(),
                    what: format!("open segment: {what}"),
                });
            }
            let mut lines = SegmentLines::new(&data[..]).map_err(|e| ArchiveError::io(&path, e))?;
            let mut n = 0u64;
            while lines.next_line().is_some() {
                n += 1;
            }
            if let Some(torn) = lines.torn().filter(|t| t.over_limit.is_some()) {
                report.problems.push(Problem {
                    place: name.clone(),
                    what: format!("open segment: {torn}"),
                });
            }
            report.notes.push(format!(
                "{name}: open segment, not yet in the index or the chain: {n} complete records (seq {first}..); the next writer closes it"
            ));
            report.unsealed.push(Unsealed {
                place: name.clone(),
                first_seq: first,
                records: n,
                kind: UnsealedKind::Open,
            });
        }
        Ok(report)
    }
}

/// Decodes a closed segment and computes its statistics; a stream that
/// breaks off is an error.
pub fn content_stats(data: &[u8]) -> Result<SegmentStats, String> {
    content_stats_bounded(data, u64::MAX)
}

/// [`content_stats`], decoding at most `max_bytes` (the size the segment's
/// index entry records): more is damage, found without decoding it all.
pub fn content_stats_bounded(data: &[u8], max_bytes: u64) -> Result<SegmentStats, String> {
    let mut lines = SegmentLines::new(data)
        .map_err(|e| e.to_string())?
        .with_max_bytes(max_bytes);
    let mut stats = SegmentStats::default();
    while let Some(line) = lines.next_line() {
        stats.add(line);
    }
    match lines.torn() {
        None => Ok(stats),
        Some(torn) => Err(torn.to_string()),
    }
}
