//! A checksummed frame: `[body length: u32 LE][CRC-32 of the body: u32 LE][body]`.
//!
//! Appended records framed this way can be read back after a crash: a frame
//! that runs past the end of the data is the tail of an interrupted write
//! ([`Decoded::Short`]), one whose checksum fails is damage
//! ([`Decoded::Damaged`]).

/// Bytes before the body.
pub const HEADER: usize = 8;

/// Appends one frame holding `body` to `out`.
pub fn encode(out: &mut Vec<u8>, body: &[u8]) {
    let start = out.len();
    begin(out);
    out.extend_from_slice(body);
    finish(out, start);
}

/// Starts a frame at the end of `out` whose body the caller then appends
/// piece by piece; [`finish`] with the returned start seals it.
pub fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    start
}

/// Seals the frame begun at `start` (its body is everything after the header).
///
/// # Panics
/// If the body is 4 GiB or longer (callers frame bounded records).
pub fn finish(out: &mut [u8], start: usize) {
    let body = &out[start + HEADER..];
    let len = u32::try_from(body.len()).expect("a frame body under 4 GiB");
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// What the bytes at the start of a buffer are.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A frame whose checksum holds: its body is `data[HEADER..len]`.
    Frame {
        /// The whole frame's length.
        len: usize,
    },
    /// The data ends inside a frame that needs this many bytes in all.
    Short(usize),
    /// The bytes are not a frame.
    Damaged,
}

/// Decodes the frame at the start of `data`; bodies shorter than `min_body`
/// are damage.
pub fn decode(data: &[u8], min_body: usize) -> Decoded {
    if data.len() < HEADER {
        return Decoded::Short(HEADER);
    }
    let word = |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    let body_len = word(0) as usize;
    if body_len < min_body {
        return Decoded::Damaged;
    }
    let len = HEADER + body_len;
    if data.len() < len {
        return Decoded::Short(len);
    }
    if crc32fast::hash(&data[HEADER..len]) != word(4) {
        return Decoded::Damaged;
    }
    Decoded::Frame { len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_or_flipped_one_is_told_apart() {
        let mut out = Vec::new();
        encode(&mut out, b"first");
        encode(&mut out, b"second");
        assert_eq!(decode(&out, 0), Decoded::Frame { len: 13 });
        assert_eq!(&out[HEADER..13], b"first");
        assert_eq!(decode(&out[13..], 0), Decoded::Frame { len: 14 });
        assert_eq!(decode(&out[13..22], 0), Decoded::Short(14));
        out[10] ^= 1;
        assert_eq!(decode(&out, 0), Decoded::Damaged);
        assert_eq!(decode(&out[13..], 7), Decoded::Damaged);
    }
}
