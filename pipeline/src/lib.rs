//! The staged pipeline of tsem-stream (reader -> workers -> in-order
//! sequencer -> model/store, with verdicts to the kernel) and a kernel simulator.
#![warn(missing_docs)]

pub mod corpus;
pub mod engine;
pub mod mgmt;
pub mod orchestrate;
pub mod sim;
pub mod sink;
pub mod source;
pub mod stats;
pub mod verdict;

pub use engine::{
    run, run_answering_here, ErrorPolicy, LineTap, Mapped, ModelRequest, NoObserver, Observer,
    Outputs, PipelineError, PipelineOptions, Serial, TapBatch, TeeTap, VerdictPolicy,
};
pub use sink::ModelSink;
pub use source::{Fetch, RecordSource};
pub use stats::Stats;
pub use verdict::{ControlProtocol, Task, VerdictWriter};
