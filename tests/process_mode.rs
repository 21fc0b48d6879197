//! `tsem-stream run -P` end to end, without a TSEM kernel: `tsem-stream sim
//! --wait-external` plays the kernel (it creates the namespace when the
//! orchestrator's child writes `external`, then streams a trajectory as the
//! namespace's events), `tsem-stream console` queries the running workload.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::*;
use serde_json::Value;

/// The namespace key given to the v4 structure, so that the simulator's
/// report can be checked exactly.
const SIM_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const LEARNED_STATE: &str = "d4196e89625fa29e068cb2c5cf51da65b4efc9b87f8cf209b725f2fe41cf5f51";

/// A simulator and an orchestrator running one workload.
struct Session {
    _dir: tempfile::TempDir,
    base: PathBuf,
    mgmt: PathBuf,
    name: String,
    stop: PathBuf,
    sim: Child,
    run: Child,
}

/// Shell code that waits for a stop file.
fn waiting_script(stop: &Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.02; done", stop.display())
}

impl Session {
    fn start(name: &str, events: &Path, run_args: &[&str], script: Option<&str>) -> Session {
        Session::start_with(name, events, run_args, script, &[])
    }

    /// Like [`Session::start`], with more options for the simulator.
    fn start_with(
        name: &str,
        events: &Path,
        run_args: &[&str],
        script: Option<&str>,
        sim_args: &[&str],
    ) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_owned();
        let root = base.join("tsem");
        let mgmt = base.join("mgmt");
        let stop = base.join("stop");
        let sim = bin()
            .args(["sim", "--wait-external", "--tsem-root"])
            .arg(&root)
            .arg("--events")
            .arg(events)
            .args(sim_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sim");
        wait_for("the simulator's tree", || root.join("control").exists());
        // By default the workload waits for the stop file, then exits with status 4.
        let script = script.map_or_else(|| waiting_script(&stop) + "; exit 4", str::to_owned);
        let mut run = bin()
            .args(["run", "-P", "-w", name, "--tsem-root"])
            .arg(&root)
            .arg("--mgmt-dir")
            .arg(&mgmt)
            .args(run_args)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn run -P");
        let socket = mgmt.join(name);
        // A workload that ends at once may take its socket with it before
        // this loop looks (the socket goes as soon as the run ends).
        wait_for("the management socket", || {
            socket.exists() || matches!(run.try_wait(), Ok(Some(_)))
        });
        Session {
            _dir: dir,
            base,
            mgmt,
            name: name.to_owned(),
            stop,
            sim,
            run,
        }
    }

    fn console(&self, args: &[&str]) -> Output {
        bin()
            .args(["console", "--mgmt-dir"])
            .arg(&self.mgmt)
            .args(["-w", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("console")
    }

    /// Console stdout as lines; the command must succeed.
    fn lines(&self, args: &[&str]) -> Vec<String> {
        let out = self.console(args);
        assert!(
            out.status.success(),
            "console {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout_lines(&out)
    }

    /// Lets the workload exit; returns the orchestrator's output and the sim report.
    fn finish(self) -> (Output, Value) {
        std::fs::write(&self.stop, "").unwrap();
        self.wait()
    }

    fn wait(self) -> (Output, Value) {
        let (run, sim) = self.wait_both();
        assert!(
            sim.status.success(),
            "sim failed: {}\n{}",
            String::from_utf8_lossy(&sim.stdout),
            String::from_utf8_lossy(&sim.stderr)
        );
        let report = serde_json::from_slice(&sim.stdout).expect("sim report");
        (run, report)
    }

    /// The outputs of the orchestrator and of the simulator, whatever they did.
    fn wait_both(self) -> (Output, Output) {
        let run = self.run.wait_with_output().expect("run -P");
        let sim = self.sim.wait_with_output().expect("sim");
        (run, sim)
    }

    /// Waits until the model holds `n` valid points (every event of a small
    /// file was sent and modeled: the simulator has nothing left to send).
    fn wait_points(&self, n: usize) {
        wait_for("the events to be modeled", || {
            self.lines(&["-T", "-c"]).len() == n
        });
    }
}

/// Every 50th file_open of the conformance events with another digest.
fn changed_events(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(conformance("events.jsonl")).unwrap();
    let mut seen = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains("\"type\": \"file_open\"") {
                seen += 1;
                if seen % 50 == 0 {
                    if let Some(at) = l.find("\"digest\": \"") {
                        let mut m = l.to_owned();
                        m.replace_range(at + 11..at + 19, "deadbeef");
                        return m;
                    }
                }
            }
            l.to_owned()
        })
        .collect();
    let path = dir.join("changed.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_learned_workload_is_queried_live_then_enforced() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    let events = conformance("events.jsonl");

    // Learning: the workload runs until the test lets it go. The simulator
    // takes `external key=…`, so the default (auto) builds the v4 structure:
    // a monitor forwards the records, the forking thread answers.
    let s = Session::start(
        "learner",
        &events,
        &[
            "--workers",
            "2",
            "-o",
            model.to_str().unwrap(),
            "--key",
            SIM_KEY,
        ],
        None,
    );
    let listing = bin()
        .args(["console", "--mgmt-dir"])
        .arg(&s.mgmt)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "Workloads:\n\tlearner\n"
    );
    wait_for("every event to be modeled", || {
        s.lines(&["-S"]) == [LEARNED_STATE]
    });
    assert_eq!(
        s.lines(&["--measurement"]),
        ["2b72eefc576a9d7184d777c7d692823d43b76190c0f8e36d4cd2dba828e20c84"]
    );
    let trajectory = s.lines(&["-T"]);
    assert_eq!(trajectory.len(), 2212);
    assert!(trajectory.iter().all(|l| l.contains("\"event\": {")));
    // The live coefficients are those of the same events modeled offline.
    let offline = stdout_lines(&run(&[
        "show",
        "coefficients",
        "--events",
        events.to_str().unwrap(),
        "-p",
    ]));
    assert_eq!(s.lines(&["-T", "-s", "-p"]), offline);
    assert_eq!(s.lines(&["-T", "-c"]).len(), 2212);
    assert!(s.lines(&["-F"]).is_empty());
    let live_model = s.console(&["-M"]).stdout;
    let mgmt = s.mgmt.clone();
    let (run_out, report) = s.finish();
    assert_eq!(
        run_out.status.code(),
        Some(4),
        "the orchestrator exits with the workload's status: {}",
        String::from_utf8_lossy(&run_out.stderr)
    );
    assert!(!mgmt.join("learner").exists(), "socket removed at exit");
    let written = std::fs::read(&model).unwrap();
    assert_eq!(written, live_model);
    assert!(String::from_utf8_lossy(&written).ends_with("seal\nend\n"));
    assert_eq!(report["events"], 3000);
    assert_eq!(report["trusted"], 3000);
    assert_eq!(report["missing"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(
        report["external"]["command"],
        format!("external digest=sha256 key={SIM_KEY}")
    );
    assert_eq!(report["external"]["options"]["digest"], "sha256");

    // Enforcing the learned model over changed behaviour.
    let learned: HashSet<String> = lines(&model)
        .iter()
        .filter_map(|l| l.strip_prefix("state ").map(str::to_owned))
        .collect();
    let changed = changed_events(work.path());
    let now = stdout_lines(&run(&["coefficients", changed.to_str().unwrap()]));
    let expected: Vec<u64> = now
        .iter()
        .enumerate()
        .filter(|(_, c)| !learned.contains(*c))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    let new_points: HashSet<&String> = now.iter().filter(|c| !learned.contains(*c)).collect();
    assert!(expected.len() >= 10);

    let s = Session::start(
        "enforcer",
        &changed,
        &["-m", model.to_str().unwrap(), "-e", "--key", SIM_KEY],
        None,
    );
    wait_for("the forensics", || {
        s.lines(&["-F", "-c"]).len() == new_points.len()
    });
    let forensics = s.lines(&["-F"]);
    assert_eq!(forensics.len(), new_points.len());
    assert!(forensics.iter().all(|l| l.contains("deadbeef")));
    let mut forensic_coefficients: Vec<String> = s.lines(&["-F", "-s"]);
    forensic_coefficients.sort();
    let mut want: Vec<String> = new_points.iter().map(|c| c.to_string()).collect();
    want.sort();
    assert_eq!(forensic_coefficients, want);
    let updated = s.lines(&["-M", "-u"]);
    assert!(updated.contains(&format!("# {} forensic updates", new_points.len())));
    let (run_out, report) = s.finish();
    assert_eq!(
        run_out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&run_out.stderr)
    );
    let untrusted: Vec<u64> = report["untrusted_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(untrusted, expected);
    assert_eq!(report["trusted"], 3000 - expected.len() as u64);
    assert_eq!(report["missing"], 0);
    assert_eq!(
        report["commands"],
        serde_json::json!([format!("external digest=sha256 key={SIM_KEY}"), "enforce"])
    );
}

#[test]
fn the_workload_runs_without_cap_mac_admin_and_its_status_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    let script = format!(
        "grep CapBnd /proc/self/status > '{}'; {}; exit 9",
        caps.display(),
        waiting_script(&dir.path().join("stop"))
    );
    let s = Session::start(
        "caps",
        &conformance("document-events.jsonl"),
        // The 2025 structure: this process's child becomes the workload.
        &[
            "--nsref",
            "current",
            "--cache",
            "32",
            "--control-protocol",
            "tnum",
        ],
        Some(&script),
    );
    s.wait_points(5);
    // Sealing through the console: the model is sealed from now on.
    assert!(s.console(&["--seal"]).status.success());
    std::fs::write(dir.path().join("stop"), "").unwrap();
    let (run_out, report) = s.wait();
    assert_eq!(
        run_out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&run_out.stderr)
    );
    let text = std::fs::read_to_string(&caps).unwrap();
    let hex = text.trim().trim_start_matches("CapBnd:").trim();
    let bounding = u64::from_str_radix(hex, 16).unwrap();
    const CAP_MAC_ADMIN: u32 = 33;
    assert_eq!(bounding & (1 << CAP_MAC_ADMIN), 0, "CapBnd {hex}");
    assert_eq!(
        report["external"]["command"],
        "external nsref=current digest=sha256 cache=32"
    );
}

#[test]
fn an_asynchronous_violation_under_enforcement_ends_the_workload() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    let events = conformance("events.jsonl");
    let out = run(&[
        "learn",
        "-o",
        model.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let changed = changed_events(work.path());
    // Every event asynchronous (atomic context): the first violation ends
    // the workload (kernel-interface.md K5), which would otherwise wait for its stop file.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tsem");
    let sim = bin()
        .args([
            "sim",
            "--wait-external",
            "--sync-fraction",
            "0",
            "--tsem-root",
        ])
        .arg(&root)
        .arg("--events")
        .arg(&changed)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the simulator's tree", || root.join("control").exists());
    let stop = dir.path().join("stop");
    let out = bin()
        .args([
            "run",
            "-P",
            "-w",
            "atomic",
            "-m",
            model.to_str().unwrap(),
            "-e",
        ])
        .arg("--tsem-root")
        .arg(&root)
        .arg("--mgmt-dir")
        .arg(dir.path().join("mgmt"))
        .args(["--", "sh", "-c", &waiting_script(&stop)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let sim = sim.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("security violation in atomic context"));
    // The simulator saw `untrusted` for an asynchronous event (it counts
    // answers to events nobody waits for as unexpected).
    let report: Value = serde_json::from_slice(&sim.stdout).unwrap_or(Value::Null);
    if report != Value::Null {
        assert!(report["unexpected"].as_u64().unwrap() >= 1, "{report}");
    }
}

#[test]
fn signals_sent_to_the_orchestrator_reach_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'exit 7' TERM; touch '{}'; while :; do sleep 0.02; done",
        ready.display()
    );
    let s = Session::start(
        "signals",
        &conformance("document-events.jsonl"),
        &[],
        Some(&script),
    );
    wait_for("the workload's trap", || ready.exists());
    s.wait_points(5);
    let killed = Command::new("kill")
        .args(["-TERM", &s.run.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (run_out, _) = s.wait();
    assert_eq!(
        run_out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&run_out.stderr)
    );
}

#[test]
fn a_command_that_cannot_run_exits_127() {
    // The namespace may end before the simulator opens its export file:
    // then it gives up waiting for a reader after 2 s, not the default 30.
    let s = Session::start_with(
        "missing",
        &conformance("document-events.jsonl"),
        &[],
        Some("exec /nonexistent/command"),
        &["--open-timeout", "2"],
    );
    // The simulator may not have sent everything before the namespace ended.
    let (run_out, _) = s.wait_both();
    assert_eq!(run_out.status.code(), Some(127));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// `tsem-stream console` as uid 65534 (nobody).
fn console_as_nobody(binary: &Path, mgmt: &Path, name: &str) -> std::io::Result<Output> {
    // The binary was just copied: a child forked by another test thread
    // between the copy's open and its exec can still hold the write end for a
    // moment (ETXTBSY), so retry briefly.
    let mut tries = 0;
    loop {
        let result = Command::new(binary)
            .args(["console", "-S", "-w", name, "--mgmt-dir"])
            .arg(mgmt)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output();
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[test]
fn connections_from_another_user_are_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let s = Session::start("private", &conformance("document-events.jsonl"), &[], None);
    s.wait_points(5);
    let socket = s.mgmt.join("private");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&s.mgmt).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The binary must be reachable for uid 65534: a copy in an open directory.
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = open.path().join("tsem-stream");
    std::fs::copy(env!("CARGO_BIN_EXE_tsem-stream"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();

    // As created, the file system keeps the other user out.
    let out = console_as_nobody(&binary, &s.mgmt, "private").unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the modes opened up, the peer credentials still refuse it.
    for p in [&s.base, &s.mgmt, &socket] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = console_as_nobody(&binary, &s.mgmt, "private").unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workload private: permission denied"), "{err}");
    assert!(out.stdout.is_empty());
    // Root still gets its answer.
    assert_eq!(s.lines(&["-S"]).len(), 1);

    let (run_out, _) = s.finish();
    assert_eq!(run_out.status.code(), Some(4));
    let log = String::from_utf8_lossy(&run_out.stderr);
    assert!(
        log.contains("refused a connection from uid 65534"),
        "orchestrator log: {log}"
    );
}
