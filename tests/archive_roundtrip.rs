//! `archive write/ls/verify/cat` and `run --archive` end to end: the
//! conformance corpus goes in and comes back byte for byte; damage is found.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn corpus() -> PathBuf {
    conformance("events.jsonl")
}

/// Archives the corpus with 64 KiB segments (about 35 of them).
fn archive_corpus(dir: &Path) {
    ok(&[
        "archive",
        "write",
        dir.to_str().unwrap(),
        corpus().to_str().unwrap(),
        "--segment-size",
        "64K",
    ]);
}

fn index(dir: &Path) -> Vec<Value> {
    let out = ok(&["archive", "ls", "--json", dir.to_str().unwrap()]);
    stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    index(dir)
        .iter()
        .map(|e| dir.join(e["segment"].as_str().unwrap()))
        .collect()
}

fn verify(dir: &Path) -> std::process::Output {
    run(&["archive", "verify", dir.to_str().unwrap()])
}

#[test]
fn archive_cat_reproduces_the_corpus_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    archive_corpus(&dir);
    let entries = index(&dir);
    assert!(entries.len() > 20, "{} segments", entries.len());
    // Sequence numbers run without a gap; counts add up.
    let mut next = 1;
    for e in &entries {
        assert_eq!(e["first_seq"], next);
        next = e["last_seq"].as_u64().unwrap() + 1;
        let types: u64 = e["types"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(types, e["records"].as_u64().unwrap());
    }
    assert_eq!(next, 3001);
    let out = ok(&["archive", "cat", dir.to_str().unwrap()]);
    assert!(
        out.stdout == std::fs::read(corpus()).unwrap(),
        "cat differs from the input"
    );
    let v = verify(&dir);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // Private: the directory 0700, every file 0600.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for f in std::fs::read_dir(&dir).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
}

#[test]
fn run_with_archive_keeps_every_record_received() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let o = ok(&[
        "run",
        "--input",
        corpus().to_str().unwrap(),
        "--archive",
        dir.to_str().unwrap(),
        "--archive-level",
        "5",
        "--summary",
        "json",
    ]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["events"], 3000);
    let out = ok(&["archive", "cat", dir.to_str().unwrap()]);
    assert!(out.stdout == std::fs::read(corpus()).unwrap());
    let e = &index(&dir)[0];
    assert_eq!(e["level"], 5);
    assert_eq!(verify(&dir).status.code(), Some(0));
}

#[test]
fn reopening_appends_with_continuing_sequence_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let text = std::fs::read_to_string(corpus()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");
    std::fs::write(&first, lines[..1000].join("\n") + "\n").unwrap();
    std::fs::write(&second, lines[1000..].join("\n") + "\n").unwrap();
    for part in [&first, &second] {
        ok(&[
            "archive",
            "write",
            dir.to_str().unwrap(),
            part.to_str().unwrap(),
        ]);
    }
    let entries = index(&dir);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["first_seq"], 1001);
    assert_eq!(entries[1]["last_seq"], 3000);
    let out = ok(&["archive", "cat", dir.to_str().unwrap()]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    assert_eq!(verify(&dir).status.code(), Some(0));
    // A directory that is not an archive is refused.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("x"), "x").unwrap();
    let o = run(&[
        "archive",
        "write",
        other.to_str().unwrap(),
        first.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an archive"));
}

/// The corpus lines that `keep` selects, from the parsed JSON.
fn expected(keep: impl Fn(&Value) -> bool) -> String {
    let text = std::fs::read_to_string(corpus()).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if keep(&v["event"]) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn ts(e: &Value) -> u64 {
    e["ts"].as_str().unwrap().parse().unwrap()
}

#[test]
fn cat_selects_by_type_process_task_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    archive_corpus(&dir);
    let d = dir.to_str().unwrap();
    let cat = |extra: &[&str]| {
        let mut args = vec!["archive", "cat", d];
        args.extend_from_slice(extra);
        String::from_utf8(ok(&args).stdout).unwrap()
    };
    let got = cat(&["--type", "socket_connect", "--type", "capable"]);
    let want = expected(|e| e["type"] == "socket_connect" || e["type"] == "capable");
    assert_eq!(got.lines().count(), 200);
    assert_eq!(got, want);
    assert_eq!(
        cat(&["--process", "bash", "--type", "file_open"]),
        expected(|e| e["process"] == "bash" && e["type"] == "file_open")
    );
    let task = "4b0d3f32b26ba3a9a386e472a57ecb4603bec0385a6cb69804ed9ddcb9e6e554";
    assert_eq!(
        cat(&["--task-id", &task[..12].to_uppercase()]),
        expected(|e| e["task_id"] == task)
    );
    let (lo, hi) = (100_000_000u64, 200_000_000u64);
    let (los, his) = (lo.to_string(), hi.to_string());
    let got = cat(&["--since", &los, "--until", &his]);
    assert_eq!(got, expected(|e| (lo..=hi).contains(&ts(e))));
    assert!(got.lines().count() > 100);
    assert_eq!(cat(&["--type", "no_such_event"]), "");
}

/// Flips one byte of the middle of a file.
fn flip(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let i = data.len() / 2;
    data[i] ^= 0x20;
    std::fs::write(path, data).unwrap();
}

fn damaged(dir: &Path, place: &Path, what: &str) {
    let v = verify(dir);
    let text = String::from_utf8_lossy(&v.stdout).into_owned();
    assert_eq!(v.status.code(), Some(1), "{text}");
    let name = place.file_name().unwrap().to_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("damaged:") && l.contains(name) && l.contains(what)),
        "{name} {what}: {text}"
    );
}

#[test]
fn verify_finds_a_flipped_byte_a_deleted_and_swapped_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    archive_corpus(&clean);
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        std::fs::create_dir(&to).unwrap();
        for f in std::fs::read_dir(&clean).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
        to
    };

    let dir = copy("flipped");
    let seg = &segments(&dir)[3];
    flip(seg);
    damaged(&dir, seg, "digest");
    // The damaged segment is never handed out: cat stops with an error.
    let o = run(&["archive", "cat", dir.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));

    let dir = copy("deleted");
    let seg = &segments(&dir)[5];
    std::fs::remove_file(seg).unwrap();
    damaged(&dir, seg, "missing");

    let dir = copy("swapped");
    let segs = segments(&dir);
    let tmpname = dir.join("swap");
    std::fs::rename(&segs[1], &tmpname).unwrap();
    std::fs::rename(&segs[2], &segs[1]).unwrap();
    std::fs::rename(&tmpname, &segs[2]).unwrap();
    damaged(&dir, &segs[1], "digest");
    damaged(&dir, &segs[2], "digest");

    // Removing a segment together with its index entry breaks the chain.
    let dir = copy("unlisted");
    let segs = segments(&dir);
    std::fs::remove_file(&segs[4]).unwrap();
    let text = std::fs::read_to_string(dir.join("index.jsonl")).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(segs[4].file_name().unwrap().to_str().unwrap()))
        .collect();
    std::fs::write(dir.join("index.jsonl"), kept.join("\n") + "\n").unwrap();
    damaged(&dir, &segs[5], "chain");

    // Cutting the newest segments and their entries is caught by the head.
    let dir = copy("truncated");
    let head = index(&clean).last().unwrap()["chain"]
        .as_str()
        .unwrap()
        .to_owned();
    let segs = segments(&dir);
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let text = std::fs::read_to_string(dir.join("index.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        dir.join("index.jsonl"),
        lines[..lines.len() - 1].join("\n") + "\n",
    )
    .unwrap();
    assert_eq!(verify(&dir).status.code(), Some(0));
    let v = run(&["archive", "verify", dir.to_str().unwrap(), "--head", &head]);
    assert_eq!(v.status.code(), Some(1));
    assert_eq!(verify(&clean).status.code(), Some(0));
}
