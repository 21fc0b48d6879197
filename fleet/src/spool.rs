//! The bounded, disk-backed buffer between the pipeline and a server.
//!
//! Every record to publish is first appended to a *spool*: a directory of
//! append-only files `spool-<20 digits>.log`. A drainer reads them back in
//! order, sends them, and once the server has acknowledged a batch commits
//! the position (`cursor`) and deletes files it has passed. So publishing
//! costs the pipeline one buffered file write per batch, whatever the server
//! does; a slow or absent server makes the spool grow, up to
//! [`Spool::open`]'s limit, past which new records are dropped and counted
//! ([`SpoolStats::dropped`]), never silently.
//!
//! What is in the spool when a process ends (server down, killed) is sent by
//! the next process that opens the same directory; since every entry carries
//! its de-duplication id, what had in fact reached the server before is
//! dropped there instead of stored twice.
//!
//! # Entry format
//!
//! `u32 LE length of the body`, `u32 LE CRC-32 of the body`, then the body:
//! `u16 LE subject length`, subject, `u16 LE id length`, id, payload. A torn
//! or damaged entry (a crash in the middle of a write) ends the readable part
//! of its file; opening the spool cuts it off and counts its bytes.
//!
//! One process at a time: the directory is locked (`flock` on `lock`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::Serialize;
use tsem_durable::{DirLock, LockError};

use crate::FleetError;

use tsem_durable::frame::{self, HEADER};
const CURSOR_FILE: &str = "cursor";
const LOCK_FILE: &str = "lock";

/// One message waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// NATS subject or MQTT topic.
    pub subject: String,
    /// De-duplication id (`Nats-Msg-Id`; empty when unused).
    pub id: String,
    /// The message.
    pub payload: Bytes,
}

/// A position in the spool: file number and byte offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// File number.
    pub file: u64,
    /// Offset in that file.
    pub offset: u64,
}

/// Counters of a spool since it was opened (and what opening found).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpoolStats {
    /// Entries appended.
    pub appended: u64,
    /// Entries dropped because the spool was full (or could not be written).
    pub dropped: u64,
    /// Entries acknowledged by the server and removed.
    pub acked: u64,
    /// Entries waiting.
    pub pending: u64,
    /// Bytes waiting.
    pub pending_bytes: u64,
    /// Entries left by an earlier process, found at opening.
    pub recovered: u64,
    /// Bytes of torn or damaged entries cut off.
    pub torn_bytes: u64,
    /// The first write error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_error: Option<String>,
}

struct State {
    _lock: DirLock,
    file: Option<File>,
    /// Entries appended but not yet written to `file`.
    buffer: Vec<u8>,
    buffered: u64,
    /// End of the data written to the files (readable).
    flushed: Pos,
    file_bytes: u64,
    max_bytes: u64,
    used: u64,
    stats: SpoolStats,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    notify: tokio::sync::Notify,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // Counters and positions stay consistent at every step; go on after a panic elsewhere.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writing side of a spool (cheap to clone: the tap and the forensics
/// observer share it).
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
}

/// Appends entries to a locked spool (see [`Spool::appender`]); they are
/// written by the next [`Spool::flush`].
pub struct Appender<'a> {
    state: MutexGuard<'a, State>,
}

impl Appender<'_> {
    /// Appends one entry; false when the spool is full and it was dropped (counted).
    pub fn push(&mut self, subject: &str, id: &str, payload: &[u8]) -> bool {
        let st = &mut *self.state;
        let size = (HEADER + 4 + subject.len() + id.len() + payload.len()) as u64;
        let fits = subject.len() <= u16::MAX as usize
            && id.len() <= u16::MAX as usize
            && payload.len() <= (u32::MAX as usize) / 2;
        if !fits || st.used + size > st.max_bytes {
            st.stats.dropped += 1;
            return false;
        }
        encode(&mut st.buffer, subject, id, payload);
        st.used += size;
        st.buffered += 1;
        true
    }
}

/// The reading side of a spool (one, owned by the drainer).
pub struct SpoolReader {
    shared: Arc<Shared>,
    read: Pos,
    /// The first file not yet removed.
    keep_from: u64,
    file: Option<(u64, File)>,
}

fn file_name(n: u64) -> String {
    format!("spool-{n:020}.log")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("spool-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> FleetError + '_ {
    move |e| FleetError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Encodes one entry: a [`frame`] whose body is the subject and the id
/// (each with a u16 length) and the payload.
fn encode(out: &mut Vec<u8>, subject: &str, id: &str, payload: &[u8]) {
    let start = frame::begin(out);
    out.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(payload);
    frame::finish(out, start);
}

/// What one entry at the start of `data` is.
enum Decoded {
    /// An entry and its encoded length.
    Entry(Entry, usize),
    /// The data ends inside an entry that needs this many bytes in all.
    Short(usize),
    /// The bytes are not an entry.
    Damaged,
}

fn decode(data: &Bytes) -> Decoded {
    // Subject and id lengths take 4 bytes at least.
    let total = match frame::decode(data, 4) {
        frame::Decoded::Frame { len } => len,
        frame::Decoded::Short(need) => return Decoded::Short(need),
        frame::Decoded::Damaged => return Decoded::Damaged,
    };
    let body = data.slice(HEADER..total);
    let field = |at: usize| -> Option<(String, usize)> {
        let len = u16::from_le_bytes([*body.get(at)?, *body.get(at + 1)?]) as usize;
        let text = body.get(at + 2..at + 2 + len)?;
        Some((String::from_utf8(text.to_vec()).ok()?, at + 2 + len))
    };
    let Some((subject, at)) = field(0) else {
        return Decoded::Damaged;
    };
    let Some((id, at)) = field(at) else {
        return Decoded::Damaged;
    };
    Decoded::Entry(
        Entry {
            subject,
            id,
            payload: body.slice(at..),
        },
        total,
    )
}

/// Counts the valid entries of `path` from `offset`; returns (entries, bytes, valid end).
fn scan(path: &Path, offset: u64) -> io::Result<(u64, u64, u64)> {
    let mut data = Vec::new();
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_to_end(&mut data)?;
    let data = Bytes::from(data);
    let (mut n, mut at) = (0u64, 0usize);
    while at < data.len() {
        match decode(&data.slice(at..)) {
            Decoded::Entry(_, len) => {
                n += 1;
                at += len;
            }
            Decoded::Short(_) | Decoded::Damaged => break,
        }
    }
    Ok((n, at as u64, offset + at as u64))
}

fn list_files(dir: &Path) -> Result<Vec<u64>, FleetError> {
    let mut ids = Vec::new();
    for item in fs::read_dir(dir).map_err(io_at(dir))? {
        let item = item.map_err(io_at(dir))?;
        if let Some(n) = item.file_name().to_str().and_then(parse_file_name) {
            ids.push(n);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn read_cursor(dir: &Path) -> Option<Pos> {
    let text = fs::read_to_string(dir.join(CURSOR_FILE)).ok()?;
    let (file, offset) = text.trim().split_once(' ')?;
    Some(Pos {
        file: file.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

fn write_cursor(dir: &Path, pos: Pos) -> io::Result<()> {
    let text = format!("{} {}\n", pos.file, pos.offset);
    // Not synced: a cursor that lags after a crash only sends entries again.
    tsem_durable::replace_file_unsynced(&dir.join(CURSOR_FILE), text.as_bytes())
}

impl Spool {
    /// Opens (or creates, mode 0700) the spool in `dir`, holding at most
    /// `max_bytes` of waiting entries. Entries left by an earlier process are
    /// kept (a torn last entry is cut off) and will be read first.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, SpoolReader), FleetError> {
        tsem_durable::create_private_dir(dir).map_err(io_at(dir))?;
        // Entries waiting here are sent as ours: no one else may write them.
        tsem_durable::check_private_dir(dir)?;
        let lock = tsem_durable::lock_dir(dir, LOCK_FILE).map_err(|e| match e {
            LockError::Busy { dir } => FleetError::Busy(dir),
            LockError::Io { path, source } => FleetError::Io { path, source },
        })?;
        tsem_durable::remove_stale_temporaries(dir).map_err(io_at(dir))?;
        let ids = list_files(dir)?;
        let mut cursor = read_cursor(dir).unwrap_or_default();
        // Files before the cursor were sent; a crash came before their removal.
        for &n in ids.iter().filter(|&&n| n < cursor.file) {
            let p = dir.join(file_name(n));
            fs::remove_file(&p).map_err(io_at(&p))?;
        }
        let ids: Vec<u64> = ids.into_iter().filter(|&n| n >= cursor.file).collect();
        if let Some(&first) = ids.first() {
            if first > cursor.file {
                cursor = Pos {
                    file: first,
                    offset: 0,
                };
            }
        }
        let mut stats = SpoolStats::default();
        let mut used = 0u64;
        for &n in &ids {
            let path = dir.join(file_name(n));
            let len = fs::metadata(&path).map_err(io_at(&path))?.len();
            let start = if n == cursor.file {
                cursor.offset.min(len)
            } else {
                0
            };
            let (entries, bytes, end) = scan(&path, start).map_err(io_at(&path))?;
            stats.recovered += entries;
            used += bytes;
            if end < len {
                // A torn or damaged tail: cut it off so that appends follow valid data.
                stats.torn_bytes += len - end;
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(end))
                    .map_err(io_at(&path))?;
            }
        }
        let file_bytes = (max_bytes / 8).clamp(1 << 20, 64 << 20);
        // Append to the last file while it is small, else start the next one.
        let (write_file, write_len) = match ids.last() {
            Some(&n) => {
                let len = fs::metadata(dir.join(file_name(n)))
                    .map_err(io_at(dir))?
                    .len();
                if len < file_bytes {
                    (n, len)
                } else {
                    (n + 1, 0)
                }
            }
            None => (cursor.file.max(1), 0),
        };
        if ids.is_empty() {
            cursor = Pos {
                file: write_file,
                offset: 0,
            };
        }
        let path = dir.join(file_name(write_file));
        let file = tsem_durable::open_append_private(&path).map_err(io_at(&path))?;
        stats.pending = stats.recovered;
        stats.pending_bytes = used;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                _lock: lock,
                file: Some(file),
                buffer: Vec::with_capacity(256 << 10),
                buffered: 0,
                flushed: Pos {
                    file: write_file,
                    offset: write_len,
                },
                file_bytes,
                max_bytes,
                used,
                stats,
            }),
            notify: tokio::sync::Notify::new(),
        });
        let reader = SpoolReader {
            shared: Arc::clone(&shared),
            read: cursor,
            keep_from: cursor.file,
            file: None,
        };
        Ok((Spool { shared }, reader))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends one entry (buffered until [`flush`](Self::flush)); false when
    /// the spool is full and the entry was dropped (counted).
    pub fn append(&self, subject: &str, id: &str, payload: &[u8]) -> bool {
        self.appender().push(subject, id, payload)
    }

    /// Appends several entries under one lock (a batch of records).
    pub fn appender(&self) -> Appender<'_> {
        Appender {
            state: lock(&self.shared),
        }
    }

    /// Writes what was appended to the spool file and wakes the drainer.
    /// A write error drops the unwritten entries (counted, and the error kept
    /// for the report) instead of failing: publishing must not stop modeling.
    pub fn flush(&self) {
        let mut guard = lock(&self.shared);
        let st = &mut *guard;
        if st.buffer.is_empty() {
            return;
        }
        let dir = &self.shared.dir;
        if st.flushed.offset > 0 && st.flushed.offset + st.buffer.len() as u64 > st.file_bytes {
            st.file = None;
            st.flushed = Pos {
                file: st.flushed.file + 1,
                offset: 0,
            };
        }
        let mut result = Ok(());
        for _attempt in 0..2 {
            if st.file.is_none() {
                match tsem_durable::open_append_private(&dir.join(file_name(st.flushed.file))) {
                    Ok(f) => st.file = Some(f),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let Some(f) = st.file.as_mut() else {
                break;
            };
            match f.write_all(&st.buffer) {
                Ok(()) => {
                    result = Ok(());
                    break;
                }
                Err(e) => {
                    // Cut off what part of the batch made it, then try a fresh file.
                    let _ = f.set_len(st.flushed.offset);
                    st.file = None;
                    st.flushed = Pos {
                        file: st.flushed.file + 1,
                        offset: 0,
                    };
                    result = Err(e);
                }
            }
        }
        match result {
            Ok(()) => {
                st.flushed.offset += st.buffer.len() as u64;
                st.stats.appended += st.buffered;
                st.stats.pending += st.buffered;
            }
            Err(e) => {
                st.stats.dropped += st.buffered;
                st.used -= st.buffer.len() as u64;
                if st.stats.write_error.is_none() {
                    st.stats.write_error = Some(format!("{}: {e}", dir.display()));
                }
            }
        }
        st.buffer.clear();
        st.buffered = 0;
        drop(guard);
        self.shared.notify.notify_one();
    }

    /// The counters so far.
    pub fn stats(&self) -> SpoolStats {
        let st = lock(&self.shared);
        let mut s = st.stats.clone();
        s.pending_bytes = st.used;
        s
    }

    /// Wakes the drainer (after a flush, or to make it look at a stop request).
    pub fn wake(&self) {
        self.shared.notify.notify_one();
    }
}

impl SpoolReader {
    /// Waits until something was flushed (or [`Spool::wake`]), at most `timeout`.
    pub async fn wait(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.shared.notify.notified()).await;
    }

    /// The next entries after the committed position, at most `max_entries`
    /// and about `max_bytes` (at least one entry); empty when none is waiting.
    /// Nothing moves until [`commit`](Self::commit).
    pub fn read_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> io::Result<(Vec<Entry>, Pos)> {
        let dir = self.shared.dir.clone();
        loop {
            let flushed = lock(&self.shared).flushed;
            if self.read >= flushed {
                return Ok((Vec::new(), self.read));
            }
            let path = dir.join(file_name(self.read.file));
            let limit = if self.read.file == flushed.file {
                flushed.offset
            } else {
                match fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                }
            };
            if self.read.offset >= limit {
                if self.read.file < flushed.file {
                    self.next_file();
                    continue;
                }
                return Ok((Vec::new(), self.read));
            }
            let mut want = (limit - self.read.offset).min(max_bytes.max(HEADER) as u64) as usize;
            loop {
                let data = self.read_at(&path, self.read.offset, want)?;
                let mut entries = Vec::new();
                let mut at = 0usize;
                let mut short = None;
                let mut damaged = false;
                while at < data.len() && entries.len() < max_entries {
                    match decode(&data.slice(at..)) {
                        Decoded::Entry(e, len) => {
                            entries.push(e);
                            at += len;
                        }
                        Decoded::Short(need) => {
                            short = Some(need);
                            break;
                        }
                        Decoded::Damaged => {
                            damaged = true;
                            break;
                        }
                    }
                }
                if !entries.is_empty() {
                    let end = Pos {
                        file: self.read.file,
                        offset: self.read.offset + at as u64,
                    };
                    return Ok((entries, end));
                }
                match short {
                    // The first entry is longer than what was read: read it whole.
                    Some(need) if (need as u64) <= limit - self.read.offset && need > want => {
                        want = need;
                        continue;
                    }
                    _ => {}
                }
                if (damaged || short.is_some()) && self.read.file < flushed.file {
                    // A torn tail left by a failed write: the rest of this file is not data.
                    let mut st = lock(&self.shared);
                    st.stats.torn_bytes += limit - self.read.offset;
                    drop(st);
                    self.next_file();
                    break;
                }
                if damaged {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: damaged entry at offset {}",
                            path.display(),
                            self.read.offset
                        ),
                    ));
                }
                return Ok((Vec::new(), self.read));
            }
        }
    }

    fn next_file(&mut self) {
        self.read = Pos {
            file: self.read.file + 1,
            offset: 0,
        };
        self.file = None;
    }

    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Bytes> {
        let file = match &mut self.file {
            Some((n, f)) if *n == self.read.file => f,
            _ => {
                let f = File::open(path)?;
                &mut self.file.insert((self.read.file, f)).1
            }
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match file.read(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        Ok(Bytes::from(buf))
    }

    /// Marks everything before `end` as sent (`entries` entries of `bytes`
    /// encoded bytes), records the position and deletes the files passed.
    pub fn commit(&mut self, end: Pos, entries: u64, bytes: u64) -> io::Result<()> {
        let dir = self.shared.dir.clone();
        let old = self.keep_from;
        self.read = end;
        {
            let mut st = lock(&self.shared);
            st.used = st.used.saturating_sub(bytes);
            st.stats.pending = st.stats.pending.saturating_sub(entries);
            st.stats.acked += entries;
        }
        write_cursor(&dir, end)?;
        for n in old..end.file {
            match fs::remove_file(dir.join(file_name(n))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.keep_from = self.keep_from.max(end.file);
        Ok(())
    }

    /// The encoded size of `entries` (what [`commit`](Self::commit) subtracts).
    pub fn encoded_len(entries: &[Entry]) -> u64 {
        entries
            .iter()
            .map(|e| (HEADER + 4 + e.subject.len() + e.id.len() + e.payload.len()) as u64)
            .sum()
    }

    /// True when nothing is waiting (everything flushed was committed).
    pub fn is_drained(&self) -> bool {
        let st = lock(&self.shared);
        self.read >= st.flushed && st.buffer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(reader: &mut SpoolReader, max: usize) -> Vec<Entry> {
        let mut all = Vec::new();
        loop {
            let (batch, end) = reader.read_batch(max, 1 << 20).unwrap();
            if batch.is_empty() {
                return all;
            }
            let bytes = SpoolReader::encoded_len(&batch);
            reader.commit(end, batch.len() as u64, bytes).unwrap();
            all.extend(batch);
        }
    }

    #[test]
    fn entries_come_back_in_order_and_files_go_once_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut reader) = Spool::open(dir.path(), 16 << 20).unwrap();
        assert!(Spool::open(dir.path(), 1 << 20).is_err(), "locked");
        for i in 0..1000u32 {
            let payload = format!("record {i}");
            assert!(spool.append("s.a", &format!("id{i}"), payload.as_bytes()));
            if i % 100 == 99 {
                spool.flush();
            }
        }
        let got = drain(&mut reader, 64);
        assert_eq!(got.len(), 1000);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.subject, "s.a");
            assert_eq!(e.id, format!("id{i}"));
            assert_eq!(&e.payload[..], format!("record {i}").as_bytes());
        }
        let s = spool.stats();
        assert_eq!(
            (s.appended, s.acked, s.pending, s.pending_bytes),
            (1000, 1000, 0, 0)
        );
        assert!(reader.is_drained());
    }

    #[test]
    fn a_full_spool_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut reader) = Spool::open(dir.path(), 1000).unwrap();
        let payload = [b'x'; 100];
        let kept = {
            let mut a = spool.appender();
            (0..20).filter(|_| a.push("s", "", &payload)).count() as u64
        };
        spool.flush();
        assert!(kept > 0 && kept < 20);
        let s = spool.stats();
        assert_eq!(s.dropped, 20 - kept);
        assert_eq!(drain(&mut reader, 100).len() as u64, kept);
        // Room again once drained.
        assert!(spool.append("s", "", &payload));
    }

    #[test]
    fn what_was_not_sent_is_found_again_and_a_torn_tail_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, mut reader) = Spool::open(dir.path(), 16 << 20).unwrap();
            for i in 0..10u32 {
                spool.append("s", &i.to_string(), b"payload");
            }
            spool.flush();
            let (batch, end) = reader.read_batch(4, 1 << 20).unwrap();
            assert_eq!(batch.len(), 4);
            reader
                .commit(end, 4, SpoolReader::encoded_len(&batch))
                .unwrap();
        }
        // A crash in the middle of a write.
        let path = dir.path().join(file_name(1));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (spool, mut reader) = Spool::open(dir.path(), 16 << 20).unwrap();
        let s = spool.stats();
        assert_eq!((s.recovered, s.pending, s.torn_bytes), (6, 6, 6));
        spool.append("s", "10", b"payload");
        spool.flush();
        let ids: Vec<String> = drain(&mut reader, 100).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["4", "5", "6", "7", "8", "9", "10"]);
    }

    #[test]
    fn files_rotate_and_damaged_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 8 MiB limit: 1 MiB files.
        let (spool, mut reader) = Spool::open(dir.path(), 8 << 20).unwrap();
        let payload = vec![b'y'; 100 << 10];
        for i in 0..30u32 {
            assert!(spool.append("s", &i.to_string(), &payload));
            spool.flush();
        }
        assert!(list_files(dir.path()).unwrap().len() > 1);
        assert_eq!(drain(&mut reader, 7).len(), 30);
        assert_eq!(list_files(dir.path()).unwrap().len(), 1);
        let mut data = Vec::new();
        encode(&mut data, "s", "x", b"abc");
        let last = data.len() - 1;
        data[last] ^= 1;
        assert!(matches!(decode(&Bytes::from(data)), Decoded::Damaged));
    }
}
