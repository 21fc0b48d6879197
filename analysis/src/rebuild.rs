//! Recomputing a model from recorded event descriptions (`model rebuild`):
//! every record of a source mapped into a model, aggregates applied. A
//! rebuilt model that silently missed an event would deny it later, so the
//! first line that cannot be used is an error naming it.

use std::io;

use tsem_ingest::{Fetch, Parser, Record, RecordSource};
use tsem_model::{Digest, Mapper, Model};

/// What feeding one source did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Events applied.
    pub events: u64,
    /// Of those, how many made a new point.
    pub new_points: u64,
}

/// Why a source could not be fed whole.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The source could not be read.
    #[error("reading {source_name}: {error}")]
    Read {
        /// The source.
        source_name: String,
        /// The error.
        error: io::Error,
    },
    /// A line could not be used.
    #[error("{source_name}:{line}: {message}")]
    BadLine {
        /// The source.
        source_name: String,
        /// Its line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// Maps every record of `source` with `mapper` into `model` (aggregates
/// applied, log notices and blank lines skipped), until the source ends.
pub fn feed(
    model: &mut Model,
    mapper: &Mapper,
    source: &mut dyn RecordSource,
    parser: &mut Parser,
) -> Result<Fed, FeedError> {
    let name = source.name().to_owned();
    let mut fed = Fed::default();
    loop {
        let fetched = source.fetch(true).map_err(|error| FeedError::Read {
            source_name: name.clone(),
            error,
        })?;
        let (number, bytes) = match fetched {
            Fetch::Record { number, bytes } => (number, bytes),
            Fetch::Oversized { number, len } => {
                return Err(FeedError::BadLine {
                    source_name: name,
                    line: number,
                    message: format!("record of {len} bytes exceeds the limit"),
                })
            }
            Fetch::Idle => continue,
            Fetch::End => return Ok(fed),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mapped = parser
            .parse(bytes, |record| match record {
                Record::Aggregate { value } => value
                    .parse::<Digest>()
                    .map(|d| Some(Err(d)))
                    .map_err(|e| format!("aggregate.value: {e}")),
                Record::LogNotice { .. } => Ok(None),
                Record::Event(view) => mapper
                    .coefficient(&view)
                    .map(|c| Some(Ok(c)))
                    .map_err(|e| format!("{}: {e}", view.type_name)),
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match mapped {
            Err(message) => {
                return Err(FeedError::BadLine {
                    source_name: name,
                    line: number,
                    message,
                })
            }
            Ok(None) => {}
            Ok(Some(Err(aggregate))) => {
                model.set_aggregate(aggregate);
            }
            Ok(Some(Ok(coefficient))) => {
                fed.events += 1;
                fed.new_points += u64::from(model.update(coefficient, bytes).new_point);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsem_ingest::MemorySource;
    use tsem_model::Profile;

    #[test]
    fn feeding_applies_aggregates_and_stops_at_a_bad_line() {
        let mapper = Mapper::new(Profile::Quixote, Default::default());
        let mut model = Model::new(Profile::Quixote);
        let agg = "11".repeat(32);
        let line = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/document-events.jsonl"),
        )
        .unwrap();
        let first = line.lines().next().unwrap();
        let text = format!(
            "{{\"export\": {{\"type\": \"aggregate\"}}, \"aggregate\": {{\"value\": \"{agg}\"}}}}\n\n{first}\n{first}\nnot json\n"
        );
        let mut source = MemorySource::new(text.into_bytes(), 1 << 20, "mem");
        let err = feed(&mut model, &mapper, &mut source, &mut Parser::default())
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("mem:5: "), "{err}");
        assert_eq!(model.aggregate().unwrap().to_hex(), agg);
        assert_eq!(model.events(), 2);
        assert_eq!(model.points().len(), 1);
    }
}
