//! Typed reads of CELL and COE fields with the number, text and digest rules
//! of each mapping profile, and errors that name the field.

use tsem_ingest::hex::{self, HexError};
use tsem_ingest::{parse_c_integer, Member, NumberError, Obj};

use crate::profile::Profile;

/// Why an event could not be mapped to a coefficient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A field the mapping needs is absent (or has the wrong JSON type).
    #[error("missing {0}")]
    Missing(String),
    /// A field is present but not usable.
    #[error("{field}: {problem}")]
    Invalid {
        /// Dotted path of the field, e.g. `file.inode.mode`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The event cannot be mapped under this profile (e.g. an event the kernel never exports).
    #[error("{0}")]
    Unmappable(String),
}

impl MapError {
    pub(crate) fn invalid(at: &str, key: &str, problem: impl std::fmt::Display) -> MapError {
        MapError::Invalid {
            field: join(at, key),
            problem: problem.to_string(),
        }
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// An object of the event with the location used in error messages.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) obj: Obj<'a>,
    pub(crate) at: &'a str,
    pub(crate) profile: Profile,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(obj: Obj<'a>, at: &'a str, profile: Profile) -> Self {
        Fields { obj, at, profile }
    }

    /// The nested object `key`, if present.
    pub(crate) fn opt_obj(&self, key: &'a str) -> Result<Option<Fields<'a>>, MapError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Member::Obj(o)) => Ok(Some(Fields {
                obj: o,
                at: key,
                profile: self.profile,
            })),
            Some(_) => Err(MapError::invalid(self.at, key, "must be an object")),
        }
    }

    /// The nested object `key`.
    pub(crate) fn obj(&self, key: &'a str) -> Result<Fields<'a>, MapError> {
        self.opt_obj(key)?
            .ok_or_else(|| MapError::Missing(format!("{}{{}}", join(self.at, key))))
    }

    /// The raw string `key`, if present.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, MapError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Member::Str(s)) => Ok(Some(s)),
            Some(_) => Err(MapError::invalid(self.at, key, "must be a string")),
        }
    }

    fn str(&self, key: &str) -> Result<&'a str, MapError> {
        self.opt_str(key)?
            .ok_or_else(|| MapError::Missing(join(self.at, key)))
    }

    /// A text field as hashed, with the rule of [`Fields::opt_text`].
    pub(crate) fn text(&self, key: &str) -> Result<&'a [u8], MapError> {
        self.opt_text(key)?
            .ok_or_else(|| MapError::Missing(join(self.at, key)))
    }

    /// An optional text field as hashed. Quixote reads an empty string value
    /// as the one-byte string `"` (its parser starts copying one byte too
    /// late), so Profile Q does too; the kernel hashes an empty value as nothing
    /// (e.g. the `""` address of an abstract AF_UNIX socket).
    pub(crate) fn opt_text(&self, key: &str) -> Result<Option<&'a [u8]>, MapError> {
        Ok(self
            .opt_str(key)?
            .map(|s| match (s.is_empty(), self.profile) {
                (true, Profile::Quixote) => &b"\""[..],
                _ => s.as_bytes(),
            }))
    }

    fn number(&self, key: &str, bits: u32) -> Result<u64, MapError> {
        let text = self.str(key)?;
        let n = parse_c_integer(text.as_bytes()).map_err(|e: NumberError| {
            MapError::invalid(self.at, key, format_args!("{text:?}: {e}"))
        })?;
        let max = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        match self.profile {
            // Quixote: strtoll, then the signed result compared as unsigned
            // against the field maximum (negative values fail for u16/u32);
            // the u64 fields are stored as they come (negative values wrap).
            Profile::Quixote => {
                let v = n.wrapping_u64();
                if v > max {
                    return Err(MapError::invalid(
                        self.at,
                        key,
                        format_args!("{text:?} is out of range for a {bits}-bit field"),
                    ));
                }
                Ok(v)
            }
            // Kernel reading: the whole string must be a number; negative values
            // wrap to the field width (a `%d` printed into an unsigned field).
            Profile::Kernel => {
                if !n.complete {
                    return Err(MapError::invalid(
                        self.at,
                        key,
                        format_args!("{text:?} is not a number"),
                    ));
                }
                let v = if n.negative {
                    if bits < 64 && n.magnitude > (1u64 << bits) {
                        return Err(MapError::invalid(
                            self.at,
                            key,
                            format_args!("{text:?} is out of range"),
                        ));
                    }
                    n.magnitude.wrapping_neg() & max
                } else {
                    n.magnitude
                };
                if v > max {
                    return Err(MapError::invalid(
                        self.at,
                        key,
                        format_args!("{text:?} is out of range for a {bits}-bit field"),
                    ));
                }
                Ok(v)
            }
        }
    }

    pub(crate) fn u16(&self, key: &str) -> Result<u16, MapError> {
        self.number(key, 16).map(|v| v as u16)
    }
    pub(crate) fn u32(&self, key: &str) -> Result<u32, MapError> {
        self.number(key, 32).map(|v| v as u32)
    }
    pub(crate) fn u64(&self, key: &str) -> Result<u64, MapError> {
        self.number(key, 64)
    }
    /// An optional u32/u64 field.
    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>, MapError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(_) => self.u64(key).map(Some),
        }
    }

    /// A hex field of exactly `N` bytes.
    pub(crate) fn digest<const N: usize>(&self, key: &str) -> Result<[u8; N], MapError> {
        let text = self.str(key)?;
        hex::decode_array::<N>(text.as_bytes()).map_err(|e| MapError::invalid(self.at, key, e))
    }
}

/// Feeds hex text of any even length into `sink` as bytes, without allocating.
pub(crate) fn decode_hex_chunks(
    text: &[u8],
    field: &str,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), MapError> {
    if !text.len().is_multiple_of(2) {
        return Err(MapError::invalid("", field, "odd number of hex characters"));
    }
    let mut buf = [0u8; 64];
    for chunk in text.chunks(128) {
        let out = &mut buf[..chunk.len() / 2];
        hex::decode_into(chunk, out).map_err(|e| match e {
            HexError::Character(_) => MapError::invalid("", field, "invalid hex character"),
            other => MapError::invalid("", field, other),
        })?;
        sink(out);
    }
    Ok(())
}
