//! The staged pipeline (reader, workers, sequencer, verdicts).
