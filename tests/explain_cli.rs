//! `tsem-stream explain` end to end on the bundled bash story: JSON output,
//! stores and archives as inputs, and the model failures of the story
//! (a model overwritten by a re-learn, pseudonyms appended after learning).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// Learns the example's learning run into `dir/bash.model` and enforces its
/// enforcement run, forensics into `dir/bash.forensics`.
fn story(dir: &Path) -> (String, String) {
    let model = path(dir, "bash.model");
    let forensics = path(dir, "bash.forensics");
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
    (model, forensics)
}

fn json_of(args: &[&str]) -> Value {
    serde_json::from_slice(&ok(args).stdout).expect("explain --json")
}

fn kinds(report: &Value) -> Vec<(Option<u64>, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["line"].as_u64(),
                f["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn json_lists_each_finding_with_its_differences_and_command() {
    let dir = tempfile::tempdir().unwrap();
    let (model, forensics) = story(dir.path());
    let learned = example("bash-learn.jsonl");
    let r = json_of(&[
        "explain",
        "-m",
        &model,
        "--forensics",
        &forensics,
        "--learned",
        &learned,
        "--json",
    ]);
    assert_eq!(r["profile"], "quixote");
    assert_eq!(r["learned_events"], 27);
    assert_eq!(r["forensic_events"], 3);
    assert_eq!(r["errors"], 0);
    assert_eq!(
        kinds(&r),
        vec![
            (Some(1), "never-seen".to_owned()),
            (Some(2), "digest-changed".to_owned()),
            (Some(3), "digest-changed".to_owned()),
            (None, "pseudonym-missing".to_owned()),
        ]
    );
    assert_eq!(r["counts"]["digest-changed"], 2);
    let history = &r["findings"][1];
    assert_eq!(history["event"]["type"], "file_open");
    assert_eq!(history["event"]["process"], "bash");
    assert_eq!(history["event"]["pid"], "2288");
    assert_eq!(history["event"]["target"], "/root/.bash_history");
    assert_eq!(
        history["learned_line"], 15,
        "the read at start-up, line 15 of the learned run"
    );
    assert_eq!(history["differences"].as_array().unwrap().len(), 1);
    assert_eq!(history["differences"][0]["field"], "file.digest");
    assert_eq!(
        history["differences"][0]["learned"],
        "948b402ade828c471fefce85e9ad4d51e3e6fe9402f5bbbbd4d9b2e09f375473"
    );
    assert_eq!(
        history["differences"][0]["now"],
        "1a2c9b2ea66579401853fa48455c8b15b8ab5926065e629a777d51be1bcaa025"
    );
    assert_eq!(history["advice"], "make it a pseudonym");
    assert_eq!(
        history["command"],
        "tsem-stream pseudonym /root/.bash_history"
    );
    assert_eq!(r["findings"][2]["learned_line"], 28, "the append at exit");
    let never = &r["findings"][0];
    assert!(never["summary"]
        .as_str()
        .unwrap()
        .contains("never seen: new behaviour"));
    assert!(never["differences"].as_array().unwrap().is_empty());
    assert!(never["learned_line"].is_null());
    let fix = r["findings"][3]["command"].as_str().unwrap();
    assert_eq!(
        fix,
        format!(
            "tsem-stream model rebuild --from {learned} --pseudonym /root/.bash_history -o {model}"
        )
    );
}

#[test]
fn stores_bring_their_model_forensics_and_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Learn into one store (it keeps the learned descriptions), enforce into
    // another (it keeps the sealed model and the forensics).
    let learned = path(d, "learned");
    let enforced = path(d, "enforced");
    let model = path(d, "bash.model");
    ok(&[
        "learn",
        "--store",
        &learned,
        "-o",
        &model,
        &example("bash-learn.jsonl"),
    ]);
    let out = run(&[
        "enforce",
        "-m",
        &model,
        "--store",
        &enforced,
        &example("bash-enforce.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let r = json_of(&[
        "explain",
        "--store",
        &enforced,
        "--learned",
        &learned,
        "--json",
    ]);
    assert_eq!(r["learned_events"], 25, "one description per learned point");
    assert_eq!(
        kinds(&r),
        vec![
            (Some(1), "never-seen".to_owned()),
            (Some(2), "digest-changed".to_owned()),
            (Some(3), "digest-changed".to_owned()),
            (None, "pseudonym-missing".to_owned()),
        ]
    );
    let text =
        String::from_utf8(ok(&["explain", "--store", &enforced, "--learned", &learned]).stdout)
            .unwrap();
    assert!(
        text.contains(&format!(
            "{enforced}:forensics:2 [digest changed] file_open /root/.bash_history"
        )),
        "{text}"
    );
    let fix = format!(
        "tsem-stream model rebuild --from {learned} --pseudonym /root/.bash_history -o MODEL"
    );
    assert!(text.contains(&fix), "{text}");
    // The suggested rebuild works from the learning store.
    let rebuilt = path(d, "rebuilt.model");
    ok(&[
        "model",
        "rebuild",
        "--from",
        &learned,
        "--pseudonym",
        "/root/.bash_history",
        "--add-forensics",
        &enforced,
        "-o",
        &rebuilt,
    ]);
    let out = run(&["enforce", "-m", &rebuilt, &example("bash-enforce.jsonl")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_archive_is_a_learned_run_and_a_model_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (model, forensics) = story(dir.path());
    let archive = path(dir.path(), "archive");
    ok(&["archive", "write", &archive, &example("bash-learn.jsonl")]);
    let r = json_of(&[
        "explain",
        "-m",
        &model,
        "--forensics",
        &forensics,
        "--learned",
        &archive,
        "--json",
    ]);
    assert_eq!(r["learned_events"], 27);
    assert_eq!(r["counts"]["digest-changed"], 2);
    assert_eq!(r["counts"]["never-seen"], 1);

    let out = run(&[
        "explain",
        "-m",
        &model,
        "--forensics",
        &forensics,
        "--learned",
        &model,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this is a model file"));
}

#[test]
fn without_the_learned_run_it_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (model, forensics) = story(dir.path());
    let r = json_of(&["explain", "-m", &model, "--forensics", &forensics, "--json"]);
    assert_eq!(r["counts"]["no-reference"], 3);
    assert!(r["findings"][0]["advice"]
        .as_str()
        .unwrap()
        .contains("--learned"));
}

#[test]
fn a_relearn_that_overwrote_the_model_is_named() {
    // The story: the user re-learned from the enforcement run into the same
    // file, then enforced the original session again.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = path(d, "bash.model");
    let forensics = path(d, "bash.forensics");
    ok(&["learn", "-o", &model, &example("bash-enforce.jsonl")]);
    let out = run(&[
        "enforce",
        "-m",
        &model,
        "--forensics",
        &forensics,
        &example("bash-learn.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let learned = example("bash-learn.jsonl");
    let r = json_of(&[
        "explain",
        "-m",
        &model,
        "--forensics",
        &forensics,
        "--learned",
        &learned,
        "--json",
    ]);
    let found = kinds(&r);
    assert!(
        found
            .iter()
            .filter(|(l, _)| l.is_some())
            .all(|(_, k)| k == "model-overwritten"),
        "{found:?}"
    );
    let m = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["line"].is_null())
        .unwrap();
    assert_eq!(m["kind"], "model-overwritten");
    assert!(m["summary"]
        .as_str()
        .unwrap()
        .starts_with("2 of 25 distinct learned events are not in"));
    assert_eq!(
        m["command"],
        format!("tsem-stream model rebuild --from {learned} -o {model}")
    );
}

#[test]
fn pseudonyms_appended_after_learning_leave_the_model_stale() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = path(d, "bash.model");
    let forensics = path(d, "bash.forensics");
    ok(&["learn", "-o", &model, &example("bash-learn.jsonl")]);
    // What the story's user did: generate the pseudonym and put it into the model.
    let line = String::from_utf8(ok(&["pseudonym", "/root/.bash_history"]).stdout).unwrap();
    let text = std::fs::read_to_string(&model)
        .unwrap()
        .replace("seal\n", &format!("{line}seal\n"));
    std::fs::write(&model, text).unwrap();
    let out = run(&[
        "enforce",
        "-m",
        &model,
        "--forensics",
        &forensics,
        &example("bash-enforce.jsonl"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the appended pseudonym changes nothing"
    );
    let learned = example("bash-learn.jsonl");
    let r = json_of(&[
        "explain",
        "-m",
        &model,
        "--forensics",
        &forensics,
        "--learned",
        &learned,
        "--json",
    ]);
    assert_eq!(
        kinds(&r),
        vec![
            (Some(1), "never-seen".to_owned()),
            (Some(2), "model-stale".to_owned()),
            (Some(3), "model-stale".to_owned()),
            (None, "model-stale".to_owned()),
        ]
    );
    assert_eq!(
        r["findings"][1]["command"],
        format!("tsem-stream model rebuild --from {learned} --pseudonyms {model} -o {model}")
    );
    // The suggested rebuild fixes it.
    ok(&[
        "model",
        "rebuild",
        "--from",
        &learned,
        "--pseudonyms",
        &model,
        "-o",
        &model,
    ]);
    let out = run(&["enforce", "-m", &model, &example("bash-enforce.jsonl")]);
    let denied: Vec<String> = stdout_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("untrusted"))
        .collect();
    assert_eq!(
        denied.len(),
        1,
        "only /etc/locale.alias is left: {denied:?}"
    );
}

#[test]
fn kernel_profile_models_are_explained_under_their_profile() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = path(d, "bash.model");
    let forensics = path(d, "bash.forensics");
    ok(&[
        "learn",
        "--profile",
        "kernel",
        "-o",
        &model,
        &example("bash-learn.jsonl"),
    ]);
    let out = run(&[
        "enforce",
        "--profile",
        "kernel",
        "-m",
        &model,
        "--forensics",
        &forensics,
        &example("bash-enforce.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let learned = example("bash-learn.jsonl");
    let r = json_of(&[
        "explain",
        "-m",
        &model,
        "--forensics",
        &forensics,
        "--learned",
        &learned,
        "--json",
    ]);
    assert_eq!(r["profile"], "kernel");
    assert_eq!(r["counts"]["digest-changed"], 2);
    assert!(r["findings"][3]["command"]
        .as_str()
        .unwrap()
        .contains(" --profile kernel --pseudonym /root/.bash_history "));
    let out = run(&[
        "explain",
        "--profile",
        "quixote",
        "-m",
        &model,
        "--forensics",
        &forensics,
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a kernel model is not read as quixote"
    );
}
