//! Records planted in an archive (issue 14 row 6): `verify` reports every
//! record the chain does not vouch for, `--strict` fails on them, a planted
//! open segment is damage, and no writer seals it into the chain.

mod common;

use std::path::Path;

use common::*;
use tsem_archive::index::segment_name;
use tsem_archive::{ArchiveWriter, WriterOptions};

/// Archives the conformance corpus (about 35 segments of 64 KiB).
fn archive_corpus(dir: &Path) {
    ok(&[
        "archive",
        "write",
        dir.to_str().unwrap(),
        conformance("events.jsonl").to_str().unwrap(),
        "--segment-size",
        "64K",
    ]);
}

/// The chain head `archive ls` prints.
fn head(dir: &Path) -> String {
    let out = ok(&["archive", "ls", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .last()
        .and_then(|l| l.rsplit("chain head ").next())
        .unwrap()
        .trim()
        .to_owned()
}

fn verify(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["archive", "verify", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Appends `n` records as an open segment, as a writer that stopped
/// uncleanly leaves them (synced, never sealed).
fn leave_open_segment(dir: &Path, n: u64) {
    let mut w = ArchiveWriter::open(dir, WriterOptions::default()).unwrap();
    for i in 0..n {
        w.append(format!(r#"{{"event": {{"type": "capable", "ts": "{i}"}}}}"#).as_bytes())
            .unwrap();
    }
    w.sync().unwrap();
    drop(w);
}

#[test]
fn verify_lists_records_after_the_head_and_strict_fails_on_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    archive_corpus(&dir);
    let h = head(&dir);
    assert_eq!(verify(&dir, &["--head", &h, "--strict"]).0, Some(0));
    leave_open_segment(&dir, 5);
    // Reported (seq 3001..=3005: the corpus has 3000 records), but not damage.
    let (code, text) = verify(&dir, &["--head", &h]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("unsealed:")
            && l.contains(&segment_name(3001))
            && l.contains("5 records (seq 3001..=3005)")),
        "{text}"
    );
    let (code, text) = verify(&dir, &["--head", &h, "--strict"]);
    assert_eq!(code, Some(1), "{text}");
    // Sealed by the next writer: marked recovered, still unsealed for --strict,
    // and after the old head.
    ok(&["archive", "write", dir.to_str().unwrap(), "/dev/null"]);
    let (code, text) = verify(&dir, &["--strict"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("later writer"), "{text}");
    let (code, text) = verify(&dir, &["--head", &h]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("5 records in 1 segments were sealed after it"),
        "{text}"
    );
}

#[test]
fn verify_reports_a_planted_open_segment_as_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    archive_corpus(&dir);
    // A segment of this archive copied to where the open one goes.
    let first = dir.join(segment_name(1));
    std::fs::copy(&first, dir.join(segment_name(3001))).unwrap();
    let (code, text) = verify(&dir, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("damaged:")
            && l.contains(&segment_name(3001))
            && l.contains("does not continue this archive")),
        "{text}"
    );
}

#[test]
fn a_writer_refuses_to_seal_a_planted_open_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    archive_corpus(&dir);
    let index = std::fs::read(dir.join("index.jsonl")).unwrap();
    std::fs::copy(dir.join(segment_name(1)), dir.join(segment_name(3001))).unwrap();
    let out = run_with_stdin(
        &["archive", "write", dir.to_str().unwrap(), "-"],
        b"{\"event\": {}}\n",
    );
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not sealed into the chain"), "{err}");
    assert_eq!(std::fs::read(dir.join("index.jsonl")).unwrap(), index);
}
