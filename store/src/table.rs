//! The points table: an open-addressing (linear probing) hash table in a
//! memory-mapped file `table.<generation>`.
//!
//! Layout: a 4096-byte table header (magic, version, slot size, capacity,
//! generation, SipHash key, CRC32), then `capacity` slots of 64 bytes:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4  | flags: bit 0 occupied, bit 1 valid; 0 = empty |
//! | 4  | 4  | CRC32 of flags ‖ bytes 8..56 |
//! | 8  | 8  | insertion order |
//! | 16 | 8  | count |
//! | 24 | 32 | coefficient |
//! | 56 | 8  | zero |
//!
//! 64-byte slots never straddle a page or a 512-byte sector, so a power loss
//! cannot tear one between two device writes. The flags word is written
//! last, after a fence: a writer killed half-way through an insert leaves a
//! slot that still reads as empty, and one killed half-way through an update
//! leaves the right coefficient with a bad CRC. Either is rewritten by WAL
//! replay, which always covers every slot touched since the checkpoint.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

use memmap2::MmapMut;

use super::{io_err, StoreError, StoredPoint};
use tsem_model::Digest;

/// Bytes before the first slot.
pub(super) const TABLE_HEADER_SIZE: u64 = 4096;
/// Bytes per slot.
pub(super) const SLOT_SIZE: u64 = 64;
const SLOT: usize = SLOT_SIZE as usize;
const TABLE_MAGIC: &[u8; 8] = b"TSEMTABL";
const TABLE_VERSION: u32 = 1;
const FLAG_OCCUPIED: u32 = 1;
const FLAG_VALID: u32 = 2;
/// The largest capacity accepted from disk (2^36 slots = 4 TiB of table):
/// bounds the arithmetic on a damaged capacity field.
pub(super) const MAX_CAPACITY: u64 = 1 << 36;

/// The file name of table generation `gen`.
pub(super) fn table_file_name(gen: u64) -> String {
    format!("table.{gen}")
}

/// The generation in a `table.<n>` file name.
pub(super) fn parse_table_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("table.")?.parse().ok()
}

/// The fixed part of a table file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TableHeader {
    pub capacity: u64,
    pub gen: u64,
    /// SipHash key, random per table file: coefficients are attacker
    /// influenced (they hash event data), so an unkeyed slot function would
    /// let crafted events pile into one probe chain and make lookups O(n).
    pub key: [u64; 2],
}

impl TableHeader {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(TABLE_HEADER_SIZE as usize);
        b.extend_from_slice(TABLE_MAGIC);
        b.extend_from_slice(&TABLE_VERSION.to_le_bytes());
        b.extend_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
        b.extend_from_slice(&self.capacity.to_le_bytes());
        b.extend_from_slice(&self.gen.to_le_bytes());
        b.extend_from_slice(&self.key[0].to_le_bytes());
        b.extend_from_slice(&self.key[1].to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.resize(TABLE_HEADER_SIZE as usize, 0);
        b
    }

    /// Decodes and checks the first [`TABLE_HEADER_SIZE`] bytes of a table
    /// file against what the store header expects.
    pub(super) fn decode(b: &[u8], gen: u64, capacity: u64) -> Result<TableHeader, String> {
        let mut d = super::format::Dec::new(b);
        let magic = d.take(8)?;
        if magic != TABLE_MAGIC {
            return Err("no table magic".into());
        }
        let version = d.u32()?;
        let slot = d.u32()?;
        let h = TableHeader {
            capacity: d.u64()?,
            gen: d.u64()?,
            key: [d.u64()?, d.u64()?],
        };
        let crc = d.u32()?;
        if crc32fast::hash(&b[..48]) != crc {
            return Err("table header checksum mismatch".into());
        }
        if version != TABLE_VERSION || u64::from(slot) != SLOT_SIZE {
            return Err(format!(
                "table version {version} / slot size {slot} not supported"
            ));
        }
        if h.gen != gen {
            return Err(format!(
                "table generation {} but the store header says {gen}",
                h.gen
            ));
        }
        if h.capacity != capacity || !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(format!(
                "table capacity {} but the store header says {capacity}",
                h.capacity
            ));
        }
        Ok(h)
    }
}

/// The bytes of a table file with `capacity` slots.
pub(super) fn table_file_len(capacity: u64) -> u64 {
    TABLE_HEADER_SIZE + capacity * SLOT_SIZE
}

/// A decoded slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Empty,
    /// `intact` is false when the CRC or the flags are wrong: a write that
    /// was interrupted (repaired by WAL replay) or damage.
    Occupied {
        point: StoredPoint,
        intact: bool,
    },
}

fn slot_crc(image: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&image[0..4]);
    h.update(&image[8..56]);
    h.finalize()
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes one 64-byte slot image.
pub(super) fn decode_slot(s: &[u8]) -> Slot {
    let flags = le_u32(&s[0..4]);
    if flags == 0 {
        return Slot::Empty;
    }
    let mut coefficient = Digest::ZERO;
    coefficient.0.copy_from_slice(&s[24..56]);
    let point = StoredPoint {
        coefficient,
        count: le_u64(&s[16..24]),
        valid: flags & FLAG_VALID != 0,
        order: le_u64(&s[8..16]),
    };
    let intact = flags & !(FLAG_OCCUPIED | FLAG_VALID) == 0
        && flags & FLAG_OCCUPIED != 0
        && slot_crc(s) == le_u32(&s[4..8])
        && s[56..64] == [0; 8];
    Slot::Occupied { point, intact }
}

fn encode_slot(p: &StoredPoint) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    let flags = FLAG_OCCUPIED | if p.valid { FLAG_VALID } else { 0 };
    s[0..4].copy_from_slice(&flags.to_le_bytes());
    s[8..16].copy_from_slice(&p.order.to_le_bytes());
    s[16..24].copy_from_slice(&p.count.to_le_bytes());
    s[24..56].copy_from_slice(&p.coefficient.0);
    let crc = slot_crc(&s);
    s[4..8].copy_from_slice(&crc.to_le_bytes());
    s
}

/// SipHash-1-3 of a 32-byte value (the function std's `HashMap` uses,
/// written out here because the slot of a coefficient on disk must not
/// depend on a std implementation detail that may change between compiler
/// versions).
fn siphash13(key: [u64; 2], data: &[u8; 32]) -> u64 {
    siphash::<1, 3>(key, data)
}

/// SipHash-c-d of a 32-byte message.
fn siphash<const C: usize, const D: usize>(key: [u64; 2], data: &[u8; 32]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13);
        v[1] ^= v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16);
        v[3] ^= v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21);
        v[3] ^= v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17);
        v[1] ^= v[2];
        v[2] = v[2].rotate_left(32);
    }
    // 32 bytes: four whole words, then the final block holding only the
    // length byte.
    let last: u64 = 32 << 56;
    for m in data.chunks_exact(8).map(le_u64).chain([last]) {
        v[3] ^= m;
        for _ in 0..C {
            round(&mut v);
        }
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Where a coefficient is or would go.
enum Probe {
    Found(usize),
    Vacant(usize),
    Full,
}

/// The writer's mapping of one table file.
pub(super) struct Table {
    pub path: PathBuf,
    pub header: TableHeader,
    file: File,
    map: MmapMut,
    mask: u64,
}

impl Table {
    /// Creates `table.<gen>` with `capacity` empty slots and maps it. The
    /// space is allocated up front: writing to a hole of a sparse mapping
    /// on a full disk kills the process with SIGBUS, while an allocation
    /// failure here is an ordinary error.
    pub fn create(dir: &Path, gen: u64, capacity: u64) -> Result<Table, StoreError> {
        let path = dir.join(table_file_name(gen));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = table_file_len(capacity);
        let built = (|| {
            let ilen = i64::try_from(len).map_err(|_| std::io::Error::other("table too large"))?;
            match nix::fcntl::posix_fallocate(&file, 0, ilen) {
                Ok(()) => {}
                // Filesystems without fallocate: fall back to a sparse file.
                Err(nix::errno::Errno::EOPNOTSUPP) | Err(nix::errno::Errno::EINVAL) => {
                    file.set_len(len)?
                }
                Err(e) => return Err(std::io::Error::from(e)),
            }
            let header = TableHeader {
                capacity,
                gen,
                key: rand::random(),
            };
            file.write_all_at(&header.encode(), 0)?;
            Ok(header)
        })();
        let header = match built {
            Ok(h) => h,
            Err(e) => {
                // Leave no half-made file behind (best effort: open() would
                // remove it anyway, as it is not the table in the header).
                let _ = std::fs::remove_file(&path);
                return Err(io_err(&path)(e));
            }
        };
        Self::map(path, file, header)
    }

    /// Opens and maps `table.<gen>`, checking its header and size.
    pub fn open(dir: &Path, gen: u64, capacity: u64) -> Result<Table, StoreError> {
        let path = dir.join(table_file_name(gen));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let size = file.metadata().map_err(io_err(&path))?.len();
        let mut head = vec![0u8; TABLE_HEADER_SIZE as usize];
        if size < TABLE_HEADER_SIZE {
            return Err(corrupt(format!("table file is only {size} bytes")));
        }
        file.read_exact_at(&mut head, 0).map_err(io_err(&path))?;
        let header = TableHeader::decode(&head, gen, capacity).map_err(corrupt)?;
        if size != table_file_len(capacity) {
            return Err(corrupt(format!(
                "table file is {size} bytes, expected {} for {capacity} slots",
                table_file_len(capacity)
            )));
        }
        Self::map(path, file, header)
    }

    fn map(path: PathBuf, file: File, header: TableHeader) -> Result<Table, StoreError> {
        // SAFETY: memmap2 requires that no one else changes the file while
        // it is mapped. The store's exclusive flock keeps other writers out,
        // readers only read(2) it, and the file is never truncated while
        // mapped (growth goes to a new file).
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(&path))?;
        if map.len() as u64 != table_file_len(header.capacity) {
            return Err(StoreError::Corrupt {
                path,
                reason: "table mapping has the wrong size".into(),
            });
        }
        Ok(Table {
            path,
            mask: header.capacity - 1,
            header,
            file,
            map,
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.header.capacity
    }

    fn slot(&self, i: usize) -> &[u8] {
        let off = TABLE_HEADER_SIZE as usize + i * SLOT;
        &self.map[off..off + SLOT]
    }

    fn probe(&self, coefficient: &Digest) -> Probe {
        let mut i = siphash13(self.header.key, &coefficient.0) & self.mask;
        for _ in 0..self.header.capacity {
            let s = self.slot(i as usize);
            if s[0..4] == [0; 4] {
                return Probe::Vacant(i as usize);
            }
            if s[24..56] == coefficient.0 {
                return Probe::Found(i as usize);
            }
            i = (i + 1) & self.mask;
        }
        Probe::Full
    }

    /// The point stored for `coefficient`.
    pub fn get(&self, coefficient: &Digest) -> Option<StoredPoint> {
        match self.probe(coefficient) {
            Probe::Found(i) => match decode_slot(self.slot(i)) {
                Slot::Occupied { point, .. } => Some(point),
                Slot::Empty => None,
            },
            _ => None,
        }
    }

    /// Writes a slot so that a crash at any instruction leaves it either in
    /// its old state, empty, or occupied by the same coefficient with a bad
    /// CRC (see the module comment).
    fn write(&mut self, i: usize, p: &StoredPoint) {
        let image = encode_slot(p);
        let off = TABLE_HEADER_SIZE as usize + i * SLOT;
        let s = &mut self.map[off..off + SLOT];
        s[4..].copy_from_slice(&image[4..]);
        // Keep the compiler and the CPU from making the flags visible first.
        fence(Ordering::Release);
        s[0..4].copy_from_slice(&image[0..4]);
    }

    /// Stores a point with its absolute values.
    ///
    /// `len` is the number of points (orders `0..len` are taken) and grows
    /// as new points arrive; a new point's order must be at least `floor`
    /// and at most `len`. A live commit passes `floor == len`, so a new
    /// point must take exactly the next order. WAL replay passes the
    /// checkpoint's point count: there a point of the batch may already be
    /// in the table (its slot was written back before the crash), so `len`
    /// follows the highest order seen, and only points the checkpoint
    /// already held are sure to be present.
    pub fn put(&mut self, p: &StoredPoint, len: &mut u64, floor: u64) -> Result<(), String> {
        // Orders are handed out in sequence and replayed in sequence, so
        // every order below this one is already counted.
        if p.order > *len {
            return Err(format!(
                "point {} has order {} but the table holds {} points",
                p.coefficient, p.order, len
            ));
        }
        let i = match self.probe(&p.coefficient) {
            Probe::Found(i) => {
                if let Slot::Occupied {
                    point: old,
                    intact: true,
                } = decode_slot(self.slot(i))
                {
                    if old.order != p.order {
                        return Err(format!(
                            "point {} has order {} in the table but {} in the batch",
                            p.coefficient, old.order, p.order
                        ));
                    }
                }
                i
            }
            Probe::Vacant(i) => {
                if p.order < floor {
                    return Err(format!(
                        "point {} with order {} is missing from the table (it holds {} points)",
                        p.coefficient, p.order, len
                    ));
                }
                i
            }
            Probe::Full => return Err("the table is full".into()),
        };
        self.write(i, p);
        *len = (*len).max(p.order + 1);
        Ok(())
    }

    /// Inserts a point moved from an older table during growth: its order
    /// is already assigned, and points arrive in slot order, not insertion
    /// order, so [`put`](Self::put)'s check does not apply.
    pub fn insert_moved(&mut self, p: &StoredPoint) -> Result<(), String> {
        match self.probe(&p.coefficient) {
            Probe::Vacant(i) => {
                self.write(i, p);
                Ok(())
            }
            Probe::Found(_) => Err(format!("point {} appears twice", p.coefficient)),
            Probe::Full => Err("the new table is full".into()),
        }
    }

    /// Calls `f` on every non-empty slot, with its index.
    pub fn for_each(&self, mut f: impl FnMut(usize, StoredPoint, bool)) {
        for i in 0..self.header.capacity as usize {
            if let Slot::Occupied { point, intact } = decode_slot(self.slot(i)) {
                f(i, point, intact);
            }
        }
    }

    /// msync: makes every slot written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.map.flush().map_err(io_err(&self.path))
    }

    /// fsync of the file itself, for a freshly created table whose size and
    /// allocation must be durable before the header names it.
    pub fn sync_file(&self) -> Result<(), StoreError> {
        self.file.sync_all().map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)] // std's SipHasher (2-4) serves as the reference.
    fn store_siphash_matches_std_reference() {
        use std::hash::Hasher;
        let mut data = [0u8; 32];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        let mut h = std::hash::SipHasher::new_with_keys(key[0], key[1]);
        h.write(&data);
        assert_eq!(siphash::<2, 4>(key, &data), h.finish());
        assert_ne!(
            siphash13(key, &data),
            siphash13([key[0] ^ 1, key[1]], &data)
        );
    }

    #[test]
    fn store_slot_round_trip_and_damage() {
        let p = StoredPoint {
            coefficient: Digest([5; 32]),
            count: 42,
            valid: true,
            order: 7,
        };
        let mut s = encode_slot(&p);
        assert_eq!(
            decode_slot(&s),
            Slot::Occupied {
                point: p,
                intact: true
            }
        );
        s[17] ^= 1;
        assert!(matches!(
            decode_slot(&s),
            Slot::Occupied { intact: false, .. }
        ));
        assert_eq!(decode_slot(&[0u8; 64]), Slot::Empty);
    }
}
