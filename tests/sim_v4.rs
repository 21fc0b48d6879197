//! `tsem-stream sim --kernel v4`: the simulator on a FUSE tree that knows
//! which thread calls, and refuses what the v4 kernel refuses
//! (docs/kernel-interface.md K6): `run -P` passes it, and each wrong process structure fails the way
//! it fails on the kernel.
//!
//! The tests need FUSE (`/dev/fuse`, root for the mount): without it they
//! are skipped with a message, except under CI (`CI` set), where they fail.
//!
//! Their helper "TMA" is this test process: it starts a shell C that writes
//! `external key=…` (C's namespace becomes the new one). The simulator takes
//! verdicts only from C's parent's main thread (the kernel: from the exact
//! thread that forked C), which is never a test thread here.

mod common;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The namespace key the tests give.
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The state of the conformance events, learned (as in tests/process_mode.rs).
const LEARNED_STATE: &str = "d4196e89625fa29e068cb2c5cf51da65b4efc9b87f8cf209b725f2fe41cf5f51";

/// The measurement once all 3000 conformance events are modeled.
const MEASUREMENT: &str = "2b72eefc576a9d7184d777c7d692823d43b76190c0f8e36d4cd2dba828e20c84";

const EINVAL: i32 = 22;
const ENODATA: i32 = 61;
const EACCES: i32 = 13;
const EOPNOTSUPP: i32 = 95;

/// True when this machine can mount FUSE; otherwise says so and the test
/// returns early (under CI it fails instead).
fn fuse_available() -> bool {
    let device = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    let kernel = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("fuse"))
    });
    // The simulator mounts directly (no fusermount): that needs root.
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
            .unwrap_or(false)
    });
    if device && kernel && root {
        return true;
    }
    let why = format!(
        "FUSE is not available (/dev/fuse usable: {device}, fuse in /proc/filesystems: \
         {kernel}, root: {root})"
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{why}: CI must run the v4 simulator tests"
    );
    eprintln!("skipping: {why}");
    false
}

fn is_mounted(root: &Path) -> bool {
    let want = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
    })
}

/// `sim --kernel v4` on a temporary tree. Dropping it kills the simulator
/// and detaches its mount if the test failed before the simulator ended.
struct Sim {
    dir: tempfile::TempDir,
    root: PathBuf,
    child: Option<Child>,
}

impl Sim {
    fn start(events: &Path, extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tsem");
        let mut child = bin()
            .args(["sim", "--kernel", "v4", "--tsem-root"])
            .arg(&root)
            .arg("--events")
            .arg(events)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sim");
        wait_for("the simulator's mount", || {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("the simulator ended ({status}): {err}");
            }
            is_mounted(&root)
        });
        Sim {
            dir,
            root,
            child: Some(child),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A file in the test's temporary directory (beside the mount).
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits for the simulator; returns its exit code, report and stderr.
    fn finish(mut self) -> (Option<i32>, Value, String) {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no sim report ({e}): {stderr}"));
        assert!(!is_mounted(&self.root), "the simulator detaches its tree");
        (out.status.code(), report, stderr)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.root) {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}

/// A shell C that writes `external key=KEY` to `control` (its namespace
/// becomes the new one), prints `id` as it reads it, runs `body`, and
/// waits until the file `stop` exists.
struct Helper {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stop: PathBuf,
}

impl Helper {
    fn start(sim: &Sim, body: &str) -> Helper {
        let stop = sim.file("stop");
        let script = format!(
            "printf 'external key={KEY}\\n' > '{root}/control' || exit 9\n\
             cat '{root}/id'\n\
             {body}\n\
             while [ ! -e '{stop}' ]; do sleep 0.02; done",
            root = sim.root.display(),
            stop = stop.display(),
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut h = Helper {
            child,
            stdout,
            stop,
        };
        // `id` as C reads it: C is in the new namespace.
        assert_eq!(h.line(), "1\n");
        h
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l
    }

    /// Lets C end (the namespace ends with it).
    fn stop(mut self) {
        std::fs::write(&self.stop, "").unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, "");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first `n` lines of the conformance events.
fn first_events(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(conformance("events.jsonl")).unwrap();
    let path = dir.join(format!("events-{n}.jsonl"));
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(&path, lines.join("\n") + if n > 0 { "\n" } else { "" }).unwrap();
    path
}

/// One `write()` of `text` to `control`, as a TMA does; the errno, if any.
fn control_write(sim: &Sim, text: &str) -> Option<i32> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(sim.path("control"))
        .unwrap();
    match f.write(text.as_bytes()) {
        Ok(n) => {
            assert_eq!(n, text.len());
            None
        }
        Err(e) => Some(e.raw_os_error().unwrap()),
    }
}

fn refused(report: &Value) -> &Value {
    &report["v4"]["refused"]
}

/// Every refusal counter zero except those named.
fn assert_refused(report: &Value, nonzero: &[(&str, u64)]) {
    let all = refused(report).as_object().unwrap();
    for (name, value) in all {
        let want = nonzero
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v);
        if name == "total" {
            let sum: u64 = nonzero.iter().map(|(_, v)| v).sum();
            assert_eq!(value, sum, "refused.total");
        } else {
            assert_eq!(value, want, "refused.{name}");
        }
    }
}

fn examples(report: &Value) -> Vec<String> {
    report["v4"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// `run -P` against the v4 simulator, the workload waiting for `stop`.
fn start_run(sim: &Sim, name: &str, args: &[&str]) -> Child {
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; exit 4",
        sim.file("stop").display()
    );
    bin()
        .args(["run", "-P", "-w", name, "--tsem-root"])
        .arg(&sim.root)
        .arg("--mgmt-dir")
        .arg(sim.file("mgmt"))
        .args(args)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run -P")
}

fn console(sim: &Sim, name: &str, args: &[&str]) -> Vec<String> {
    let out = bin()
        .args(["console", "--mgmt-dir"])
        .arg(sim.file("mgmt"))
        .args(["-w", name])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("console");
    stdout_lines(&out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn process_mode_learns_under_the_v4_rules() {
    if !fuse_available() {
        return;
    }
    let sim = Sim::start(&conformance("events.jsonl"), &[]);
    let model = sim.file("model");
    // The default protocol (auto): `external key=…` first, which v4 takes.
    let run = start_run(
        &sim,
        "learner",
        &["-o", model.to_str().unwrap(), "--key", KEY],
    );
    let run_pid = run.id();
    wait_for("every event to be modeled", || {
        console(&sim, "learner", &["-S"]) == [LEARNED_STATE]
    });
    assert_eq!(console(&sim, "learner", &["--measurement"]), [MEASUREMENT]);
    assert_eq!(console(&sim, "learner", &["-T", "-c"]).len(), 2212);
    std::fs::write(sim.file("stop"), "").unwrap();
    let run = run.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    assert!(std::fs::read_to_string(&model)
        .unwrap()
        .ends_with("seal\nend\n"));
    let (code, report, err) = sim.finish();
    assert_eq!(code, Some(0), "{report}\n{err}");
    assert_eq!(report["events"], 3000);
    assert_eq!(report["trusted"], 3000);
    assert_eq!(report["untrusted"], 0);
    assert_eq!(report["missing"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["unexpected"], 0);
    assert_eq!(report["timeouts"], 0);
    assert_eq!(
        report["commands"],
        json!([format!("external digest=sha256 key={KEY}")])
    );
    let v4 = &report["v4"];
    assert_eq!(v4["namespace"], 1);
    // The orchestrator's main thread forked the monitor, which created the
    // namespace: verdicts came from that thread only.
    assert_eq!(v4["tma_tid"], run_pid);
    assert_ne!(v4["creator_tid"], run_pid);
    assert_eq!(v4["enforced"], false);
    // The aggregate and every event, read inside the namespace.
    assert_eq!(v4["records_read"], 3001);
    assert_eq!(v4["unsent"], 0);
    assert_refused(&report, &[]);
    assert_eq!(examples(&report), Vec::<String>::new());
}

#[test]
fn process_mode_enforces_from_inside_the_namespace() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    let events = conformance("events.jsonl");
    let learned = run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(learned.status.success(), "{}", stderr(&learned));
    let sim = Sim::start(&events, &[]);
    let run = start_run(
        &sim,
        "enforcer",
        &["-m", model.to_str().unwrap(), "-e", "--key", KEY],
    );
    // The model's points (and its measurement) are there from the start,
    // their counts from 0: they add up to 3000 once every event is modeled.
    wait_for("every event to be modeled", || {
        let counts = console(&sim, "enforcer", &["-T", "-c"]);
        counts
            .iter()
            .filter_map(|c| c.parse::<u64>().ok())
            .sum::<u64>()
            == 3000
    });
    std::fs::write(sim.file("stop"), "").unwrap();
    let run = run.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    let (code, report, err) = sim.finish();
    assert_eq!(code, Some(0), "{report}\n{err}");
    assert_eq!(report["trusted"], 3000);
    assert_eq!(report["missing"], 0);
    // The monitor wrote `enforce` in the namespace: the workload is enforced.
    assert_eq!(
        report["commands"],
        json!([format!("external digest=sha256 key={KEY}"), "enforce"])
    );
    assert_eq!(report["v4"]["enforced"], true);
    assert_refused(&report, &[]);
}

#[test]
fn a_verdict_from_another_thread_is_refused_and_the_task_stays_asleep() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sim = Sim::start(&first_events(work.path(), 3), &["--verdict-timeout", "1"]);
    // C forwards every record (a `dd` per record: each read at offset 0
    // dequeues one), like a monitor in the namespace should.
    let export = sim.path("external_tma/1");
    let mut c = Helper::start(
        &sim,
        &format!(
            "while [ ! -e '{stop}' ]; do dd if='{export}' bs=65536 count=1 status=none \
             2>/dev/null || sleep 0.02; done",
            stop = sim.file("stop").display(),
            export = export.display()
        ),
    );
    let records: Vec<Value> = (0..4)
        .map(|_| serde_json::from_str(&c.line()).unwrap())
        .collect();
    assert_eq!(records[0]["export"]["type"], "aggregate");
    let pids: Vec<u64> = records[1..]
        .iter()
        .map(|r| r["event"]["pid"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(pids, [1001, 1002, 1003]);
    // The verdicts, right key, from a thread that did not fork C.
    let control = sim.path("control");
    let errors = std::thread::spawn(move || {
        let mut f = OpenOptions::new().write(true).open(control).unwrap();
        pids.iter()
            .map(|p| {
                let cmd = format!("trusted pid={p} key={KEY}\n");
                f.write(cmd.as_bytes()).unwrap_err().raw_os_error()
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(errors, [Some(EINVAL); 3]);
    let c_pid = c.child.id();
    c.stop();
    let (code, report, err) = sim.finish();
    assert_eq!(code, Some(1));
    // The kernel's log line, once per refused verdict.
    assert_eq!(
        err.matches("tsem: Invalid process release request.\n")
            .count(),
        3
    );
    assert_eq!(report["events"], 3);
    assert_eq!(report["trusted"], 0);
    assert_eq!(report["missing"], 3);
    assert_eq!(report["timeouts"], 3);
    let v4 = &report["v4"];
    assert_eq!(v4["records_read"], 4);
    assert_eq!(v4["tma_tid"], std::process::id());
    assert_eq!(v4["creator_tid"], c_pid);
    assert_refused(&report, &[("verdicts_wrong_thread", 3)]);
    let ex = examples(&report);
    assert_eq!(ex.len(), 3);
    assert!(
        ex[0].starts_with(&format!(
            "verdict refused, wrong thread (EINVAL): \"trusted pid=1001 key=…\": only thread {} \
             (the parent of the namespace's creator {}) may release its tasks (thread ",
            std::process::id(),
            c_pid
        )),
        "{}",
        ex[0]
    );
}

#[test]
fn an_export_read_from_the_root_namespace_gets_enodata() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sim = Sim::start(&first_events(work.path(), 3), &["--verdict-timeout", "1"]);
    let c = Helper::start(&sim, "");
    // This process is in the root namespace: `id` says 0, the export file
    // exists for everyone, and every read of it finds nothing.
    assert_eq!(std::fs::read_to_string(sim.path("id")).unwrap(), "0\n");
    let mut export = std::fs::File::open(sim.path("external_tma/1")).unwrap();
    let mut buf = vec![0u8; 65536];
    let e = export.read(&mut buf).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENODATA));
    drop(export);
    c.stop();
    let (code, report, _) = sim.finish();
    assert_eq!(code, Some(1));
    // Nobody inside read: the events were never seen, their tasks sleep.
    assert_eq!(report["events"], 3);
    assert_eq!(report["verdicts"], 0);
    assert_eq!(report["missing"], 3);
    assert_eq!(report["v4"]["records_read"], 0);
    assert_refused(&report, &[("export_reads_outside", 1)]);
    let ex = examples(&report);
    assert_eq!(ex.len(), 1);
    assert!(
        ex[0].starts_with(
            "export read from outside the namespace (ENODATA): a reader in the root \
             namespace never gets a record (thread "
        ),
        "{}",
        ex[0]
    );
}

#[test]
fn an_orchestrator_reading_from_the_root_namespace_gets_no_record() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sim = Sim::start(&first_events(work.path(), 3), &["--verdict-timeout", "1"]);
    let c = Helper::start(&sim, "");
    // The 2025 structure on a v4 kernel: the TMA reads the export file itself.
    let run = bin()
        .args(["run", "--tsem-root"])
        .arg(&sim.root)
        .args([
            "--namespace",
            "1",
            "--control-protocol",
            "key",
            "--key",
            KEY,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Until the namespace's events have timed out (1 s) and a little more.
    std::thread::sleep(Duration::from_millis(1500));
    c.stop();
    let sim_root = sim.root.clone();
    let (code, report, _) = sim.finish();
    // The reader never got a record; it fails once the simulator has gone
    // (the FUSE connection ends with it: ENOTCONN or ECONNABORTED).
    let run = run.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let export = sim_root.join("external_tma/1");
    assert!(
        stderr(&run).starts_with(&format!("tsem-stream: {}: read error: ", export.display())),
        "{}",
        stderr(&run)
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["verdicts"], 0);
    assert_eq!(report["missing"], 3);
    assert_eq!(report["v4"]["records_read"], 0);
    // Like the kernel's export_poll, the simulator's poll returns at once
    // for an outsider, so the reader retries in a loop: many refusals.
    let outside = refused(&report)["export_reads_outside"].as_u64().unwrap();
    assert!(outside >= 2, "{outside}");
    assert_refused(&report, &[("export_reads_outside", outside)]);
}

#[test]
fn enforce_from_the_root_namespace_leaves_the_workload_unenforced() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sim = Sim::start(&first_events(work.path(), 0), &[]);
    let go = sim.file("go");
    let mut c = Helper::start(
        &sim,
        &format!(
            "while [ ! -e '{go}' ]; do sleep 0.02; done\n\
             printf 'enforce\\n' > '{root}/control' || exit 8\n\
             echo enforced",
            go = go.display(),
            root = sim.root.display()
        ),
    );
    // Accepted, as the kernel does, but for the root namespace.
    assert_eq!(control_write(&sim, "enforce\n"), None);
    std::fs::write(&go, "").unwrap();
    assert_eq!(c.line(), "enforced\n");
    c.stop();
    let (code, report, _) = sim.finish();
    assert_eq!(code, Some(1));
    // Only C's `enforce` reached the namespace.
    assert_eq!(
        report["commands"],
        json!([format!("external key={KEY}"), "enforce"])
    );
    assert_eq!(report["v4"]["enforced"], true);
    assert_refused(&report, &[("enforce_from_root", 1)]);
    let ex = examples(&report);
    assert_eq!(ex.len(), 1);
    assert!(
        ex[0].starts_with(
            "enforce from the root namespace (applied there, not to the workload): the \
             workload's namespace stays unenforced (thread "
        ),
        "{}",
        ex[0]
    );
}

#[test]
fn external_without_a_key_is_refused() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sim = Sim::start(&first_events(work.path(), 0), &[]);
    // The 2025 orchestrator's plain `external`: the namespace is never made.
    let plain = bin()
        .args(["run", "-P", "-w", "plain", "--control-protocol", "tnum"])
        .arg("--tsem-root")
        .arg(&sim.root)
        .arg("--mgmt-dir")
        .arg(sim.file("mgmt"))
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(2));
    assert!(
        stderr(&plain).contains(
            "creating the modeling namespace: the kernel refused \"external digest=sha256\" \
             (Invalid argument)"
        ),
        "{}",
        stderr(&plain)
    );
    assert_eq!(control_write(&sim, "external\n"), Some(EINVAL));
    assert_eq!(control_write(&sim, "external key=abcd\n"), Some(EINVAL));
    assert_eq!(control_write(&sim, "bogus\n"), Some(EINVAL));
    // open_control: write-only, nothing else.
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(sim.path("control"));
    assert_eq!(rw.unwrap_err().raw_os_error(), Some(EACCES));
    assert_eq!(std::fs::read_to_string(sim.path("id")).unwrap(), "0\n");
    assert!(!sim.path("external_tma/1").exists());
    let c = Helper::start(&sim, "");
    // One namespace is all the simulator plays.
    assert_eq!(
        control_write(&sim, &format!("external key={KEY}\n")),
        Some(EOPNOTSUPP)
    );
    c.stop();
    let (code, report, _) = sim.finish();
    assert_eq!(code, Some(1));
    assert_eq!(report["external"]["command"], format!("external key={KEY}"));
    assert_eq!(report["events"], 0);
    assert_eq!(report["v4"]["records_read"], 0);
    assert_refused(
        &report,
        &[
            ("external_without_key", 2),
            ("external_invalid", 1),
            ("external_repeated", 1),
            ("commands_invalid", 1),
            ("control_open_denied", 1),
        ],
    );
    let ex = examples(&report);
    assert!(
        ex[0].starts_with(
            "external without key (EINVAL): \"external digest=sha256\": a v4 kernel needs \
             key=HEX (64 hex digits) (thread "
        ),
        "{}",
        ex[0]
    );
}
