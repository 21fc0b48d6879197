//! The kernel simulator driven by a tiny fake TMA: the TMA reads export
//! records with `tsem_ingest::export::ExportReader`, parses them with the
//! ingest parser and writes verdicts to the `control` FIFO.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tsem_ingest::export::{ExportReader, Next};
use tsem_ingest::{ExportKind, Parser, Record};
use tsem_sim::{self as sim, pid_of, SimError, SimOptions, SimReport};

/// How the fake TMA misbehaves.
#[derive(Clone, Default)]
struct Tma {
    /// Answer `untrusted` to records containing this text.
    untrusted_marker: Option<&'static str>,
    /// Do not answer the event of this input line.
    skip_line: Option<u64>,
    /// Answer the event of this input line twice.
    twice_line: Option<u64>,
    /// Also answer `async_event` records.
    answer_async: bool,
    /// Use the 2024 `key=` protocol.
    key_protocol: bool,
    /// Commands written before anything else.
    preamble: Vec<&'static str>,
    /// Sleep before each verdict.
    delay: Duration,
}

/// What the fake TMA saw.
#[derive(Debug, Default)]
struct Seen {
    aggregate: Option<String>,
    /// (kind, pid, tnum, raw record) of every event record.
    events: Vec<(ExportKind, u64, u64, Vec<u8>)>,
    record_kinds: Vec<&'static str>,
}

fn wait_for_fifo(path: &Path) {
    let start = Instant::now();
    while !std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no FIFO at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn start_tma(root: PathBuf, namespace: u64, tma: Tma) -> JoinHandle<Seen> {
    std::thread::spawn(move || {
        let control_path = root.join("control");
        let export_path = root.join("external_tma").join(namespace.to_string());
        wait_for_fifo(&control_path);
        wait_for_fifo(&export_path);
        let mut control = OpenOptions::new().write(true).open(&control_path).unwrap();
        for c in &tma.preamble {
            control.write_all(format!("{c}\n").as_bytes()).unwrap();
        }
        let mut reader = ExportReader::open(&export_path).unwrap();
        let mut parser = Parser::default();
        let mut seen = Seen::default();
        loop {
            let rec = match reader.next_record(Some(Duration::from_secs(20))).unwrap() {
                Next::Record(b) => b.to_vec(),
                Next::End => break,
                other => panic!("fake TMA: unexpected {other:?}"),
            };
            let parsed = parser
                .parse(&rec, |r| match r {
                    Record::Aggregate { value } => (None, Some(value.to_owned())),
                    Record::Event(ev) => {
                        let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok()).unwrap();
                        (
                            Some((ev.export.unwrap(), num(ev.pid()), num(ev.tnum()))),
                            None,
                        )
                    }
                    Record::LogNotice { .. } => (None, None),
                })
                .unwrap_or_else(|e| panic!("fake TMA: bad record: {e}"));
            match parsed {
                (None, Some(agg)) => {
                    seen.record_kinds.push("aggregate");
                    seen.aggregate = Some(agg);
                }
                (Some((kind, pid, tnum)), _) => {
                    seen.record_kinds.push(kind.name());
                    seen.events.push((kind, pid, tnum, rec.clone()));
                    if kind == ExportKind::AsyncEvent && !tma.answer_async {
                        continue;
                    }
                    if tma.skip_line == Some(tnum) {
                        continue;
                    }
                    let untrusted = tma
                        .untrusted_marker
                        .is_some_and(|m| String::from_utf8_lossy(&rec).contains(m));
                    let verb = if untrusted { "untrusted" } else { "trusted" };
                    let cmd = if tma.key_protocol {
                        format!("{verb} pid={pid} key=00ff00ff\n")
                    } else {
                        format!("{verb} pid={pid} tnum={tnum}\n")
                    };
                    std::thread::sleep(tma.delay);
                    let times = if tma.twice_line == Some(tnum) { 2 } else { 1 };
                    for _ in 0..times {
                        // One write() per command, as the kernel requires.
                        control.write_all(cmd.as_bytes()).unwrap();
                    }
                }
                (None, None) => seen.record_kinds.push("log"),
            }
        }
        seen
    })
}

/// A bare trajectory line whose `process` is `comm` and pathname `path`.
fn event_line(comm: &str, path: &str) -> String {
    format!(
        "{{\"event\": {{\"context\": \"3\", \"number\": \"1\", \"process\": \"{comm}\", \"type\": \"file_open\", \"ttd\": \"7\", \"p_ttd\": \"7\", \"task_id\": \"{z}\", \"p_task_id\": \"{z}\", \"ts\": \"1\"}}, \"COE\": {{\"uid\": \"0\", \"euid\": \"0\", \"suid\": \"0\", \"gid\": \"0\", \"egid\": \"0\", \"sgid\": \"0\", \"fsuid\": \"0\", \"fsgid\": \"0\", \"capeff\": \"0x1ffffffffff\"}}, \"file_open\": {{\"file\": {{\"flags\": \"32800\", \"inode\": {{\"uid\": \"0\", \"gid\": \"0\", \"mode\": \"0100755\", \"s_magic\": \"0xef53\", \"s_id\": \"sda\", \"s_uuid\": \"{u}\"}}, \"path\": {{\"dev\": {{\"major\": \"8\", \"minor\": \"1\"}}, \"pathname\": \"{path}\"}}, \"digest\": \"{z}\"}}}}}}",
        z = "ab".repeat(32),
        u = "0".repeat(32),
    )
}

fn write_events(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn options(dir: &Path, events: PathBuf) -> SimOptions {
    let mut o = SimOptions::new(dir.join("tsem"), events);
    o.namespace = 7;
    o.open_timeout = Duration::from_secs(10);
    o.verdict_timeout = Duration::from_secs(5);
    o
}

fn simulate(opts: &SimOptions, tma: Tma) -> (SimReport, Seen) {
    let fake = start_tma(opts.tsem_root.clone(), opts.namespace, tma);
    let report = sim::run(opts).unwrap();
    let seen = fake.join().unwrap();
    // The report must serialize (the CLI prints it as JSON).
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"p99_us\":"), "{json}");
    (report, seen)
}

fn shared_document_events() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/document-events.jsonl")
}

#[test]
fn sim_answers_every_sync_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let events = shared_document_events();
    let original = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let opts = options(dir.path(), events.clone());
    let (r, seen) = simulate(&opts, Tma::default());

    assert_eq!(r.events, lines.len() as u64);
    assert_eq!((r.sync_events, r.async_events, r.skipped), (r.events, 0, 0));
    assert_eq!(
        (r.verdicts, r.trusted, r.untrusted),
        (r.events, r.events, 0)
    );
    assert_eq!(
        (r.missing, r.duplicates, r.unexpected, r.timeouts),
        (0, 0, 0, 0)
    );
    assert!(r.untrusted_lines.is_empty() && r.commands.is_empty());
    assert!(r.max_us >= r.p50_us && r.p50_us > 0);

    // The fake tree and the aggregate record come first.
    let root = &opts.tsem_root;
    assert_eq!(std::fs::read_to_string(root.join("id")).unwrap(), "7\n");
    assert_eq!(
        std::fs::read_to_string(root.join("aggregate")).unwrap(),
        "0".repeat(64) + "\n"
    );
    assert_eq!(seen.record_kinds[0], "aggregate");
    assert_eq!(seen.aggregate.as_deref(), Some("0".repeat(64).as_str()));

    // Each record is the original line with the wrapper and a unique (pid, tnum).
    for (i, (kind, pid, tnum, rec)) in seen.events.iter().enumerate() {
        let line = i as u64 + 1;
        assert_eq!(
            (*kind, *pid, *tnum),
            (ExportKind::Event, pid_of(line), line)
        );
        let rest = lines[i].strip_prefix("{\"event\": {").unwrap();
        let expected =
            format!("{{\"export\": {{\"type\": \"event\"}}, \"event\": {{\"pid\": \"{pid}\", \"tnum\": \"{tnum}\", {rest}");
        assert_eq!(String::from_utf8_lossy(rec), expected);
    }
}

#[test]
fn sim_reports_untrusted_lines_and_passes_long_records() {
    let dir = tempfile::tempdir().unwrap();
    let long_path = format!("/{}", "d".repeat(100 * 1024));
    let lines: Vec<String> = (1..=20)
        .map(|i| match i {
            3 | 17 => event_line("evil", "/bin/x"),
            9 => event_line("cat", &long_path),
            _ => event_line("cat", &format!("/etc/file{i}")),
        })
        .collect();
    let opts = options(dir.path(), write_events(dir.path(), &lines));
    let tma = Tma {
        untrusted_marker: Some("\"process\": \"evil\""),
        ..Tma::default()
    };
    let (r, seen) = simulate(&opts, tma);
    assert_eq!(
        (r.events, r.verdicts, r.trusted, r.untrusted),
        (20, 20, 18, 2)
    );
    assert_eq!(r.untrusted_lines, vec![3, 17]);
    assert_eq!((r.missing, r.duplicates, r.unexpected), (0, 0, 0));
    let long = &seen.events[8].3;
    assert!(long.len() > 100 * 1024 && String::from_utf8_lossy(long).contains(&long_path));
}

#[test]
fn sim_async_events_are_not_answered() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=10)
        .map(|i| event_line("cat", &format!("/f{i}")))
        .collect();
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.sync_fraction = 0.5;
    let (r, seen) = simulate(&opts, Tma::default());
    assert_eq!((r.events, r.sync_events, r.async_events), (10, 5, 5));
    assert_eq!(
        (r.verdicts, r.missing, r.unexpected, r.duplicates),
        (5, 0, 0, 0)
    );
    let kinds: Vec<ExportKind> = seen.events.iter().map(|e| e.0).collect();
    assert_eq!(
        kinds[..4],
        [
            ExportKind::AsyncEvent,
            ExportKind::Event,
            ExportKind::AsyncEvent,
            ExportKind::Event
        ]
    );
}

#[test]
fn sim_counts_answers_to_async_events_as_unexpected() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=6)
        .map(|i| event_line("cat", &format!("/f{i}")))
        .collect();
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.sync_fraction = 0.5;
    let tma = Tma {
        answer_async: true,
        preamble: vec!["enforce", "trusted pid=1 tnum=999999"],
        ..Tma::default()
    };
    let (r, _) = simulate(&opts, tma);
    assert_eq!((r.verdicts, r.unexpected, r.missing), (3, 3 + 1, 0));
    assert_eq!(r.commands, vec!["enforce".to_string()]);
}

#[test]
fn sim_counts_a_missing_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=8)
        .map(|i| event_line("cat", &format!("/f{i}")))
        .collect();
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.verdict_timeout = Duration::from_millis(300);
    let tma = Tma {
        skip_line: Some(4),
        ..Tma::default()
    };
    let t = Instant::now();
    let (r, _) = simulate(&opts, tma);
    assert_eq!((r.events, r.verdicts, r.missing, r.timeouts), (8, 7, 1, 1));
    assert_eq!((r.duplicates, r.unexpected), (0, 0));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn sim_counts_a_duplicate_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=8)
        .map(|i| event_line("cat", &format!("/f{i}")))
        .collect();
    let opts = options(dir.path(), write_events(dir.path(), &lines));
    let tma = Tma {
        twice_line: Some(8),
        ..Tma::default()
    };
    let (r, _) = simulate(&opts, tma);
    assert_eq!(
        (r.events, r.verdicts, r.missing, r.duplicates, r.unexpected),
        (8, 8, 0, 1, 0)
    );
}

#[test]
fn sim_accepts_the_key_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=12)
        .map(|i| event_line("cat", &format!("/f{i}")))
        .collect();
    let opts = options(dir.path(), write_events(dir.path(), &lines));
    let tma = Tma {
        key_protocol: true,
        ..Tma::default()
    };
    let (r, _) = simulate(&opts, tma);
    assert_eq!(
        (r.verdicts, r.missing, r.duplicates, r.unexpected),
        (12, 0, 0, 0)
    );
}

#[test]
fn sim_back_pressure_limits_outstanding_events() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=30)
        .map(|i| event_line("cat", &format!("/f{i}")))
        .collect();
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.max_outstanding = 1;
    let tma = Tma {
        delay: Duration::from_millis(2),
        ..Tma::default()
    };
    let (r, _) = simulate(&opts, tma);
    assert_eq!((r.verdicts, r.missing), (30, 0));
    // With one event in flight, every event after the first waits for the previous verdict.
    assert!(r.stalls >= 25, "stalls {}", r.stalls);
    assert!(
        r.p50_us >= 1500,
        "p50 {} µs with a 2 ms TMA delay",
        r.p50_us
    );
}

#[test]
fn sim_paces_at_the_requested_rate() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=21)
        .map(|i| event_line("cat", &format!("/f{i}")))
        .collect();
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.rate = Some(200.0);
    opts.sync_fraction = 0.0;
    let (r, _) = simulate(&opts, Tma::default());
    assert_eq!((r.events, r.async_events, r.verdicts), (21, 21, 0));
    // 20 gaps of 5 ms.
    assert!(r.emit_s >= 0.099, "emit_s {}", r.emit_s);
    assert!(
        r.achieved_rate <= 202.0 && r.achieved_rate > 150.0,
        "rate {}",
        r.achieved_rate
    );
    assert_eq!(r.offered_rate, Some(200.0));
}

#[test]
fn sim_skips_lines_without_an_event_and_keeps_a_custom_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![
        event_line("cat", "/a"),
        "{\"export\": {\"type\": \"log\"}, \"log\": {\"process\": \"cat\"}}".to_string(),
        String::new(),
        event_line("cat", "/b"),
    ];
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.aggregate = Some("de2b9c37".repeat(8));
    let (r, seen) = simulate(&opts, Tma::default());
    assert_eq!((r.events, r.skipped, r.verdicts), (2, 1, 2));
    assert_eq!(seen.aggregate, Some("de2b9c37".repeat(8)));
    // Line numbers are those of the input file, blank and skipped lines counted.
    let tnums: Vec<u64> = seen.events.iter().map(|e| e.2).collect();
    assert_eq!(tnums, vec![1, 4]);
}

#[test]
fn sim_gives_up_when_no_tma_comes() {
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![event_line("cat", "/a")];
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.open_timeout = Duration::from_millis(200);
    let t = Instant::now();
    match sim::run(&opts) {
        Err(SimError::OpenTimeout { .. }) => {}
        other => panic!("expected an open timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn sim_reports_a_tma_that_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    // Enough data to fill the pipe after the TMA stopped reading.
    let lines: Vec<String> = (1..=200)
        .map(|i| event_line("cat", &format!("/{}{i}", "x".repeat(2000))))
        .collect();
    let mut opts = options(dir.path(), write_events(dir.path(), &lines));
    opts.sync_fraction = 0.0;
    let root = opts.tsem_root.clone();
    let quitter = std::thread::spawn(move || {
        let export_path = root.join("external_tma").join("7");
        wait_for_fifo(&export_path);
        let mut reader = ExportReader::open(&export_path).unwrap();
        let first = matches!(
            reader.next_record(Some(Duration::from_secs(10))).unwrap(),
            Next::Record(_)
        );
        drop(reader);
        first
    });
    match sim::run(&opts) {
        Err(SimError::TmaClosed { .. }) => {}
        other => panic!("expected TmaClosed, got {other:?}"),
    }
    assert!(quitter.join().unwrap());
}

#[test]
fn sim_resends_real_kernel_export_records() {
    // Records of a real v4 kernel: wrapper and `pid` present, no `tnum`.
    let events =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/real-kernel/export-records.jsonl");
    let original = std::fs::read_to_string(&events).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), events);
    let (r, seen) = simulate(&opts, Tma::default());
    let n = original.lines().count() as u64;
    assert_eq!((r.events, r.skipped, r.verdicts, r.missing), (n, 0, n, 0));
    for ((_, pid, tnum, rec), line) in seen.events.iter().zip(original.lines()) {
        // Everything after the old `"pid": "N", ` is kept byte for byte.
        let rest = &line[line.find("\"pid\": ").unwrap()..];
        let rest = &rest[rest.find(", ").unwrap() + 2..];
        let rec = String::from_utf8_lossy(rec);
        assert!(rec.ends_with(rest), "{rec}");
        assert!(rec.starts_with(&format!(
            "{{\"export\": {{\"type\": \"event\"}}, \"event\": {{\"pid\": \"{pid}\", \"tnum\": \"{tnum}\", "
        )));
    }
}
