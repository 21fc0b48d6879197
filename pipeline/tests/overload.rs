//! Overload: a record tap (the archive) slower than the kernel. Memory stays
//! bounded, back-pressure is counted, every synchronous event is still
//! answered, and every record reaches the tap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tsem_ingest::export::ExportReader;
use tsem_ingest::TimedSource;
use tsem_ingest::{LineTap, TapBatch};
use tsem_model::NoObserver;
use tsem_model::{Mapper, Model, Profile, Pseudonyms};
use tsem_pipeline::{ControlProtocol, ModelSink, Outputs, PipelineOptions, VerdictWriter};
use tsem_sim::{self as sim, SimOptions};

/// A tap that takes 2 ms per batch, like a slow disk.
struct SlowTap {
    records: Arc<AtomicU64>,
}

impl LineTap for SlowTap {
    fn write_batch(&mut self, batch: &TapBatch<'_>) -> std::io::Result<()> {
        self.records
            .fetch_add(batch.records().count() as u64, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn a_slow_archive_slows_reading_but_every_sync_event_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    // 12 000 events: the conformance corpus four times.
    let corpus = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/events.jsonl"
    ))
    .unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, corpus.repeat(4)).unwrap();
    let root = dir.path().join("tsem");
    let mut opts = SimOptions::new(&root, &events);
    opts.verdict_timeout = Duration::from_secs(20);
    let sim_thread = std::thread::spawn(move || sim::run(&opts));
    let control = root.join("control");
    let export = root.join("external_tma/1");
    let start = Instant::now();
    while !(control.exists() && export.exists()) {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(2));
    }
    let verdicts = Arc::new(VerdictWriter::open(&control, ControlProtocol::Tnum).unwrap());
    let source = Box::new(TimedSource::new(
        ExportReader::open(&export).unwrap(),
        "export",
    ));
    let records = Arc::new(AtomicU64::new(0));
    let outputs = Outputs {
        verdicts: Some(verdicts),
        tap: Some(Box::new(SlowTap {
            records: Arc::clone(&records),
        })),
        ..Outputs::default()
    };
    let options = PipelineOptions {
        workers: 2,
        batch_lines: 16,
        queue_depth: 4,
        ..PipelineOptions::default()
    };
    let mut model = Model::new(Profile::Quixote);
    model.keep_descriptions(false);
    let mut sink = ModelSink::new(model);
    let mapper = Arc::new(Mapper::new(Profile::Quixote, Pseudonyms::new()));
    let stats = tsem_pipeline::run(
        source,
        mapper,
        &mut sink,
        outputs,
        &options,
        &mut NoObserver,
    )
    .unwrap();
    let report = sim_thread.join().unwrap().unwrap();
    assert_eq!(report.events, 12_000);
    assert_eq!(report.missing, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.verdicts, 12_000);
    // Every record reached the slow tap (the aggregate record too).
    assert_eq!(records.load(Ordering::Relaxed), 12_001);
    // The slow tap pushed back, and that is visible.
    assert!(
        stats.tap_stalls + stats.stalls > 0,
        "no back-pressure was counted"
    );
    // Bounded: the arenas in flight are few; the whole test process stays small.
    assert!(
        peak_rss_kib() < 256 * 1024,
        "peak RSS {} KiB",
        peak_rss_kib()
    );
}
