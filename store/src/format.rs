//! Byte encodings of the header file and of write-ahead-log records, and the
//! WAL scanner shared by recovery and snapshots.
//!
//! Every integer is little-endian. Decoders never panic: they return a reason
//! string that the caller wraps into [`StoreError::Corrupt`] with the path.
//!
//! [`StoreError::Corrupt`]: super::StoreError::Corrupt

use super::{StoreMeta, StoredPoint};
use tsem_model::Digest;
use tsem_model::Profile;

/// First bytes of the header file.
pub(super) const HEADER_MAGIC: &[u8; 8] = b"TSEMSTOR";
/// The on-disk format version written and accepted by this code.
pub(super) const FORMAT_VERSION: u32 = 1;
/// First bytes of every WAL record ("TWAL" read as little-endian u32).
pub(super) const WAL_MAGIC: u32 = u32::from_le_bytes(*b"TWAL");
/// Bytes of a WAL record that are not body: magic, body length, sequence, CRC.
pub(super) const WAL_FRAME_OVERHEAD: usize = 4 + 8 + 8 + 4;
/// Encoded size of one point in a WAL record.
pub(super) const WAL_POINT_SIZE: usize = 32 + 8 + 8 + 1;

/// The committed extent of an append-only log: its length in bytes, the
/// number of lines in it and the CRC32 of all of its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LogState {
    pub len: u64,
    pub lines: u64,
    pub crc: u32,
}

impl LogState {
    /// The state after appending `bytes` (whole lines, each ending in '\n').
    pub fn extended(self, bytes: &[u8]) -> LogState {
        let mut h = crc32fast::Hasher::new_with_initial(self.crc);
        h.update(bytes);
        LogState {
            len: self.len + bytes.len() as u64,
            lines: self.lines + bytes.iter().filter(|&&b| b == b'\n').count() as u64,
            crc: h.finalize(),
        }
    }
}

/// The contents of the header file: the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// Bumped on every header write; snapshots compare it before and after
    /// reading to detect a concurrent checkpoint.
    pub generation: u64,
    /// The last batch whose effects are all in the table and log files.
    pub applied_seq: u64,
    /// Which `table.<n>` file holds the points.
    pub table_gen: u64,
    /// Slots in that table file.
    pub capacity: u64,
    /// Points in the table as of `applied_seq`.
    pub len: u64,
    pub trajectory: LogState,
    pub forensics: LogState,
    pub meta: StoreMeta,
    pub pseudonyms: Vec<Digest>,
}

/// Why a header could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderError {
    /// Wrong magic: this is not our file at all.
    NotAStore(String),
    /// Our file, another format version.
    Version(u32),
    /// Our file, damaged.
    Corrupt(String),
}

/// A growing little-endian encoding buffer.
pub(super) struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn digest(&mut self, d: &Digest) {
        self.0.extend_from_slice(&d.0);
    }
    pub fn opt_digest(&mut self, d: &Option<Digest>) {
        match d {
            Some(d) => {
                self.u8(1);
                self.digest(d);
            }
            None => {
                // Fixed size either way, so the meta block has one length.
                self.u8(0);
                self.digest(&Digest::ZERO);
            }
        }
    }
    pub fn log_state(&mut self, s: &LogState) {
        self.u64(s.len);
        self.u64(s.lines);
        self.u32(s.crc);
    }
    pub fn meta(&mut self, m: &StoreMeta) {
        self.u8(match m.profile {
            Profile::Quixote => 0,
            Profile::Kernel => 1,
        });
        self.opt_digest(&m.aggregate);
        self.opt_digest(&m.host_aggregate);
        self.digest(&m.base);
        self.digest(&m.measurement);
        self.u8(u8::from(m.sealed));
        self.u8(u8::from(m.enforcing));
        self.u64(m.events);
        self.u64(m.violations);
        self.u64(m.unknown_event_names);
        self.u64(m.errors);
    }
    pub fn point(&mut self, p: &StoredPoint) {
        self.digest(&p.coefficient);
        self.u64(p.count);
        self.u64(p.order);
        self.u8(u8::from(p.valid));
    }
}

/// A bounds-checked little-endian decoder.
pub(super) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A length that must fit in memory and in the remaining input at
    /// `unit` bytes per element (so a damaged length cannot make us allocate
    /// a huge vector).
    pub fn count(&mut self, unit: usize) -> Result<usize, String> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        let fits = match n.checked_mul(unit as u64) {
            Some(bytes) => bytes <= left,
            None => false,
        };
        if !fits {
            return Err(format!(
                "count {n} at byte {} exceeds the data",
                self.pos - 8
            ));
        }
        Ok(n as usize)
    }
    pub fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("bad boolean {v} at byte {}", self.pos - 1)),
        }
    }
    pub fn digest(&mut self) -> Result<Digest, String> {
        Ok(Digest(self.array()?))
    }
    pub fn opt_digest(&mut self) -> Result<Option<Digest>, String> {
        let present = self.bool()?;
        let d = self.digest()?;
        Ok(present.then_some(d))
    }
    pub fn log_state(&mut self) -> Result<LogState, String> {
        Ok(LogState {
            len: self.u64()?,
            lines: self.u64()?,
            crc: self.u32()?,
        })
    }
    pub fn meta(&mut self) -> Result<StoreMeta, String> {
        let profile = match self.u8()? {
            0 => Profile::Quixote,
            1 => Profile::Kernel,
            v => return Err(format!("unknown profile code {v}")),
        };
        Ok(StoreMeta {
            profile,
            aggregate: self.opt_digest()?,
            host_aggregate: self.opt_digest()?,
            base: self.digest()?,
            measurement: self.digest()?,
            sealed: self.bool()?,
            enforcing: self.bool()?,
            events: self.u64()?,
            violations: self.u64()?,
            unknown_event_names: self.u64()?,
            errors: self.u64()?,
        })
    }
    pub fn point(&mut self) -> Result<StoredPoint, String> {
        Ok(StoredPoint {
            coefficient: self.digest()?,
            count: self.u64()?,
            order: self.u64()?,
            valid: self.bool()?,
        })
    }
    pub fn pseudonyms(&mut self) -> Result<Vec<Digest>, String> {
        let n = self.count(32)?;
        (0..n).map(|_| self.digest()).collect()
    }
    pub fn finish(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected trailing bytes",
                self.buf.len() - self.pos
            ))
        }
    }
}

/// Encodes the header file: magic, version, total length, fields, CRC32 of
/// everything before the CRC.
pub(super) fn encode_header(h: &Header) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512 + 32 * h.pseudonyms.len());
    let mut e = Enc(&mut buf);
    e.0.extend_from_slice(HEADER_MAGIC);
    e.u32(FORMAT_VERSION);
    e.u64(0); // total length, patched below
    e.u64(h.generation);
    e.u64(h.applied_seq);
    e.u64(h.table_gen);
    e.u64(h.capacity);
    e.u64(h.len);
    e.log_state(&h.trajectory);
    e.log_state(&h.forensics);
    e.meta(&h.meta);
    e.u64(h.pseudonyms.len() as u64);
    for p in &h.pseudonyms {
        e.digest(p);
    }
    let total = (buf.len() + 4) as u64;
    buf[12..20].copy_from_slice(&total.to_le_bytes());
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Decodes and verifies a header file's bytes.
pub(super) fn decode_header(buf: &[u8]) -> Result<Header, HeaderError> {
    if buf.len() < 8 || &buf[..8] != HEADER_MAGIC {
        return Err(HeaderError::NotAStore(
            "the header has no store magic".into(),
        ));
    }
    let mut d = Dec::new(&buf[8..]);
    let corrupt = HeaderError::Corrupt;
    let version = d.u32().map_err(corrupt)?;
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    let total = d.u64().map_err(corrupt)?;
    // Magic, version, length and CRC take 24 bytes.
    if total != buf.len() as u64 || buf.len() < 24 {
        return Err(HeaderError::Corrupt(format!(
            "header is {} bytes but says {total}",
            buf.len()
        )));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(crc);
    if crc32fast::hash(body) != u32::from_le_bytes(crc_bytes) {
        return Err(HeaderError::Corrupt("header checksum mismatch".into()));
    }
    let mut d = Dec::new(&body[20..]);
    let h = (|| -> Result<Header, String> {
        let h = Header {
            generation: d.u64()?,
            applied_seq: d.u64()?,
            table_gen: d.u64()?,
            capacity: d.u64()?,
            len: d.u64()?,
            trajectory: d.log_state()?,
            forensics: d.log_state()?,
            meta: d.meta()?,
            pseudonyms: d.pseudonyms()?,
        };
        d.finish()?;
        Ok(h)
    })()
    .map_err(HeaderError::Corrupt)?;
    Ok(h)
}

/// The log bytes a batch appends, with the log's state after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LogAppend<'a> {
    pub after: LogState,
    pub bytes: &'a [u8],
}

/// One decoded WAL record: everything a batch changed, as absolute values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WalRecord<'a> {
    pub seq: u64,
    /// Number of points in the store after this batch.
    pub len_after: u64,
    pub meta: StoreMeta,
    pub trajectory: LogAppend<'a>,
    pub forensics: LogAppend<'a>,
    /// The whole pseudonym list, when this batch replaced it.
    pub pseudonyms: Option<Vec<Digest>>,
    /// Touched points; new ones in insertion order.
    pub points: Vec<StoredPoint>,
}

/// What the caller gives [`encode_record`]; borrowed from the staged batch.
pub(super) struct RecordParts<'a> {
    pub seq: u64,
    pub len_after: u64,
    pub meta: &'a StoreMeta,
    pub trajectory: (LogState, &'a [u8]),
    pub forensics: (LogState, &'a [u8]),
    pub pseudonyms: Option<&'a [Digest]>,
    pub points: &'a mut dyn Iterator<Item = StoredPoint>,
    pub point_count: usize,
}

/// Encodes one WAL record into `buf` (cleared first).
pub(super) fn encode_record(buf: &mut Vec<u8>, r: RecordParts<'_>) {
    buf.clear();
    buf.reserve(
        WAL_FRAME_OVERHEAD
            + 512
            + r.trajectory.1.len()
            + r.forensics.1.len()
            + r.point_count * WAL_POINT_SIZE
            + r.pseudonyms.map_or(0, |p| p.len() * 32),
    );
    let mut e = Enc(buf);
    e.u32(WAL_MAGIC);
    e.u64(0); // body length, patched below
    e.u64(r.seq);
    e.u64(r.len_after);
    e.meta(r.meta);
    for (state, bytes) in [r.trajectory, r.forensics] {
        e.log_state(&state);
        e.u64(bytes.len() as u64);
        e.0.extend_from_slice(bytes);
    }
    match r.pseudonyms {
        Some(p) => {
            e.u8(1);
            e.u64(p.len() as u64);
            for d in p {
                e.digest(d);
            }
        }
        None => e.u8(0),
    }
    e.u64(r.point_count as u64);
    let mut n = 0usize;
    for p in r.points {
        e.point(&p);
        n += 1;
    }
    debug_assert_eq!(n, r.point_count);
    let body_len = (buf.len() - 20) as u64;
    buf[4..12].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

fn decode_body(seq: u64, body: &[u8]) -> Result<WalRecord<'_>, String> {
    let mut d = Dec::new(body);
    let len_after = d.u64()?;
    let meta = d.meta()?;
    let log = |d: &mut Dec<'_>| -> Result<(LogState, usize), String> {
        let after = d.log_state()?;
        let n = d.count(1)?;
        Ok((after, n))
    };
    let (t_after, t_n) = log(&mut d)?;
    let t_bytes = d.take(t_n)?;
    let (f_after, f_n) = log(&mut d)?;
    let f_bytes = d.take(f_n)?;
    let pseudonyms = if d.bool()? {
        Some(d.pseudonyms()?)
    } else {
        None
    };
    let n = d.count(WAL_POINT_SIZE)?;
    let mut points = Vec::with_capacity(n);
    for _ in 0..n {
        points.push(d.point()?);
    }
    d.finish()?;
    Ok(WalRecord {
        seq,
        len_after,
        meta,
        trajectory: LogAppend {
            after: t_after,
            bytes: t_bytes,
        },
        forensics: LogAppend {
            after: f_after,
            bytes: f_bytes,
        },
        pseudonyms,
        points,
    })
}

enum Frame<'a> {
    /// A record whose CRC checks.
    Good {
        seq: u64,
        body: &'a [u8],
        next: usize,
    },
    /// Runs past the end of the data: the tail of an interrupted write.
    Incomplete,
    /// Wrong magic or checksum; `next` is where the following record would
    /// start if the length field is to be believed.
    Bad { next: Option<usize> },
}

fn frame_at(buf: &[u8], pos: usize) -> Frame<'_> {
    let rest = &buf[pos..];
    if rest.len() < WAL_FRAME_OVERHEAD {
        return Frame::Incomplete;
    }
    let mut d = Dec::new(rest);
    let (Ok(magic), Ok(body_len), Ok(seq)) = (d.u32(), d.u64(), d.u64()) else {
        return Frame::Incomplete;
    };
    if magic != WAL_MAGIC {
        return Frame::Bad { next: None };
    }
    // body_len counts the body proper, after the sequence number.
    let Some(frame_len) = usize::try_from(body_len)
        .ok()
        .and_then(|b| b.checked_add(WAL_FRAME_OVERHEAD))
    else {
        return Frame::Bad { next: None };
    };
    if frame_len > rest.len() {
        return Frame::Incomplete;
    }
    let (data, crc) = rest[..frame_len].split_at(frame_len - 4);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(crc);
    if crc32fast::hash(data) != u32::from_le_bytes(crc_bytes) {
        return Frame::Bad {
            next: Some(pos + frame_len),
        };
    }
    Frame::Good {
        seq,
        body: &data[20..],
        next: pos + frame_len,
    }
}

/// The usable prefix of a WAL.
pub(super) struct WalScan<'a> {
    /// Records after the checkpoint, in sequence order, contiguous.
    pub records: Vec<WalRecord<'a>>,
    /// Offset just past the last intact record (stale or live): where the
    /// next record goes once the torn tail, if any, is cut off.
    pub end: usize,
}

/// Scans WAL bytes for the records that follow the checkpoint `applied`.
///
/// * Records with `seq <= applied` at the start are stale leftovers of a
///   checkpoint whose WAL truncation did not happen; they are skipped.
/// * Live records must be numbered `applied + 1, applied + 2, …`; a gap
///   means a durable batch is missing, which is corruption.
/// * The first incomplete or damaged record ends the log (a torn tail left
///   by a crash during an unacknowledged commit), unless an intact live
///   record follows it: that pattern cannot come from a crash, so it is
///   reported as corruption instead of silently dropping durable batches.
pub(super) fn scan_wal(buf: &[u8], applied: u64) -> Result<WalScan<'_>, String> {
    let mut records: Vec<WalRecord<'_>> = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let last = records.last().map_or(applied, |r| r.seq);
        match frame_at(buf, pos) {
            Frame::Good { seq, body, next } => {
                if seq == last + 1 {
                    let rec = decode_body(seq, body)
                        .map_err(|e| format!("record {seq} at offset {pos}: {e}"))?;
                    records.push(rec);
                } else if records.is_empty() && seq <= applied {
                    // Stale: already in the checkpoint.
                } else if seq <= last {
                    // Stale bytes behind the live records: end of the log.
                    break;
                } else {
                    return Err(format!(
                        "record at offset {pos} has sequence {seq}, expected {}: a batch is missing",
                        last + 1
                    ));
                }
                pos = next;
            }
            Frame::Incomplete => break,
            Frame::Bad { next } => {
                if let Some(next) = next.filter(|&n| n < buf.len()) {
                    if let Frame::Good { seq, .. } = frame_at(buf, next) {
                        if seq > last {
                            return Err(format!(
                                "record at offset {pos} is damaged but a later record (batch {seq}) is intact"
                            ));
                        }
                    }
                }
                break;
            }
        }
    }
    Ok(WalScan { records, end: pos })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> StoreMeta {
        StoreMeta {
            profile: Profile::Kernel,
            aggregate: Some(Digest([7; 32])),
            host_aggregate: None,
            base: Digest([1; 32]),
            measurement: Digest([2; 32]),
            sealed: true,
            enforcing: false,
            events: 5,
            violations: 6,
            unknown_event_names: 7,
            errors: 8,
        }
    }

    fn h2() -> Header {
        Header {
            generation: 1,
            applied_seq: 0,
            table_gen: 1,
            capacity: 1024,
            len: 0,
            trajectory: LogState::default(),
            forensics: LogState::default(),
            meta: meta(),
            pseudonyms: vec![Digest([3; 32])],
        }
    }

    #[test]
    fn store_header_round_trips_and_detects_damage() {
        let h = Header {
            generation: 3,
            applied_seq: 9,
            table_gen: 2,
            capacity: 1024,
            len: 10,
            trajectory: LogState {
                len: 5,
                lines: 1,
                crc: 77,
            },
            forensics: LogState::default(),
            meta: meta(),
            pseudonyms: vec![Digest([9; 32])],
        };
        let mut buf = encode_header(&h);
        assert_eq!(decode_header(&buf), Ok(h));
        buf[30] ^= 1;
        assert!(matches!(decode_header(&buf), Err(HeaderError::Corrupt(_))));
        assert!(matches!(
            decode_header(b"hello"),
            Err(HeaderError::NotAStore(_))
        ));
        // Every truncation is an error, not a panic.
        let good = encode_header(&h2());
        for n in 0..good.len() {
            assert!(decode_header(&good[..n]).is_err());
        }
        let mut short = good[..20].to_vec();
        short[12..20].copy_from_slice(&20u64.to_le_bytes());
        assert!(matches!(
            decode_header(&short),
            Err(HeaderError::Corrupt(_))
        ));
    }

    fn record(seq: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let pts = [StoredPoint {
            coefficient: Digest([seq as u8; 32]),
            count: seq,
            valid: true,
            order: 0,
        }];
        encode_record(
            &mut buf,
            RecordParts {
                seq,
                len_after: 1,
                meta: &meta(),
                trajectory: (LogState::default().extended(b"a\n"), b"a\n"),
                forensics: (LogState::default(), b""),
                pseudonyms: None,
                points: &mut pts.iter().copied(),
                point_count: 1,
            },
        );
        buf
    }

    #[test]
    fn store_wal_scan_rules() {
        let mut wal = [record(1), record(2), record(3)].concat();
        let s = scan_wal(&wal, 0).unwrap();
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.end, wal.len());
        assert_eq!(scan_wal(&wal, 2).unwrap().records.len(), 1);
        // Torn tail.
        let full = wal.len();
        wal.truncate(full - 3);
        let s = scan_wal(&wal, 0).unwrap();
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.end, 2 * record(1).len());
        // Damaged middle record with an intact successor.
        let mut wal = [record(1), record(2), record(3)].concat();
        wal[record(1).len() + 30] ^= 0xff;
        assert!(scan_wal(&wal, 0).is_err());
        // Gap.
        let wal = [record(1), record(3)].concat();
        assert!(scan_wal(&wal, 0).is_err());
    }
}
