//! End-to-end pipeline over an in-memory corpus for 1, 2, 4 and 8 workers, and
//! the model store's batch apply + durability flush. `cargo bench --bench pipeline`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tsem_ingest::MemorySource;
use tsem_ingest::DEFAULT_MAX_RECORD_LEN;
use tsem_model::NoObserver;
use tsem_model::{Digest, Mapper, Model, Profile, Pseudonyms};
use tsem_pipeline::{ModelSink, Outputs, PipelineOptions};
use tsem_sim::corpus::{generate, CorpusSpec};
use tsem_store::{ModelStore, StoreMeta, StoredPoint};

fn templates() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/conformance-mix.jsonl"
    );
    std::fs::read(path).expect("examples/conformance-mix.jsonl")
}

fn pipeline(c: &mut Criterion) {
    let spec = CorpusSpec {
        events: 100_000,
        new_fraction: 0.02,
        seed: 1,
    };
    let mut corpus = Vec::new();
    generate(&templates(), &spec, &mut corpus).expect("corpus");
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(spec.events));
    group.sample_size(10);
    for workers in [1usize, 2, 4, 8] {
        group.bench_with_input(
            BenchmarkId::new("learn", workers),
            &workers,
            |b, &workers| {
                b.iter(|| {
                    let mut model = Model::new(Profile::Quixote);
                    model.keep_descriptions(false);
                    let mut sink = ModelSink::new(model);
                    let source = Box::new(MemorySource::new(
                        corpus.clone(),
                        DEFAULT_MAX_RECORD_LEN,
                        "bench",
                    ));
                    let mapper = Arc::new(Mapper::new(Profile::Quixote, Pseudonyms::new()));
                    let options = PipelineOptions {
                        workers,
                        queue_depth: 4 * workers,
                        ..PipelineOptions::default()
                    };
                    tsem_pipeline::run(
                        source,
                        mapper,
                        &mut sink,
                        Outputs::default(),
                        &options,
                        &mut NoObserver,
                    )
                    .expect("pipeline")
                })
            },
        );
    }
    group.finish();
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = StoreMeta {
        profile: Profile::Quixote,
        aggregate: None,
        host_aggregate: None,
        base: Digest::ZERO,
        measurement: Digest::ZERO,
        sealed: false,
        enforcing: false,
        events: 0,
        violations: 0,
        unknown_event_names: 0,
        errors: 0,
    };
    let mut store = ModelStore::create(&dir.path().join("store"), &meta).expect("store");
    let line = vec![b'x'; 700];
    let mut next = 0u64;
    let mut group = c.benchmark_group("store");
    for batch in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("apply+commit", batch),
            &batch,
            |b, &batch| {
                b.iter(|| {
                    for _ in 0..batch {
                        next += 1;
                        store.upsert_point(StoredPoint {
                            coefficient: Digest::of(&[&next.to_le_bytes()]),
                            count: 1,
                            valid: true,
                            order: 0,
                        });
                        store.append_trajectory(&line);
                    }
                    store.commit().expect("commit")
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(5));
    targets = pipeline, store
}
criterion_main!(benches);
