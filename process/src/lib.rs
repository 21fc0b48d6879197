//! Process mode of tsem-stream: running a workload in a TSEM modeling
//! namespace of its own on a real kernel (both control generations), with
//! the pipeline answering its events ([`orchestrate`]); and the management
//! socket through which a running agent is asked for its model and told to
//! seal it, with its client ([`mgmt`]).
#![warn(missing_docs)]

pub mod mgmt;
pub mod orchestrate;
