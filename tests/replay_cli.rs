//! `replay`: an archive (or event file) through the pipeline gives the model,
//! measurement and state of the original run.

mod common;

use common::*;
use serde_json::Value;

fn summary(args: &[&str]) -> (Option<i32>, Value) {
    let out = run(args);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

fn same_model(a: &Value, b: &Value) {
    for k in [
        "events",
        "points",
        "forensics",
        "violations",
        "measurement",
        "state",
        "aggregate",
        "profile",
        "errors",
    ] {
        assert_eq!(a[k], b[k], "{k}");
    }
}

#[test]
fn replaying_an_archive_or_a_file_gives_the_learned_model() {
    let tmp = tempfile::tempdir().unwrap();
    let events = conformance("events.jsonl");
    let ev = events.to_str().unwrap();
    let archive = tmp.path().join("archive");
    let a = archive.to_str().unwrap();
    let m1 = tmp.path().join("m1");
    let m2 = tmp.path().join("m2");
    let m3 = tmp.path().join("m3");
    // The archive comes from a pipeline run, in small segments.
    let o = run(&["run", "--input", ev, "--archive", a, "--workers", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, learned) = summary(&["learn", "--summary", "json", "-o", m1.to_str().unwrap(), ev]);
    assert_eq!(code, Some(0));
    let (code, replayed) = summary(&["replay", "--summary", "json", "-o", m2.to_str().unwrap(), a]);
    assert_eq!(code, Some(0));
    same_model(&learned, &replayed);
    assert_eq!(
        learned["measurement"],
        "2b72eefc576a9d7184d777c7d692823d43b76190c0f8e36d4cd2dba828e20c84"
    );
    let (code, from_file) = summary(&[
        "replay",
        "--summary",
        "json",
        "--workers",
        "2",
        "-o",
        m3.to_str().unwrap(),
        ev,
    ]);
    assert_eq!(code, Some(0));
    same_model(&learned, &from_file);
    let model = std::fs::read(&m1).unwrap();
    assert_eq!(std::fs::read(&m2).unwrap(), model);
    assert_eq!(std::fs::read(&m3).unwrap(), model);
}

#[test]
fn replay_recomputes_under_another_profile_and_a_sealed_model() {
    let tmp = tempfile::tempdir().unwrap();
    let events = conformance("events.jsonl");
    let ev = events.to_str().unwrap();
    let archive = tmp.path().join("archive");
    let a = archive.to_str().unwrap();
    let o = run(&["archive", "write", a, ev, "--segment-size", "128K"]);
    assert!(o.status.success());
    let kernel = [
        "--profile",
        "kernel",
        "--on-error",
        "skip",
        "--summary",
        "json",
    ];
    let model = tmp.path().join("k");
    let mut args = vec!["learn", "-o", model.to_str().unwrap()];
    args.extend_from_slice(&kernel);
    args.push(ev);
    let (lc, learned) = summary(&args);
    let mut args = vec!["replay"];
    args.extend_from_slice(&kernel);
    args.push(a);
    let (rc, replayed) = summary(&args);
    assert_eq!((lc, rc), (Some(1), Some(1)), "the same lines do not map");
    same_model(&learned, &replayed);

    // A sealed model over the archive: the verdicts of `enforce`.
    let base = tmp.path().join("base");
    let head: Vec<String> = lines(&events).into_iter().take(1500).collect();
    let half = tmp.path().join("half.jsonl");
    std::fs::write(&half, head.join("\n") + "\n").unwrap();
    let o = run(&[
        "learn",
        "-o",
        base.to_str().unwrap(),
        half.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let b = base.to_str().unwrap();
    let (ec, enforced) = summary(&["enforce", "-m", b, "--summary", "json", ev]);
    let (rc, replayed) = summary(&["replay", "-m", b, "-e", "--summary", "json", a]);
    // One rule: violations of an enforced model exit 3, whichever command.
    assert_eq!(ec, Some(3));
    assert_eq!(rc, Some(3));
    same_model(&enforced, &replayed);
    assert!(replayed["violations"].as_u64().unwrap() > 0);
    assert_eq!(replayed["sealed"], true);
}

#[test]
fn an_archive_with_an_open_segment_is_replayed_only_when_told_how() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    // A writer that is killed leaves its last segment open (durable records
    // no chain vouches for yet).
    let mut writer = bin()
        .args([
            "archive",
            "write",
            archive.to_str().unwrap(),
            "-",
            "--report-durable",
        ])
        .args(["--sync-ms", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events = lines(&conformance("events.jsonl"));
    let mut stdin = writer.stdin.take().unwrap();
    for l in &events[..10] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    let mut reports = BufReader::new(writer.stdout.take().unwrap()).lines();
    while reports.next().unwrap().unwrap() != "durable 10" {}
    writer.kill().unwrap();
    writer.wait().unwrap();
    let a = archive.to_str().unwrap();

    let refused = run(&["replay", "--summary", "json", a]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--include-unsealed") && err.contains("--sealed-only"),
        "{err}"
    );
    let events_of = |extra: &str| -> u64 {
        let out = ok(&["replay", extra, "--summary", "json", a]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        s["events"].as_u64().unwrap()
    };
    assert_eq!(events_of("--include-unsealed"), 10);
    assert_eq!(events_of("--sealed-only"), 0);
}
