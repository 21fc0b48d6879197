//! Crash test of the archive writer: `archive write` reads records from a
//! pipe that the test keeps feeding, reports `durable SEQ` as it syncs, and
//! is killed with SIGKILL at different moments. The archive must then verify,
//! hold every record up to the last durable point (and nothing that was not
//! fed, in order), reopen cleanly (the open segment closed and marked
//! recovered) and go on numbering after the recovered records.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn corpus_lines() -> Vec<String> {
    lines(&conformance("events.jsonl"))
}

/// Starts a writer on `dir` that reads standard input.
fn writer(dir: &Path) -> Child {
    bin()
        .args([
            "archive",
            "write",
            dir.to_str().unwrap(),
            "-",
            "--report-durable",
            "--sync-ms",
            "5",
            "--segment-size",
            "64K",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tsem-stream")
}

/// The archive's records, as `cat` gives them.
fn archived(dir: &Path) -> Vec<String> {
    let out = run(&["archive", "cat", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_lines(&out)
}

fn verify_ok(dir: &Path) -> String {
    let v = run(&["archive", "verify", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&v.stdout).into_owned();
    assert_eq!(v.status.code(), Some(0), "{text}");
    text
}

/// Feeds the corpus slowly, kills the writer once `kill_after` records are
/// durable, and returns the last durable sequence number it reported.
fn crash_once(dir: &Path, feed: &[String], kill_after: u64) -> u64 {
    let mut child = writer(dir);
    let durable = Arc::new(AtomicU64::new(0));
    let reader = {
        let out = child.stdout.take().expect("stdout");
        let durable = Arc::clone(&durable);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("durable ") {
                    durable.fetch_max(n.parse().expect("a number"), Ordering::SeqCst);
                }
            }
        })
    };
    let feeder = {
        let mut input = child.stdin.take().expect("stdin");
        let feed = feed.to_vec();
        std::thread::spawn(move || {
            // Bursts of 20 records with pauses, so that syncs happen mid-stream
            // and while idle; writes fail once the writer is dead.
            for chunk in feed.chunks(20) {
                let text = chunk.join("\n") + "\n";
                if input.write_all(text.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // Keep the pipe open: the writer must be killed, not finish.
            std::thread::sleep(Duration::from_secs(30));
        })
    };
    let t0 = Instant::now();
    while durable.load(Ordering::SeqCst) < kill_after {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "writer made no progress"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    reader.join().expect("reader");
    drop(feeder);
    durable.load(Ordering::SeqCst)
}

#[test]
fn sigkill_loses_nothing_durable_and_the_archive_reopens_cleanly() {
    let corpus = corpus_lines();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let mut fed: Vec<String> = Vec::new();
    let mut offset = 0;
    let mut recovered = 0;
    for (round, kill_after) in [250u64, 300, 200, 350, 280].into_iter().enumerate() {
        let feed = &corpus[offset..offset + 500];
        let before = fed.len() as u64;
        let durable = crash_once(&dir, feed, before + kill_after);
        assert!(durable >= before + kill_after);
        // Readable at once: the open segment's complete records included.
        let text = verify_ok(&dir);
        let got = archived(&dir);
        assert!(
            got.len() as u64 >= durable,
            "round {round}: {} < {durable}",
            got.len()
        );
        let mut expect = fed.clone();
        expect.extend_from_slice(feed);
        assert!(got.len() <= expect.len());
        assert_same_lines(&got, &expect[..got.len()], "records after the crash");
        // Reopen: the writer closes the open segment as recovered.
        let o = run_with_stdin(&["archive", "write", dir.to_str().unwrap(), "-"], b"");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let after = archived(&dir);
        assert_eq!(after, got, "round {round}: reopening changed the records");
        verify_ok(&dir);
        let ls = run(&["archive", "ls", "--json", dir.to_str().unwrap()]);
        let last: Value =
            serde_json::from_str(stdout_lines(&ls).last().expect("an entry")).unwrap();
        assert_eq!(last["last_seq"], after.len() as u64);
        // An open segment with records is closed as recovered (one that the
        // writer had just created, still empty, is simply removed).
        if text.contains("open segment") && !text.contains(": 0 complete records") {
            assert!(last["recovered"].is_object(), "{last}");
            recovered += 1;
        }
        fed = after;
        offset += 500;
    }
    assert!(recovered > 0, "no kill hit an open segment");
    // Appending goes on after the recovered records.
    let rest = &corpus[offset..];
    let o = run_with_stdin(
        &["archive", "write", dir.to_str().unwrap(), "-"],
        (rest.join("\n") + "\n").as_bytes(),
    );
    assert!(o.status.success());
    let mut expect = fed.clone();
    expect.extend_from_slice(rest);
    assert_same_lines(&archived(&dir), &expect, "after appending");
    verify_ok(&dir);
}
