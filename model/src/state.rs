//! The TSEM model state of mapping.md M10-M11: points with counts, trajectory,
//! forensics, measurement, state, aggregate, base and pseudonyms, in free
//! modeling or sealed mode.

use std::collections::HashMap;

use crate::digest::{Coefficient, Digest};
use crate::profile::{Profile, Pseudonyms};

/// One point of the model: a coefficient seen (or loaded), how often, and
/// whether it belongs to the model (valid) or was first seen while sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// The security state coefficient.
    pub coefficient: Coefficient,
    /// How many modeled events had this coefficient (0 for a loaded `state` line never seen).
    pub count: u64,
    /// True for trajectory points, false for forensics points.
    pub valid: bool,
}

/// What modeling one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Index of the event's point in insertion order.
    pub index: usize,
    /// True when the coefficient was new to the model.
    pub new_point: bool,
    /// True when the event violates a sealed model (new while sealed, or a
    /// known forensics point): the task must be released as untrusted.
    pub violation: bool,
}

/// Why the model refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `state` lines cannot be added to a sealed model (mapping.md M10.5).
    #[error("the model is sealed: points cannot be loaded")]
    Sealed,
}

/// `EXT(M, X) = SHA-256(M ‖ SHA-256(BASE ‖ X))` (mapping.md M10.1).
pub fn extend(m: &Digest, base: &Digest, x: &Digest) -> Digest {
    let inner = Digest::of(&[&base.0, &x.0]);
    Digest::of(&[&m.0, &inner.0])
}

/// A TSEM security model.
#[derive(Clone, Debug)]
pub struct Model {
    profile: Profile,
    pseudonyms: Pseudonyms,
    base: Digest,
    aggregate: Option<Digest>,
    host_aggregate: Option<Digest>,
    measurement: Digest,
    points: Vec<Point>,
    index: HashMap<Coefficient, usize>,
    trajectory: Vec<Box<[u8]>>,
    forensics: Vec<Box<[u8]>>,
    keep_descriptions: bool,
    sealed: bool,
    enforcing: bool,
    events: u64,
    violations: u64,
}

impl Model {
    /// An empty model in free modeling mode that keeps event descriptions.
    pub fn new(profile: Profile) -> Self {
        Model {
            profile,
            pseudonyms: Pseudonyms::new(),
            base: Digest::ZERO,
            aggregate: None,
            host_aggregate: None,
            measurement: Digest::ZERO,
            points: Vec::new(),
            index: HashMap::new(),
            trajectory: Vec::new(),
            forensics: Vec::new(),
            keep_descriptions: true,
            sealed: false,
            enforcing: false,
            events: 0,
            violations: 0,
        }
    }

    /// Whether trajectory/forensics descriptions are kept in memory (a store
    /// keeps them on disk instead, so a long run does not grow without bound).
    pub fn keep_descriptions(&mut self, keep: bool) {
        self.keep_descriptions = keep;
    }

    /// The mapping profile the coefficients were computed with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The pseudonyms of the model.
    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }

    /// Adds a pseudonym (it affects events mapped from now on).
    pub fn add_pseudonym(&mut self, pseudonym: Digest) -> bool {
        self.pseudonyms.insert(pseudonym)
    }

    /// The base nonce.
    pub fn base(&self) -> Digest {
        self.base
    }

    /// Sets the base nonce (mapping.md M10.1); it applies to every later extension.
    pub fn set_base(&mut self, base: Digest) {
        self.base = base;
    }

    /// The raw hardware aggregate in force, if one was given.
    pub fn aggregate(&self) -> Option<Digest> {
        self.aggregate
    }

    /// The value measurement and state start from, once fixed.
    pub fn host_aggregate(&self) -> Option<Digest> {
        self.host_aggregate
    }

    /// Applies a hardware aggregate with the rules of mapping.md M10.2: ignored once
    /// sealed; the first one (or one that differs from the one in force)
    /// (re)starts the measurement at `EXT(0, AGG)`; the same one again is a no-op.
    /// Returns true when it changed the model.
    pub fn set_aggregate(&mut self, aggregate: Digest) -> bool {
        if self.sealed {
            return false;
        }
        let host = extend(&Digest::ZERO, &self.base, &aggregate);
        if self.aggregate == Some(aggregate) && self.host_aggregate == Some(host) {
            return false;
        }
        self.aggregate = Some(aggregate);
        self.host_aggregate = Some(host);
        self.measurement = host;
        true
    }

    /// Fixes the default (all-zero) aggregate if none was given, as Quixote
    /// does before the first point.
    fn ensure_aggregate(&mut self) {
        if self.host_aggregate.is_none() {
            self.set_aggregate(Digest::ZERO);
        }
    }

    /// The time-dependent measurement (mapping.md M10.3).
    pub fn measurement(&self) -> Digest {
        match self.host_aggregate {
            Some(_) => self.measurement,
            None => extend(&Digest::ZERO, &self.base, &Digest::ZERO),
        }
    }

    /// The time-independent state (mapping.md M10.4): the host aggregate extended with
    /// every point (valid and forensics), sorted bytewise.
    pub fn state(&self) -> Digest {
        let mut sorted: Vec<&Coefficient> = self.points.iter().map(|p| &p.coefficient).collect();
        sorted.sort_unstable();
        let start = self
            .host_aggregate
            .unwrap_or_else(|| extend(&Digest::ZERO, &self.base, &Digest::ZERO));
        sorted
            .into_iter()
            .fold(start, |s, c| extend(&s, &self.base, c))
    }

    /// True once the model is sealed: new coefficients become forensics.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Seals the model.
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Unseals the model (to go on learning from a loaded model).
    pub fn unseal(&mut self) {
        self.sealed = false;
        self.enforcing = false;
    }

    /// True when violations are to be enforced (the orchestrator's `-e`).
    pub fn is_enforcing(&self) -> bool {
        self.enforcing
    }

    /// Sets enforcement (it implies a sealed model).
    pub fn set_enforcing(&mut self, enforcing: bool) {
        self.enforcing = enforcing;
        if enforcing {
            self.sealed = true;
        }
    }

    /// Adds a valid point from a model's `state` line (mapping.md M10.5): count 0,
    /// measurement extended; duplicates are ignored. Refused once sealed.
    pub fn load_point(&mut self, coefficient: Coefficient) -> Result<bool, ModelError> {
        if self.sealed {
            return Err(ModelError::Sealed);
        }
        if self.index.contains_key(&coefficient) {
            return Ok(false);
        }
        self.insert(coefficient, 0, true);
        Ok(true)
    }

    fn insert(&mut self, coefficient: Coefficient, count: u64, valid: bool) -> usize {
        self.ensure_aggregate();
        self.measurement = extend(&self.measurement, &self.base, &coefficient);
        let index = self.points.len();
        self.points.push(Point {
            coefficient,
            count,
            valid,
        });
        self.index.insert(coefficient, index);
        index
    }

    /// Models one event (mapping.md M10.5). `description` is the event's line, kept
    /// for the trajectory (new point, free modeling) or forensics (new point,
    /// sealed).
    pub fn update(&mut self, coefficient: Coefficient, description: &[u8]) -> Outcome {
        self.events += 1;
        if let Some(&index) = self.index.get(&coefficient) {
            let point = &mut self.points[index];
            point.count += 1;
            let violation = !point.valid;
            self.violations += u64::from(violation);
            return Outcome {
                index,
                new_point: false,
                violation,
            };
        }
        let valid = !self.sealed;
        let index = self.insert(coefficient, 1, valid);
        if self.keep_descriptions {
            let line: Box<[u8]> = trajectory_line(description).into_owned().into();
            if valid {
                self.trajectory.push(line);
            } else {
                self.forensics.push(line);
            }
        }
        self.violations += u64::from(!valid);
        Outcome {
            index,
            new_point: true,
            violation: !valid,
        }
    }

    /// Would an event with this coefficient violate the model right now?
    /// (A lookup only: for a sealed model this is the verdict.)
    pub fn would_violate(&self, coefficient: &Coefficient) -> bool {
        match self.index.get(coefficient) {
            Some(&i) => !self.points[i].valid,
            None => self.sealed,
        }
    }

    /// The point of a coefficient, if any.
    pub fn point(&self, coefficient: &Coefficient) -> Option<&Point> {
        self.index.get(coefficient).map(|&i| &self.points[i])
    }

    /// All points in insertion order.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Descriptions of the trajectory (new valid points), in order.
    pub fn trajectory(&self) -> impl Iterator<Item = &[u8]> {
        self.trajectory.iter().map(|l| &l[..])
    }

    /// Descriptions of forensics events (new points while sealed), in order.
    pub fn forensics(&self) -> impl Iterator<Item = &[u8]> {
        self.forensics.iter().map(|l| &l[..])
    }

    /// Number of modeled events.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Number of events that violated the sealed model.
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// Number of forensics (invalid) points.
    pub fn forensics_points(&self) -> usize {
        self.points.iter().filter(|p| !p.valid).count()
    }

    /// Restores a model from persisted parts (used by the store).
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        profile: Profile,
        base: Digest,
        aggregate: Option<Digest>,
        host_aggregate: Option<Digest>,
        measurement: Digest,
        points: Vec<Point>,
        sealed: bool,
        enforcing: bool,
        events: u64,
        violations: u64,
    ) -> Model {
        let index = points
            .iter()
            .enumerate()
            .map(|(i, p)| (p.coefficient, i))
            .collect();
        Model {
            profile,
            pseudonyms: Pseudonyms::new(),
            base,
            aggregate,
            host_aggregate,
            measurement,
            points,
            index,
            trajectory: Vec::new(),
            forensics: Vec::new(),
            keep_descriptions: true,
            sealed,
            enforcing,
            events,
            violations,
        }
    }

    /// Replaces the in-memory descriptions (used when restoring from a store).
    pub fn set_descriptions(&mut self, trajectory: Vec<Box<[u8]>>, forensics: Vec<Box<[u8]>>) {
        self.trajectory = trajectory;
        self.forensics = forensics;
    }

    /// Folds the forensics points into the model as valid points (what
    /// `quixote-console -M -u` offers), keeping their descriptions as trajectory.
    pub fn accept_forensics(&mut self) {
        for p in &mut self.points {
            p.valid = true;
        }
        let forensics = std::mem::take(&mut self.forensics);
        self.trajectory.extend(forensics);
    }
}

/// The trajectory form of a description: the kernel's trajectory lines are the
/// export payload without the wrapper, so an export record's
/// `{"export": {"type": "…"}, ` prefix is dropped; any other line is kept verbatim.
pub fn trajectory_line(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const PREFIX: &[u8] = b"{\"export\": {\"type\": \"";
    let payload = line.strip_prefix(PREFIX).and_then(|rest| {
        let end = rest.iter().position(|&b| b == b'"')?;
        rest[end..].strip_prefix(b"\"}, ")
    });
    match payload {
        Some(tail) => {
            let mut out = Vec::with_capacity(tail.len() + 1);
            out.push(b'{');
            out.extend_from_slice(tail);
            out.into()
        }
        None => line.into(),
    }
}
