//! `tsem-stream diff A B`: compares the coefficients of two archives, event
//! files, model files or stores (any mix), and for events that changed, the
//! fields that changed. It supersedes Quixote's diff-states script.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use tsem_archive::Archive;
use tsem_ingest::{Fetch, RecordSource};
use tsem_ingest::{Obj, Parser, Record};
use tsem_model::{modelfile, Coefficient, Digest, Mapper, Model, Profile, Pseudonyms};
use tsem_store::model_from_snapshot;
use tsem_store::{ModelStore, StoreSnapshot};

use super::modeling::read_model_file;
use super::replay::source_of;
use crate::ProfileArg;

/// Options of `diff`.
#[derive(Args, Clone, Debug)]
pub struct DiffArgs {
    /// First input: an archive directory, an event file, a model file or a store directory.
    pub a: PathBuf,
    /// Second input (same kinds).
    pub b: PathBuf,
    /// Print one JSON object instead of the side-by-side text.
    #[arg(long)]
    pub json: bool,
    /// Mapping profile for events (default: the profile of a model or store
    /// among the inputs, else quixote).
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// File of `pseudonym HEX` lines used to map events (a model file is
    /// accepted too; default: the pseudonyms of a model or store among the inputs).
    #[arg(long, value_name = "FILE")]
    pub pseudonyms: Option<PathBuf>,
}

/// What an input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Archive,
    Events,
    Model,
    Store,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Archive => "archive",
            Kind::Events => "events",
            Kind::Model => "model",
            Kind::Store => "store",
        }
    }
}

/// Tells the kind of an input: a store has a `header`, an archive a
/// `FORMAT` file; a file whose first record starts with `{` holds events,
/// anything else is read as a model.
fn detect(path: &Path) -> anyhow::Result<Kind> {
    if path.as_os_str() == "-" {
        return Ok(Kind::Events);
    }
    if path.is_dir() {
        if ModelStore::exists(path) {
            return Ok(Kind::Store);
        }
        if Archive::is_archive(path) {
            return Ok(Kind::Archive);
        }
        bail!("{}: neither a store nor an archive", path.display());
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            // Empty: no coefficients either way.
            return Ok(Kind::Events);
        }
        let text = line.trim_ascii_start();
        if text.is_empty() || text.starts_with(b"#") {
            continue;
        }
        return Ok(if text.starts_with(b"{") {
            Kind::Events
        } else {
            Kind::Model
        });
    }
}

/// The coefficients of one input.
struct Side {
    path: PathBuf,
    kind: Kind,
    /// Coefficients in order of first appearance.
    order: Vec<Coefficient>,
    /// Events per coefficient (`None`: the input keeps no counts, a model file).
    counts: HashMap<Coefficient, Option<u64>>,
    /// The first event description seen for each coefficient.
    descriptions: HashMap<Coefficient, Vec<u8>>,
    events: Option<u64>,
    unmapped: u64,
    /// What a model or store says about how its coefficients were mapped.
    profile: Option<Profile>,
    pseudonyms: Vec<Digest>,
}

impl Side {
    fn new(path: &Path, kind: Kind) -> Side {
        Side {
            path: path.to_path_buf(),
            kind,
            order: Vec::new(),
            counts: HashMap::new(),
            descriptions: HashMap::new(),
            events: None,
            unmapped: 0,
            profile: None,
            pseudonyms: Vec::new(),
        }
    }

    fn add(&mut self, c: Coefficient, count: Option<u64>) {
        match self.counts.get_mut(&c) {
            Some(Some(n)) => *n += count.unwrap_or(0),
            Some(None) => {}
            None => {
                self.order.push(c);
                self.counts.insert(c, count);
            }
        }
    }

    /// A model file or a store.
    fn load_model(&mut self) -> anyhow::Result<()> {
        let model = if self.kind == Kind::Store {
            let snapshot = StoreSnapshot::open(&self.path)
                .with_context(|| format!("store {}", self.path.display()))?;
            model_from_snapshot(&snapshot)
        } else {
            let text = read_model_file(&self.path)?;
            let mut model = Model::new(modelfile::declared_profile(&text)?);
            modelfile::load(&text, &mut model)
                .with_context(|| format!("{}", self.path.display()))?;
            model
        };
        let counted = self.kind == Kind::Store;
        for p in model.points() {
            self.add(p.coefficient, counted.then_some(p.count));
        }
        if counted {
            self.events = Some(model.events());
        }
        self.profile = Some(model.profile());
        self.pseudonyms = model.pseudonyms().iter().copied().collect();
        // The descriptions a store keeps (first occurrences), keyed by
        // coefficient under the store's own mapping.
        let mapper = Mapper::new(model.profile(), model.pseudonyms().clone());
        let mut parser = Parser::default();
        for line in model.trajectory().chain(model.forensics()) {
            if let Ok(Some(c)) = map(&mut parser, &mapper, line) {
                self.descriptions.entry(c).or_insert_with(|| line.to_vec());
            }
        }
        Ok(())
    }

    /// An archive or an event file.
    fn load_events(&mut self, mapper: &Mapper) -> anyhow::Result<()> {
        let mut source: Box<dyn RecordSource> = source_of(&self.path, false)?;
        let mut parser = Parser::default();
        let mut events = 0u64;
        loop {
            match source
                .fetch(true)
                .with_context(|| format!("reading {}", self.path.display()))?
            {
                Fetch::Record { bytes, .. } => match map(&mut parser, mapper, bytes) {
                    Ok(Some(c)) => {
                        events += 1;
                        if !self.counts.contains_key(&c) {
                            self.descriptions.insert(c, bytes.to_vec());
                        }
                        self.add(c, Some(1));
                    }
                    Ok(None) => {}
                    Err(()) => self.unmapped += 1,
                },
                Fetch::Oversized { .. } => self.unmapped += 1,
                Fetch::Idle => {}
                Fetch::End => break,
            }
        }
        self.events = Some(events);
        Ok(())
    }

    fn summary(&self) -> Value {
        json!({
            "input": self.path.display().to_string(),
            "kind": self.kind.name(),
            "events": self.events,
            "coefficients": self.order.len(),
            "unmapped": self.unmapped,
        })
    }
}

/// The coefficient of an event line; `None` for records without one
/// (aggregate, log notice, blank), `Err` for lines that do not map.
fn map(parser: &mut Parser, mapper: &Mapper, line: &[u8]) -> Result<Option<Coefficient>, ()> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match parser.parse(line, |r| match r {
        Record::Event(v) => mapper.coefficient(&v).map(Some).map_err(|_| ()),
        _ => Ok(None),
    }) {
        Ok(r) => r,
        Err(_) => Err(()),
    }
}

/// What identifies "the same event" across two inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: String,
    process: String,
    target: String,
    task_id: String,
}

/// An event description, flattened for comparison.
struct Described {
    key: Key,
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
                key: Key {
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

/// Fields whose values differ (a missing field is `None`).
type FieldDiff = (String, Option<String>, Option<String>);

fn field_diff(a: &Described, b: &Described) -> Vec<FieldDiff> {
    let bmap: HashMap<&str, &str> = b
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let amap: HashMap<&str, &str> = a
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut out = Vec::new();
    for (k, v) in &a.fields {
        match bmap.get(k.as_str()) {
            Some(w) if *w == v => {}
            other => out.push((k.clone(), Some(v.clone()), other.map(|w| (*w).to_owned()))),
        }
    }
    for (k, v) in &b.fields {
        if !amap.contains_key(k.as_str()) {
            out.push((k.clone(), None, Some(v.clone())));
        }
    }
    out
}

/// One coefficient that differs, with what is known of its event.
struct Entry {
    coefficient: Coefficient,
    count: Option<u64>,
    key: Option<Key>,
}

/// An event present on both sides with different coefficients.
struct Change {
    key: Key,
    a: Coefficient,
    b: Coefficient,
    fields: Vec<FieldDiff>,
}

struct Report {
    only_a: Vec<Entry>,
    only_b: Vec<Entry>,
    counts: Vec<(Coefficient, u64, u64, Option<Key>)>,
    changed: Vec<Change>,
}

fn compare(a: &Side, b: &Side) -> Report {
    let mut parser = Parser::default();
    let mut described: HashMap<(bool, Coefficient), Described> = HashMap::new();
    let mut describe_side = |side: &Side, is_a: bool, c: Coefficient| -> Option<Key> {
        let line = side.descriptions.get(&c)?;
        let d = describe(&mut parser, line)?;
        let key = d.key.clone();
        described.insert((is_a, c), d);
        Some(key)
    };
    let only = |x: &Side, y: &Side| -> Vec<Coefficient> {
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
                counts.push((*c, *x, *y, key));
            }
        }
    }
    // Pair the events only in A with those only in B that have the same key.
    let mut by_key: HashMap<&Key, Vec<Coefficient>> = HashMap::new();
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
                Some((*c, field_diff(da, db)))
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
    Report {
        only_a,
        only_b,
        counts,
        changed,
    }
}

fn key_json(key: Option<&Key>) -> Value {
    match key {
        Some(k) => json!({
            "type": k.kind,
            "process": k.process,
            "target": k.target,
            "task_id": k.task_id,
        }),
        None => Value::Null,
    }
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "coefficient": e.coefficient.to_hex(),
        "count": e.count,
        "event": key_json(e.key.as_ref()),
    })
}

fn key_text(key: Option<&Key>) -> String {
    match key {
        Some(k) => {
            let mut t = format!("{} {}", k.kind, k.process);
            if !k.target.is_empty() {
                t.push(' ');
                t.push_str(&k.target);
            }
            t
        }
        None => "(no event description)".to_owned(),
    }
}

fn count_text(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Cuts `s` to `width` characters.
fn cell(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        format!("{s:width$}")
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn side_text(s: &Side) -> String {
    let mut t = format!("{} {}", s.kind.name(), s.path.display());
    let mut parts = Vec::new();
    if let Some(n) = s.events {
        parts.push(format!("{n} events"));
    }
    parts.push(format!("{} coefficients", s.order.len()));
    if s.unmapped > 0 {
        parts.push(format!("{} lines not mapped", s.unmapped));
    }
    t.push_str(&format!(" ({})", parts.join(", ")));
    t
}

fn print_text(out: &mut impl Write, a: &Side, b: &Side, r: &Report) -> io::Result<()> {
    const W: usize = 70;
    writeln!(out, "A: {}", side_text(a))?;
    writeln!(out, "B: {}", side_text(b))?;
    writeln!(
        out,
        "only in A: {}, only in B: {}, counts differ: {}, changed events: {}",
        r.only_a.len(),
        r.only_b.len(),
        r.counts.len(),
        r.changed.len()
    )?;
    if !r.only_a.is_empty() || !r.only_b.is_empty() {
        writeln!(out)?;
        writeln!(out, "{} | only in B", cell("only in A", W))?;
        let row = |e: Option<&Entry>| match e {
            Some(e) => format!(
                "{} x{} {}",
                &e.coefficient.to_hex()[..16],
                count_text(e.count),
                key_text(e.key.as_ref())
            ),
            None => String::new(),
        };
        for i in 0..r.only_a.len().max(r.only_b.len()) {
            writeln!(
                out,
                "{} | {}",
                cell(&row(r.only_a.get(i)), W),
                row(r.only_b.get(i))
            )?;
        }
    }
    if !r.counts.is_empty() {
        writeln!(out)?;
        writeln!(out, "counts differ:")?;
        for (c, x, y, key) in &r.counts {
            writeln!(
                out,
                "  {}  A x{x} | B x{y}  {}",
                &c.to_hex()[..16],
                key_text(key.as_ref())
            )?;
        }
    }
    if !r.changed.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "changed events (same type, process, target and task, other coefficient):"
        )?;
        for ch in &r.changed {
            writeln!(
                out,
                "  {} task {}",
                key_text(Some(&ch.key)),
                cell(&ch.key.task_id, 16)
            )?;
            writeln!(
                out,
                "    {:<24} {} | {}",
                "coefficient",
                ch.a.to_hex(),
                ch.b.to_hex()
            )?;
            for (field, x, y) in &ch.fields {
                writeln!(
                    out,
                    "    {:<24} {} | {}",
                    field,
                    x.as_deref().unwrap_or("(absent)"),
                    y.as_deref().unwrap_or("(absent)")
                )?;
            }
        }
    }
    Ok(())
}

fn report_json(a: &Side, b: &Side, r: &Report, profile: Profile, identical: bool) -> Value {
    json!({
        "identical": identical,
        "profile": profile.name(),
        "a": a.summary(),
        "b": b.summary(),
        "only_in_a": r.only_a.iter().map(entry_json).collect::<Vec<_>>(),
        "only_in_b": r.only_b.iter().map(entry_json).collect::<Vec<_>>(),
        "counts_differ": r.counts.iter().map(|(c, x, y, key)| json!({
            "coefficient": c.to_hex(),
            "a": x,
            "b": y,
            "event": key_json(key.as_ref()),
        })).collect::<Vec<_>>(),
        "changed": r.changed.iter().map(|ch| json!({
            "event": key_json(Some(&ch.key)),
            "a": ch.a.to_hex(),
            "b": ch.b.to_hex(),
            "fields": ch.fields.iter().map(|(f, x, y)| json!({
                "field": f,
                "a": x,
                "b": y,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Runs the command: exit 0 when the inputs have the same coefficients (and
/// the same counts where both keep counts), 1 when they differ.
pub fn run(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let mut a = Side::new(&args.a, detect(&args.a)?);
    let mut b = Side::new(&args.b, detect(&args.b)?);
    for side in [&mut a, &mut b] {
        if matches!(side.kind, Kind::Model | Kind::Store) {
            side.load_model()?;
        }
    }
    // Events are mapped as the models among the inputs were, unless told otherwise.
    let profile = match args.profile {
        Some(p) => p.into(),
        None => a.profile.or(b.profile).unwrap_or(Profile::Quixote),
    };
    let pseudonyms = match &args.pseudonyms {
        Some(path) => super::load_pseudonyms(Some(path))?,
        None => {
            let mut p = Pseudonyms::new();
            for d in a.pseudonyms.iter().chain(&b.pseudonyms) {
                p.insert(*d);
            }
            p
        }
    };
    let mapper = Mapper::new(profile, pseudonyms);
    for side in [&mut a, &mut b] {
        if matches!(side.kind, Kind::Archive | Kind::Events) {
            side.load_events(&mapper)?;
        }
    }
    let report = compare(&a, &b);
    let identical =
        report.only_a.is_empty() && report.only_b.is_empty() && report.counts.is_empty();
    let mut out = BufWriter::new(io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer(&mut out, &report_json(&a, &b, &report, profile, identical))
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        print_text(&mut out, &a, &b, &report)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e.into()),
    }
    Ok(if identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
