//! `diff A B` over archives, event files, model files and stores.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const DIGEST: &str = "9fc8ae251c1964a0eb3cd3204ae13af06e6b0bc3c88687e6775a8cf5212e6911";
const OTHER: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

/// The corpus with the file digest of line 2 (a file_open of bash) changed.
fn changed_corpus(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(conformance("events.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines[1].contains(DIGEST));
    lines[1] = lines[1].replace(DIGEST, OTHER);
    let path = dir.join("changed.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn diff(args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["diff", "--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

#[test]
fn identical_inputs_of_every_kind_compare_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let events = conformance("events.jsonl");
    let ev = events.to_str().unwrap();
    let archive = tmp.path().join("archive");
    let model = tmp.path().join("model");
    let store = tmp.path().join("store");
    let o = run(&["archive", "write", archive.to_str().unwrap(), ev]);
    assert!(o.status.success());
    let o = run(&[
        "learn",
        "--store",
        store.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        ev,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = archive.to_str().unwrap();
    let m = model.to_str().unwrap();
    let s = store.to_str().unwrap();
    for (x, y, kinds) in [
        (ev, ev, ("events", "events")),
        (a, ev, ("archive", "events")),
        (m, ev, ("model", "events")),
        (s, a, ("store", "archive")),
        (m, s, ("model", "store")),
    ] {
        let (code, v) = diff(&[x, y]);
        assert_eq!(code, Some(0), "{x} {y}: {v}");
        assert_eq!(v["identical"], true);
        assert_eq!(v["a"]["kind"], kinds.0);
        assert_eq!(v["b"]["kind"], kinds.1);
        assert_eq!(v["a"]["coefficients"], 2212);
    }
    // Text output too.
    let out = run(&["diff", s, ev]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("only in A: 0, only in B: 0"));
}

#[test]
fn a_changed_digest_is_one_coefficient_on_each_side_and_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let events = conformance("events.jsonl");
    let changed = changed_corpus(tmp.path());
    let archive = tmp.path().join("archive");
    let o = run(&[
        "archive",
        "write",
        archive.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let (code, v) = diff(&[archive.to_str().unwrap(), changed.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(v["identical"], false);
    let only_a = v["only_in_a"].as_array().unwrap();
    let only_b = v["only_in_b"].as_array().unwrap();
    assert_eq!((only_a.len(), only_b.len()), (1, 1), "{v}");
    assert_eq!(only_a[0]["event"]["type"], "file_open");
    assert_eq!(only_a[0]["event"]["process"], "bash");
    assert_eq!(only_a[0]["count"], 1);
    let ch = &v["changed"].as_array().unwrap()[0];
    assert_eq!(ch["a"], only_a[0]["coefficient"]);
    assert_eq!(ch["b"], only_b[0]["coefficient"]);
    let fields = ch["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!(fields[0]["field"], "file.digest");
    assert_eq!(fields[0]["a"], DIGEST);
    assert_eq!(fields[0]["b"], OTHER);
    // Side by side in text.
    let out = run(&["diff", archive.to_str().unwrap(), changed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("only in A: 1, only in B: 1"), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("file.digest"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(DIGEST) && line.contains(OTHER), "{line}");
}

#[test]
fn a_model_file_against_events_reports_what_is_new_and_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let events = conformance("events.jsonl");
    let changed = changed_corpus(tmp.path());
    let model = tmp.path().join("model");
    let o = run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let (code, v) = diff(&[model.to_str().unwrap(), changed.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    let only_a = v["only_in_a"].as_array().unwrap();
    let only_b = v["only_in_b"].as_array().unwrap();
    assert_eq!((only_a.len(), only_b.len()), (1, 1));
    // A model file keeps neither counts nor descriptions.
    assert_eq!(only_a[0]["count"], Value::Null);
    assert_eq!(only_b[0]["event"]["type"], "file_open");
    assert_eq!(v["counts_differ"].as_array().unwrap().len(), 0);
}

#[test]
fn counts_and_profiles_are_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let events = conformance("events.jsonl");
    let text = std::fs::read_to_string(&events).unwrap();
    let first = text.lines().next().unwrap();
    let twice = tmp.path().join("twice.jsonl");
    std::fs::write(&twice, format!("{text}{first}\n")).unwrap();
    let (code, v) = diff(&[events.to_str().unwrap(), twice.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    let counts = v["counts_differ"].as_array().unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        counts[0]["b"].as_u64(),
        counts[0]["a"].as_u64().map(|n| n + 1)
    );
    // Under the kernel profile the same events map to other coefficients,
    // and a model learned under it says so by itself.
    let model = tmp.path().join("kmodel");
    let o = run(&[
        "learn",
        "--profile",
        "kernel",
        "--on-error",
        "skip",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let (code, v) = diff(&[model.to_str().unwrap(), events.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["profile"], "kernel");
    assert!(v["b"]["unmapped"].as_u64().unwrap() > 0);
    let (code, _) = diff(&[
        "--profile",
        "quixote",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
}
