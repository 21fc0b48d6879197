//! The README's "When enforcement fails" walkthrough, command for command:
//! learn a root bash session, enforce it on a later session (denials),
//! explain the forensics, rebuild the model with the pseudonym (and the
//! reviewed new event), enforce again (no denials).
//!
//! The commands run through `sh -c` exactly as the README prints them, in a
//! scratch directory holding a copy of the bundled example trajectories.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The README's commands, in order.
const LEARN: &str = "tsem-stream learn -o bash.model examples/bash-learn.jsonl";
const ENFORCE: &str = "tsem-stream enforce -m bash.model --forensics bash.forensics examples/bash-enforce.jsonl > verdicts.txt; echo \"exit status $?\"";
const DENIALS: &str = "grep untrusted verdicts.txt";
const EXPLAIN: &str = "tsem-stream explain -m bash.model --forensics bash.forensics --learned examples/bash-learn.jsonl";
const REBUILD: &str = "tsem-stream model rebuild --from examples/bash-learn.jsonl --pseudonym /root/.bash_history --add-forensics bash.forensics -o bash.model";
const SHOW_PSEUDONYM: &str = "grep pseudonym bash.model";
const ENFORCE_AGAIN: &str =
    "tsem-stream enforce -m bash.model examples/bash-enforce.jsonl > verdicts.txt; echo \"exit status $?\"";
const COUNT_DENIALS: &str = "grep -c untrusted verdicts.txt";

/// A scratch directory with `examples/bash-{learn,enforce}.jsonl`.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = dir.path().join("examples");
    std::fs::create_dir(&examples).expect("mkdir");
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    for f in ["bash-learn.jsonl", "bash-enforce.jsonl"] {
        std::fs::copy(repo.join(f), examples.join(f)).expect("copy example");
    }
    dir
}

/// Runs one README command line in `dir` with the built binary first on PATH.
fn sh(dir: &Path, line: &str) -> Output {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tsem-stream"));
    let bin_dir = bin.parent().expect("binary directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .expect("run sh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn learn_enforce_explain_rebuild_enforce() {
    let dir = scratch();
    let d = dir.path();

    // 1. Learn.
    let out = sh(d, LEARN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model = std::fs::read_to_string(d.join("bash.model")).expect("model written");
    assert!(!model.contains("pseudonym"), "learned without pseudonyms");

    // 2. Enforce a later session: three denials, exit status 3.
    let out = sh(d, ENFORCE);
    assert_eq!(
        text(&out.stdout),
        "exit status 3\n",
        "{}",
        text(&out.stderr)
    );
    let out = sh(d, DENIALS);
    let denied: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    for (line, want) in denied.iter().zip(["line=15 ", "line=16 ", "line=29 "]) {
        assert!(
            line.starts_with(&format!("untrusted {want}pid=2288 ")),
            "{line}"
        );
    }
    let forensics = common::lines(&d.join("bash.forensics"));
    assert_eq!(forensics.len(), 3);

    // 3. Explain: .bash_history changed (pseudonym), /etc/locale.alias is new.
    let out = sh(d, EXPLAIN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let explained = text(&out.stdout);
    for want in [
        "bash.forensics:1 [never seen] file_open /etc/locale.alias by bash: never seen: new behaviour",
        "  -> a pseudonym does not help here; review it, and if it is expected, accept it into the model: ",
        "bash.forensics:2 [digest changed] file_open /root/.bash_history by bash: learned with digest 948b402a…, now 1a2c9b2e…; the file's content changes between runs (bash writes it)",
        "  -> make it a pseudonym: tsem-stream pseudonym /root/.bash_history\n",
        "bash.forensics:3 [digest changed] file_open /root/.bash_history by bash",
        "model [pseudonym missing] bash.model has no pseudonym for /root/.bash_history",
        "  -> rebuild the model with the pseudonym: tsem-stream model rebuild --from examples/bash-learn.jsonl --pseudonym /root/.bash_history -o bash.model\n",
        "3 forensic events against 27 learned events: 2 digest changed, 1 never seen, 1 pseudonym missing.",
    ] {
        assert!(explained.contains(want), "missing {want:?} in:\n{explained}");
    }
    // The command the explanation suggests for the reviewed new event is the next step.
    assert!(explained.contains(&format!(": {REBUILD}\n")), "{explained}");

    // 4. Rebuild with the pseudonym, accepting the reviewed forensics.
    let out = sh(d, REBUILD);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "rebuilt bash.model (profile quixote, 1 pseudonym): 25 points from 27 events of \
         examples/bash-learn.jsonl; 1 point added from 3 forensic events of bash.forensics\n"
    );
    let out = sh(d, SHOW_PSEUDONYM);
    let expected = sh(d, "tsem-stream pseudonym /root/.bash_history");
    assert_eq!(text(&out.stdout), text(&expected.stdout));
    assert!(text(&out.stdout).starts_with("pseudonym "));

    // 5. Enforce again: nothing denied.
    let out = sh(d, ENFORCE_AGAIN);
    assert_eq!(
        text(&out.stdout),
        "exit status 0\n",
        "{}",
        text(&out.stderr)
    );
    let out = sh(d, COUNT_DENIALS);
    assert_eq!(text(&out.stdout), "0\n");
}

#[test]
fn the_pseudonym_alone_leaves_only_the_new_event() {
    // Why the walkthrough also accepts the forensics: a pseudonym fixes the
    // changing history file, not /etc/locale.alias, which bash never opened
    // while the model was learned.
    let dir = scratch();
    let d = dir.path();
    assert!(sh(d, LEARN).status.success());
    assert!(sh(d, ENFORCE).status.success());
    let out = sh(
        d,
        "tsem-stream model rebuild --from examples/bash-learn.jsonl --pseudonym /root/.bash_history -o bash.model",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sh(d, ENFORCE);
    assert_eq!(text(&out.stdout), "exit status 3\n");
    let out = sh(d, DENIALS);
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert!(text(&out.stdout).starts_with("untrusted line=15 "));
    let out = sh(d, EXPLAIN);
    let explained = text(&out.stdout);
    assert!(
        explained.contains("bash.forensics:1 [never seen] file_open /etc/locale.alias by bash"),
        "{explained}"
    );
    assert!(!explained.contains("digest changed"), "{explained}");
}
