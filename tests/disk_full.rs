//! Disk faults: the store and the archive on a full volume (a 1 MiB tmpfs).
//! The fault is reported clearly, the run stops, nothing acknowledged is
//! lost, and the data reopens consistent (and writable once there is room).
//! Needs root for `mount`; skipped with a message otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }

    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// 30 000 events that each add a point (so the trajectory grows fast).
fn growing_events(dir: &Path) -> PathBuf {
    let path = dir.join("events.jsonl");
    let out = run(&["generate", "--events", "30000", "--new-fraction", "1"]);
    assert!(out.status.success());
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn a_full_store_volume_stops_the_run_and_the_store_reopens_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("vol"), "1m") else {
        return;
    };
    let events = growing_events(dir.path());
    let store = fs.0.join("store");
    let model = dir.path().join("model");
    let o = run(&[
        "learn",
        "--store",
        store.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    // The store reopens with a consistent committed state: every point it
    // holds is a coefficient of the input, in order of first appearance.
    let shown = run(&["show", "coefficients", "--store", store.to_str().unwrap()]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let points = stdout_lines(&shown);
    let all = stdout_lines(&run(&["coefficients", events.to_str().unwrap()]));
    assert!(points.len() < all.len());
    assert_eq!(points[..], all[..points.len()]);
    // With room again, the same store takes more events.
    fs.grow("64m");
    let o = run(&[
        "learn",
        "--store",
        store.to_str().unwrap(),
        "--summary",
        "json",
        "-o",
        model.to_str().unwrap(),
        conformance("document-events.jsonl").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["points"], points.len() as u64 + 5);
}

#[test]
fn a_full_archive_volume_stops_writing_and_verifies_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("vol"), "512k") else {
        return;
    };
    let events = growing_events(dir.path());
    let archive = fs.0.join("archive");
    let o = run(&[
        "archive",
        "write",
        "--report-durable",
        archive.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let durable: u64 = stdout_lines(&o)
        .iter()
        .filter_map(|l| l.strip_prefix("durable ").and_then(|n| n.parse().ok()))
        .max()
        .unwrap_or(0);
    fs.grow("64m");
    let verify = run(&["archive", "verify", archive.to_str().unwrap()]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // Every acknowledged record is there, byte for byte and in order.
    let cat = run(&["archive", "cat", archive.to_str().unwrap()]);
    let got = String::from_utf8(cat.stdout).unwrap();
    let want = std::fs::read_to_string(&events).unwrap();
    let got_lines: Vec<&str> = got.lines().collect();
    assert!(got_lines.len() as u64 >= durable);
    assert_eq!(
        got_lines[..],
        want.lines().take(got_lines.len()).collect::<Vec<_>>()[..]
    );
}
