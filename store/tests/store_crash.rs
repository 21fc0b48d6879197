//! Crash test of the model store: a writer process is killed with SIGKILL at
//! random moments, 50 times, and the reopened store must hold exactly the
//! deterministic content of the batch count it reports, which must include
//! every batch the writer reported durable.
//!
//! The writer is this test binary itself, re-executed with `--exact
//! crash_writer_child` and `TSEM_STORE_CRASH_DIR` set; without that variable
//! the writer test returns at once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tsem_model::{Digest, Profile};
use tsem_store::{ModelStore, StoreMeta, StoreSnapshot, StoredPoint};

const DIR_ENV: &str = "TSEM_STORE_CRASH_DIR";
const WRITER_TEST: &str = "crash_writer_child";
const KILLS: u32 = 50;

/// SplitMix64: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn digest(tag: &str, i: u64) -> Digest {
    Digest::of(&[tag.as_bytes(), &i.to_le_bytes()])
}

/// The meta after batch `b` (batch 0: the store as created).
fn meta_for(b: u64) -> StoreMeta {
    StoreMeta {
        profile: if b.is_multiple_of(2) {
            Profile::Quixote
        } else {
            Profile::Kernel
        },
        aggregate: b.is_multiple_of(3).then(|| digest("aggregate", b)),
        host_aggregate: (!b.is_multiple_of(5)).then(|| digest("host", b)),
        base: digest("base", b / 7),
        measurement: digest("measurement", b),
        sealed: b % 4 == 3,
        enforcing: b % 6 == 1,
        events: b * 17,
        violations: b / 3,
        unknown_event_names: b % 11,
        errors: b / 13,
    }
}

/// Everything batch `b` changes, derived from `b` alone.
struct Batch {
    points: Vec<(Digest, u64, bool)>,
    trajectory: Vec<Vec<u8>>,
    forensics: Vec<Vec<u8>>,
    pseudonyms: Option<Vec<Digest>>,
    meta: StoreMeta,
}

fn batch(b: u64) -> Batch {
    let mut rng = Rng(b.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    // Now and then a big batch, so that the table grows (and gets killed
    // while growing) during the test.
    let n = if b.is_multiple_of(40) {
        400
    } else {
        1 + rng.below(12)
    };
    let universe = b * 3 + 10;
    let points = (0..n)
        .map(|j| {
            // Repeats within a batch and updates of older points included.
            let id = rng.below(universe);
            (digest("coefficient", id), b * 1000 + j, rng.below(4) != 0)
        })
        .collect();
    let trajectory = (0..rng.below(4))
        .map(|j| {
            let mut line = format!("event {b} {j} ").into_bytes();
            line.resize(line.len() + rng.below(200) as usize, b'a' + (j as u8));
            line
        })
        .collect();
    let forensics = if rng.below(3) == 0 {
        vec![format!("forensics {b}").into_bytes()]
    } else {
        Vec::new()
    };
    let pseudonyms = b
        .is_multiple_of(10)
        .then(|| (0..b % 7).map(|i| digest("pseudonym", b + i)).collect());
    Batch {
        points,
        trajectory,
        forensics,
        pseudonyms,
        meta: meta_for(b),
    }
}

/// Stages batch `b` into the store.
fn stage(store: &mut ModelStore, b: u64) {
    let batch = batch(b);
    for (coefficient, count, valid) in batch.points {
        store.upsert_point(StoredPoint {
            coefficient,
            count,
            valid,
            order: 0,
        });
    }
    for line in &batch.trajectory {
        store.append_trajectory(line);
    }
    for line in &batch.forensics {
        store.append_forensics(line);
    }
    if let Some(p) = &batch.pseudonyms {
        store.set_pseudonyms(p);
    }
    store.set_meta(batch.meta);
}

/// The content the store must have after a number of batches, computed
/// independently of the store.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    meta: StoreMeta,
    points: Vec<StoredPoint>,
    pseudonyms: Vec<Digest>,
    trajectory: Vec<Vec<u8>>,
    forensics: Vec<Vec<u8>>,
    batch: u64,
}

impl Expected {
    fn new() -> Expected {
        Expected {
            meta: meta_for(0),
            points: Vec::new(),
            pseudonyms: Vec::new(),
            trajectory: Vec::new(),
            forensics: Vec::new(),
            batch: 0,
        }
    }

    fn advance_to(&mut self, target: u64, index: &mut HashMap<Digest, usize>) {
        assert!(
            target >= self.batch,
            "batch count went back from {} to {target}",
            self.batch
        );
        while self.batch < target {
            self.batch += 1;
            let b = batch(self.batch);
            for (coefficient, count, valid) in b.points {
                match index.get(&coefficient) {
                    Some(&i) => {
                        self.points[i].count = count;
                        self.points[i].valid = valid;
                    }
                    None => {
                        index.insert(coefficient, self.points.len());
                        self.points.push(StoredPoint {
                            coefficient,
                            count,
                            valid,
                            order: self.points.len() as u64,
                        });
                    }
                }
            }
            self.trajectory.extend(b.trajectory);
            self.forensics.extend(b.forensics);
            if let Some(p) = b.pseudonyms {
                self.pseudonyms = p;
            }
            self.meta = b.meta;
        }
    }
}

fn view_of_store(s: &ModelStore) -> Expected {
    Expected {
        meta: s.meta().clone(),
        points: s.points(),
        pseudonyms: s.pseudonyms(),
        trajectory: s.trajectory().expect("trajectory"),
        forensics: s.forensics().expect("forensics"),
        batch: s.committed_batches(),
    }
}

fn view_of_snapshot(s: StoreSnapshot) -> Expected {
    Expected {
        meta: s.meta,
        points: s.points,
        pseudonyms: s.pseudonyms,
        trajectory: s.trajectory,
        forensics: s.forensics,
        batch: s.batch,
    }
}

/// The writer: continues the store batch after batch, reporting each
/// durable one, until killed (or, as a safety net, after 20 s).
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let mut store = ModelStore::open(Path::new(&dir)).expect("writer open");
    // Frequent checkpoints, so that kills land in them too.
    store.set_checkpoint_threshold(16 * 1024);
    let start = Instant::now();
    let stdout = std::io::stdout();
    while start.elapsed() < Duration::from_secs(20) {
        let b = store.committed_batches() + 1;
        stage(&mut store, b);
        let seq = store.commit().expect("commit");
        assert_eq!(seq, b);
        let mut out = stdout.lock();
        writeln!(out, "durable {seq}").expect("stdout");
        out.flush().expect("stdout");
    }
}

#[test]
fn crash_kill9_50_times() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    drop(ModelStore::create(&dir, &meta_for(0)).expect("create"));
    let exe = std::env::current_exe().expect("current_exe");
    let mut expected = Expected::new();
    let mut index = HashMap::new();
    let mut rng = Rng(0xc0ff_ee00 ^ u64::from(std::process::id()));
    let started = Instant::now();
    let mut snapshots = 0u32;
    let mut max_reported = 0u64;
    // How the kills landed: rounds that made progress, and rounds where the
    // store kept a batch whose report never came out (killed between the
    // WAL sync and the print).
    let mut progressed = 0u32;
    let mut unreported_kept = 0u32;
    // Rounds that left a half-done checkpoint or growth behind.
    let mut interrupted_checkpoints = 0u32;
    // More kills for a local stress run.
    let kills = std::env::var("TSEM_STORE_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(KILLS);

    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--exact", WRITER_TEST, "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("child stdout");
        let reported = Arc::new(AtomicU64::new(0));
        let reported_by_reader = reported.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("durable ") {
                    let n: u64 = n.trim().parse().expect("durable number");
                    reported_by_reader.fetch_max(n, Ordering::SeqCst);
                }
            }
        });
        // Vary the moment: right at the start (during exec, open or
        // recovery), or after 0-50 ms, sometimes right after a report.
        let delay = match round % 5 {
            0 => Duration::ZERO,
            1 => Duration::from_micros(rng.below(2_000)),
            _ => Duration::from_micros(rng.below(50_000)),
        };
        let until = Instant::now() + delay;
        if round % 7 == 3 {
            // Kill right after some report arrives.
            let target = reported.load(Ordering::SeqCst) + 1 + rng.below(3);
            while Instant::now() < until + Duration::from_millis(200)
                && reported.load(Ordering::SeqCst) < target
            {
                std::thread::yield_now();
            }
        } else {
            // Meanwhile, snapshots must each be some committed batch.
            while Instant::now() < until {
                if round % 3 == 1 {
                    let snap = view_of_snapshot(StoreSnapshot::open(&dir).expect("snapshot"));
                    expected.advance_to(snap.batch, &mut index);
                    assert_eq!(snap, expected, "snapshot during round {round}");
                    snapshots += 1;
                } else {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                }
            }
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        // The writer may have stopped by itself only after its 20 s net.
        kill(pid, Signal::SIGKILL).expect("kill");
        child.wait().expect("wait");
        reader.join().expect("reader thread");
        let durable = reported.load(Ordering::SeqCst);
        max_reported = max_reported.max(durable);

        let leftovers = std::fs::read_dir(&dir)
            .expect("read_dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("table.") || name == "header.tmp")
            .count();
        interrupted_checkpoints += u32::from(leftovers > 1);
        let store = ModelStore::open(&dir).expect("reopen after kill");
        let n = store.committed_batches();
        assert!(
            n >= max_reported,
            "round {round}: store has {n} batches, {max_reported} were reported durable"
        );
        progressed += u32::from(n > expected.batch);
        unreported_kept += u32::from(n > durable.max(expected.batch));
        expected.advance_to(n, &mut index);
        assert_eq!(view_of_store(&store), expected, "round {round}");
        drop(store);
        let snap = view_of_snapshot(StoreSnapshot::open(&dir).expect("snapshot"));
        assert_eq!(snap, expected, "snapshot after round {round}");
    }

    // After all that, the store still takes new batches and keeps them.
    let mut store = ModelStore::open(&dir).expect("final open");
    for _ in 0..5 {
        let b = store.committed_batches() + 1;
        stage(&mut store, b);
        assert_eq!(store.commit().expect("commit"), b);
    }
    let n = store.committed_batches();
    drop(store);
    let store = ModelStore::open(&dir).expect("reopen");
    expected.advance_to(n, &mut index);
    assert_eq!(view_of_store(&store), expected);
    eprintln!(
        "{kills} kills in {:?}: {n} batches, {} points, {progressed} rounds with progress, \
         {unreported_kept} kept an unreported batch, {interrupted_checkpoints} interrupted \
         checkpoints, {snapshots} snapshots checked while writing",
        started.elapsed(),
        expected.points.len(),
    );
}
