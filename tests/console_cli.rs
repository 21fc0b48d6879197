//! `tsem-stream console` without a running workload: the workload list,
//! offline views of a model store, and the checks of its flags. The live
//! console is tested with the orchestrator in `process_mode.rs`.

mod common;

use common::*;

#[test]
fn without_a_view_it_lists_the_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let mgmt = dir.path().join("mgmt");
    let list = || {
        let out = run(&["console", "--mgmt-dir", mgmt.to_str().unwrap()]);
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    // No directory yet: nothing runs.
    assert_eq!(list(), "Workloads:\n");
    std::fs::create_dir(&mgmt).unwrap();
    let _b = std::os::unix::net::UnixListener::bind(mgmt.join("beta")).unwrap();
    let _a = std::os::unix::net::UnixListener::bind(mgmt.join("alpha")).unwrap();
    // Not sockets, or not workload names: not listed.
    std::fs::write(mgmt.join("notes"), "").unwrap();
    let _h = std::os::unix::net::UnixListener::bind(mgmt.join(".hidden")).unwrap();
    assert_eq!(list(), "Workloads:\n\talpha\n\tbeta\n");
}

#[test]
fn offline_views_of_a_store_match_show() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let model = dir.path().join("model");
    let events = conformance("document-events.jsonl");
    let out = run(&[
        "learn",
        "--store",
        store.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = store.to_str().unwrap();
    for (flags, view) in [
        (&["-T"][..], &["trajectory"][..]),
        (&["-T", "-s"], &["coefficients"]),
        (&["-T", "-s", "-p"], &["coefficients", "-p"]),
        (&["-T", "-c"], &["counts"]),
        (&["-F"], &["forensics"]),
        (&["-F", "-s"], &["forensics-coefficients"]),
        (&["-F", "-c"], &["forensics-counts"]),
        (&["-S"], &["state"]),
        (&["--measurement"], &["measurement"]),
        (&["-M"], &["model"]),
        (&["-M", "-u"], &["model", "-u"]),
    ] {
        let mut console = vec!["console", "--store", s];
        console.extend_from_slice(flags);
        let mut show = vec!["show"];
        show.extend_from_slice(view);
        show.extend_from_slice(&["--store", s]);
        let got = run(&console);
        assert!(
            got.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(got.stdout, run(&show).stdout, "{flags:?}");
    }
    assert_eq!(
        stdout_lines(&run(&["console", "--store", s, "-T", "-c"])).len(),
        5
    );
}

#[test]
fn flags_are_checked() {
    for (args, message) in [
        (&["-T", "-S"][..], "choose one of"),
        (&["-S", "-s"], "-s and -c go with -T or -F"),
        (&["-T", "-u"], "-u goes with -M"),
        (&["-S"], "which workload?"),
        (&["-w", "../x", "-S"], "invalid workload name"),
        (&["-w", "absent", "-S"], "no workload absent is running"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["console", "--mgmt-dir", dir.path().to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    // -s and -c together is a usage error of the parser.
    let out = run(&["console", "-T", "-s", "-c"]);
    assert!(!out.status.success());
}

#[test]
fn a_stale_socket_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let out = run(&[
        "console",
        "--mgmt-dir",
        dir.path().to_str().unwrap(),
        "-w",
        "gone",
        "-S",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not answer"));
}
