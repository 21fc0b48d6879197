//! The management socket of a running workload: `tsem-stream console` asks
//! the orchestrator (`tsem-stream run -P -w NAME`) for views of the live model.
//!
//! # The socket
//!
//! A UNIX stream socket at `<mgmt-dir>/<NAME>`, created with mode 0600 in a
//! directory of mode 0700 owned by the orchestrator's user (the directory is
//! created, or its mode tightened, when needed). The file system already
//! keeps other users out; in addition every connection's peer credentials
//! (`SO_PEERCRED`) are checked, and only root and the orchestrator's
//! effective uid are served. A refused connection gets an error reply and is
//! logged on the orchestrator's stderr. A stale socket left by a crashed
//! orchestrator is replaced; a live one (it accepts a connection) makes the
//! start fail. The socket is removed when the orchestrator exits.
//!
//! # Wire format, version 1
//!
//! Every message, in both directions, is one frame:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic: `TSMQ` for a request, `TSMR` for a reply |
//! | 4 | 2 | protocol version, u16 big-endian: `1` |
//! | 6 | 1 | kind: request `0` (JSON request); reply `0` ok, `1` error |
//! | 7 | 4 | payload length, u32 big-endian |
//! | 11 | n | payload |
//!
//! A request payload is a UTF-8 JSON object of at most 4096 bytes
//! ([`wire::MAX_REQUEST`]), one of:
//!
//! * `{"op": "view", "view": V, "prefix": false, "update": false}`, where V is
//!   `trajectory`, `coefficients`, `counts`, `forensics`,
//!   `forensics-coefficients`, `forensics-counts`, `state`, `measurement` or
//!   `model`; `prefix` puts `state ` before coefficient lines, `update` adds
//!   the forensics points to `model` (both optional, default false). The ok
//!   payload is exactly what `tsem-stream show V` prints (without the
//!   terminal header).
//! * `{"op": "sizes"}`: the ok payload is `{"valid": N, "forensics": M}`, the
//!   numbers of valid and of forensics points (for the console's headers).
//! * `{"op": "seal"}`: seals the model (new coefficients become forensics,
//!   synchronous events outside the model are answered `untrusted`); the ok
//!   payload is empty.
//!
//! Unknown JSON fields are ignored (a later minor addition stays readable);
//! anything that changes the meaning of a frame gets a new version.
//!
//! An error reply's payload is a UTF-8 message. A request whose JSON is
//! malformed or names an unknown operation or view gets an error reply and
//! the connection stays usable. A frame with a wrong magic, an unsupported
//! version, an unknown kind or a payload over the limit gets an error reply
//! and the connection is closed (the stream is no longer known to be at a
//! frame boundary); the server never reads the payload of an oversized frame.
//! A connection may carry any number of requests, answered in order; idle
//! connections are closed after a while.
//!
//! Requests are answered by the pipeline's sequencer between two batches
//! ([`tsem_pipeline::ModelRequest`]), so every answer sees the model as it stood
//! after a whole batch, without locks on the hot path; after the input has
//! ended the orchestrator answers them itself ([`answer`]).
//!
//! Quixote's binary management protocol (mapping.md M13) is not spoken.

pub mod client;
pub mod server;
pub mod wire;

use std::io;
use std::path::PathBuf;

use crossbeam_channel::{Receiver, Sender};

use tsem_model::views::View;

use tsem_pipeline::{ModelRequest, ModelSink};

pub use client::{list_workloads, Client};
pub use server::{socket_path, validate_name, Endpoint, Server};
pub use wire::{Reply, Request, Sizes, WireError};

/// The default directory of the management sockets.
pub const DEFAULT_MGMT_DIR: &str = "/var/lib/tsem-stream/mgmt";

/// Why a management operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    /// A workload name that cannot be a socket name.
    #[error(
        "invalid workload name {0:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    InvalidName(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The management directory or socket is not safe to use.
    #[error("{0}")]
    Insecure(String),
    /// Another orchestrator serves this workload name.
    #[error("workload {name} is already running ({})", path.display())]
    InUse {
        /// The workload name.
        name: String,
        /// Its socket.
        path: PathBuf,
    },
    /// A malformed message.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The server answered with an error.
    #[error("{0}")]
    Remote(String),
}

/// Answers a request from the model itself, once the pipeline that normally
/// answers them has ended (the workload may still run for a while).
pub fn answer(request: ModelRequest, sink: &mut ModelSink) {
    request.answer(sink);
}

/// The channel between a management [`Server`] and whoever answers its
/// requests (the pipeline's sequencer, then [`answer_until`]); bounded, so
/// that a flood of requests pushes back on the clients.
pub fn request_channel() -> (Sender<ModelRequest>, Receiver<ModelRequest>) {
    crossbeam_channel::bounded(64)
}

/// Answers requests from the model itself until `done` delivers (returned),
/// for the time between the end of the pipeline and the end of the
/// workload. `None` when `done` is disconnected without a message.
pub fn answer_until<T>(
    requests: &Receiver<ModelRequest>,
    sink: &mut ModelSink,
    done: &Receiver<T>,
) -> Option<T> {
    loop {
        crossbeam_channel::select! {
            recv(requests) -> r => match r {
                Ok(request) => answer(request, sink),
                // No server any more: only the end is left to wait for.
                Err(_) => return done.recv().ok(),
            },
            recv(done) -> d => return d.ok(),
        }
    }
}

/// The header line `quixote-console` prints before a list on a terminal,
/// from the sizes a server reported (the same text as
/// [`View::terminal_header`] gives for the model itself).
pub fn terminal_header(view: View, sizes: Sizes) -> Option<String> {
    view.header_for(sizes.valid, sizes.forensics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsem_model::{Digest, Model, Profile};

    fn digest(i: u8) -> Digest {
        format!("{i:02x}").repeat(32).parse().unwrap()
    }

    #[test]
    fn headers_match_the_model_views() {
        let mut model = Model::new(Profile::Quixote);
        for i in 0..5 {
            model.update(digest(i), b"{}");
        }
        model.seal();
        for i in 10..12 {
            model.update(digest(i), b"{}");
        }
        let sizes = Sizes {
            valid: 5,
            forensics: 2,
        };
        for name in [
            "trajectory",
            "coefficients",
            "counts",
            "forensics",
            "forensics-coefficients",
            "forensics-counts",
            "state",
            "measurement",
            "model",
        ] {
            let view = View::from_name(name, false).unwrap();
            assert_eq!(
                terminal_header(view, sizes),
                view.terminal_header(&model),
                "{name}"
            );
        }
    }

    #[test]
    fn local_answers_render_and_seal() {
        let mut sink = ModelSink::new(Model::new(Profile::Quixote));
        let (tx, rx) = crossbeam_channel::bounded(1);
        answer(
            ModelRequest::View {
                view: View::State,
                prefix: false,
                reply: tx,
            },
            &mut sink,
        );
        let state = rx.recv().unwrap().unwrap();
        assert_eq!(state.len(), 65);
        let (tx, rx) = crossbeam_channel::bounded(1);
        answer(ModelRequest::Seal { reply: tx }, &mut sink);
        rx.recv().unwrap().unwrap();
        assert!(sink.model().is_sealed());
    }

    #[test]
    fn requests_are_answered_until_done() {
        let mut sink = ModelSink::new(Model::new(Profile::Quixote));
        let (req_tx, req_rx) = request_channel();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let client = std::thread::spawn(move || {
            let (tx, rx) = crossbeam_channel::bounded(1);
            req_tx
                .send(ModelRequest::View {
                    view: View::Measurement,
                    prefix: false,
                    reply: tx,
                })
                .unwrap();
            let answer = rx.recv().unwrap().unwrap();
            done_tx.send(7).unwrap();
            answer
        });
        assert_eq!(answer_until(&req_rx, &mut sink, &done_rx), Some(7));
        assert_eq!(client.join().unwrap().len(), 65);
    }
}
