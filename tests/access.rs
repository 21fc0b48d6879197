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
    // A signature alone proves nothing: the key must be one we trust.
    let o = run(&[
        "enforce",
        "--require-signed",
        "-m",
        signed_path.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs a trusted key"));
    let o = run(&[
        "enforce",
        "--require-signed",
        "--trusted-key",
        key.to_str().unwrap(),
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

#[test]
fn a_model_signed_by_an_untrusted_key_is_refused_with_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let trusted = dir.path().join("trusted.pem");
    let attacker = dir.path().join("attacker.pem");
    let events = conformance("document-events.jsonl");
    let ev = events.to_str().unwrap();
    assert!(run(&["learn", "-o", model.to_str().unwrap(), ev])
        .status
        .success());
    for key in [&trusted, &attacker] {
        assert!(run(&["sign", "-G", "-k", key.to_str().unwrap()])
            .status
            .success());
    }
    let signed = run(&[
        "sign",
        "-k",
        attacker.to_str().unwrap(),
        "-m",
        model.to_str().unwrap(),
    ]);
    let signed_path = dir.path().join("signed");
    std::fs::write(&signed_path, &signed.stdout).unwrap();
    for extra in [&[][..], &["--require-signed"][..]] {
        let mut args = vec!["enforce", "--trusted-key", trusted.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(["-m", signed_path.to_str().unwrap(), ev]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("which is not a trusted key"), "{err}");
        // The fingerprint names the key: 64 hex digits after "signed by key".
        let fp = err.split("signed by key ").nth(1).unwrap();
        assert!(fp[..64].bytes().all(|b| b.is_ascii_hexdigit()), "{err}");
    }
}
