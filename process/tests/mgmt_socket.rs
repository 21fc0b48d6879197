//! The management socket over a real UNIX socket: a server whose requests
//! are answered from a model (as the orchestrator does once its input has
//! ended), the client, and what the server does with bad input.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use tsem_model::views::{render, View};
use tsem_model::{Digest, Model, Profile};
use tsem_pipeline::ModelSink;
use tsem_process::mgmt::wire::{self, Reply, Request, WireError, MAX_REQUEST, REQUEST_MAGIC};
use tsem_process::mgmt::{self, Client, Endpoint, MgmtError, Sizes};

fn digest(i: u8) -> Digest {
    format!("{i:02x}").repeat(32).parse().unwrap()
}

/// A model with 3 valid points, sealed, then 2 forensics points.
fn model() -> Model {
    let mut m = Model::new(Profile::Quixote);
    for i in 0..3 {
        m.update(digest(i), format!("{{\"valid\": {i}}}").as_bytes());
    }
    m.seal();
    for i in 10..12 {
        m.update(digest(i), format!("{{\"new\": {i}}}").as_bytes());
    }
    m
}

/// Serves `model` on `<dir>/<name>` until the returned sender is dropped.
fn serve(dir: &Path, name: &str) -> (mgmt::Server, Sender<()>, JoinHandle<ModelSink>) {
    let endpoint = Endpoint::bind(dir, name).unwrap();
    let (tx, rx) = mgmt::request_channel();
    let server = endpoint.serve(tx).unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let answerer = std::thread::spawn(move || {
        let mut sink = ModelSink::new(model());
        mgmt::answer_until(&rx, &mut sink, &done_rx);
        sink
    });
    (server, done_tx, answerer)
}

fn expected(view: View, prefix: bool) -> Vec<u8> {
    let mut out = Vec::new();
    render(&model(), view, prefix, &mut out).unwrap();
    out
}

#[test]
fn views_sizes_and_seal_through_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mgmt_dir = dir.path().join("mgmt");
    let (server, done, answerer) = serve(&mgmt_dir, "web");
    let path = mgmt_dir.join("web");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&mgmt_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(mgmt::list_workloads(&mgmt_dir).unwrap(), ["web"]);

    let mut c = Client::connect(&path).unwrap();
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
        for prefix in [false, true] {
            let view = View::from_name(name, false).unwrap();
            assert_eq!(
                c.view(name, prefix, false).unwrap(),
                expected(view, prefix),
                "{name} {prefix}"
            );
        }
    }
    let updated = c.view("model", false, true).unwrap();
    assert_eq!(updated, expected(View::Model { update: true }, false));
    assert!(String::from_utf8_lossy(&updated).contains("# 2 forensic updates"));
    assert_eq!(
        c.sizes().unwrap(),
        Sizes {
            valid: 3,
            forensics: 2
        }
    );
    assert!(matches!(
        c.view("nonsense", false, false),
        Err(MgmtError::Remote(m)) if m.contains("unknown view")
    ));
    // The connection survives an error reply.
    c.seal().unwrap();
    assert_eq!(c.view("counts", false, false).unwrap(), b"1\n1\n1\n");

    drop(done);
    let sink = answerer.join().unwrap();
    assert!(sink.model().is_sealed());
    // Nobody answers any more: an error, not a hang.
    assert!(matches!(
        c.view("state", false, false),
        Err(MgmtError::Remote(_))
    ));
    server.shutdown();
    assert!(!path.exists(), "the socket is removed");
}

/// Sends raw bytes, then reads everything the server sends until it closes
/// (or the read times out).
fn exchange(path: &Path, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(bytes).unwrap();
    if close_write {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn replies(mut bytes: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    loop {
        match wire::read_reply(&mut bytes) {
            Ok(r) => out.push(r),
            Err(WireError::Eof) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

fn request_bytes(r: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_request(&mut out, r).unwrap();
    out
}

#[test]
fn bad_requests_get_error_replies_and_never_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _done, _answerer) = serve(dir.path(), "db");
    let path = dir.path().join("db");

    // Garbage: one error reply, then the server closes the connection.
    let r = replies(&exchange(&path, b"show trajectory\n", false));
    assert!(matches!(&r[..], [Reply::Error(m)] if m.contains("not a tsem-stream")));

    // Oversized: refused from the header alone.
    let big = wire::header(REQUEST_MAGIC, 0, (MAX_REQUEST * 1000) as u32);
    let r = replies(&exchange(&path, &big, false));
    assert!(matches!(&r[..], [Reply::Error(m)] if m.contains("exceeds the limit")));

    // Another version.
    let mut v9 = wire::header(REQUEST_MAGIC, 0, 2).to_vec();
    v9[5] = 9;
    v9.extend(b"{}");
    let r = replies(&exchange(&path, &v9, false));
    assert!(matches!(&r[..], [Reply::Error(m)] if m.contains("version 9")));

    // Malformed JSON, then a good request on the same connection.
    let mut bytes = wire::header(REQUEST_MAGIC, 0, 5).to_vec();
    bytes.extend(b"{\"op\"");
    bytes.extend(request_bytes(&Request::view("state", false, false)));
    let r = replies(&exchange(&path, &bytes, true));
    assert_eq!(r.len(), 2);
    assert!(matches!(&r[0], Reply::Error(m) if m.contains("malformed request")));
    assert_eq!(r[1], Reply::Ok(expected(View::State, false)));

    // Truncated: the server just closes.
    let whole = request_bytes(&Request::Sizes);
    let r = replies(&exchange(&path, &whole[..whole.len() - 3], true));
    assert!(r.is_empty());

    // Several requests in one write are answered in order.
    let mut bytes = request_bytes(&Request::view("counts", false, false));
    bytes.extend(request_bytes(&Request::view(
        "forensics-counts",
        false,
        false,
    )));
    let r = replies(&exchange(&path, &bytes, true));
    assert_eq!(
        r,
        [
            Reply::Ok(b"1\n1\n1\n".to_vec()),
            Reply::Ok(b"1\n1\n".to_vec())
        ]
    );

    // Still serving.
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.sizes().unwrap().valid, 3);
    server.shutdown();
}

#[test]
fn a_live_name_is_refused_and_a_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _done, _answerer) = serve(dir.path(), "app");
    assert!(matches!(
        Endpoint::bind(dir.path(), "app"),
        Err(MgmtError::InUse { .. })
    ));
    // A socket nobody listens on any more (a crashed orchestrator).
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("old")).unwrap());
    let replaced = Endpoint::bind(dir.path(), "old").unwrap();
    assert_eq!(replaced.path(), dir.path().join("old"));
    // Something that is not a socket is left alone.
    std::fs::write(dir.path().join("file"), "keep").unwrap();
    assert!(matches!(
        Endpoint::bind(dir.path(), "file"),
        Err(MgmtError::Insecure(_))
    ));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file")).unwrap(),
        "keep"
    );
    assert!(matches!(
        Endpoint::bind(dir.path(), "../escape"),
        Err(MgmtError::InvalidName(_))
    ));
    drop(replaced);
    server.shutdown();
}
