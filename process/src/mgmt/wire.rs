//! Framing and messages of the management protocol (version 1); the layout
//! is documented in the [parent module](super).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// First four bytes of every request frame.
pub const REQUEST_MAGIC: [u8; 4] = *b"TSMQ";
/// First four bytes of every reply frame.
pub const REPLY_MAGIC: [u8; 4] = *b"TSMR";
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// Bytes before the payload: magic (4), version (2), kind (1), length (4).
pub const HEADER_LEN: usize = 11;
/// Longest request payload a server accepts (requests are a few dozen bytes).
pub const MAX_REQUEST: usize = 4096;
/// Longest reply payload (the largest length the header can carry).
pub const MAX_REPLY: usize = u32::MAX as usize;

/// Kind byte of a request frame: a JSON request.
pub const KIND_REQUEST: u8 = 0;
/// Kind byte of a reply frame: success, the payload is the answer.
pub const KIND_OK: u8 = 0;
/// Kind byte of a reply frame: failure, the payload is a UTF-8 message.
pub const KIND_ERROR: u8 = 1;

/// Why a frame could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection between two frames.
    #[error("the connection was closed")]
    Eof,
    /// The peer closed the connection in the middle of a frame.
    #[error("the connection was closed in the middle of a message ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received of the part being read.
        got: usize,
        /// Bytes that part needs.
        want: usize,
    },
    /// The frame does not start with the expected magic.
    #[error("not a tsem-stream management message (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// The frame uses a protocol version this side does not speak.
    #[error("unsupported protocol version {0} (this side speaks version {VERSION})")]
    UnsupportedVersion(u16),
    /// An unknown kind byte.
    #[error("unknown message kind {0}")]
    BadKind(u8),
    /// The announced payload is longer than allowed.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The payload is not a valid request.
    #[error("malformed request: {0}")]
    Malformed(String),
}

impl WireError {
    /// True when the byte stream can no longer be trusted to be at a frame
    /// boundary (the connection must be closed after an error reply).
    pub fn loses_framing(&self) -> bool {
        !matches!(self, WireError::Malformed(_))
    }
}

/// A request of a management client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// A view of the model, as `tsem-stream show VIEW` prints it.
    View {
        /// `trajectory`, `coefficients`, `counts`, `forensics`,
        /// `forensics-coefficients`, `forensics-counts`, `state`,
        /// `measurement` or `model`.
        view: String,
        /// Prefix coefficient lines with `state `.
        #[serde(default)]
        prefix: bool,
        /// With `model`: add the forensics points (`model --update`).
        #[serde(default)]
        update: bool,
    },
    /// The number of valid and of forensics points (for the console's
    /// terminal headers).
    Sizes,
    /// Seal the model.
    Seal,
}

impl Request {
    /// A view request.
    pub fn view(view: &str, prefix: bool, update: bool) -> Request {
        Request::View {
            view: view.to_owned(),
            prefix,
            update,
        }
    }

    /// The request's payload (JSON).
    pub fn to_payload(&self) -> Vec<u8> {
        // Serializing a plain enum of strings and booleans cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a request payload.
    pub fn from_payload(payload: &[u8]) -> Result<Request, WireError> {
        serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

/// The answer to a [`Request::Sizes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    /// Valid points (the trajectory's coefficients).
    pub valid: u64,
    /// Forensics (invalid) points.
    pub forensics: u64,
}

/// A reply of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Success; the payload is the answer (view bytes, sizes JSON, nothing for seal).
    Ok(Vec<u8>),
    /// Failure; what went wrong.
    Error(String),
}

/// One frame as read: its kind byte and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The kind byte.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The 11 header bytes of a frame.
pub fn header(magic: [u8; 4], kind: u8, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&magic);
    h[4..6].copy_from_slice(&VERSION.to_be_bytes());
    h[6] = kind;
    h[7..].copy_from_slice(&len.to_be_bytes());
    h
}

fn write_frame(
    w: &mut impl Write,
    magic: [u8; 4],
    kind: u8,
    payload: &[u8],
) -> Result<(), WireError> {
    let len = u32::try_from(payload.len()).map_err(|_| WireError::TooLarge {
        len: payload.len() as u64,
        max: u32::MAX as u64,
    })?;
    // Header and payload separately: a reply may be large, and copying it
    // only to prepend 11 bytes would double its memory.
    w.write_all(&header(magic, kind, len))?;
    w.write_all(payload)?;
    w.flush()?;
    Ok(())
}

/// Writes a request frame.
pub fn write_request(w: &mut impl Write, request: &Request) -> Result<(), WireError> {
    write_frame(w, REQUEST_MAGIC, KIND_REQUEST, &request.to_payload())
}

/// Writes a reply frame.
pub fn write_reply(w: &mut impl Write, reply: &Reply) -> Result<(), WireError> {
    match reply {
        Reply::Ok(payload) => write_frame(w, REPLY_MAGIC, KIND_OK, payload),
        Reply::Error(message) => write_frame(w, REPLY_MAGIC, KIND_ERROR, message.as_bytes()),
    }
}

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame that must start with `magic`, have a kind in `kinds` and
/// a payload of at most `max_len` bytes. The header is checked before any
/// payload byte is read, so an oversized frame costs no memory.
pub fn read_frame(
    r: &mut impl Read,
    magic: [u8; 4],
    kinds: &[u8],
    max_len: usize,
) -> Result<Frame, WireError> {
    let mut h = [0u8; HEADER_LEN];
    let got = read_full(r, &mut h)?;
    if got == 0 {
        return Err(WireError::Eof);
    }
    // Check the magic as soon as it is there: garbage gets a precise answer
    // even when it is shorter than a header.
    if got >= 4 && h[..4] != magic {
        return Err(WireError::BadMagic([h[0], h[1], h[2], h[3]]));
    }
    if got < HEADER_LEN {
        return Err(WireError::Truncated {
            got,
            want: HEADER_LEN,
        });
    }
    let version = u16::from_be_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let kind = h[6];
    if !kinds.contains(&kind) {
        return Err(WireError::BadKind(kind));
    }
    let len = u32::from_be_bytes([h[7], h[8], h[9], h[10]]) as usize;
    if len > max_len {
        return Err(WireError::TooLarge {
            len: len as u64,
            max: max_len as u64,
        });
    }
    // Grow with the data actually received, not with the announced length.
    let mut payload = Vec::with_capacity(len.min(1 << 20));
    let got = r.take(len as u64).read_to_end(&mut payload)?;
    if got < len {
        return Err(WireError::Truncated { got, want: len });
    }
    Ok(Frame { kind, payload })
}

/// Reads a request frame and parses it.
pub fn read_request(r: &mut impl Read) -> Result<Request, WireError> {
    let frame = read_frame(r, REQUEST_MAGIC, &[KIND_REQUEST], MAX_REQUEST)?;
    Request::from_payload(&frame.payload)
}

/// Reads a reply frame.
pub fn read_reply(r: &mut impl Read) -> Result<Reply, WireError> {
    let frame = read_frame(r, REPLY_MAGIC, &[KIND_OK, KIND_ERROR], MAX_REPLY)?;
    Ok(if frame.kind == KIND_OK {
        Reply::Ok(frame.payload)
    } else {
        Reply::Error(String::from_utf8_lossy(&frame.payload).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_bytes(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        write_request(&mut out, request).unwrap();
        out
    }

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::view("trajectory", false, false),
            Request::view("coefficients", true, false),
            Request::view("model", false, true),
            Request::Sizes,
            Request::Seal,
        ] {
            let bytes = request_bytes(&request);
            assert_eq!(&bytes[..4], b"TSMQ");
            assert_eq!(&bytes[4..6], &[0, 1]);
            assert_eq!(bytes.len(), HEADER_LEN + request.to_payload().len());
            assert_eq!(read_request(&mut &bytes[..]).unwrap(), request);
        }
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ok(Vec::new()),
            Reply::Ok(b"state 00\nend\n".to_vec()),
            Reply::Error("no such view".into()),
        ] {
            let mut bytes = Vec::new();
            write_reply(&mut bytes, &reply).unwrap();
            assert_eq!(&bytes[..4], b"TSMR");
            assert_eq!(read_reply(&mut &bytes[..]).unwrap(), reply);
        }
    }

    #[test]
    fn the_payload_is_documented_json() {
        let p = Request::view("state", false, false).to_payload();
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"{"op":"view","view":"state","prefix":false,"update":false}"#
        );
        assert_eq!(
            Request::from_payload(br#"{"op":"view","view":"counts"}"#).unwrap(),
            Request::view("counts", false, false)
        );
        assert_eq!(
            Request::from_payload(br#"{"op":"seal"}"#).unwrap(),
            Request::Seal
        );
    }

    #[test]
    fn several_frames_in_one_stream() {
        let mut bytes = request_bytes(&Request::Sizes);
        bytes.extend(request_bytes(&Request::Seal));
        let mut r = &bytes[..];
        assert_eq!(read_request(&mut r).unwrap(), Request::Sizes);
        assert_eq!(read_request(&mut r).unwrap(), Request::Seal);
        assert!(matches!(read_request(&mut r), Err(WireError::Eof)));
    }

    #[test]
    fn truncated_frames_are_reported() {
        let bytes = request_bytes(&Request::view("trajectory", false, false));
        for cut in 1..bytes.len() {
            match read_request(&mut &bytes[..cut]) {
                Err(WireError::Truncated { got, want }) => {
                    assert!(got < want, "cut {cut}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert!(matches!(read_request(&mut &b""[..]), Err(WireError::Eof)));
    }

    #[test]
    fn oversized_frames_are_refused_before_reading_the_payload() {
        let mut bytes = header(REQUEST_MAGIC, KIND_REQUEST, (MAX_REQUEST + 1) as u32).to_vec();
        // No payload follows: the length alone must be enough to refuse.
        match read_request(&mut &bytes[..]) {
            Err(WireError::TooLarge { len, max }) => {
                assert_eq!(len, MAX_REQUEST as u64 + 1);
                assert_eq!(max, MAX_REQUEST as u64);
            }
            other => panic!("{other:?}"),
        }
        bytes = header(REQUEST_MAGIC, KIND_REQUEST, u32::MAX).to_vec();
        assert!(matches!(
            read_request(&mut &bytes[..]),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            read_request(&mut &b"show trajectory\n"[..]),
            Err(WireError::BadMagic(m)) if &m == b"show"
        ));
        // A Quixote console's request (length, then a native int command).
        let quixote = [0u8, 0, 0, 4, 8, 0, 0, 0];
        assert!(matches!(
            read_request(&mut &quixote[..]),
            Err(WireError::BadMagic(_))
        ));
        let mut v2 = header(REQUEST_MAGIC, KIND_REQUEST, 2).to_vec();
        v2[5] = 2;
        v2.extend(b"{}");
        assert!(matches!(
            read_request(&mut &v2[..]),
            Err(WireError::UnsupportedVersion(2))
        ));
        let mut kind = header(REQUEST_MAGIC, 7, 2).to_vec();
        kind.extend(b"{}");
        assert!(matches!(
            read_request(&mut &kind[..]),
            Err(WireError::BadKind(7))
        ));
        // A reply where a request is expected.
        let mut reply = Vec::new();
        write_reply(&mut reply, &Reply::Ok(vec![])).unwrap();
        assert!(matches!(
            read_request(&mut &reply[..]),
            Err(WireError::BadMagic(_))
        ));
    }

    #[test]
    fn malformed_payloads_keep_the_framing() {
        for payload in [
            &b""[..],
            b"not json",
            b"{\"op\":\"launch\"}",
            b"{\"op\":\"view\"}",
            b"{\"op\":\"view\",\"view\":7}",
            b"[1,2,3]",
            b"\xff\xfe",
        ] {
            let mut bytes = header(REQUEST_MAGIC, KIND_REQUEST, payload.len() as u32).to_vec();
            bytes.extend_from_slice(payload);
            bytes.extend(request_bytes(&Request::Seal));
            let mut r = &bytes[..];
            let err = read_request(&mut r).unwrap_err();
            assert!(
                matches!(err, WireError::Malformed(_)),
                "{payload:?}: {err:?}"
            );
            assert!(!err.loses_framing());
            // The next frame is still read correctly.
            assert_eq!(read_request(&mut r).unwrap(), Request::Seal);
        }
    }

    #[test]
    fn error_replies_carry_text() {
        let mut bytes = header(REPLY_MAGIC, KIND_ERROR, 3).to_vec();
        bytes.extend(b"b\xffd");
        assert_eq!(
            read_reply(&mut &bytes[..]).unwrap(),
            Reply::Error("b\u{fffd}d".into())
        );
    }
}
