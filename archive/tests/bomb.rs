//! A zstd bomb planted as a segment: readers and writers stop at the record
//! limit with bounded memory, and report it as damage (issue 14 row 6).
//!
//! Alone in its test binary: the peak resident size (`VmHWM`) of the process
//! is the measurement, so no other test may run beside it.

use std::io::Write;
use std::path::Path;

use tsem_archive::index::{segment_header, segment_name};
use tsem_archive::{Archive, ArchiveError, ArchiveSource, ArchiveWriter, WriterOptions};
use tsem_ingest::{Fetch, RecordSource};

/// Peak resident memory of this process so far, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// `header` and then a zstd frame of `total` bytes of `unit` repeated,
/// compressed as it is generated (the bomb is never held whole).
fn bomb(header: &[u8], unit: &[u8], total: usize) -> Vec<u8> {
    let mut out = header.to_vec();
    let mut enc = zstd::stream::write::Encoder::new(&mut out, 1).unwrap();
    let chunk: Vec<u8> = unit.iter().copied().cycle().take(1 << 20).collect();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap();
    out
}

/// An archive with one sealed record, and the chain head after it.
fn archive_with_one_record(dir: &Path) -> [u8; 32] {
    let mut w = ArchiveWriter::open(dir, WriterOptions::default()).unwrap();
    w.append(br#"{"event": {"type": "capable"}}"#).unwrap();
    w.finish().unwrap();
    let a = Archive::open(dir).unwrap();
    tsem_archive::index::digest_from_hex(a.head().unwrap()).unwrap()
}

#[test]
fn a_zstd_bomb_is_reported_as_damage_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let head = archive_with_one_record(&dir);
    // One endless line (1 GiB, no `\n`), with a header that continues the
    // chain: only the decoding can tell.
    let planted = bomb(&segment_header(&head, 2), b"x", 1 << 30);
    let open = dir.join(segment_name(2));
    std::fs::write(&open, &planted).unwrap();
    let before = peak_rss();

    let report = Archive::open(&dir).unwrap().verify(None).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.contains("longer than the limit")),
        "{report:?}"
    );
    let mut source = ArchiveSource::open(&dir, 1 << 20).unwrap();
    assert!(matches!(source.fetch(true).unwrap(), Fetch::Record { .. }));
    let err = source.fetch(true).unwrap_err();
    assert!(err.to_string().contains("longer than the limit"), "{err}");
    match ArchiveWriter::open(&dir, WriterOptions::default()) {
        Err(ArchiveError::Damaged { what, .. }) => {
            assert!(what.contains("longer than the limit"), "{what}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("the bomb was sealed"),
    }
    assert_eq!(Archive::open(&dir).unwrap().entries().len(), 1);

    // Short lines without end: stopped at a bound relative to the file size.
    let planted_lines = bomb(&segment_header(&head, 2), b"{}\n", 1 << 30);
    std::fs::write(&open, &planted_lines).unwrap();
    let report = Archive::open(&dir).unwrap().verify(None).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.contains("decodes to more than")),
        "{report:?}"
    );

    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "bomb: {} bytes in (1 GiB decoded); {} bytes of lines; peak RSS grew by {} KiB",
        planted.len(),
        planted_lines.len(),
        grown / 1024
    );
    // The line limit (1 MiB), the decoder's window and buffers: far below
    // the gigabyte a whole decode would take.
    assert!(grown < 48 << 20, "peak RSS grew by {} MiB", grown >> 20);
}
