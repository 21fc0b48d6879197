//! Results are identical for every worker count and batch size (issue: the
//! sequencer applies results in input order whatever the workers do).

use std::sync::Arc;

use tsem_ingest::MemorySource;
use tsem_ingest::DEFAULT_MAX_RECORD_LEN;
use tsem_model::NoObserver;
use tsem_model::{Mapper, Model, Profile, Pseudonyms};
use tsem_pipeline::{run, ErrorPolicy, ModelSink, Outputs, PipelineOptions};

fn corpus() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/events.jsonl"
    ))
    .expect("corpus")
}

/// Everything observable about a model.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    points: Vec<(String, u64, bool)>,
    trajectory: Vec<Vec<u8>>,
    forensics: Vec<Vec<u8>>,
    measurement: String,
    state: String,
}

fn fingerprint(m: &Model) -> Fingerprint {
    Fingerprint {
        points: m
            .points()
            .iter()
            .map(|p| (p.coefficient.to_hex(), p.count, p.valid))
            .collect(),
        trajectory: m.trajectory().map(<[u8]>::to_vec).collect(),
        forensics: m.forensics().map(<[u8]>::to_vec).collect(),
        measurement: m.measurement().to_hex(),
        state: m.state().to_hex(),
    }
}

fn model_with(data: &[u8], start: Model, workers: usize, batch_lines: usize) -> Model {
    let mut sink = ModelSink::new(start);
    let mapper = Arc::new(Mapper::new(Profile::Quixote, Pseudonyms::new()));
    let options = PipelineOptions {
        workers,
        batch_lines,
        queue_depth: 2 * workers,
        on_error: ErrorPolicy::Stop,
        ..PipelineOptions::default()
    };
    let source = Box::new(MemorySource::new(
        data.to_vec(),
        DEFAULT_MAX_RECORD_LEN,
        "corpus",
    ));
    run(
        source,
        mapper,
        &mut sink,
        Outputs::default(),
        &options,
        &mut NoObserver,
    )
    .expect("pipeline");
    sink.into_model()
}

#[test]
fn free_modeling_is_identical_for_every_worker_count_and_batch_size() {
    let data = corpus();
    let reference = fingerprint(&model_with(&data, Model::new(Profile::Quixote), 1, 256));
    assert_eq!(reference.points.len(), 2212);
    assert_eq!(
        reference.measurement,
        "2b72eefc576a9d7184d777c7d692823d43b76190c0f8e36d4cd2dba828e20c84"
    );
    assert_eq!(
        reference.state,
        "d4196e89625fa29e068cb2c5cf51da65b4efc9b87f8cf209b725f2fe41cf5f51"
    );
    for workers in [1, 2, 3, 8] {
        for batch in [1, 7, 256, 4096] {
            let got = fingerprint(&model_with(
                &data,
                Model::new(Profile::Quixote),
                workers,
                batch,
            ));
            assert!(got == reference, "workers {workers}, batch {batch} differ");
        }
    }
}

#[test]
fn sealed_modeling_with_forensics_is_identical_for_every_worker_count() {
    let data = corpus();
    let half = data.len() / 2;
    let cut = half + data[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut learned = model_with(&data[..cut], Model::new(Profile::Quixote), 1, 256);
    learned.seal();
    let reference = fingerprint(&model_with(&data, learned.clone(), 1, 256));
    assert!(!reference.forensics.is_empty());
    for workers in [2, 3, 8] {
        for batch in [1, 13, 512] {
            let got = fingerprint(&model_with(&data, learned.clone(), workers, batch));
            assert!(got == reference, "workers {workers}, batch {batch} differ");
        }
    }
}
