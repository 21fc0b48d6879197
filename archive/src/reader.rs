//! Reading an archive: its index, the records of its segments, and the
//! verification of every segment and of the chain.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Cursor};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::index::{
    chain, digest_from_hex, parse_segment_name, read_index, segment_name, IndexEntry, SegmentStats,
    FORMAT_FILE, FORMAT_TEXT,
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
}

/// A decoded segment, line by line.
pub struct SegmentLines<B> {
    reader: BufReader<zstd::stream::read::Decoder<'static, Cursor<B>>>,
    line: Vec<u8>,
    /// Set once the stream ended without a complete last record or frame.
    torn: Option<Torn>,
}

/// How a segment's stream ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torn {
    /// Bytes of the incomplete last record.
    pub dropped_bytes: u64,
    /// The decoder's complaint, if it had one.
    pub error: Option<String>,
}

impl std::fmt::Display for Torn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "the stream breaks off ({e})"),
            None => write!(
                f,
                "the stream ends inside a record ({} bytes)",
                self.dropped_bytes
            ),
        }
    }
}

impl<B: AsRef<[u8]>> SegmentLines<B> {
    /// Decodes the compressed bytes of a segment.
    pub fn new(compressed: B) -> io::Result<SegmentLines<B>> {
        let decoder = zstd::stream::read::Decoder::with_buffer(Cursor::new(compressed))?;
        Ok(SegmentLines {
            reader: BufReader::with_capacity(1 << 16, decoder),
            line: Vec::with_capacity(4096),
            torn: None,
        })
    }

    /// Moves to the next record; false at the end of the stream or where it
    /// breaks off (see [`SegmentLines::torn`]).
    pub fn advance(&mut self) -> bool {
        if self.torn.is_some() {
            return false;
        }
        self.line.clear();
        match self.reader.read_until(b'\n', &mut self.line) {
            Ok(0) => false,
            Ok(_) if self.line.last() == Some(&b'\n') => {
                self.line.pop();
                true
            }
            Ok(n) => {
                self.torn = Some(Torn {
                    dropped_bytes: n as u64,
                    error: None,
                });
                false
            }
            Err(e) => {
                self.torn = Some(Torn {
                    dropped_bytes: self.line.len() as u64,
                    error: Some(e.to_string()),
                });
                false
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
                Ok((data, _)) => match content_stats(&data) {
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
        if let (Some(want), got) = (head, report.head.as_deref()) {
            if Some(want) != got {
                report.problems.push(Problem {
                    place: "index.jsonl".to_owned(),
                    what: format!(
                        "chain head is {}, expected {want} (newest segments removed?)",
                        got.unwrap_or("(none)")
                    ),
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
            let data = fs::read(&path).map_err(|e| ArchiveError::io(&path, e))?;
            let mut lines = SegmentLines::new(&data[..]).map_err(|e| ArchiveError::io(&path, e))?;
            let mut n = 0u64;
            while lines.next_line().is_some() {
                n += 1;
            }
            report.notes.push(format!(
                "{name}: open segment, not yet in the index or the chain: {n} complete records (seq {}..); the next writer closes it",
                self.open_segment_first_seq()
            ));
        }
        Ok(report)
    }
}

/// Decodes a closed segment and computes its statistics; a stream that
/// breaks off is an error.
pub fn content_stats(data: &[u8]) -> Result<SegmentStats, String> {
    let mut lines = SegmentLines::new(data).map_err(|e| e.to_string())?;
    let mut stats = SegmentStats::default();
    while let Some(line) = lines.next_line() {
        stats.add(line);
    }
    match lines.torn() {
        None => Ok(stats),
        Some(torn) => Err(torn.to_string()),
    }
}
