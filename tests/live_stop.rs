//! A live input (a followed file, the kernel's export file) has no end of
//! its own: SIGINT or SIGTERM ends the run cleanly, with its summary and a
//! sealed, indexed archive, and exit status 0.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn stops_cleanly_on(signal: nix::sys::signal::Signal) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let records = std::fs::read_to_string(real_kernel("export-records.jsonl")).unwrap();
    let count = records.lines().count() as u64;
    std::fs::write(&input, &records).unwrap();
    let archive = dir.path().join("archive");
    let child = bin()
        .args(["run", "--follow", "--summary", "json", "--input"])
        .arg(&input)
        .arg("--archive")
        .arg(&archive)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run --follow");
    // The archive's open segment appears once records flow.
    wait_for("the archive", || {
        std::fs::read_dir(&archive).is_ok_and(|d| d.count() > 1)
    });
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("{signal}: finishing the run")),
        "{stderr}"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary["stats"]["records"], count, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    let verify = run(&["archive", "verify", archive.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{text}");
    assert!(
        text.starts_with(&format!("ok: 1 segments, {count} records")),
        "{text}"
    );
    let listing = run(&["archive", "ls", archive.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("1 closed segments"),
        "sealed: {}",
        String::from_utf8_lossy(&listing.stdout)
    );
}

#[test]
fn sigint_ends_a_followed_run_with_its_summary_and_a_sealed_archive() {
    stops_cleanly_on(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_ends_a_followed_run_with_its_summary_and_a_sealed_archive() {
    stops_cleanly_on(nix::sys::signal::Signal::SIGTERM);
}
