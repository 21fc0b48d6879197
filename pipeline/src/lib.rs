//! The staged pipeline of tsem-stream: reader -> workers -> in-order
//! sequencer -> model and store, with verdicts to the kernel and every
//! record to a tap (the archive, a publisher).
#![warn(missing_docs)]

pub mod engine;
pub mod sink;
pub mod stats;
pub mod verdict;

pub use engine::{
    run, run_answering_here, ErrorPolicy, ModelRequest, Outputs, PipelineError, PipelineOptions,
    ProgressSink, VerdictPolicy,
};
pub use sink::{ModelSink, SinkError};
pub use stats::Stats;
pub use verdict::{ControlProtocol, Task, VerdictWriter};
