//! The summary every modeling command prints (`--summary json|text`), as one
//! typed value: the JSON object and the text lines come from the same fields.

use std::io::{self, Write};

use serde::Serialize;
use tsem_fleet::PublishReport;
use tsem_pipeline::{ModelSink, Stats};

/// What a run did to its model.
#[derive(Debug, Serialize)]
pub struct Summary {
    // Fields in alphabetical order: the JSON keys come out in the order
    // they always had (scripts match `{"aggregate"` at the start of a line).
    /// The hardware aggregate (hex), when known.
    pub aggregate: Option<String>,
    /// The base nonce (hex).
    pub base: String,
    /// Lines that could not be used.
    pub errors: u64,
    /// Events applied.
    pub events: u64,
    /// Forensics points (new behaviour under a sealed model).
    pub forensics: usize,
    /// The measurement (hex).
    pub measurement: String,
    /// Points of the model.
    pub points: usize,
    /// The mapping profile.
    pub profile: &'static str,
    /// Pseudonyms of the model.
    pub pseudonyms: usize,
    /// What was published, per destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<PublishReport>>,
    /// Whether the model is sealed.
    pub sealed: bool,
    /// The state (hex).
    pub state: String,
    /// The pipeline's statistics, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
    /// Events whose names are not in the TSEM table (mapped generically).
    pub unknown_event_names: u64,
    /// Events that violated the sealed model.
    pub violations: u64,
}

impl Summary {
    /// The summary of `sink`'s model, with the run's statistics.
    pub fn of(sink: &ModelSink, stats: Option<&Stats>) -> Summary {
        let m = sink.model();
        Summary {
            events: m.events(),
            points: m.points().len(),
            forensics: m.forensics_points(),
            violations: m.violations(),
            measurement: m.measurement().to_hex(),
            state: m.state().to_hex(),
            aggregate: m.aggregate().map(|a| a.to_hex()),
            base: m.base().to_hex(),
            profile: m.profile().name(),
            sealed: m.is_sealed(),
            pseudonyms: m.pseudonyms().len(),
            unknown_event_names: sink.unknown_event_names(),
            errors: sink.errors(),
            stats: stats.map(Stats::to_json),
            publish: None,
        }
    }

    /// One JSON object on a line.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self).map_err(io::Error::other)?;
        writeln!(out)
    }

    /// The text summary (stderr): counts, measurement, state, the rate, and
    /// one line per publishing destination.
    pub fn write_text(&self, out: &mut impl Write, stats: Option<&Stats>) -> io::Result<()> {
        writeln!(
            out,
            "events {} points {} forensics {} errors {}\nmeasurement {}\nstate {}",
            self.events, self.points, self.forensics, self.errors, self.measurement, self.state
        )?;
        if let Some(st) = stats {
            writeln!(
                out,
                "{:.0} records/s with {} worker(s)",
                st.rate(),
                st.workers
            )?;
        }
        for r in self.publish.iter().flatten() {
            writeln!(
                out,
                "published {} to \"{}\" ({} duplicates, {} dropped, {} pending), {:.0} messages/s",
                r.published, r.url, r.duplicates, r.dropped, r.pending, r.rate
            )?;
        }
        Ok(())
    }
}
