//! Fleet-scale streaming of TSEM records: every host's trajectory in one
//! durable place, fleet-wide models, alerts on forensics.
//!
//! * Publishing ([`publish`]): the pipeline's records go to NATS JetStream
//!   (subject `tsem.HOST.NAMESPACE.events`, de-duplication id
//!   `HOST.NAMESPACE.SEQ`) or to MQTT (QoS 1, one record per message), and
//!   forensics and verdict summaries to `tsem.HOST.NAMESPACE.forensics`.
//!   Records pass through a bounded disk buffer ([`spool`]) so that a slow
//!   or absent server never holds the pipeline back; what the buffer cannot
//!   take is counted and reported.
//! * Consuming ([`nats::NatsSource`]): a JetStream pull consumer as a
//!   pipeline record source, acknowledged once records are applied (or
//!   archived), so a central host can model or archive the whole fleet.
//! * Fleet models ([`fleetmodel`]): the coefficients seen on at least K
//!   hosts, and per host the others.
//!
//! # Delivery guarantees
//!
//! A record is removed from the buffer only after the server acknowledged
//! it. After a failure (a timeout, a server restart) the unacknowledged
//! batch is sent again with the same ids, and JetStream drops what it
//! already stored within its duplicate window (default 2 minutes,
//! `duplicate_window=`). A record's id comes from its sequence number in the
//! run (the input's line number, an archive's sequence number), so running
//! the same input again publishes nothing twice within that window. Outages
//! longer than the window can duplicate at most the one batch that was in
//! flight when the server went away. MQTT has no ids: QoS 1 is at least once.
#![warn(missing_docs)]

pub mod fleetmodel;
pub mod mqtt;
pub mod nats;
pub mod publish;
pub mod spool;
pub mod subject;
pub mod target;

use std::io;
use std::path::PathBuf;

pub use fleetmodel::{FleetModel, FleetResult};
pub use nats::{NatsAcker, NatsSource, SourceOptions};
pub use publish::{PublishReport, Publisher, PublisherConfig, Publishing};
pub use subject::Names;
pub use target::{Server, Target};

/// The clients this crate speaks with, for programs and tests that talk to
/// the same servers directly (with the same versions).
pub mod clients {
    pub use async_nats;
    pub use rumqttc;
    pub use tokio;
}

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An address or its options are wrong.
    #[error("{url}: {what}")]
    Address {
        /// The address as given.
        url: String,
        /// What is wrong.
        what: String,
    },
    /// A file operation on a buffer failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The buffer directory could have been planted or changed by another user.
    #[error(transparent)]
    Untrusted(#[from] tsem_durable::TrustError),
    /// Another process publishes through this buffer.
    #[error("{}: buffer in use by another publisher", .0.display())]
    Busy(PathBuf),
    /// Talking to the NATS server failed.
    #[error("nats: {0}")]
    Nats(String),
}
