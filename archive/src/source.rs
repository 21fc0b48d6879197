//! The archive in the pipeline: a [`LineTap`] that archives every record
//! received, and a [`RecordSource`] that feeds archived records back.

use std::io;
use std::path::Path;

use tsem_ingest::{Fetch, LineTap, RecordSource, TapBatch};

use crate::durable::DurableWriter;
use crate::filter::Filter;
use crate::header::record_info;
use crate::index::{digest_from_hex, open_segment_mismatch};
use crate::reader::{load_checked, Archive, SegmentLines};
use crate::writer::WriterOptions;
use crate::ArchiveError;

/// The pipeline's archive sink (`run --archive DIR`). It runs on the
/// pipeline's tap thread; see [`DurableWriter`] for when records are durable.
pub struct ArchiveTap {
    writer: Option<DurableWriter>,
}

impl ArchiveTap {
    /// Opens (or creates) the archive in `dir`.
    pub fn open(dir: &Path, options: WriterOptions) -> Result<ArchiveTap, ArchiveError> {
        Ok(ArchiveTap::new(DurableWriter::open(dir, options)?))
    }

    /// Wraps an open writer.
    pub fn new(writer: DurableWriter) -> ArchiveTap {
        ArchiveTap {
            writer: Some(writer),
        }
    }
}

impl LineTap for ArchiveTap {
    fn write_batch(&mut self, batch: &TapBatch<'_>) -> io::Result<()> {
        match &self.writer {
            Some(w) => w
                .append(batch.records().map(|(_, bytes)| bytes))
                .map_err(io::Error::other),
            None => Err(io::Error::other(ArchiveError::Finished)),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        match self.writer.take() {
            Some(w) => w.finish().map(|_| ()).map_err(io::Error::other),
            None => Ok(()),
        }
    }
}

/// The segment being read.
struct Current {
    lines: SegmentLines<Vec<u8>>,
    seq: u64,
    name: String,
    closed: bool,
}

/// What an [`ArchiveSource`] does with the open segment: records a writer
/// has appended (or a crashed writer left, or anyone planted) that are not
/// sealed into the chain, so no index entry or chain digest vouches for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpenSegmentPolicy {
    /// Read it after the closed segments, up to its last complete record
    /// (`archive cat`, and what the source did before policies existed).
    #[default]
    Include,
    /// Leave it out: only sealed records.
    Exclude,
    /// Refuse the archive while it has one
    /// ([`ArchiveSource::with_open_segment`] fails with
    /// [`ArchiveError::Unsealed`]): for models built from an archive, which
    /// should rest on sealed records unless the caller says otherwise.
    Refuse,
}

/// Archived records, in sequence order, as a pipeline source: the line number
/// of a record is its sequence number. Each closed segment is checked against
/// the index and the chain before any of its records is handed out, so a
/// damaged segment stops the source with an error instead of feeding altered
/// records. The open segment (not yet in the chain) is read up to its last
/// complete record unless [`ArchiveSource::sealed_only`] is set.
pub struct ArchiveSource {
    archive: Archive,
    filter: Filter,
    include_open: bool,
    max_len: usize,
    name: String,
    next_entry: usize,
    open_done: bool,
    previous_chain: [u8; 32],
    current: Option<Current>,
    skipped_segments: usize,
}

impl ArchiveSource {
    /// Every record of `archive`.
    pub fn new(archive: Archive, max_len: usize) -> ArchiveSource {
        ArchiveSource {
            name: archive.dir().display().to_string(),
            archive,
            filter: Filter::default(),
            include_open: true,
            max_len,
            next_entry: 0,
            open_done: false,
            previous_chain: [0; 32],
            current: None,
            skipped_segments: 0,
        }
    }

    /// Opens the archive in `dir`.
    pub fn open(dir: &Path, max_len: usize) -> Result<ArchiveSource, ArchiveError> {
        Ok(Self::new(Archive::open(dir)?, max_len))
    }

    /// Only the records `filter` selects; segments the index rules out are not read.
    pub fn with_filter(mut self, filter: Filter) -> ArchiveSource {
        self.filter = filter;
        self
    }

    /// Applies `policy` to the open segment; with
    /// [`OpenSegmentPolicy::Refuse`], an archive that has one (with records
    /// or not: a writer may be appending) is refused before any record is read.
    pub fn with_open_segment(
        mut self,
        policy: OpenSegmentPolicy,
    ) -> Result<ArchiveSource, ArchiveError> {
        match policy {
            OpenSegmentPolicy::Include => self.include_open = true,
            OpenSegmentPolicy::Exclude => self.include_open = false,
            OpenSegmentPolicy::Refuse => {
                if let Some(name) = self.archive.open_segment() {
                    return Err(ArchiveError::Unsealed {
                        path: self.archive.dir().join(name),
                        first_seq: self.archive.open_segment_first_seq(),
                    });
                }
                self.include_open = false;
            }
        }
        Ok(self)
    }

    /// The archive read.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Segments skipped thanks to the index so far.
    pub fn skipped_segments(&self) -> usize {
        self.skipped_segments
    }

    /// Moves to the next segment to read; false when there is none.
    fn next_segment(&mut self) -> io::Result<bool> {
        let dir = self.archive.dir().to_path_buf();
        while let Some(entry) = self.archive.entries().get(self.next_entry) {
            self.next_entry += 1;
            let previous = self.previous_chain;
            self.previous_chain = digest_from_hex(&entry.chain).unwrap_or_default();
            if !self.filter.may_match(entry) {
                self.skipped_segments += 1;
                continue;
            }
            let (data, _) = load_checked(&dir, entry, &previous).map_err(|what| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {what}", dir.join(&entry.segment).display()),
                )
            })?;
            // Decoding more than the index says is damage, found before
            // a bomb's output is buffered.
            self.current = Some(Current {
                lines: SegmentLines::new(data)?.with_max_bytes(entry.bytes),
                seq: entry.first_seq,
                name: entry.segment.clone(),
                closed: true,
            });
            return Ok(true);
        }
        if self.include_open && !self.open_done {
            self.open_done = true;
            if let Some(name) = self.archive.open_segment() {
                let path = dir.join(name);
                let data = match std::fs::read(&path) {
                    Ok(d) => d,
                    // Closed (and renamed into the index) by its writer meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e),
                };
                let previous = self
                    .archive
                    .entries()
                    .last()
                    .and_then(|e| digest_from_hex(&e.chain))
                    .unwrap_or_default();
                // A segment not begun at the archive's end (planted, copied)
                // is not its tail: never hand out its records.
                let first = self.archive.open_segment_first_seq();
                if let Some(what) = open_segment_mismatch(&data, &previous, first) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: open segment: {what}", path.display()),
                    ));
                }
                self.current = Some(Current {
                    lines: SegmentLines::new(data)?,
                    seq: self.archive.open_segment_first_seq(),
                    name: name.to_owned(),
                    closed: false,
                });
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl RecordSource for ArchiveSource {
    fn fetch(&mut self, _wait: bool) -> io::Result<Fetch<'_>> {
        let number = loop {
            let Some(cur) = self.current.as_mut() else {
                if self.next_segment()? {
                    continue;
                }
                return Ok(Fetch::End);
            };
            if cur.lines.advance() {
                let seq = cur.seq;
                cur.seq += 1;
                if self.filter.is_empty() || self.filter.matches(&record_info(cur.lines.line())) {
                    break seq;
                }
                continue;
            }
            // A closed segment must decode whole; the open one may end in
            // a torn record (a writer is appending or crashed), but never
            // past a limit.
            let torn = cur
                .lines
                .torn()
                .filter(|t| cur.closed || t.over_limit.is_some());
            if let Some(torn) = torn {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}/{}: {torn}", self.name, cur.name),
                ));
            }
            self.current = None;
        };
        let Some(cur) = self.current.as_ref() else {
            return Ok(Fetch::End);
        };
        let bytes = cur.lines.line();
        if bytes.len() > self.max_len {
            return Ok(Fetch::Oversized {
                number,
                len: bytes.len(),
            });
        }
        Ok(Fetch::Record { number, bytes })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::ArchiveWriter;

    fn lines_of(source: &mut ArchiveSource) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            match source.fetch(true).unwrap() {
                Fetch::Record { number, bytes } => out.push((number, bytes.to_vec())),
                Fetch::End => return out,
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn reads_back_in_order_with_sequence_numbers_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(
            dir.path(),
            WriterOptions {
                segment_bytes: 200,
                ..WriterOptions::default()
            },
        )
        .unwrap();
        let records: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                format!(
                    r#"{{"event": {{"process": "p", "type": "t{}", "task_id": "00", "ts": "{i}"}}}}"#,
                    i % 4
                )
                .into_bytes()
            })
            .collect();
        for r in &records {
            w.append(r).unwrap();
        }
        w.finish().unwrap();
        let mut all = ArchiveSource::open(dir.path(), 1 << 20).unwrap();
        let got = lines_of(&mut all);
        assert_eq!(got.len(), 20);
        for (i, (n, bytes)) in got.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1);
            assert_eq!(bytes, &records[i]);
        }
        let mut some = ArchiveSource::open(dir.path(), 1 << 20)
            .unwrap()
            .with_filter(Filter {
                types: vec!["t1".into()],
                since: Some(10),
                ..Filter::default()
            });
        let got: Vec<u64> = lines_of(&mut some).into_iter().map(|(n, _)| n).collect();
        assert_eq!(got, vec![14, 18]);
        assert!(some.skipped_segments() > 0);
        let mut short = ArchiveSource::open(dir.path(), 10).unwrap();
        assert!(matches!(
            short.fetch(true).unwrap(),
            Fetch::Oversized { number: 1, .. }
        ));
    }

    #[test]
    fn a_modified_segment_stops_the_source_before_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        w.append(b"{}").unwrap();
        w.finish().unwrap();
        let seg = dir.path().join(crate::index::segment_name(1));
        let mut data = std::fs::read(&seg).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::write(&seg, data).unwrap();
        let mut s = ArchiveSource::open(dir.path(), 1 << 20).unwrap();
        let err = s.fetch(true).unwrap_err();
        assert!(err.to_string().contains("content digest"), "{err}");
    }

    #[test]
    fn an_open_segment_is_refused_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        w.append(b"{}").unwrap();
        w.close_segment().unwrap();
        w.append(b"{\"unsealed\": 1}").unwrap();
        w.sync().unwrap();
        drop(w);
        let open = || ArchiveSource::open(dir.path(), 1 << 20).unwrap();
        match open().with_open_segment(OpenSegmentPolicy::Refuse) {
            Err(ArchiveError::Unsealed { first_seq: 2, .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an archive with an open segment was accepted"),
        }
        let mut sealed = open()
            .with_open_segment(OpenSegmentPolicy::Exclude)
            .unwrap();
        assert_eq!(lines_of(&mut sealed).len(), 1);
        let mut all = open()
            .with_open_segment(OpenSegmentPolicy::Include)
            .unwrap();
        assert_eq!(lines_of(&mut all).len(), 2);
    }

    #[test]
    fn a_planted_open_segment_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        w.append(b"{}").unwrap();
        w.finish().unwrap();
        let planted = zstd::encode_all(&b"{\"injected\": 1}\n"[..], 3).unwrap();
        std::fs::write(dir.path().join(crate::index::segment_name(2)), planted).unwrap();
        let mut s = ArchiveSource::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            s.fetch(true).unwrap(),
            Fetch::Record { number: 1, .. }
        ));
        let err = s.fetch(true).unwrap_err();
        assert!(err.to_string().contains("no segment header"), "{err}");
    }
}
