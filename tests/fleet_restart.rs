//! Publishing when the NATS server goes away: records wait in the disk
//! buffer and are delivered, once each, when it is back; what the buffer
//! cannot take is counted and reported. These tests run a server of their
//! own (to kill it), so they need `nats-server` installed.

mod common;
mod fleet_common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use fleet_common::*;
use serde_json::Value;

const CORPUS_STATE: &str = "d4196e89625fa29e068cb2c5cf51da65b4efc9b87f8cf209b725f2fe41cf5f51";

fn summary_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn own_server(test: &str, store: &Path) -> Option<OwnNats> {
    let s = OwnNats::stopped(store);
    if s.is_none() {
        eprintln!("SKIPPED {test}: nats-server is not installed");
    }
    s
}

#[test]
fn killing_the_server_mid_stream_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut nats) = own_server("killing_the_server", &tmp.path().join("store")) else {
        return;
    };
    nats.restart();
    let server = nats.url();
    let url = format!("{server}?stream=R&prefix=r&timeout=500ms&drain=30s");
    let corpus = std::fs::read_to_string(conformance("events.jsonl")).unwrap();
    let lines: Vec<&str> = corpus.lines().collect();
    let fifo = tmp.path().join("export");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let buffer = tmp.path().join("buffer");
    let child = bin()
        .args(["run", "--input", fifo.to_str().unwrap(), "--publish", &url])
        .args(["--host", "h1", "--publish-buffer", buffer.to_str().unwrap()])
        .args(["--summary", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut feed = |range: std::ops::Range<usize>| {
        for l in &lines[range] {
            writeln!(input, "{l}").unwrap();
        }
        input.flush().unwrap();
    };
    feed(0..1000);
    assert_eq!(
        wait_for_messages(&server, "R", 1000, Duration::from_secs(15)),
        1000
    );
    // Let the server write what it acknowledged before it is killed.
    std::thread::sleep(Duration::from_millis(300));
    nats.kill();
    // Modeling goes on while the server is away; the records wait on disk.
    feed(1000..2000);
    // Longer than an attempt may take (twice the timeout and a second): the
    // publisher gives up on the batch in flight and sends it again later.
    std::thread::sleep(Duration::from_millis(3000));
    let waiting: u64 = std::fs::read_dir(buffer.join(format!("nats-127.0.0.1_{}", nats.port)))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("spool-"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(waiting > 0, "records should wait in the buffer");
    nats.restart();
    feed(2000..3000);
    drop(input);
    let out = child.wait_with_output().unwrap();
    let s = summary_of(&out);
    assert_eq!(s["events"], 3000);
    let p = &s["publish"][0];
    assert_eq!(p["dropped"], 0, "{p}");
    assert_eq!(p["pending"], 0, "the buffer drained: {p}");
    assert!(p["failures"].as_u64().unwrap() > 0, "{p}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("records wait in"), "{stderr}");
    assert!(stderr.contains("delivering again"), "{stderr}");
    // Every record once (3000 records and the final summary), nothing twice.
    assert_eq!(stream_messages(&server, "R"), 3001);
    let central = summary_of(&run(&[
        "replay",
        &format!("{server}?stream=R"),
        "--subject",
        "r.h1.local.events",
        "--until-idle",
        "1",
        "--summary",
        "json",
    ]));
    assert_eq!(central["events"], 3000);
    assert_eq!(central["points"], 2212);
    assert_eq!(central["state"], CORPUS_STATE);
}

#[test]
fn what_waits_when_the_server_is_down_is_sent_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut nats) = own_server("what_waits", &tmp.path().join("store")) else {
        return;
    };
    let server = nats.url();
    let url = format!("{server}?stream=W&prefix=w&timeout=300ms&drain=500ms");
    let buffer = tmp.path().join("buffer");
    let parts = corpus_parts(tmp.path());
    let part = parts[0].to_str().unwrap();
    let publish = |input: &str| {
        run(&[
            "run",
            "--input",
            input,
            "--publish",
            &url,
            "--host",
            "h1",
            "--publish-buffer",
            buffer.to_str().unwrap(),
            "--summary",
            "json",
        ])
    };
    // No server: the run models as usual and leaves its records in the buffer.
    let out = publish(part);
    let s = summary_of(&out);
    assert_eq!(s["events"], 1000);
    let p = &s["publish"][0];
    assert_eq!(
        (p["published"].as_u64(), p["pending"].as_u64()),
        (Some(0), Some(1001)),
        "{p}"
    );
    assert_eq!(p["dropped"], 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1001 records not yet delivered"));
    // The server is back: the next run (with nothing new) delivers them.
    nats.restart();
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let s = summary_of(&publish(empty.to_str().unwrap()));
    let p = &s["publish"][0];
    assert_eq!(p["recovered"], 1001, "{p}");
    assert_eq!(p["pending"], 0, "{p}");
    // 1000 records, the first run's summary and the second's.
    assert_eq!(stream_messages(&server, "W"), 1002);
    let central = summary_of(&run(&[
        "replay",
        &format!("{server}?stream=W"),
        "--subject",
        "w.h1.local.events",
        "--until-idle",
        "1",
        "--summary",
        "json",
    ]));
    let learned = summary_of(&run(&[
        "learn",
        "--summary",
        "json",
        "-o",
        tmp.path().join("m").to_str().unwrap(),
        part,
    ]));
    assert_eq!(central["measurement"], learned["measurement"]);
}

#[test]
fn a_full_buffer_counts_and_reports_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    // Nobody listens on this port.
    let url = format!(
        "nats://127.0.0.1:{}?timeout=200ms&drain=200ms&buffer_max=64K",
        free_port()
    );
    let buffer = tmp.path().join("buffer");
    let out = run(&[
        "run",
        "--input",
        conformance("events.jsonl").to_str().unwrap(),
        "--publish",
        &url,
        "--host",
        "h1",
        "--publish-buffer",
        buffer.to_str().unwrap(),
        "--summary",
        "json",
    ]);
    let s = summary_of(&out);
    // Modeling is unaffected.
    assert_eq!(s["state"], CORPUS_STATE);
    let p = &s["publish"][0];
    let dropped = p["dropped"].as_u64().unwrap();
    let pending = p["pending"].as_u64().unwrap();
    assert!(dropped > 0 && pending > 0, "{p}");
    // Every record (and the final summary) is either waiting or counted lost.
    assert_eq!(dropped + pending, 3001, "{p}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{dropped} records LOST")),
        "{stderr}"
    );
}
