//! learn / enforce / show / sign end to end, against the reference values.

mod common;

use common::*;
use serde_json::Value;

fn summary_of(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("summary json")
}

#[test]
fn learn_reproduces_every_expected_trajectory_case() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(conformance("expected-trajectory.json")).unwrap(),
    )
    .unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let events = conformance(case["events"].as_str().unwrap());
        let out = dir.path().join("model");
        let mut args = vec!["learn", "--summary", "json", "-o", out.to_str().unwrap()];
        let (base, aggregate);
        if let Some(b) = case["base"].as_str() {
            base = b.to_owned();
            args.extend(["--base", &base]);
        }
        if let Some(a) = case["aggregate"].as_str() {
            aggregate = a.to_owned();
            args.extend(["--aggregate", &aggregate]);
        }
        args.push(events.to_str().unwrap());
        let s = summary_of(&args);
        let name = case["name"].as_str().unwrap();
        assert_eq!(s["measurement"], case["measurement"], "{name}");
        assert_eq!(s["state"], case["state"], "{name}");
        assert_eq!(s["points"], case["unique_points"], "{name}");
        assert_eq!(s["events"], case["events_count"], "{name}");
        assert_eq!(s["errors"], 0);
    }
}

#[test]
fn learn_under_the_kernel_profile_matches_its_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(conformance("expected-trajectory-kernel.json")).unwrap(),
    )
    .unwrap();
    let case = &expected["cases"][0];
    let o = run(&[
        "learn",
        "--profile",
        "kernel",
        "--on-error",
        "skip",
        "--summary",
        "json",
        "-o",
        out.to_str().unwrap(),
        conformance("events.jsonl").to_str().unwrap(),
    ]);
    // 41 lines have no Profile K mapping: skipped (reported), exit status 1.
    assert_eq!(o.status.code(), Some(1));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["measurement"], case["measurement"]);
    assert_eq!(s["state"], case["state"]);
    assert_eq!(s["points"], case["unique_points"]);
    assert_eq!(s["events"], case["events_count"]);
    assert_eq!(s["errors"], case["unmapped_lines"]);
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .starts_with("# profile kernel\n"));
}

#[test]
fn learned_model_enforces_the_same_events_without_violations() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let events = conformance("events.jsonl");
    let o = run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let o = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let verdicts = stdout_lines(&o);
    assert_eq!(verdicts.len(), 3000);
    assert!(verdicts.iter().all(|l| l.starts_with("trusted line=")));
    let coefficients = lines(&conformance("expected-coefficients.txt"));
    assert!(verdicts[0].ends_with(&format!("coefficient={}", coefficients[0])));
}

#[test]
fn a_changed_event_gives_exactly_the_expected_forensics() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let learned = conformance("document-events.jsonl");
    assert!(run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        learned.to_str().unwrap()
    ])
    .status
    .success());
    // Change the digest of the third event (file_open /usr/bin/bash).
    let text = std::fs::read_to_string(&learned).unwrap();
    let mut lines_v: Vec<String> = text.lines().map(str::to_owned).collect();
    let digest_at = lines_v[2].find("\"digest\": \"").unwrap() + 11;
    lines_v[2].replace_range(digest_at..digest_at + 4, "0000");
    let changed = dir.path().join("changed.jsonl");
    std::fs::write(&changed, lines_v.join("\n") + "\n").unwrap();
    let forensics = dir.path().join("forensics");
    let o = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        "--forensics",
        forensics.to_str().unwrap(),
        changed.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let verdicts = stdout_lines(&o);
    let untrusted: Vec<&String> = verdicts
        .iter()
        .filter(|l| l.starts_with("untrusted"))
        .collect();
    assert_eq!(untrusted.len(), 1);
    assert!(
        untrusted[0].starts_with("untrusted line=3 "),
        "{}",
        untrusted[0]
    );
    assert_eq!(
        std::fs::read_to_string(&forensics).unwrap(),
        format!("{}\n", lines_v[2])
    );
    let changed_coefficient =
        stdout_lines(&run(&["coefficients", changed.to_str().unwrap()]))[2].clone();
    let shown = run(&["show", "model", "-u", "--events", changed.to_str().unwrap()]);
    assert!(shown.status.success());
    let o = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        "--summary",
        "json",
        changed.to_str().unwrap(),
    ]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["forensics"], 1);
    assert_eq!(s["violations"], 1);
    // The forensics point appears in `show model --update` of a store.
    let store = dir.path().join("store");
    let o = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        changed.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let updated =
        String::from_utf8(run(&["show", "model", "-u", "--store", store.to_str().unwrap()]).stdout)
            .unwrap();
    assert!(
        updated.contains(&format!(
            "# 1 forensic updates\nstate {changed_coefficient}\nseal\nend\n"
        )),
        "{updated}"
    );
    let forensics_view =
        String::from_utf8(run(&["show", "forensics", "--store", store.to_str().unwrap()]).stdout)
            .unwrap();
    assert_eq!(forensics_view, format!("{}\n", lines_v[2]));
}

#[test]
fn show_views_of_a_model_file_and_of_events() {
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
    let coefficients = lines(&conformance("document-expected-coefficients.txt"));
    let o = run(&["show", "coefficients", "-p", "-m", model.to_str().unwrap()]);
    let want: Vec<String> = coefficients.iter().map(|c| format!("state {c}")).collect();
    assert_eq!(stdout_lines(&o), want);
    let o = run(&["show", "counts", "--events", events.to_str().unwrap()]);
    assert_eq!(stdout_lines(&o), vec!["1"; 5]);
    let o = run(&["show", "state", "--events", events.to_str().unwrap()]);
    assert_eq!(
        stdout_lines(&o),
        vec!["6b38585d3e0a721f72b111f6211473cf1e13427053eca36bbe6aa221ea15e193"]
    );
    let o = run(&["show", "measurement", "--events", events.to_str().unwrap()]);
    assert_eq!(
        stdout_lines(&o),
        vec!["aebbb359afb81dcf5b7bb8a000138ac4ae3b25af0abf4b453eb23c5727ab0480"]
    );
    let o = run(&["show", "trajectory", "--events", events.to_str().unwrap()]);
    assert_eq!(stdout_lines(&o), lines(&events));
}

#[test]
fn a_written_model_is_rewritten_byte_identically() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let events = conformance("document-events.jsonl");
    let args = [
        "learn",
        "--base",
        "5ee0f00dfeedfacecafebeef0123456789abcdeffedcba987654321000112233",
        "--pseudonym",
        "/etc/ld.so.cache",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ];
    assert!(run(&args).status.success());
    let first = std::fs::read_to_string(&model).unwrap();
    assert!(first.contains("\nbase 5ee0f00d"));
    assert!(first.contains("\npseudonym "));
    let o = run(&["show", "model", "-m", model.to_str().unwrap()]);
    assert_eq!(String::from_utf8(o.stdout).unwrap(), first);
}

#[test]
fn signed_models_verify_and_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
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
    assert!(run(&["sign", "-G", "-k", key.to_str().unwrap()])
        .status
        .success());
    let o = run(&[
        "sign",
        "-k",
        key.to_str().unwrap(),
        "-m",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let signed = String::from_utf8(o.stdout).unwrap();
    assert!(signed.starts_with("key "));
    let signed_path = dir.path().join("signed");
    std::fs::write(&signed_path, &signed).unwrap();
    let o = run(&[
        "enforce",
        "-m",
        signed_path.to_str().unwrap(),
        "--summary",
        "json",
        events.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut lines_v: Vec<&str> = signed.lines().collect();
    let state_line = lines_v
        .iter()
        .position(|l| l.starts_with("state "))
        .unwrap();
    let swapped = format!("state {}", &"f".repeat(64));
    lines_v[state_line] = &swapped;
    let tampered_path = dir.path().join("tampered");
    std::fs::write(&tampered_path, lines_v.join("\n") + "\n").unwrap();
    let o = run(&[
        "enforce",
        "-m",
        tampered_path.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("signature does not verify"));
}

#[test]
fn a_model_of_another_profile_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let events = conformance("document-events.jsonl");
    assert!(run(&[
        "learn",
        "--profile",
        "kernel",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap()
    ])
    .status
    .success());
    // Another profile than the model's, asked for explicitly (without
    // --profile the model's own is used).
    let o = run(&[
        "enforce",
        "--profile",
        "quixote",
        "-m",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("give --profile kernel"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_bundled_example_runs_with_no_arguments() {
    let o = run(&["--summary", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["events"], 109);
    assert_eq!(s["errors"], 0);
}

#[test]
fn enforcing_over_an_existing_store_seals_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let model = dir.path().join("model");
    let learned = conformance("document-events.jsonl");
    let o = run(&[
        "learn",
        "--store",
        store.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        learned.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // -m on a store that already holds a model is refused.
    let o = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        learned.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds a model"));
    // Without -m, the store's own model is sealed and enforced: an event it
    // never saw (the first line of the conformance corpus) is a forensics point.
    let changed = dir.path().join("changed.jsonl");
    let first = std::fs::read_to_string(conformance("events.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(&changed, format!("{first}\n")).unwrap();
    let o = run(&[
        "enforce",
        "--store",
        store.to_str().unwrap(),
        "--summary",
        "json",
        changed.to_str().unwrap(),
    ]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["sealed"], true);
    assert_eq!(s["forensics"], 1);
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn a_learn_stopped_by_a_bad_line_keeps_the_model_and_writes_the_partial_one_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let clean = real_kernel("trajectory.jsonl");
    let out = run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        clean.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = std::fs::read(&model).unwrap();

    // The same events with a bad line in the middle.
    let text = std::fs::read_to_string(&clean).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(10, "{\"event\": {\"type\": \"file_open\"");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let out = run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.jsonl:11:"), "{stderr}");
    assert!(stderr.contains("is unchanged"), "{stderr}");
    assert_eq!(std::fs::read(&model).unwrap(), good, "the good model stays");
    let partial = std::fs::read_to_string(dir.path().join("model.partial")).unwrap();
    assert!(partial.ends_with("end\n"), "{partial}");
    assert!(partial.lines().filter(|l| l.starts_with("state ")).count() <= 10);
}

#[test]
fn learn_refuses_to_write_over_its_own_input() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::copy(real_kernel("trajectory.jsonl"), &events).unwrap();
    let before = std::fs::read(&events).unwrap();
    let out = run(&[
        "learn",
        "-o",
        events.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is the input"), "{stderr}");
    assert_eq!(std::fs::read(&events).unwrap(), before);
    // `run --input X -o X` likewise.
    let out = run(&[
        "run",
        "--input",
        events.to_str().unwrap(),
        "-o",
        events.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&events).unwrap(), before);
}

#[test]
fn learning_from_no_event_writes_nothing_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let model = dir.path().join("model");
    let out = run(&[
        "learn",
        "-o",
        &path(dir.path(), "model"),
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-empty"));
    assert!(!model.exists());
    ok(&[
        "learn",
        "--allow-empty",
        "-o",
        model.to_str().unwrap(),
        empty.to_str().unwrap(),
    ]);
    assert!(model.exists());
}

#[test]
fn generating_a_key_never_replaces_one_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "a key someone keeps\n").unwrap();
    let out = run(&["sign", "-G", "-k", key.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "a key someone keeps\n"
    );
    ok(&[
        "sign",
        "--generate",
        "--force",
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
}

#[test]
fn a_model_written_to_a_device_goes_into_it_and_leaves_the_device_alone() {
    let events = conformance("document-events.jsonl");
    ok(&["learn", "-o", "/dev/null", events.to_str().unwrap()]);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    let out = ok(&["learn", "-o", "-", events.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\nstate "));
}

#[test]
fn a_group_writable_model_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let events = conformance("document-events.jsonl");
    ok(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = run(&[
        "enforce",
        "-m",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("group-writable"));
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let events = conformance("events.jsonl");
    let mut child = bin()
        .args(["coefficients", events.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line's worth, then close the pipe: the rest hits EPIPE.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 65];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_kill_during_output_leaves_the_old_model_or_the_new_one_whole() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let out = ok(&["generate", "--events", "50000", "--new-fraction", "0.5"]);
    std::fs::write(&events, &out.stdout).unwrap();
    let model = dir.path().join("model");
    let old = "# profile quixote\nseal\nend\n";
    std::fs::write(&model, old).unwrap();
    for i in 0..8u64 {
        let mut child = bin()
            .args([
                "learn",
                "-o",
                model.to_str().unwrap(),
                events.to_str().unwrap(),
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 * i));
        let _ = child.kill();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&model).unwrap();
        if text != old {
            assert!(
                text.starts_with("# profile quixote\n") && text.ends_with("\nseal\nend\n"),
                "a torn model after a kill at {} ms",
                40 * i
            );
            std::fs::write(&model, old).unwrap();
        }
    }
    // The temporaries of killed writers are gone after the next write.
    ok(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn the_exit_status_rule_is_in_the_help() {
    let out = ok(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("0 success, 1 bad input, 2 failure, 3 violations"),
        "{help}"
    );
}

#[test]
fn a_model_brings_its_own_profile_to_enforce_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("kernel.model");
    let events = real_kernel("export-records.jsonl");
    let ev = events.to_str().unwrap();
    ok(&[
        "learn",
        "--profile",
        "kernel",
        "-o",
        model.to_str().unwrap(),
        ev,
    ]);
    // No --profile: the model's `# profile kernel` is used.
    let out = ok(&[
        "enforce",
        "--summary",
        "json",
        "-m",
        model.to_str().unwrap(),
        ev,
    ]);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["profile"], "kernel");
    assert_eq!(s["violations"], 0);
}

#[test]
fn a_run_that_writes_nothing_else_prints_its_summary() {
    let events = real_kernel("export-records.jsonl");
    let out = ok(&["run", "--input", events.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("events 109 points "), "{err}");
}
