//! How two inputs differ, coefficient by coefficient: which coefficients
//! only one side has, whose counts differ, and which events are "the same"
//! event (type, process, target, task) with another coefficient, with the
//! fields that changed. The inputs are gathered into [`CoefficientSet`]s by
//! the caller (from a model, a store, an archive or events); rendering is the
//! caller's too.

use std::collections::{HashMap, HashSet};

use tsem_ingest::{Obj, Parser, Record};
use tsem_model::{Coefficient, Digest, Mapper, Model, Profile};

use crate::explain::{field_differences, Difference};

/// The coefficients of one input.
#[derive(Debug, Default)]
pub struct CoefficientSet {
    /// Coefficients in order of first appearance.
    pub order: Vec<Coefficient>,
    /// Events per coefficient (`None`: the input keeps no counts, a model file).
    pub counts: HashMap<Coefficient, Option<u64>>,
    /// The first event description seen for each coefficient.
    pub descriptions: HashMap<Coefficient, Vec<u8>>,
    /// Events read (`None`: the input does not say, a model file).
    pub events: Option<u64>,
    /// Lines that could not be mapped.
    pub unmapped: u64,
    /// What a model or store says about how its coefficients were mapped.
    pub profile: Option<Profile>,
    /// The model's pseudonyms.
    pub pseudonyms: Vec<Digest>,
}

/// Whether a model's point counts are kept (a store) or not (a model file,
/// whose points carry no counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counts {
    /// The model's counts are real.
    Kept,
    /// The model has no counts to compare.
    Absent,
}

impl CoefficientSet {
    /// Adds `count` events of coefficient `c` (`None`: not counted).
    pub fn add(&mut self, c: Coefficient, count: Option<u64>) {
        match self.counts.get_mut(&c) {
            Some(Some(n)) => *n += count.unwrap_or(0),
            Some(None) => {}
            None => {
                self.order.push(c);
                self.counts.insert(c, count);
            }
        }
    }

    /// The points of a model, with the descriptions it keeps (first
    /// occurrences) keyed by coefficient under the model's own mapping.
    pub fn from_model(model: &Model, counts: Counts) -> CoefficientSet {
        let mut set = CoefficientSet::default();
        let counted = counts == Counts::Kept;
        for p in model.points() {
            set.add(p.coefficient, counted.then_some(p.count));
        }
        if counted {
            set.events = Some(model.events());
        }
        set.profile = Some(model.profile());
        set.pseudonyms = model.pseudonyms().iter().copied().collect();
        let mapper = Mapper::new(model.profile(), model.pseudonyms().clone());
        let mut parser = Parser::default();
        for line in model.trajectory().chain(model.forensics()) {
            if let Ok(Some(c)) = coefficient_of(&mut parser, &mapper, line) {
                set.descriptions.entry(c).or_insert_with(|| line.to_vec());
            }
        }
        set
    }

    /// Adds one line of an event input; returns whether it was an event.
    pub fn add_line(&mut self, parser: &mut Parser, mapper: &Mapper, line: &[u8]) {
        match coefficient_of(parser, mapper, line) {
            Ok(Some(c)) => {
                *self.events.get_or_insert(0) += 1;
                if !self.counts.contains_key(&c) {
                    self.descriptions.insert(c, line.to_vec());
                }
                self.add(c, Some(1));
            }
            Ok(None) => {}
            Err(Unmapped) => self.unmapped += 1,
        }
    }
}

/// A line that has no coefficient although it should.
struct Unmapped;

/// The coefficient of an event line; `None` for records without one
/// (aggregate, log notice, blank).
fn coefficient_of(
    parser: &mut Parser,
    mapper: &Mapper,
    line: &[u8],
) -> Result<Option<Coefficient>, Unmapped> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match parser.parse(line, |r| match r {
        Record::Event(v) => mapper.coefficient(&v).map(Some).map_err(|_| Unmapped),
        _ => Ok(None),
    }) {
        Ok(r) => r,
        Err(_) => Err(Unmapped),
    }
}

/// What identifies "the same event" across two inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// The event type.
    pub kind: String,
    /// The process name.
    pub process: String,
    /// What it acts on ([`Obj::event_target`]).
    pub target: String,
    /// The task's `task_id`.
    pub task_id: String,
}

/// An event description, flattened for comparison.
struct Described {
    key: EventKey,
    /// (field, value) in document order: `COE.*`, the CELL's fields relative
    /// to the CELL (`file.digest`), and `event.p_task_id`.
    fields: Vec<(String, String)>,
}

fn describe(parser: &mut Parser, line: &[u8]) -> Option<Described> {
    parser
        .parse(line, |r| {
            let Record::Event(v) = r else {
                return None;
            };
            let mut fields = Vec::new();
            v.coe.leaves("COE", &mut fields);
            if let Some(cell) = v.cell {
                cell.leaves("", &mut fields);
            }
            if let Some(p) = v.p_task_id() {
                fields.push(("event.p_task_id".to_owned(), p.to_owned()));
            }
            Some(Described {
                key: EventKey {
                    kind: v.type_name.to_owned(),
                    process: v.process().unwrap_or_default().to_owned(),
                    target: Obj::event_target(v.cell),
                    task_id: v.task_id.to_owned(),
                },
                fields,
            })
        })
        .ok()
        .flatten()
}

/// One coefficient that only one side has, with what is known of its event.
#[derive(Debug)]
pub struct Entry {
    /// The coefficient.
    pub coefficient: Coefficient,
    /// Its events on that side, when counted.
    pub count: Option<u64>,
    /// Its event, when a description is known.
    pub key: Option<EventKey>,
}

/// A coefficient both sides have, counted differently.
#[derive(Debug)]
pub struct CountChange {
    /// The coefficient.
    pub coefficient: Coefficient,
    /// Events in A.
    pub a: u64,
    /// Events in B.
    pub b: u64,
    /// Its event, when a description is known.
    pub key: Option<EventKey>,
}

/// An event present on both sides with different coefficients.
#[derive(Debug)]
pub struct Change {
    /// The event.
    pub key: EventKey,
    /// Its coefficient in A.
    pub a: Coefficient,
    /// Its coefficient in B.
    pub b: Coefficient,
    /// The fields that differ (`learned` is A's value, `now` B's).
    pub fields: Vec<Difference>,
}

/// How two inputs differ.
#[derive(Debug)]
pub struct DiffReport {
    /// Coefficients only A has.
    pub only_a: Vec<Entry>,
    /// Coefficients only B has.
    pub only_b: Vec<Entry>,
    /// Coefficients counted differently.
    pub counts: Vec<CountChange>,
    /// Events whose coefficient changed.
    pub changed: Vec<Change>,
}

impl DiffReport {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.only_a.is_empty()
            && self.only_b.is_empty()
            && self.counts.is_empty()
            && self.changed.is_empty()
    }
}

/// Compares two inputs.
pub fn compare(a: &CoefficientSet, b: &CoefficientSet) -> DiffReport {
    let mut parser = Parser::default();
    let mut described: HashMap<(bool, Coefficient), Described> = HashMap::new();
    let mut describe_side =
        |side: &CoefficientSet, is_a: bool, c: Coefficient| -> Option<EventKey> {
            let line = side.descriptions.get(&c)?;
            let d = describe(&mut parser, line)?;
            let key = d.key.clone();
            described.insert((is_a, c), d);
            Some(key)
        };
    let only = |x: &CoefficientSet, y: &CoefficientSet| -> Vec<Coefficient> {
        x.order
            .iter()
            .filter(|c| !y.counts.contains_key(c))
            .copied()
            .collect()
    };
    let only_a: Vec<Entry> = only(a, b)
        .into_iter()
        .map(|c| Entry {
            coefficient: c,
            count: a.counts.get(&c).copied().flatten(),
            key: describe_side(a, true, c),
        })
        .collect();
    let only_b: Vec<Entry> = only(b, a)
        .into_iter()
        .map(|c| Entry {
            coefficient: c,
            count: b.counts.get(&c).copied().flatten(),
            key: describe_side(b, false, c),
        })
        .collect();
    let mut counts = Vec::new();
    for c in &a.order {
        if let (Some(Some(x)), Some(Some(y))) = (a.counts.get(c), b.counts.get(c)) {
            if x != y {
                let key = describe_side(a, true, *c).or_else(|| describe_side(b, false, *c));
                counts.push(CountChange {
                    coefficient: *c,
                    a: *x,
                    b: *y,
                    key,
                });
            }
        }
    }
    // Pair the events only in A with those only in B that have the same key.
    let mut by_key: HashMap<&EventKey, Vec<Coefficient>> = HashMap::new();
    for e in &only_b {
        if let Some(k) = &e.key {
            by_key.entry(k).or_default().push(e.coefficient);
        }
    }
    let mut used: HashSet<Coefficient> = HashSet::new();
    let mut changed = Vec::new();
    for e in &only_a {
        let (Some(k), Some(da)) = (&e.key, described.get(&(true, e.coefficient))) else {
            continue;
        };
        let Some(candidates) = by_key.get(k) else {
            continue;
        };
        let best = candidates
            .iter()
            .filter(|c| !used.contains(*c))
            .filter_map(|c| {
                let db = described.get(&(false, *c))?;
                Some((*c, field_differences(&da.fields, &db.fields, |_| true)))
            })
            .min_by_key(|(_, f)| f.len());
        if let Some((c, fields)) = best {
            used.insert(c);
            changed.push(Change {
                key: k.clone(),
                a: e.coefficient,
                b: c,
                fields,
            });
        }
    }
    DiffReport {
        only_a,
        only_b,
        counts,
        changed,
    }
}
