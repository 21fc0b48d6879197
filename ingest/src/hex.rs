//! Hex digests as the kernel prints them (mapping.md M3.3).

/// Why a hex value could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The text has the wrong number of characters for the field.
    #[error("expected {expected} hex characters, found {found}")]
    Length {
        /// Characters the field needs.
        expected: usize,
        /// Characters present.
        found: usize,
    },
    /// A character is not a hex digit.
    #[error("invalid hex character at offset {0}")]
    Character(usize),
}

#[inline]
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex text (either case) into `out`, which must be exactly half its length.
pub fn decode_into(text: &[u8], out: &mut [u8]) -> Result<(), HexError> {
    if text.len() != out.len() * 2 {
        return Err(HexError::Length {
            expected: out.len() * 2,
            found: text.len(),
        });
    }
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(HexError::Character(2 * i))?;
        let lo = nibble(pair[1]).ok_or(HexError::Character(2 * i + 1))?;
        out[i] = (hi << 4) | lo;
    }
    Ok(())
}

/// Decodes hex text of exactly `2 * N` characters.
pub fn decode_array<const N: usize>(text: &[u8]) -> Result<[u8; N], HexError> {
    let mut out = [0u8; N];
    decode_into(text, &mut out)?;
    Ok(out)
}

/// Lower-case hex encoding of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_either_case_with_exact_length() {
        assert_eq!(decode_array::<2>(b"aBcD"), Ok([0xab, 0xcd]));
        assert_eq!(
            decode_array::<2>(b"abc"),
            Err(HexError::Length {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(decode_array::<1>(b"g0"), Err(HexError::Character(0)));
        assert_eq!(encode(&[0x01, 0xef]), "01ef");
    }
}
