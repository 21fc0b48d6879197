//! Model size must not slow events down: per-event cost (parse + map + model
//! update) with 1 k, 100 k and 1 M points in the model, on the conformance
//! corpus mix. `cargo bench --bench model`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tsem_ingest::{Lines, Parser, Record};
use tsem_model::{Digest, Mapper, Model, Profile, Pseudonyms};

fn corpus() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance/events.jsonl"
    );
    std::fs::read(path).expect("conformance corpus (../shared/conformance/events.jsonl)")
}

/// Deterministic filler points (SHA-256 of a counter).
fn filler(n: usize) -> impl Iterator<Item = Digest> {
    (0..n as u64).map(|i| Digest::of(&[&i.to_le_bytes()]))
}

fn bench(c: &mut Criterion) {
    let data = corpus();
    let lines: Vec<&[u8]> = Lines::new(&data).map(|(_, l)| l).collect();
    let mapper = Mapper::new(Profile::Quixote, Pseudonyms::new());
    let mut group = c.benchmark_group("model-size");
    group.throughput(Throughput::Elements(lines.len() as u64));
    for size in [1_000usize, 100_000, 1_000_000] {
        let mut model = Model::new(Profile::Quixote);
        model.keep_descriptions(false);
        for d in filler(size) {
            let _ = model.load_point(d);
        }
        let mut parser = Parser::default();
        group.bench_with_input(BenchmarkId::new("parse+map+update", size), &size, |b, _| {
            b.iter(|| {
                for line in &lines {
                    let _ = parser.parse(line, |r| {
                        if let Record::Event(v) = r {
                            if let Ok(c) = mapper.coefficient(&v) {
                                model.update(c, line);
                            }
                        }
                    });
                }
            })
        });
        let coefficients: Vec<Digest> = model
            .points()
            .iter()
            .rev()
            .take(3000)
            .map(|p| p.coefficient)
            .collect();
        group.bench_with_input(BenchmarkId::new("update-only", size), &size, |b, _| {
            b.iter(|| {
                for c in &coefficients {
                    model.update(*c, b"");
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
