//! `tsem-stream model rebuild` end to end, and pseudonyms given to `learn`:
//! a rebuilt model equals the model `learn` writes from the same events with
//! the same settings, whatever kept the events (file, archive, store).

mod common;

use std::path::Path;

use common::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The denied lines of `enforce -m model` over the example's enforcement run.
fn denied(model: &str) -> Vec<String> {
    let out = run(&["enforce", "-m", model, &example("bash-enforce.jsonl")]);
    stdout_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("untrusted"))
        .map(|l| l.split(' ').nth(1).unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn learn_applies_pseudonyms_and_writes_them_into_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = path(d, "plain.model");
    ok(&["learn", "-o", &plain, &example("bash-learn.jsonl")]);
    assert_eq!(denied(&plain), ["line=15", "line=16", "line=29"]);

    // --pseudonym PATH: applied while learning, written into the model, so
    // enforce needs nothing else.
    let with = path(d, "with.model");
    ok(&[
        "learn",
        "--pseudonym",
        "/root/.bash_history",
        "-o",
        &with,
        &example("bash-learn.jsonl"),
    ]);
    let line = String::from_utf8(ok(&["pseudonym", "/root/.bash_history"]).stdout).unwrap();
    assert!(read(&with).contains(&line), "{}", read(&with));
    assert_eq!(denied(&with), ["line=15"], "only /etc/locale.alias is new");

    // --pseudonyms FILE: the same.
    let list = path(d, "pseudonyms");
    std::fs::write(&list, &line).unwrap();
    let from_file = path(d, "from-file.model");
    ok(&[
        "learn",
        "--pseudonyms",
        &list,
        "-o",
        &from_file,
        &example("bash-learn.jsonl"),
    ]);
    assert_eq!(read(&from_file), read(&with));
}

#[test]
fn learn_refuses_a_new_pseudonym_for_an_existing_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = path(d, "store");
    let model = path(d, "model");
    ok(&[
        "learn",
        "--store",
        &store,
        "-o",
        &model,
        &example("bash-learn.jsonl"),
    ]);
    let out = run(&[
        "learn",
        "--store",
        &store,
        "--pseudonym",
        "/root/.bash_history",
        "-o",
        &model,
        &example("bash-enforce.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("learned without pseudonym"), "{err}");
    assert!(err.contains("model rebuild --from"), "{err}");
}

#[test]
fn rebuild_equals_learn_from_files_archives_and_stores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let events = example("bash-learn.jsonl");
    for (profile, pseudonyms) in [("quixote", false), ("quixote", true), ("kernel", true)] {
        let mut settings = vec!["--profile", profile];
        if pseudonyms {
            settings.extend(["--pseudonym", "/root/.bash_history"]);
        }
        let learned = path(d, "learned.model");
        let store = path(d, &format!("store-{profile}-{pseudonyms}"));
        let mut args = vec!["learn", "--store", &store, "-o", &learned];
        args.extend(&settings);
        args.push(&events);
        ok(&args);
        let archive = path(d, &format!("archive-{profile}-{pseudonyms}"));
        ok(&["archive", "write", &archive, &events]);

        let rebuilt = path(d, "rebuilt.model");
        for from in [&events, &archive] {
            let mut args = vec!["model", "rebuild", "--from", from, "-o", &rebuilt];
            args.extend(&settings);
            ok(&args);
            assert_eq!(
                read(&rebuilt),
                read(&learned),
                "{profile} {pseudonyms} {from}"
            );
        }
        // A store brings its own profile and pseudonyms.
        ok(&["model", "rebuild", "--from", &store, "-o", &rebuilt]);
        assert_eq!(
            read(&rebuilt),
            read(&learned),
            "{profile} {pseudonyms} store"
        );
    }
}

#[test]
fn rebuild_changes_profile_and_pseudonyms_without_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let events = example("bash-learn.jsonl");
    let store = path(d, "store");
    let archive = path(d, "archive");
    let quixote = path(d, "q.model");
    ok(&["learn", "--store", &store, "-o", &quixote, &events]);
    ok(&["archive", "write", &archive, &events]);

    let kernel = path(d, "k.model");
    ok(&[
        "learn",
        "--profile",
        "kernel",
        "--pseudonym",
        "/root/.bash_history",
        "-o",
        &kernel,
        &events,
    ]);
    let rebuilt = path(d, "rebuilt.model");
    let settings = [
        "--profile",
        "kernel",
        "--pseudonym",
        "/root/.bash_history",
        "-o",
        &rebuilt,
    ];
    let mut args = vec!["model", "rebuild", "--from", &archive];
    args.extend(settings);
    ok(&args);
    assert_eq!(read(&rebuilt), read(&kernel), "exact from the archive");

    // A Profile Q store kept one description per Q point: the two terminal
    // ioctls of bash (generic under Q, told apart by `cmd` under K) left one.
    let mut args = vec!["model", "rebuild", "--from", &store];
    args.extend(settings);
    let out = ok(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: ") && err.contains("one description per quixote point"),
        "{err}"
    );
    let states = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("state "))
            .map(str::to_owned)
            .collect()
    };
    let (got, all) = (states(read(&rebuilt)), states(read(&kernel)));
    assert!(got.iter().all(|s| all.contains(s)));
    assert_eq!(got.len() + 1, all.len());
}

#[test]
fn accepted_forensics_become_valid_points_mapped_with_the_new_pseudonyms() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = path(d, "bash.model");
    let forensics = path(d, "bash.forensics");
    ok(&["learn", "-o", &model, &example("bash-learn.jsonl")]);
    let out = run(&[
        "enforce",
        "-m",
        &model,
        "--forensics",
        &forensics,
        &example("bash-enforce.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(3));

    // Without the pseudonym, all three forensic events become points.
    let accepted = path(d, "accepted.model");
    let out = ok(&[
        "model",
        "rebuild",
        "--from",
        &example("bash-learn.jsonl"),
        "--add-forensics",
        &forensics,
        "-o",
        &accepted,
        "--summary",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["points"], 28);
    assert_eq!(s["events"], 30);
    assert_eq!(s["sealed"], true);
    assert!(denied(&accepted).is_empty());
    assert!(read(&accepted).ends_with("seal\nend\n"));

    // With it, the history events fold onto the learned points: one new point.
    let out = ok(&[
        "model",
        "rebuild",
        "--from",
        &example("bash-learn.jsonl"),
        "--pseudonym",
        "/root/.bash_history",
        "--add-forensics",
        &forensics,
        "-o",
        &accepted,
        "--summary",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["points"], 26);
    assert_eq!(s["pseudonyms"], 1);
    assert!(denied(&accepted).is_empty());
}

#[test]
fn a_base_model_keeps_its_points_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = path(d, "base.model");
    ok(&["learn", "-o", &base, &example("bash-learn.jsonl")]);
    let both = path(d, "both.model");
    ok(&[
        "model",
        "rebuild",
        "-m",
        &base,
        "--from",
        &example("bash-enforce.jsonl"),
        "-o",
        &both,
    ]);
    // The same as learning the second run on top of the first.
    let learned = path(d, "learned.model");
    ok(&[
        "learn",
        "-m",
        &base,
        "-o",
        &learned,
        &example("bash-enforce.jsonl"),
    ]);
    assert_eq!(read(&both), read(&learned));
    assert!(denied(&both).is_empty());
}

#[test]
fn bad_inputs_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = path(d, "bash.model");
    ok(&["learn", "-o", &model, &example("bash-learn.jsonl")]);
    let out_path = path(d, "out.model");

    let out = run(&["model", "rebuild", "--from", &model, "-o", &out_path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this is a model file"));

    let bad = path(d, "bad.jsonl");
    let mut text = read(&example("bash-learn.jsonl"));
    text.push_str("{\"event\": \n");
    std::fs::write(&bad, text).unwrap();
    let out = run(&["model", "rebuild", "--from", &bad, "-o", &out_path]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{bad}:29: ")), "{err}");
    assert!(err.contains("no model written"), "{err}");
    assert!(!Path::new(&out_path).exists());

    let out = run(&[
        "model",
        "rebuild",
        "--from",
        &example("bash-learn.jsonl"),
        "--add-forensics",
        &bad,
        "-o",
        &out_path,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!Path::new(&out_path).exists());
}
