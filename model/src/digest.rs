//! SHA-256 digests, coefficients and their hex text.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// `SHA-256("")`, the zero-length file digest `Z` of mapping.md M1.
pub const ZERO_DIGEST: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// A 32-byte SHA-256 value: a security state coefficient, a measurement, a
/// state, an aggregate, a base or a pseudonym.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

/// A security state coefficient (mapping.md M8): the model's unit of behaviour.
pub type Coefficient = Digest;

/// Why hex text is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 64-character hex digest: {0}")]
pub struct DigestParseError(pub tsem_ingest::hex::HexError);

impl Digest {
    /// All-zero bytes (the default aggregate and base).
    pub const ZERO: Digest = Digest([0; 32]);

    /// SHA-256 of the concatenation of `parts`.
    pub fn of(parts: &[&[u8]]) -> Digest {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Digest(h.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex text (64 characters).
    pub fn to_hex(&self) -> String {
        tsem_ingest::hex::encode(&self.0)
    }

    /// Writes the lower-case hex text into `out` without allocating.
    pub fn write_hex(&self, out: &mut [u8; 64]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        self.write_hex(&mut buf);
        // The buffer holds ASCII hex digits only.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        tsem_ingest::hex::decode_array::<32>(s.as_bytes())
            .map(Digest)
            .map_err(DigestParseError)
    }
}

/// A SHA-256 preimage under construction, with helpers for the little-endian
/// encodings of mapping.md M1.
pub(crate) struct Preimage(Sha256);

impl Preimage {
    pub(crate) fn new() -> Self {
        Preimage(Sha256::new())
    }
    #[inline]
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }
    #[inline]
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    #[inline]
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    #[inline]
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    /// `LSTR(s)`: u32 length, then the bytes.
    #[inline]
    pub(crate) fn lstr(&mut self, s: &[u8]) -> &mut Self {
        // Lengths are bounded by the record limit (far below 4 GiB).
        self.u32(s.len() as u32).raw(s)
    }
    pub(crate) fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// `PSEUDONYM(path) = SHA-256(LSTR(pathname))` (mapping.md M11).
pub fn pseudonym_of(pathname: &[u8]) -> Digest {
    let mut p = Preimage::new();
    p.lstr(pathname);
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_digest_is_sha256_of_nothing() {
        assert_eq!(Digest::of(&[]).0, ZERO_DIGEST);
    }

    #[test]
    fn pseudonym_matches_spec_v6() {
        assert_eq!(
            pseudonym_of(b"/usr/bin/bash").to_hex(),
            "15fd0d120af29e1b9ec0c8fe73a06c7a4bf5a059437c0996e20880a9d804bd0d"
        );
    }

    #[test]
    fn hex_round_trips() {
        let d: Digest = "15fd0d120af29e1b9ec0c8fe73a06c7a4bf5a059437c0996e20880a9d804bd0d"
            .parse()
            .unwrap();
        assert_eq!(
            d.to_string(),
            "15fd0d120af29e1b9ec0c8fe73a06c7a4bf5a059437c0996e20880a9d804bd0d"
        );
        assert!("abc".parse::<Digest>().is_err());
    }
}
