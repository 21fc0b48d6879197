//! Unit tests of the model store.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

fn digest(tag: &str, i: u64) -> Digest {
    Digest::of(&[tag.as_bytes(), &i.to_le_bytes()])
}

fn meta(n: u64) -> StoreMeta {
    StoreMeta {
        profile: if n.is_multiple_of(2) {
            Profile::Quixote
        } else {
            Profile::Kernel
        },
        aggregate: n.is_multiple_of(3).then(|| digest("agg", n)),
        host_aggregate: (n > 1).then(|| digest("host", n)),
        base: digest("base", n),
        measurement: digest("measurement", n),
        sealed: n % 4 == 1,
        enforcing: n % 5 == 2,
        events: n * 10,
        violations: n,
        unknown_event_names: n / 2,
        errors: n / 3,
    }
}

fn point(i: u64, count: u64) -> StoredPoint {
    StoredPoint {
        coefficient: digest("point", i),
        count,
        valid: i % 7 != 3,
        order: 0,
    }
}

/// Everything a reader can observe, for comparisons.
#[derive(Debug, PartialEq, Eq)]
struct View {
    meta: StoreMeta,
    points: Vec<StoredPoint>,
    pseudonyms: Vec<Digest>,
    trajectory: Vec<Vec<u8>>,
    forensics: Vec<Vec<u8>>,
    batch: u64,
}

fn view(s: &ModelStore) -> View {
    View {
        meta: s.meta().clone(),
        points: s.points(),
        pseudonyms: s.pseudonyms(),
        trajectory: s.trajectory().unwrap(),
        forensics: s.forensics().unwrap(),
        batch: s.committed_batches(),
    }
}

fn snapshot_view(dir: &Path) -> View {
    let s = StoreSnapshot::open(dir).unwrap();
    View {
        meta: s.meta,
        points: s.points,
        pseudonyms: s.pseudonyms,
        trajectory: s.trajectory,
        forensics: s.forensics,
        batch: s.batch,
    }
}

/// Stages a deterministic batch `b`: a few new points, updates of old ones,
/// log lines, meta, sometimes pseudonyms.
fn stage(s: &mut ModelStore, b: u64) {
    for j in 0..5 {
        s.upsert_point(point((b - 1) * 5 + j, b));
    }
    if b > 1 {
        s.upsert_point(point(b * 2, b * 100));
    }
    for j in 0..3 {
        s.append_trajectory(format!("trajectory {b} {j}").as_bytes());
    }
    if b.is_multiple_of(2) {
        s.append_forensics(format!("forensics {b}").as_bytes());
    }
    if b.is_multiple_of(3) {
        s.set_pseudonyms(&[digest("pseudonym", b), digest("pseudonym", b + 1)]);
    }
    s.set_meta(meta(b));
}

fn new_store() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    (tmp, dir)
}

#[test]
fn store_round_trip() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    assert!(s.is_empty());
    assert_eq!(s.committed_batches(), 0);
    for b in 1..=4 {
        stage(&mut s, b);
        assert_eq!(s.commit().unwrap(), b);
    }
    // A no-op commit writes nothing and keeps the number.
    assert_eq!(s.commit().unwrap(), 4);
    let before = view(&s);
    assert_eq!(before.points.len(), 20);
    assert_eq!(before.trajectory.len(), 12);
    assert_eq!(before.trajectory[5], b"trajectory 2 2");
    assert_eq!(
        before.forensics,
        vec![b"forensics 2".to_vec(), b"forensics 4".to_vec()]
    );
    assert_eq!(
        before.pseudonyms,
        vec![digest("pseudonym", 3), digest("pseudonym", 4)]
    );
    for (i, p) in before.points.iter().enumerate() {
        assert_eq!(p.order, i as u64);
        assert_eq!(s.get(&p.coefficient), Some(*p));
    }
    // Updated twice: batch 2 wrote point 4 with count 200.
    assert_eq!(s.get(&digest("point", 4)).unwrap().count, 200);
    assert_eq!(s.get(&digest("nothing", 0)), None);
    drop(s);

    let s = ModelStore::open(&dir).unwrap();
    assert_eq!(view(&s), before);
    assert_eq!(snapshot_view(&dir), before);
    drop(s);
    // Again after a checkpoint (nothing left to replay).
    let mut s = ModelStore::open(&dir).unwrap();
    s.checkpoint().unwrap();
    assert_eq!(fs::metadata(dir.join(WAL_FILE)).unwrap().len(), 0);
    drop(s);
    let s = ModelStore::open(&dir).unwrap();
    assert_eq!(view(&s), before);
    assert_eq!(snapshot_view(&dir), before);
}

#[test]
fn store_permissions_and_create_rules() {
    let (_tmp, dir) = new_store();
    drop(ModelStore::create(&dir, &meta(0)).unwrap());
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            e.metadata().unwrap().permissions().mode() & 0o777,
            0o600,
            "{:?}",
            e.path()
        );
    }
    assert!(matches!(
        ModelStore::create(&dir, &meta(0)),
        Err(StoreError::NotEmpty { .. })
    ));
    // An existing empty directory is fine, and narrowed to 0700.
    let empty = dir.with_file_name("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, Permissions::from_mode(0o755)).unwrap();
    drop(ModelStore::create(&empty, &meta(0)).unwrap());
    assert_eq!(
        fs::metadata(&empty).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn a_store_directory_others_may_write_is_refused() {
    let (_tmp, dir) = new_store();
    drop(ModelStore::create(&dir, &meta(0)).unwrap());
    fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
    let e = ModelStore::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("world-writable") && e.contains("chmod go-w"),
        "{e}"
    );
    let open = dir.with_file_name("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(
        ModelStore::create(&open, &meta(0)),
        Err(StoreError::Untrusted(_))
    ));
}

#[test]
fn store_not_a_store_and_version() {
    let (tmp, dir) = new_store();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    let e = ModelStore::open(tmp.path()).err().unwrap();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    assert!(matches!(
        StoreSnapshot::open(tmp.path()),
        Err(StoreError::NotAStore { .. })
    ));

    drop(ModelStore::create(&dir, &meta(0)).unwrap());
    let path = dir.join(HEADER_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[8] = 99; // version
    fs::write(&path, &bytes).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(matches!(e, StoreError::Version { found: 99, .. }), "{e}");
    bytes[0] = b'X';
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        ModelStore::open(&dir),
        Err(StoreError::NotAStore { .. })
    ));
}

#[test]
fn store_grows_by_rehash() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    let tables = |dir: &Path| -> Vec<u64> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| parse_table_file_name(e.unwrap().file_name().to_str().unwrap()))
            .collect()
    };
    assert_eq!(tables(&dir), vec![1]);
    let mut n = 0;
    for b in 0..10u64 {
        for _ in 0..700 {
            s.upsert_point(point(n, n + 1));
            n += 1;
        }
        // Updates of points from the previous batches ride along.
        s.upsert_point(point(b, 1000 + b));
        s.commit().unwrap();
    }
    // 7000 points need 16384 slots at 3/4 load: 1024 → … → 16384.
    assert_eq!(s.table.capacity(), 16384);
    let t = tables(&dir);
    assert_eq!(t.len(), 1, "old tables are removed: {t:?}");
    assert!(t[0] > 1);
    let before = view(&s);
    assert_eq!(before.points.len(), 7000);
    for i in 0..7000u64 {
        let p = s.get(&digest("point", i)).unwrap();
        assert_eq!(p.order, i);
        assert_eq!(p.count, if i < 10 { 1000 + i } else { i + 1 });
    }
    drop(s);
    let s = ModelStore::open(&dir).unwrap();
    assert_eq!(view(&s), before);
    assert_eq!(snapshot_view(&dir), before);
}

#[test]
fn store_uncommitted_batch_is_absent_after_reopen() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    let committed = view(&s);
    stage(&mut s, 2);
    assert_eq!(s.len(), 10);
    assert_eq!(s.meta(), &meta(2));
    assert!(s.get(&digest("point", 9)).is_some());
    assert_eq!(s.get(&digest("point", 4)).unwrap().count, 200);
    // Staged changes are not in the committed logs.
    assert_eq!(s.trajectory().unwrap(), committed.trajectory);
    drop(s);
    let s = ModelStore::open(&dir).unwrap();
    assert_eq!(view(&s), committed);
    assert!(s.get(&digest("point", 9)).is_none());
    assert_eq!(s.get(&digest("point", 4)).unwrap().count, 1);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn store_torn_wal_tail_is_truncated() {
    let (tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    let mut views = vec![view(&s)];
    for b in 1..=2 {
        stage(&mut s, b);
        s.commit().unwrap();
        views.push(view(&s));
    }
    // The files as a crash during the WAL write of batch 3 leaves them: a
    // copy taken now, plus half of batch 3's record.
    let crashed = tmp.path().join("crashed");
    copy_dir(&dir, &crashed);
    let end2 = s.wal_len;
    stage(&mut s, 3);
    s.commit().unwrap();
    views.push(view(&s));
    let record3 = fs::read(dir.join(WAL_FILE)).unwrap()[end2 as usize..].to_vec();
    drop(s);
    let wal = crashed.join(WAL_FILE);
    let f = OpenOptions::new().write(true).open(&wal).unwrap();
    f.write_all_at(&record3[..record3.len() / 2], end2).unwrap();
    // And its log lines, written before the record.
    let traj = crashed.join(TRAJECTORY_FILE);
    let lines3 = &fs::read(dir.join(TRAJECTORY_FILE)).unwrap()
        [fs::metadata(&traj).unwrap().len() as usize..];
    OpenOptions::new()
        .append(true)
        .open(&traj)
        .unwrap()
        .write_all_at(lines3, 0)
        .unwrap();
    drop(f);

    let mut s = ModelStore::open(&crashed).unwrap();
    assert_eq!(view(&s), views[2]);
    assert_eq!(
        fs::metadata(&wal).unwrap().len(),
        end2,
        "the torn tail is cut off"
    );
    // Its log lines are gone from the files too.
    assert_eq!(
        fs::metadata(&traj).unwrap().len(),
        s.trajectory.committed.len
    );
    // The store goes on from batch 2.
    stage(&mut s, 3);
    assert_eq!(s.commit().unwrap(), 3);
    assert_eq!(view(&s), views[3]);
    drop(s);

    // Garbage after the last record (a torn header of a next record).
    let mut bytes = fs::read(&wal).unwrap();
    bytes.extend_from_slice(&format::WAL_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&[0xff; 7]);
    fs::write(&wal, &bytes).unwrap();
    assert_eq!(snapshot_view(&crashed), views[3]);
    let s = ModelStore::open(&crashed).unwrap();
    assert_eq!(view(&s), views[3]);
    assert_eq!(snapshot_view(&crashed), views[3]);
}

/// A WAL record lost although its batch was applied (impossible after a
/// crash, as the record is synced first) is reported, not papered over.
#[test]
fn store_lost_wal_record_is_an_error() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    let end1 = s.wal_len;
    stage(&mut s, 2);
    s.commit().unwrap();
    drop(s);
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join(WAL_FILE))
        .unwrap();
    f.set_len(end1 + 10).unwrap();
    drop(f);
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
}

#[test]
fn store_damaged_wal_record_before_intact_ones_is_an_error() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    let first = s.wal_len;
    stage(&mut s, 2);
    s.commit().unwrap();
    drop(s);
    let wal = dir.join(WAL_FILE);
    let mut bytes = fs::read(&wal).unwrap();
    bytes[first as usize / 2] ^= 0x55;
    fs::write(&wal, &bytes).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(
        matches!(e, StoreError::Corrupt { ref path, .. } if path.ends_with(WAL_FILE)),
        "{e}"
    );
    assert!(e.to_string().contains("damaged"), "{e}");
    assert!(matches!(
        StoreSnapshot::open(&dir),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn store_corrupt_header_is_an_error() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    s.checkpoint().unwrap();
    drop(s);
    let path = dir.join(HEADER_FILE);
    let good = fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[40] ^= 1;
    fs::write(&path, &bad).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(
        matches!(e, StoreError::Corrupt { ref path, .. } if path.ends_with(HEADER_FILE)),
        "{e}"
    );
    assert!(e.to_string().contains("checksum"), "{e}");
    assert!(matches!(
        StoreSnapshot::open(&dir),
        Err(StoreError::Corrupt { .. })
    ));
    fs::write(&path, &good[..good.len() - 9]).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    fs::write(&path, &good).unwrap();
    ModelStore::open(&dir).unwrap();
}

#[test]
fn store_corrupt_table_is_an_error() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    s.checkpoint().unwrap();
    let table = s.table.path.clone();
    drop(s);
    let good = fs::read(&table).unwrap();
    // Flip a count byte of the first occupied slot.
    let slot = (0..1024usize)
        .map(|i| 4096 + i * 64)
        .find(|&o| good[o] != 0)
        .unwrap();
    let mut bad = good.clone();
    bad[slot + 16] ^= 4;
    fs::write(&table, &bad).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(
        matches!(e, StoreError::Corrupt { ref path, .. } if *path == table),
        "{e}"
    );
    assert!(e.to_string().contains("slot"), "{e}");
    assert!(matches!(
        StoreSnapshot::open(&dir),
        Err(StoreError::Corrupt { .. })
    ));
    // A damaged table header.
    let mut bad = good.clone();
    bad[20] ^= 1;
    fs::write(&table, &bad).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(e.to_string().contains("table header checksum"), "{e}");
    // A truncated table.
    fs::write(&table, &good[..good.len() - 64]).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    // A missing log.
    fs::write(&table, &good).unwrap();
    ModelStore::open(&dir).unwrap();
    fs::remove_file(dir.join(FORENSICS_FILE)).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn store_corrupt_log_is_an_error() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    s.checkpoint().unwrap();
    drop(s);
    let path = dir.join(TRAJECTORY_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[3] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let s = ModelStore::open(&dir).unwrap();
    let e = s.trajectory().err().unwrap();
    assert!(e.to_string().contains("checksum"), "{e}");
    drop(s);
    fs::write(&path, &bytes[..4]).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(e.to_string().contains("checkpoint says"), "{e}");
}

#[test]
fn store_second_writer_is_refused() {
    let (_tmp, dir) = new_store();
    let s = ModelStore::create(&dir, &meta(0)).unwrap();
    let e = ModelStore::open(&dir).err().unwrap();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    // Readers need no lock.
    assert_eq!(StoreSnapshot::open(&dir).unwrap().batch, 0);
    drop(s);
    drop(ModelStore::open(&dir).unwrap());
}

#[test]
fn store_snapshot_sees_only_committed_state() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    let one = view(&s);
    stage(&mut s, 2);
    assert_eq!(snapshot_view(&dir), one);
    s.commit().unwrap();
    let two = view(&s);
    assert_ne!(one, two);
    assert_eq!(snapshot_view(&dir), two);
}

#[test]
fn store_leftovers_of_an_interrupted_growth_are_removed() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    stage(&mut s, 1);
    s.commit().unwrap();
    let before = view(&s);
    drop(s);
    fs::write(dir.join("table.2"), b"half a table").unwrap();
    let header_tmp = dir.join(format!("{}1-0-header", tsem_durable::TEMP_PREFIX));
    fs::write(&header_tmp, b"half a header").unwrap();
    let s = ModelStore::open(&dir).unwrap();
    assert!(!dir.join("table.2").exists());
    assert!(!header_tmp.exists());
    assert_eq!(view(&s), before);
}

#[test]
fn store_checkpoints_keep_the_wal_small() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    s.set_checkpoint_threshold(4096);
    for b in 1..=200 {
        stage(&mut s, b);
        s.commit().unwrap();
        assert!(s.wal_len < 4096 + 2048);
    }
    assert!(s.header.generation > 10);
    let before = view(&s);
    drop(s);
    let s = ModelStore::open(&dir).unwrap();
    assert_eq!(view(&s), before);
    assert_eq!(snapshot_view(&dir), before);
}

/// Snapshots taken in a loop while another thread commits, checkpoints and
/// grows must each equal the state after some committed batch.
#[test]
fn store_snapshots_race_with_writer() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    s.set_checkpoint_threshold(8192);
    // Expected views, recorded by the writer after each commit.
    let mut expected = vec![view(&s)];
    let writer_dir = dir.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_done = done.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !reader_done.load(std::sync::atomic::Ordering::Relaxed) {
            seen.push(snapshot_view(&writer_dir));
        }
        seen
    });
    for b in 1..=150 {
        stage(&mut s, b);
        // Extra points so that the table grows a few times meanwhile.
        for j in 0..30 {
            s.upsert_point(point(1_000_000 + b * 30 + j, 1));
        }
        s.commit().unwrap();
        expected.push(view(&s));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(!seen.is_empty());
    let mut last = 0;
    for v in &seen {
        assert_eq!(
            v, &expected[v.batch as usize],
            "snapshot of batch {}",
            v.batch
        );
        assert!(v.batch >= last);
        last = v.batch;
    }
    eprintln!("{} snapshots checked, last batch {last}", seen.len());
}

/// Random damage to any store file (bit flips, truncation, garbage) gives
/// an error or a consistent store on open, and never a panic.
#[test]
fn store_random_damage_never_panics() {
    let (tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    for b in 1..=3 {
        stage(&mut s, b);
        s.commit().unwrap();
    }
    s.checkpoint().unwrap();
    for b in 4..=6 {
        stage(&mut s, b);
        s.commit().unwrap();
    }
    drop(s);
    let files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != LOCK_FILE)
        .collect();
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut opened, mut refused) = (0, 0);
    for round in 0..150 {
        let copy = tmp.path().join(format!("damaged{round}"));
        copy_dir(&dir, &copy);
        let name = &files[next() as usize % files.len()];
        let path = copy.join(name);
        let mut bytes = fs::read(&path).unwrap();
        match next() % 3 {
            0 if !bytes.is_empty() => {
                let i = next() as usize % bytes.len();
                bytes[i] ^= 1 << (next() % 8);
            }
            1 => bytes.truncate(next() as usize % (bytes.len() + 1)),
            _ => bytes.extend((0..next() % 100).map(|_| next() as u8)),
        }
        fs::write(&path, &bytes).unwrap();
        let _ = StoreSnapshot::open(&copy);
        match ModelStore::open(&copy) {
            Ok(s) => {
                opened += 1;
                let _ = (s.points(), s.trajectory(), s.forensics());
            }
            Err(_) => refused += 1,
        }
        fs::remove_dir_all(&copy).unwrap();
    }
    eprintln!("damaged stores: {opened} opened, {refused} refused");
}

#[test]
fn store_handles_are_send() {
    fn send<T: Send>() {}
    send::<ModelStore>();
    send::<StoreSnapshot>();
}

fn many_points(n: u64) {
    let (_tmp, dir) = new_store();
    let digests: Vec<Digest> = (0..n).map(|i| digest("point", i)).collect();
    let t = Instant::now();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    for (i, &coefficient) in digests.iter().enumerate() {
        let i = i as u64;
        s.upsert_point(StoredPoint {
            coefficient,
            count: i,
            valid: true,
            order: 0,
        });
    }
    let staged = t.elapsed();
    s.commit().unwrap();
    let committed = t.elapsed();
    drop(s);
    // Reopen with the whole batch still in the WAL (replayed).
    let t = Instant::now();
    let mut s = ModelStore::open(&dir).unwrap();
    let reopen_replay = t.elapsed();
    s.checkpoint().unwrap();
    drop(s);
    // Reopen from a checkpoint (table check only).
    let t = Instant::now();
    let s = ModelStore::open(&dir).unwrap();
    let reopen = t.elapsed();
    assert_eq!(s.len() as u64, n);
    for (i, d) in digests.iter().enumerate() {
        let p = s.get(d).unwrap();
        assert_eq!((p.order, p.count), (i as u64, i as u64));
    }
    let points = s.points();
    assert_eq!(points.len() as u64, n);
    assert!(points.iter().enumerate().all(|(i, p)| p.order == i as u64));
    drop(s);
    let t = Instant::now();
    let snap = StoreSnapshot::open(&dir).unwrap();
    let snapshot = t.elapsed();
    assert_eq!(snap.points, points);
    eprintln!(
        "{n} points: staged {staged:?}, committed at {committed:?}, reopen {reopen_replay:?} \
         (replaying the batch) / {reopen:?} (after a checkpoint), snapshot {snapshot:?}"
    );
}

#[test]
fn store_100k_points() {
    many_points(100_000);
}

/// One million points: create, upsert, commit, reopen, in a few seconds in
/// release mode (a debug build runs it, slowly, too).
#[test]
fn store_1m_points() {
    many_points(1_000_000);
}

/// Timings for the documentation: `cargo test --release -p tsem-model
/// store_perf_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn store_perf_report() {
    let (_tmp, dir) = new_store();
    let mut s = ModelStore::create(&dir, &meta(0)).unwrap();
    let digests: Vec<Digest> = (0..100_000).map(|i| digest("point", i)).collect();
    let pt = |i: usize, count: u64| StoredPoint {
        coefficient: digests[i],
        count,
        valid: true,
        order: 0,
    };
    let line = [b'x'; 120];
    let rounds = 300usize;
    let t = Instant::now();
    for b in 0..rounds {
        for j in 0..100 {
            // Half new points, half updates.
            s.upsert_point(pt((b * 50 + j) % digests.len(), b as u64));
        }
        for _ in 0..100 {
            s.append_trajectory(&line);
        }
        s.set_meta(meta(b as u64));
        s.commit().unwrap();
    }
    let per = t.elapsed() / rounds as u32;
    eprintln!(
        "commit of 100 points + 100 lines of 120 bytes: {per:?} per commit (staging included)"
    );
    let t = Instant::now();
    for _ in 0..rounds {
        s.set_meta(meta(1));
        s.commit().unwrap();
    }
    eprintln!("meta-only commit: {:?}", t.elapsed() / rounds as u32);
    let n = 2_000_000usize;
    let t = Instant::now();
    for i in 0..n {
        s.upsert_point(pt(i % digests.len(), i as u64));
    }
    let e = t.elapsed();
    eprintln!(
        "staged upserts ({} distinct points): {:.1} M/s",
        digests.len(),
        n as f64 / e.as_secs_f64() / 1e6
    );
    let t = Instant::now();
    s.commit().unwrap();
    eprintln!("commit of {} points: {:?}", digests.len(), t.elapsed());
    let t = Instant::now();
    let mut found = 0usize;
    for i in 0..n {
        found += usize::from(s.get(&digests[i % digests.len()]).is_some());
    }
    let e = t.elapsed();
    eprintln!(
        "committed lookups: {:.1} M/s ({found} hits)",
        n as f64 / e.as_secs_f64() / 1e6
    );
}
