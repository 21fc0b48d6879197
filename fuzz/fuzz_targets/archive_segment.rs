//! The archive reader on arbitrary bytes: a segment's zstd stream decoded line
//! by line, each line's header scanned, and the bytes read as an index file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsem_archive::reader::SegmentLines;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut lines) = SegmentLines::new(data) {
        let mut n = 0;
        while let Some(line) = lines.next_line() {
            let _ = tsem_archive::record_info(line);
            n += 1;
            if n > 10_000 {
                break;
            }
        }
        let _ = lines.torn();
    }
    let _ = tsem_archive::record_info(data);
    let _ = tsem_archive::reader::content_stats(data);
    if let Ok(dir) = tempfile::tempdir() {
        if std::fs::write(dir.path().join("index.jsonl"), data).is_ok()
            && std::fs::write(dir.path().join("FORMAT"), "tsem-archive 1\n").is_ok()
        {
            if let Ok(archive) = tsem_archive::Archive::open(dir.path()) {
                let _ = archive.verify(None);
            }
        }
    }
});
