//! The hostile-input corpus of tests/data/hostile: every case has its
//! documented outcome (tests/data/hostile/README.md), never a panic or a hang.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `coefficients --on-error skip` with a time limit; returns (stdout lines, stderr, exit code).
fn coefficients(file: &std::path::Path) -> (Vec<String>, String, Option<i32>) {
    let mut child = bin()
        .args(["coefficients", "--on-error", "skip", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} hangs",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    (
        stdout_lines(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

const BASH: &str = "be625ed6bb24968652a7e61c9966b3588879dd9d69f3b3d728fefde57c60331b";
const CAPABLE: &str = "b8ab1634ba11dac1abda72216a31151d2fd531796856c2857b662f3d5127d15d";

fn case(name: &str) -> (Vec<String>, String, Option<i32>) {
    coefficients(&data(&format!("hostile/{name}")))
}

#[test]
fn invalid_utf8_is_rejected_with_its_offset() {
    let (out, err, code) = case("invalid-utf8.jsonl");
    assert_eq!(out, vec![BASH, "-", CAPABLE]);
    assert!(
        err.contains("invalid-utf8.jsonl:2: invalid JSON: invalid UTF-8 at byte"),
        "{err}"
    );
    assert_eq!(code, Some(1));
}

#[test]
fn nul_bytes_raw_are_rejected_and_escaped_follow_quixote() {
    let (out, err, _) = case("nul-bytes.jsonl");
    assert_eq!(out[0], "-");
    assert!(
        err.contains(":1: invalid JSON: raw control character 0x00"),
        "{err}"
    );
    assert_eq!(out[1].len(), 64);
    assert_ne!(out[1], BASH);
}

#[test]
fn duplicate_keys_take_the_first_occurrence() {
    let (out, _, code) = case("duplicate-keys.jsonl");
    assert_eq!(out, vec![BASH, BASH]);
    assert_eq!(code, Some(0));
}

#[test]
fn numbers_out_of_range_name_the_field() {
    let (out, err, _) = case("numbers-out-of-range.jsonl");
    assert_eq!(out, vec!["-"; 5]);
    for needle in [
        ":1: file_open: file.flags: \"4294967296\" is out of range for a 32-bit field",
        ":2: file_open: inode.mode: \"0200000\" is out of range for a 16-bit field",
        ":3: file_open: COE.capeff: \"0x1ffffffffffffffff\": number out of the 64-bit range",
        ":4: file_open: COE.uid: \"-1\" is out of range",
        ":5: file_open: file.flags: \"99999999999999999999999\": number out of the 64-bit range",
    ] {
        assert!(err.contains(needle), "missing {needle} in {err}");
    }
}

#[test]
fn wrong_digest_lengths_are_rejected() {
    let (out, err, _) = case("wrong-digest-lengths.jsonl");
    assert_eq!(out, vec!["-"; 3]);
    assert!(
        err.contains(":1: file_open: file.digest: expected 64 hex characters, found 62"),
        "{err}"
    );
    assert!(
        err.contains(":2: file_open: inode.s_uuid: expected 32 hex characters, found 30"),
        "{err}"
    );
    assert!(
        err.contains(":3: file_open: file.digest: invalid hex character"),
        "{err}"
    );
}

#[test]
fn missing_coe_event_and_task_id_are_rejected() {
    let (out, err, _) = case("missing-coe.jsonl");
    assert_eq!(out, vec!["-"; 3]);
    assert!(
        err.contains(":1: missing COE{}")
            && err.contains(":2: missing event{}")
            && err.contains(":3: missing event.task_id"),
        "{err}"
    );
}

#[test]
fn mixed_export_types_map_events_and_report_the_rest() {
    let (out, err, _) = case("mixed-export-types.jsonl");
    // The aggregate record (line 1) has no coefficient and is no error:
    // nothing is printed for it; the log record and the unknown type are.
    assert_eq!(out, vec![BASH, BASH, "-", BASH, "-", BASH]);
    assert!(
        err.contains(":6: unknown export type \"surprise\""),
        "{err}"
    );
    // learn applies the aggregate, models the events and counts the unknown type as an error.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let o = run(&[
        "learn",
        "--on-error",
        "skip",
        "--summary",
        "json",
        "-o",
        model.to_str().unwrap(),
        data("hostile/mixed-export-types.jsonl").to_str().unwrap(),
    ]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["events"], 4);
    assert_eq!(s["points"], 1);
    assert_eq!(s["errors"], 1);
    assert_eq!(s["stats"]["by_export_type"]["log"], 2);
}

#[test]
fn crlf_line_ends_are_ignored() {
    let (out, _, code) = case("crlf.jsonl");
    assert_eq!(out, vec![BASH, CAPABLE]);
    assert_eq!(code, Some(0));
}

#[test]
fn a_truncated_last_line_is_reported() {
    let (out, err, _) = case("truncated-last-line.jsonl");
    assert_eq!(out, vec![BASH, "-"]);
    assert!(err.contains(":2: invalid JSON: truncated record"), "{err}");
}

#[test]
fn unknown_event_names_map_generically_and_are_counted() {
    let (out, err, code) = case("unknown-event-names.jsonl");
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|c| c.len() == 64));
    assert_eq!(out[2], CAPABLE);
    assert!(
        err.contains("2 event(s) with names outside the TSEM table"),
        "{err}"
    );
    assert_eq!(code, Some(0));
}

#[test]
fn deep_nesting_is_refused_and_the_next_line_maps() {
    let (out, err, _) = case("deep-nesting.jsonl");
    assert_eq!(out, vec!["-", CAPABLE]);
    assert!(err.contains("DepthLimitExceeded"), "{err}");
}

#[test]
fn one_mib_lines_are_refused_without_buffering_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    let cap = std::fs::read_to_string(conformance("document-events.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    writeln!(
        f,
        "{}",
        cap.replace("\"quixote\"", &format!("\"{}\"", "q".repeat(1 << 20)))
    )
    .unwrap();
    writeln!(f, "{cap}").unwrap();
    drop(f);
    let (out, err, _) = coefficients(&file);
    assert_eq!(out, vec!["-", CAPABLE]);
    assert!(
        err.contains(":1: record of 1049") && err.contains("exceeds the limit"),
        "{err}"
    );
}

#[test]
fn an_endless_line_on_stdin_uses_bounded_memory() {
    // 64 MiB without a newline through a pipe: skipped as oversized, not buffered.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsem-stream"))
        .args(["coefficients", "--on-error", "skip"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(stdout_lines(&out), vec!["-"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds the limit"));
}
