//! The two mapping profiles (mapping.md M2) and the coefficient of an event.

use std::collections::HashSet;
use std::sync::OnceLock;

use tsem_ingest::{EventType, EventView};

use crate::digest::{Coefficient, Digest, Preimage, ZERO_DIGEST};
use crate::fields::{decode_hex_chunks, Fields, MapError};
use crate::{kernel, quixote};

/// Which mapping of events to coefficients is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Profile {
    /// Profile Q: what the Quixote v1.8 userspace TMA computes (the default).
    #[default]
    Quixote,
    /// Profile K: the kernel's internal TMA mapping (v3/v4 map.c).
    Kernel,
}

impl Profile {
    /// The name used on the command line and in model files.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quixote => "quixote",
            Profile::Kernel => "kernel",
        }
    }

    /// Parses a profile name (`quixote`/`q` or `kernel`/`k`).
    pub fn from_name(name: &str) -> Option<Profile> {
        match name {
            "quixote" | "q" | "Q" => Some(Profile::Quixote),
            "kernel" | "k" | "K" => Some(Profile::Kernel),
            _ => None,
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of pseudonyms in force (mapping.md M11): files whose digest is replaced
/// by the zero-length digest before mapping. Keeps insertion order so that
/// models list them in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pseudonyms {
    set: HashSet<Digest>,
    order: Vec<Digest>,
}

impl Pseudonyms {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a pseudonym value; returns false if it was already present.
    pub fn insert(&mut self, pseudonym: Digest) -> bool {
        let new = self.set.insert(pseudonym);
        if new {
            self.order.push(pseudonym);
        }
        new
    }
    /// True when `pathname`'s pseudonym is in the set.
    pub fn covers(&self, pathname: &[u8]) -> bool {
        !self.set.is_empty() && self.set.contains(&crate::digest::pseudonym_of(pathname))
    }
    /// True when the value is in the set.
    pub fn contains(&self, pseudonym: &Digest) -> bool {
        self.set.contains(pseudonym)
    }
    /// Number of pseudonyms.
    pub fn len(&self) -> usize {
        self.order.len()
    }
    /// True when no pseudonym is loaded.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
    /// The values in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Digest> {
        self.order.iter()
    }
}

/// The mapping of events to coefficients: a profile plus its pseudonyms.
///
/// Mapping is a pure function of the parsed event, so a `Mapper` can be shared
/// by any number of worker threads.
#[derive(Clone, Debug, Default)]
pub struct Mapper {
    profile: Profile,
    pseudonyms: Pseudonyms,
}

/// The generic CELL `SHA-256(name ‖ Z)` of every table event, computed once.
fn generic_cells() -> &'static [Digest; 88] {
    static CELLS: OnceLock<[Digest; 88]> = OnceLock::new();
    CELLS.get_or_init(|| {
        let mut cells = [Digest::ZERO; 88];
        for t in EventType::all() {
            cells[t as usize - 1] = generic_cell_of(t.name().as_bytes());
        }
        cells
    })
}

fn generic_cell_of(name: &[u8]) -> Digest {
    Digest::of(&[name, &ZERO_DIGEST])
}

/// The generic CELL (mapping.md M4.3) of an event name.
pub(crate) fn generic_cell(view: &EventView<'_>) -> Digest {
    match view.event_type {
        Some(t) => generic_cells()[t as usize - 1],
        None => generic_cell_of(view.type_name.as_bytes()),
    }
}

impl Mapper {
    /// A mapper for `profile` with the given pseudonyms.
    pub fn new(profile: Profile, pseudonyms: Pseudonyms) -> Self {
        Mapper {
            profile,
            pseudonyms,
        }
    }

    /// The profile in force.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The pseudonyms in force.
    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }

    /// The security state coefficient of an event (mapping.md M8).
    pub fn coefficient(&self, view: &EventView<'_>) -> Result<Coefficient, MapError> {
        let (coe, cell) = coe_and_cell(self.profile, &self.pseudonyms, view)?;
        let mut p = Preimage::new();
        p.raw(view.type_name.as_bytes());
        match self.profile {
            Profile::Quixote => {
                decode_hex_chunks(view.task_id.as_bytes(), "event.task_id", |b| {
                    p.raw(b);
                })?;
                p.raw(&coe.0).raw(&cell.0);
            }
            Profile::Kernel => {
                let p_task_id = view
                    .p_task_id()
                    .ok_or_else(|| MapError::Missing("event.p_task_id".into()))?;
                decode_hex_chunks(p_task_id.as_bytes(), "event.p_task_id", |b| {
                    p.raw(b);
                })?;
                decode_hex_chunks(view.task_id.as_bytes(), "event.task_id", |b| {
                    p.raw(b);
                })?;
                p.raw(&coe.0).raw(&cell.0);
            }
        }
        Ok(p.finish())
    }
}

/// A bad line in a pseudonym list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct PseudonymFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

impl Pseudonyms {
    /// Reads `pseudonym HEX` lines. The other directives of a model file
    /// (mapping.md M12.1) are skipped, so a whole model file is accepted; anything else
    /// is an error.
    pub fn from_text(text: &str) -> Result<Pseudonyms, PseudonymFileError> {
        let mut set = Pseudonyms::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            let err = |problem: String| PseudonymFileError {
                line: i + 1,
                problem,
            };
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            match word {
                "pseudonym" => {
                    let value = rest
                        .trim()
                        .parse::<Digest>()
                        .map_err(|e| err(e.to_string()))?;
                    set.insert(value);
                }
                "" | "#" | "key" | "base" | "aggregate" | "state" | "seal" | "signature"
                | "end" => {}
                _ if word.starts_with('#') => {}
                _ => return Err(err(format!("unexpected line {line:?}"))),
            }
        }
        Ok(set)
    }
}

/// The COE and CELL digests of an event under `profile` with `pseudonyms`
/// (the two halves of its coefficient: what `explain` compares).
pub fn coe_and_cell(
    profile: Profile,
    pseudonyms: &Pseudonyms,
    view: &EventView<'_>,
) -> Result<(Digest, Digest), MapError> {
    let coe = Fields::new(view.coe, "COE", profile);
    match profile {
        Profile::Quixote => Ok((quixote::coe(&coe)?, quixote::cell(view, pseudonyms)?)),
        Profile::Kernel => Ok((kernel::coe(&coe)?, kernel::cell(view, pseudonyms)?)),
    }
}
