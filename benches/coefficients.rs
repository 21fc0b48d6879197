//! Parse and map cost per event on the conformance corpus (`shared/conformance/events.jsonl`).
//!
//! `cargo bench --bench coefficients`; criterion reports time per iteration of
//! the whole corpus, and the throughput in events per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tsem_ingest::{Lines, Parser, Record};
use tsem_model::{Mapper, Profile, Pseudonyms};

fn corpus() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance/events.jsonl"
    );
    std::fs::read(path).expect("conformance corpus (../shared/conformance/events.jsonl)")
}

fn bench(c: &mut Criterion) {
    let data = corpus();
    let events = Lines::new(&data).count() as u64;
    let mut group = c.benchmark_group("conformance-corpus");
    group.throughput(Throughput::Elements(events));

    group.bench_function("parse", |b| {
        let mut parser = Parser::default();
        b.iter(|| {
            let mut n = 0usize;
            for (_, line) in Lines::new(&data) {
                n += parser
                    .parse(line, |r| matches!(r, Record::Event(_)) as usize)
                    .unwrap_or(0);
            }
            n
        })
    });

    for profile in [Profile::Quixote, Profile::Kernel] {
        let mapper = Mapper::new(profile, Pseudonyms::new());
        group.bench_function(format!("parse+map/{profile}"), |b| {
            let mut parser = Parser::default();
            b.iter(|| {
                let mut acc = 0u8;
                for (_, line) in Lines::new(&data) {
                    if let Ok(Ok(c)) = parser.parse(line, |r| match r {
                        Record::Event(v) => mapper.coefficient(&v),
                        _ => Ok(Default::default()),
                    }) {
                        acc ^= c.0[0];
                    }
                }
                acc
            })
        });
    }
    // Mapping alone: the parse happens outside the timed part.
    for profile in [Profile::Quixote, Profile::Kernel] {
        let mapper = Mapper::new(profile, Pseudonyms::new());
        group.bench_function(format!("map/{profile}"), |b| {
            let mut parser = Parser::default();
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    for (_, line) in Lines::new(&data) {
                        let _ = parser.parse(line, |r| {
                            if let Record::Event(v) = r {
                                let t0 = std::time::Instant::now();
                                let c = mapper.coefficient(&v);
                                total += t0.elapsed();
                                std::hint::black_box(c.ok());
                            }
                        });
                    }
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
