//! Appending records to an archive: segments, rotation, syncs, index entries,
//! and the recovery of a segment left open by a writer that did not finish.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use tsem_durable::{
    create_private_dir, create_private_file as create_private, sync_dir, DirLock, LockError,
};

use crate::index::{
    append_entry, chain, digest_from_hex, open_segment_mismatch, parse_segment_name, read_index,
    segment_header, segment_name, IndexEntry, Recovery, SegmentStats, FORMAT_FILE, FORMAT_TEXT,
    INDEX_FILE, LOCK_FILE,
};
use crate::reader::SegmentLines;
use crate::ArchiveError;

/// How a writer compresses, rotates and syncs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// zstd level (1-19; 3 is zstd's default and a good speed/ratio balance).
    pub level: i32,
    /// A segment is closed before its records (uncompressed, `\n` included)
    /// would exceed this many bytes. Counting uncompressed bytes makes the
    /// segmentation depend on the records only, not on the compressor.
    pub segment_bytes: u64,
    /// A segment is closed once it has been open this long.
    pub segment_age: Duration,
    /// Longest time a record waits before it is made durable.
    pub sync_interval: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            level: 3,
            segment_bytes: 256 << 20,
            segment_age: Duration::from_secs(3600),
            sync_interval: Duration::from_millis(200),
        }
    }
}

/// Records are handed to zstd in chunks of this size: one compression call
/// per record would cost more than the compression itself.
const FEED_BYTES: usize = 128 << 10;

/// The segment file, hashing what is written to it.
struct HashingFile {
    file: File,
    hasher: Sha256,
    len: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type SegmentEncoder = zstd::stream::write::Encoder<'static, HashingFile>;

/// A compressor writing (and hashing) a new segment file, which starts with
/// `header` (see [`segment_header`]).
fn new_encoder(file: File, level: i32, header: &[u8]) -> io::Result<SegmentEncoder> {
    let mut hashing = HashingFile {
        file,
        hasher: Sha256::new(),
        len: 0,
    };
    hashing.write_all(header)?;
    let mut encoder = zstd::stream::write::Encoder::new(hashing, level)?;
    // zstd's content checksum lets a reader tell a damaged open segment
    // (which has no digest in the index yet) from a valid one.
    encoder.include_checksum(true)?;
    Ok(encoder)
}

/// The segment being written.
struct OpenSegment {
    name: String,
    path: PathBuf,
    first_seq: u64,
    stats: SegmentStats,
    encoder: SegmentEncoder,
    /// Records not yet handed to zstd.
    pending: Vec<u8>,
    opened: Instant,
    /// Records were appended since the last sync.
    unsynced: bool,
    /// The file's directory entry was made durable.
    dir_synced: bool,
}

/// What opening an archive for writing found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The archive was created.
    pub created: bool,
    /// An entry closed by this writer for a segment the previous writer left open.
    pub recovered: Option<IndexEntry>,
    /// Bytes of an incomplete index line that were cut off.
    pub index_torn_bytes: u64,
    /// Unfinished temporary files that were removed.
    pub removed_temporaries: usize,
}

/// Appends records to the archive in one directory. One writer at a time
/// (an exclusive lock); readers need no lock.
pub struct ArchiveWriter {
    dir: PathBuf,
    _lock: DirLock,
    index: File,
    options: WriterOptions,
    next_seq: u64,
    chain: [u8; 32],
    open: Option<OpenSegment>,
    durable: u64,
    report: OpenReport,
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> ArchiveError + '_ {
    move |e| ArchiveError::io(path, e)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Creates `dir` (mode 0700) if needed, or narrows it to 0700, and makes it
/// an archive if it is empty.
fn prepare_dir(dir: &Path) -> Result<bool, ArchiveError> {
    let io = io_at(dir);
    if !dir.exists() {
        create_private_dir(dir).map_err(&io)?;
    }
    let meta = fs::metadata(dir).map_err(&io)?;
    if !meta.is_dir() {
        return Err(ArchiveError::NotAnArchive(dir.to_path_buf()));
    }
    // Records must not go where another user could read or change them.
    tsem_durable::check_private_dir(dir)?;
    // Only an archive (or a directory about to become one) is narrowed to
    // 0700: a wrong path must not change the permissions of anything else.
    let narrow = || -> Result<(), ArchiveError> {
        if meta.permissions().mode() & 0o777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(&io)?;
        }
        Ok(())
    };
    let format = dir.join(FORMAT_FILE);
    match fs::read_to_string(&format) {
        Ok(text) if text == FORMAT_TEXT => {
            narrow()?;
            return Ok(false);
        }
        Ok(text) => {
            return Err(ArchiveError::Format {
                path: dir.to_path_buf(),
                found: text.trim().to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ArchiveError::io(&format, e)),
    }
    // Empty, or what a creation interrupted by a crash leaves (an empty
    // index, a temporary marker): start again.
    let index = dir.join(INDEX_FILE);
    let tmp = dir.join(".FORMAT.tmp");
    for item in fs::read_dir(dir).map_err(&io)? {
        let item = item.map_err(&io)?;
        let path = item.path();
        let empty_index = path == index && item.metadata().map_err(&io)?.len() == 0;
        if !(empty_index || path == tmp) {
            return Err(ArchiveError::NotAnArchive(dir.to_path_buf()));
        }
    }
    narrow()?;
    for leftover in [&index, &tmp] {
        match fs::remove_file(leftover) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(ArchiveError::io(leftover, e))
            }
            _ => {}
        }
    }
    // The index first, the format marker last: a crash in between leaves a
    // directory that is not yet an archive, which the next writer creates again.
    create_private(&index)
        .and_then(|f| f.sync_all())
        .map_err(io_at(&index))?;
    let mut f = create_private(&tmp).map_err(io_at(&tmp))?;
    f.write_all(FORMAT_TEXT.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_at(&tmp))?;
    fs::rename(&tmp, &format).map_err(io_at(&format))?;
    sync_dir(dir).map_err(&io)?;
    Ok(true)
}

impl ArchiveWriter {
    /// Opens the archive in `dir` for appending (creating it when `dir` is
    /// missing or empty). Sequence numbers continue after the last record;
    /// a segment left open by a writer that stopped uncleanly is closed first
    /// (see [`OpenReport::recovered`]).
    pub fn open(dir: &Path, options: WriterOptions) -> Result<ArchiveWriter, ArchiveError> {
        let created = prepare_dir(dir)?;
        let lock = tsem_durable::lock_dir(dir, LOCK_FILE).map_err(|e| match e {
            LockError::Busy { dir } => ArchiveError::Locked(dir),
            LockError::Io { path, source } => ArchiveError::io(&path, source),
        })?;
        let index_path = dir.join(INDEX_FILE);
        let read = read_index(dir)?;
        let index = OpenOptions::new()
            .append(true)
            .open(&index_path)
            .map_err(io_at(&index_path))?;
        let mut report = OpenReport {
            created,
            index_torn_bytes: read.torn_bytes,
            ..OpenReport::default()
        };
        if read.torn_bytes > 0 {
            index
                .set_len(read.valid_len)
                .and_then(|()| index.sync_all())
                .map_err(io_at(&index_path))?;
        }
        let damaged = |what: String| ArchiveError::Damaged {
            path: dir.to_path_buf(),
            what,
        };
        let mut next_seq = 1u64;
        let mut last_chain = [0u8; 32];
        let mut indexed = std::collections::HashSet::new();
        for e in &read.entries {
            if e.first_seq != next_seq
                || e.last_seq < e.first_seq
                || e.segment != segment_name(e.first_seq)
            {
                return Err(damaged(format!(
                    "index entry {} does not continue the sequence at {next_seq}",
                    e.segment
                )));
            }
            next_seq = e.last_seq + 1;
            last_chain = digest_from_hex(&e.chain)
                .ok_or_else(|| damaged(format!("index entry {}: bad chain digest", e.segment)))?;
            indexed.insert(e.segment.clone());
        }
        let mut open_segment = None;
        for item in fs::read_dir(dir).map_err(io_at(dir))? {
            let item = item.map_err(io_at(dir))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(item.path()).map_err(io_at(&item.path()))?;
                report.removed_temporaries += 1;
                continue;
            }
            match parse_segment_name(&name) {
                Some(_) if indexed.remove(&name) => {}
                Some(first) if first == next_seq && open_segment.is_none() => {
                    open_segment = Some(name)
                }
                Some(_) => return Err(damaged(format!("unexpected segment file {name}"))),
                None => {}
            }
        }
        if let Some(missing) = indexed.iter().next() {
            return Err(damaged(format!("segment {missing} is missing")));
        }
        let mut writer = ArchiveWriter {
            dir: dir.to_path_buf(),
            _lock: lock,
            index,
            options,
            next_seq,
            chain: last_chain,
            open: None,
            durable: next_seq - 1,
            report,
        };
        if let Some(name) = open_segment {
            writer.recover(&name)?;
        }
        if writer.report.removed_temporaries > 0 {
            sync_dir(dir).map_err(io_at(dir))?;
        }
        Ok(writer)
    }

    /// What opening found and did.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The archive directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last sequence number known durable (0: none).
    pub fn durable_seq(&self) -> u64 {
        self.durable
    }

    /// The options in force.
    pub fn options(&self) -> &WriterOptions {
        &self.options
    }

    /// True when records were appended since the last sync.
    pub fn has_unsynced(&self) -> bool {
        self.open.as_ref().is_some_and(|s| s.unsynced)
    }

    /// How long the open segment has been open.
    pub fn open_age(&self) -> Option<Duration> {
        self.open.as_ref().map(|s| s.opened.elapsed())
    }

    /// Closes a segment left open by an earlier writer: its complete records
    /// are rewritten into a complete segment (a torn last record is dropped),
    /// which gets an index entry that says so.
    fn recover(&mut self, name: &str) -> Result<(), ArchiveError> {
        let path = self.dir.join(name);
        let data = fs::read(&path).map_err(io_at(&path))?;
        let damaged = |what: String| {
            ArchiveError::Damaged {
            path: path.clone(),
            what: format!("open segment {name}: {what}; it was not sealed into the chain (check it, then move it out of the archive)"),
        }
        };
        // Only a segment begun at the archive's end is this archive's tail:
        // sealing anything else would fold foreign records into the chain.
        if let Some(what) = open_segment_mismatch(&data, &self.chain, self.next_seq) {
            return Err(damaged(what));
        }
        // Bounded decoding: a decompression bomb is refused, never buffered.
        let mut lines = SegmentLines::new(data.as_slice()).map_err(io_at(&path))?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let file = create_private(&tmp).map_err(io_at(&tmp))?;
        let header = segment_header(&self.chain, self.next_seq);
        let mut encoder = new_encoder(file, self.options.level, &header).map_err(io_at(&tmp))?;
        let mut stats = SegmentStats::default();
        while let Some(line) = lines.next_line() {
            encoder.write_all(line).map_err(io_at(&tmp))?;
            encoder.write_all(b"\n").map_err(io_at(&tmp))?;
            stats.add(line);
        }
        let (reason, dropped) = match lines.torn() {
            None => ("complete segment without an index entry".to_owned(), 0),
            Some(torn) if torn.over_limit.is_some() => {
                drop(encoder);
                let _ = fs::remove_file(&tmp);
                return Err(damaged(torn.to_string()));
            }
            Some(torn) => (
                match &torn.error {
                    None => "the stream ends inside a record".to_owned(),
                    Some(e) => format!("the stream ends early ({e})"),
                },
                torn.dropped_bytes,
            ),
        };
        let hashing = encoder.finish().map_err(io_at(&tmp))?;
        if stats.records == 0 {
            drop(hashing);
            fs::remove_file(&tmp).map_err(io_at(&tmp))?;
            fs::remove_file(&path).map_err(io_at(&path))?;
            sync_dir(&self.dir).map_err(io_at(&self.dir))?;
            return Ok(());
        }
        hashing.file.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_at(&path))?;
        sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        let first_seq = self.next_seq;
        let entry = self.seal(
            name.to_owned(),
            first_seq,
            stats,
            hashing,
            Some(Recovery {
                records: 0,
                dropped_bytes: dropped,
                reason,
            }),
        )?;
        self.report.recovered = Some(entry);
        Ok(())
    }

    /// Appends the index entry of a finished segment file and advances the chain.
    fn seal(
        &mut self,
        name: String,
        first_seq: u64,
        stats: SegmentStats,
        file: HashingFile,
        mut recovered: Option<Recovery>,
    ) -> Result<IndexEntry, ArchiveError> {
        let sha: [u8; 32] = file.hasher.finalize().into();
        let last_seq = first_seq + stats.records - 1;
        let link = chain(&self.chain, &sha, first_seq, last_seq);
        if let Some(r) = &mut recovered {
            r.records = stats.records;
        }
        let entry = IndexEntry {
            segment: name,
            first_seq,
            last_seq,
            records: stats.records,
            bytes: stats.bytes,
            file_bytes: file.len,
            ts_min: stats.ts_min,
            ts_max: stats.ts_max,
            types: stats.types,
            processes: stats.processes,
            level: self.options.level,
            closed_unix: unix_now(),
            sha256: tsem_ingest::hex::encode(&sha),
            chain: tsem_ingest::hex::encode(&link),
            recovered,
        };
        let index_path = self.dir.join(INDEX_FILE);
        append_entry(&mut self.index, &entry).map_err(io_at(&index_path))?;
        self.chain = link;
        self.next_seq = last_seq + 1;
        self.durable = last_seq;
        Ok(entry)
    }

    fn open_segment(&mut self) -> Result<(), ArchiveError> {
        let name = segment_name(self.next_seq);
        let path = self.dir.join(&name);
        let file = create_private(&path).map_err(io_at(&path))?;
        let header = segment_header(&self.chain, self.next_seq);
        let encoder = new_encoder(file, self.options.level, &header).map_err(io_at(&path))?;
        self.open = Some(OpenSegment {
            name,
            path,
            first_seq: self.next_seq,
            stats: SegmentStats::default(),
            encoder,
            pending: Vec::with_capacity(FEED_BYTES + 4096),
            opened: Instant::now(),
            unsynced: false,
            dir_synced: false,
        });
        Ok(())
    }

    /// Closes the open segment when it is older than the segment age (not
    /// checked per record: reading the clock would cost more than the rest
    /// of an append). [`DurableWriter`](crate::DurableWriter) calls it.
    pub fn rotate_if_old(&mut self) -> Result<Option<IndexEntry>, ArchiveError> {
        match &self.open {
            Some(seg) if seg.opened.elapsed() >= self.options.segment_age => self.close_segment(),
            _ => Ok(None),
        }
    }

    /// Appends one record (a line without its `\n`; it must not contain one).
    /// Segments are rotated by size here, by age in [`Self::rotate_if_old`].
    pub fn append(&mut self, record: &[u8]) -> Result<(), ArchiveError> {
        if let Some(seg) = &self.open {
            let full = seg.stats.bytes + record.len() as u64 + 1 > self.options.segment_bytes;
            if seg.stats.records > 0 && full {
                self.close_segment()?;
            }
        }
        if self.open.is_none() {
            self.open_segment()?;
        }
        let Some(seg) = self.open.as_mut() else {
            return Ok(());
        };
        seg.pending.extend_from_slice(record);
        seg.pending.push(b'\n');
        seg.stats.add(record);
        seg.unsynced = true;
        self.next_seq += 1;
        if seg.pending.len() >= FEED_BYTES {
            seg.encoder
                .write_all(&seg.pending)
                .map_err(io_at(&seg.path))?;
            seg.pending.clear();
        }
        Ok(())
    }

    /// Makes every record appended so far durable: the compressor's output
    /// is flushed (a complete zstd block), written and `fdatasync`ed, and a
    /// new segment's directory entry synced. Returns the durable sequence number.
    pub fn sync(&mut self) -> Result<u64, ArchiveError> {
        let Some(seg) = self.open.as_mut() else {
            return Ok(self.durable);
        };
        if !seg.unsynced {
            return Ok(self.durable);
        }
        let io = io_at(&seg.path);
        seg.encoder.write_all(&seg.pending).map_err(&io)?;
        seg.pending.clear();
        seg.encoder.flush().map_err(&io)?;
        seg.encoder.get_ref().file.sync_data().map_err(&io)?;
        if !seg.dir_synced {
            sync_dir(&self.dir).map_err(io_at(&self.dir))?;
            seg.dir_synced = true;
        }
        seg.unsynced = false;
        self.durable = self.next_seq - 1;
        Ok(self.durable)
    }

    /// Closes the open segment (if any): the zstd frame is finished, the file
    /// synced, and its index entry appended and synced.
    pub fn close_segment(&mut self) -> Result<Option<IndexEntry>, ArchiveError> {
        let Some(mut seg) = self.open.take() else {
            return Ok(None);
        };
        let io = io_at(&seg.path);
        seg.encoder.write_all(&seg.pending).map_err(&io)?;
        let file = seg.encoder.finish().map_err(&io)?;
        file.file.sync_data().map_err(&io)?;
        if !seg.dir_synced {
            sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        }
        let entry = self.seal(seg.name, seg.first_seq, seg.stats, file, None)?;
        Ok(Some(entry))
    }

    /// Closes the open segment and releases the archive.
    pub fn finish(mut self) -> Result<u64, ArchiveError> {
        self.close_segment()?;
        Ok(self.durable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Archive;

    fn small() -> WriterOptions {
        WriterOptions {
            segment_bytes: 100,
            ..WriterOptions::default()
        }
    }

    fn record(i: u64) -> Vec<u8> {
        format!(
            r#"{{"event": {{"process": "p{}", "type": "capable", "task_id": "00", "ts": "{i}"}}}}"#,
            i % 3
        )
        .into_bytes()
    }

    #[test]
    fn creates_private_files_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("a");
        let mut w = ArchiveWriter::open(&at, small()).unwrap();
        assert!(w.open_report().created);
        for i in 1..=10 {
            w.append(&record(i)).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 10);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&at), 0o700);
        for f in fs::read_dir(&at).unwrap() {
            assert_eq!(mode(&f.unwrap().path()), 0o600);
        }
        let a = Archive::open(&at).unwrap();
        // Each record is ~80 bytes: one per segment with a 100-byte limit.
        assert_eq!(a.entries().len(), 10);
        assert_eq!(a.entries()[3].first_seq, 4);
        assert_eq!(a.entries()[3].ts_min, Some(4));
    }

    #[test]
    fn reopening_appends_and_a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        w.append(&record(1)).unwrap();
        assert!(matches!(
            ArchiveWriter::open(dir.path(), WriterOptions::default()),
            Err(ArchiveError::Locked(_))
        ));
        w.finish().unwrap();
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        assert_eq!(w.next_seq(), 2);
        w.append(&record(2)).unwrap();
        w.finish().unwrap();
        let a = Archive::open(dir.path()).unwrap();
        assert_eq!(a.entries().len(), 2);
        assert_eq!(a.entries()[1].first_seq, 2);
    }

    #[test]
    fn a_non_archive_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("x"), b"x").unwrap();
        assert!(matches!(
            ArchiveWriter::open(dir.path(), WriterOptions::default()),
            Err(ArchiveError::NotAnArchive(_))
        ));
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn an_interrupted_creation_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(INDEX_FILE), b"").unwrap();
        fs::write(dir.path().join(".FORMAT.tmp"), b"tsem").unwrap();
        let w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        assert!(w.open_report().created);
        w.finish().unwrap();
        assert!(Archive::is_archive(dir.path()));
    }

    #[test]
    fn an_abandoned_segment_is_recovered_up_to_its_last_complete_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        for i in 1..=5 {
            w.append(&record(i)).unwrap();
        }
        w.close_segment().unwrap();
        for i in 6..=8 {
            w.append(&record(i)).unwrap();
        }
        assert_eq!(w.sync().unwrap(), 8);
        w.append(&record(9)).unwrap();
        assert_eq!(w.sync().unwrap(), 9);
        w.append(&record(10)).unwrap();
        // An unclean stop: the open segment keeps what was synced (the lock
        // goes with the process).
        drop(w);
        // Cut the file inside the last synced block (as if it had been lost):
        // the stream is torn after record 8.
        let seg = dir.path().join(segment_name(6));
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        let rec = w.open_report().recovered.clone().unwrap();
        assert_eq!(rec.first_seq, 6);
        assert_eq!(rec.records, 3, "{rec:?}");
        assert!(rec.recovered.is_some());
        assert_eq!(w.next_seq(), rec.last_seq + 1);
        w.finish().unwrap();
        let a = Archive::open(dir.path()).unwrap();
        assert!(a.verify(None).unwrap().problems.is_empty());
    }

    /// An archive whose writer stopped uncleanly with records 3..=4 in the
    /// open segment (1..=2 sealed).
    fn crashed(dir: &Path) {
        let mut w = ArchiveWriter::open(dir, WriterOptions::default()).unwrap();
        w.append(&record(1)).unwrap();
        w.append(&record(2)).unwrap();
        w.close_segment().unwrap();
        w.append(&record(3)).unwrap();
        w.append(&record(4)).unwrap();
        w.sync().unwrap();
        drop(w);
    }

    fn index_text(dir: &Path) -> String {
        fs::read_to_string(dir.join(INDEX_FILE)).unwrap()
    }

    #[test]
    fn a_planted_open_segment_is_refused_not_sealed() {
        // Records compressed by anyone else: no header says where they belong.
        let dir = tempfile::tempdir().unwrap();
        crashed(dir.path());
        let open = dir.path().join(segment_name(3));
        let planted = zstd::encode_all(&b"{\"injected\": 1}\n"[..], 3).unwrap();
        fs::write(&open, &planted).unwrap();
        let before = index_text(dir.path());
        match ArchiveWriter::open(dir.path(), WriterOptions::default()) {
            Err(ArchiveError::Damaged { what, .. }) => {
                assert!(what.contains("no segment header"), "{what}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("the planted segment was sealed"),
        }
        assert_eq!(index_text(dir.path()), before);
        assert_eq!(fs::read(&open).unwrap(), planted);
    }

    #[test]
    fn an_open_segment_begun_elsewhere_in_the_chain_is_refused() {
        // A real segment of this archive, copied to where the open one goes:
        // its header names the start of the chain, not its end.
        let dir = tempfile::tempdir().unwrap();
        crashed(dir.path());
        let open = dir.path().join(segment_name(3));
        fs::copy(dir.path().join(segment_name(1)), &open).unwrap();
        let before = index_text(dir.path());
        match ArchiveWriter::open(dir.path(), WriterOptions::default()) {
            Err(ArchiveError::Damaged { what, .. }) => {
                assert!(what.contains("does not continue this archive"), "{what}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("the copied segment was sealed"),
        }
        assert_eq!(index_text(dir.path()), before);
    }

    #[test]
    fn the_open_segment_of_a_crashed_writer_is_still_recovered() {
        let dir = tempfile::tempdir().unwrap();
        crashed(dir.path());
        let w = ArchiveWriter::open(dir.path(), WriterOptions::default()).unwrap();
        let rec = w.open_report().recovered.clone().unwrap();
        assert_eq!((rec.first_seq, rec.last_seq), (3, 4));
        w.finish().unwrap();
        let report = Archive::open(dir.path()).unwrap().verify(None).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.unsealed.len(), 1, "{report:?}");
    }
}
