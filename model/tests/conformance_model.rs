//! The model algebra against the reference values: measurement and state after
//! every line of the conformance corpus, and the pseudonym case's final values.

use tsem_ingest::{Lines, Parser, Record};
use tsem_model::{Digest, Mapper, Model, Profile, Pseudonyms};

fn shared(rel: &str) -> String {
    let path = format!(
        "{}/../../shared/conformance/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Models every line of `events`, calling `each` with the model after each line.
fn model_lines(events: &str, pseudonyms: Pseudonyms, mut each: impl FnMut(usize, &Model)) -> Model {
    let mapper = Mapper::new(Profile::Quixote, pseudonyms.clone());
    let mut model = Model::new(Profile::Quixote);
    for p in pseudonyms.iter() {
        model.add_pseudonym(*p);
    }
    let mut parser = Parser::default();
    for (i, (_, line)) in Lines::new(events.as_bytes()).enumerate() {
        let c = parser
            .parse(line, |r| match r {
                Record::Event(v) => mapper.coefficient(&v).expect("maps"),
                other => panic!("not an event: {other:?}"),
            })
            .expect("parses");
        model.update(c, line);
        each(i, &model);
    }
    model
}

#[test]
fn measurement_and_state_after_every_line_match_quixote() {
    let measurements: Vec<String> = shared("expected-measurements.txt")
        .lines()
        .map(str::to_owned)
        .collect();
    let states: Vec<String> = shared("expected-states.txt")
        .lines()
        .map(str::to_owned)
        .collect();
    let model = model_lines(&shared("events.jsonl"), Pseudonyms::new(), |i, m| {
        assert_eq!(
            m.measurement().to_hex(),
            measurements[i],
            "measurement after line {}",
            i + 1
        );
        assert_eq!(m.state().to_hex(), states[i], "state after line {}", i + 1);
    });
    assert_eq!(model.state().to_hex(), *states.last().unwrap());
    let points: Vec<String> = model
        .points()
        .iter()
        .map(|p| p.coefficient.to_hex())
        .collect();
    let expected: Vec<String> = shared("expected-points.txt")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(points, expected);
}

#[test]
fn pseudonym_case_final_values_match_with_and_without() {
    let events = shared("pseudonym/events.jsonl");
    let expected: serde_json::Value =
        serde_json::from_str(&shared("pseudonym/expected-trajectory.json")).unwrap();
    let pseudonyms = Pseudonyms::from_text(&shared("pseudonym/model.txt")).unwrap();
    let with = model_lines(&events, pseudonyms, |_, _| {});
    let w = &expected["with_pseudonyms"];
    assert_eq!(with.measurement().to_hex(), w["measurement"]);
    assert_eq!(with.state().to_hex(), w["state"]);
    assert_eq!(with.points().len() as u64, w["unique_points"]);
    let without = model_lines(&events, Pseudonyms::new(), |_, _| {});
    let wo = &expected["without_pseudonyms"];
    assert_eq!(without.measurement().to_hex(), wo["measurement"]);
    assert_eq!(without.state().to_hex(), wo["state"]);
}

#[test]
fn free_running_model_with_aggregate_reproduces_spec_v15() {
    let agg: Digest = "de2b9c37eb1ceefa4bcbc6d8412920693d3272f30eb5ba98d51d2f898d620289"
        .parse()
        .unwrap();
    let mut m = Model::new(Profile::Quixote);
    m.set_aggregate(agg);
    assert_eq!(
        m.host_aggregate().unwrap().to_hex(),
        "2f20fe4d3d46fe02f97ffe6117b30db9ae0b1927efdaa1e45d1b20e63961e979"
    );
    let c = |s: &str| -> Digest { s.parse().unwrap() };
    for x in [
        "be625ed6bb24968652a7e61c9966b3588879dd9d69f3b3d728fefde57c60331b",
        "b8ab1634ba11dac1abda72216a31151d2fd531796856c2857b662f3d5127d15d",
        "be625ed6bb24968652a7e61c9966b3588879dd9d69f3b3d728fefde57c60331b",
        "5b15658b02fd26e7b679b125fc93bb9feb64a2c47614d6ae34f58d3dee95da65",
        "b139d2bc24f6d196a2a342d37a4443c3cadefda683301cc95c64a449f4418e9f",
    ] {
        m.update(c(x), b"");
    }
    assert_eq!(
        m.measurement().to_hex(),
        "9fb74b8308a7ae61b169f04adba1c8a5cdbc4b10958ccd51dabe45443a097e78"
    );
    assert_eq!(
        m.state().to_hex(),
        "8dbdb4dff211946f55b0764c0272630a41c43e6506e63552608b26522a97171c"
    );
    let counts: Vec<u64> = m.points().iter().map(|p| p.count).collect();
    assert_eq!(counts, vec![2, 1, 1, 1]);
}

#[test]
fn no_aggregate_defaults_to_zero_spec_v17() {
    let mut m = Model::new(Profile::Quixote);
    m.update(
        "be625ed6bb24968652a7e61c9966b3588879dd9d69f3b3d728fefde57c60331b"
            .parse()
            .unwrap(),
        b"",
    );
    assert_eq!(
        m.host_aggregate().unwrap().to_hex(),
        "b62c0bf36d7fee9a6ed49f7529e9fbf6ebc93268f43832b4033eef0ba335ba65"
    );
    assert_eq!(
        m.measurement().to_hex(),
        "ca5be7ec2106bfb21e10ad36ba85a21704988f4211df8ecc8a969c2daff88ffb"
    );
    assert_eq!(m.state(), m.measurement());
}
