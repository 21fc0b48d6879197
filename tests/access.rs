//! Access control of what tsem-stream creates and loads: private files,
//! world-writable models refused, signatures required on demand.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn store_directory_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let model = dir.path().join("model");
    let o = run(&[
        "learn",
        "--store",
        store.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        conformance("document-events.jsonl").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode(&store), 0o700);
    for entry in std::fs::read_dir(&store).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&model), 0o600);
}

#[test]
fn a_world_writable_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let events = conformance("document-events.jsonl");
    assert!(run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap()
    ])
    .status
    .success());
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("world-writable"));
}

#[test]
fn require_signed_refuses_unsigned_models_and_accepts_signed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let key = dir.path().join("key");
    let events = conformance("document-events.jsonl");
    assert!(run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap()
    ])
    .status
    .success());
    let o = run(&[
        "enforce",
        "--require-signed",
        "-m",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not signed"));
    assert!(run(&["sign", "-G", "-k", key.to_str().unwrap()])
        .status
        .success());
    assert_eq!(mode(&key), 0o600);
    let signed = run(&[
        "sign",
        "-k",
        key.to_str().unwrap(),
        "-m",
        model.to_str().unwrap(),
    ]);
    let signed_path = dir.path().join("signed");
    std::fs::write(&signed_path, &signed.stdout).unwrap();
    let o = run(&[
        "enforce",
        "--require-signed",
        "-m",
        signed_path.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
