//! Analyses over models and events, as data: why an event is not in a model
//! ([`explain`]) and how two inputs differ ([`diff`]). The binary renders them.
#![warn(missing_docs)]

pub mod diff;
pub mod explain;
