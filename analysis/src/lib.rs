//! Analyses over models and events, as data: why an event is not in a model
//! ([`explain`]). The binary renders them.
#![warn(missing_docs)]

pub mod explain;
