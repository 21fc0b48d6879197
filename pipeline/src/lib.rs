//! The staged pipeline (reader, workers, sequencer, verdicts) and a kernel simulator.
#![warn(missing_docs)]

pub mod sim;
