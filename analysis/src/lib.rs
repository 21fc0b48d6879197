//! Analyses over models and events, as data: why an event is not in a model
//! ([`explain`]), how two inputs differ ([`diff`]), and a model recomputed
//! from recorded events ([`rebuild`]). The binary renders them.
#![warn(missing_docs)]

pub mod diff;
pub mod explain;
pub mod rebuild;
