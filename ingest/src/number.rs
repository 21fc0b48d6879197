//! Numbers as the kernel prints them: decoded like C `strtoll(s, NULL, 0)`.

/// A decoded integer: sign and magnitude, so that each caller can apply the
/// narrowing rule of its mapping profile (mapping.md M3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CInteger {
    /// True when the text had a leading `-` and a non-zero magnitude.
    pub negative: bool,
    /// The absolute value.
    pub magnitude: u64,
    /// True when the digits ran to the end of the text (no trailing characters).
    pub complete: bool,
}

/// Why a number could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// The magnitude does not fit in 64 bits.
    #[error("number out of the 64-bit range")]
    Overflow,
}

impl CInteger {
    /// The value as C would store it in an unsigned 64-bit variable
    /// (negative values wrap, two's complement).
    pub fn wrapping_u64(self) -> u64 {
        if self.negative {
            self.magnitude.wrapping_neg()
        } else {
            self.magnitude
        }
    }
}

/// Decodes `text` with C `strtoll(text, NULL, 0)` rules, but over the full
/// unsigned 64-bit range: optional leading white space and sign, `0x`/`0X`
/// prefix for hex, a leading `0` for octal, decimal otherwise. Decoding stops at
/// the first character that is not a digit of the base (so `"08"` is 0, as in
/// Quixote); text without digits is 0.
pub fn parse_c_integer(text: &[u8]) -> Result<CInteger, NumberError> {
    let mut i = 0;
    while i < text.len() && matches!(text[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut negative = false;
    if i < text.len() && (text[i] == b'-' || text[i] == b'+') {
        negative = text[i] == b'-';
        i += 1;
    }
    let mut base = 10u64;
    if i + 1 < text.len()
        && text[i] == b'0'
        && (text[i + 1] | 0x20) == b'x'
        && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        base = 16;
        i += 2;
    } else if i < text.len() && text[i] == b'0' {
        base = 8;
    }
    let mut magnitude: u64 = 0;
    while i < text.len() {
        let digit = match text[i] {
            c @ b'0'..=b'9' => u64::from(c - b'0'),
            c @ b'a'..=b'f' => u64::from(c - b'a' + 10),
            c @ b'A'..=b'F' => u64::from(c - b'A' + 10),
            _ => break,
        };
        if digit >= base {
            break;
        }
        magnitude = magnitude
            .checked_mul(base)
            .and_then(|m| m.checked_add(digit))
            .ok_or(NumberError::Overflow)?;
        i += 1;
    }
    Ok(CInteger {
        negative: negative && magnitude != 0,
        magnitude,
        complete: i == text.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> (bool, u64, bool) {
        let n = parse_c_integer(s.as_bytes()).unwrap();
        (n.negative, n.magnitude, n.complete)
    }

    #[test]
    fn decodes_decimal_hex_and_octal() {
        assert_eq!(value("32800"), (false, 32800, true));
        assert_eq!(value("0x1ffffffffff"), (false, 0x1ff_ffff_ffff, true));
        assert_eq!(value("0X1021994"), (false, 0x1021994, true));
        assert_eq!(value("0100755"), (false, 0o100755, true));
        assert_eq!(value("0"), (false, 0, true));
    }

    #[test]
    fn stops_at_the_first_invalid_digit_like_strtoll() {
        assert_eq!(value("08"), (false, 0, false));
        assert_eq!(value("12abc"), (false, 12, false));
        assert_eq!(value("0x"), (false, 0, false));
        assert_eq!(value(""), (false, 0, true));
    }

    #[test]
    fn keeps_the_sign_and_the_full_u64_range() {
        assert_eq!(value("-1"), (true, 1, true));
        assert_eq!(parse_c_integer(b"-1").unwrap().wrapping_u64(), u64::MAX);
        assert_eq!(value("18446744073709551615"), (false, u64::MAX, true));
        assert_eq!(value("0xffffffffffffffff"), (false, u64::MAX, true));
        assert_eq!(
            parse_c_integer(b"18446744073709551616"),
            Err(NumberError::Overflow)
        );
    }
}
