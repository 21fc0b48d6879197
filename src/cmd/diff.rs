//! `tsem-stream diff A B`: compares the coefficients of two archives, event
//! files, model files or stores (any mix), and for events that changed, the
//! fields that changed. It supersedes Quixote's diff-states script.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tsem_analysis::diff::{compare, CoefficientSet, Counts, DiffReport, Entry, EventKey};
use tsem_ingest::{Fetch, Parser};
use tsem_model::{modelfile, Mapper, Model, Profile, Pseudonyms};
use tsem_store::{model_from_snapshot, StoreSnapshot};

use super::modeling::read_model_file;
use crate::cli::ProfileArg;
use crate::input::Input;
use tsem_archive::OpenSegmentPolicy;

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

/// One input and its coefficients.
struct Side {
    input: Input,
    set: CoefficientSet,
}

impl Side {
    fn detect(path: &std::path::Path) -> anyhow::Result<Side> {
        let input = Input::detect(path)?;
        if matches!(input, Input::Nats(_)) {
            anyhow::bail!("{}: diff compares files and directories", path.display());
        }
        Ok(Side {
            input,
            set: CoefficientSet::default(),
        })
    }

    /// A model file or a store.
    fn load_model(&mut self) -> anyhow::Result<()> {
        let path = self.input.path();
        let (model, counts) = if let Input::Store(_) = self.input {
            let snapshot =
                StoreSnapshot::open(&path).with_context(|| format!("store {}", path.display()))?;
            (model_from_snapshot(&snapshot), Counts::Kept)
        } else {
            let text = read_model_file(&path)?;
            let mut model = Model::new(modelfile::declared_profile(&text)?);
            modelfile::load(&text, &mut model).with_context(|| format!("{}", path.display()))?;
            (model, Counts::Absent)
        };
        self.set = CoefficientSet::from_model(&model, counts);
        Ok(())
    }

    /// An archive or an event file.
    fn load_events(&mut self, mapper: &Mapper) -> anyhow::Result<()> {
        let mut source = self.input.records(OpenSegmentPolicy::Include)?;
        let mut parser = Parser::default();
        self.set.events = Some(0);
        loop {
            match source
                .fetch(true)
                .with_context(|| format!("reading {}", self.input.path().display()))?
            {
                Fetch::Record { bytes, .. } => self.set.add_line(&mut parser, mapper, bytes),
                Fetch::Oversized { .. } => self.set.unmapped += 1,
                Fetch::Idle => {}
                Fetch::End => break,
            }
        }
        Ok(())
    }

    fn summary(&self) -> Value {
        json!({
            "input": self.input.path().display().to_string(),
            "kind": self.input.kind_name(),
            "events": self.set.events,
            "coefficients": self.set.order.len(),
            "unmapped": self.set.unmapped,
        })
    }
}

fn key_json(key: Option<&EventKey>) -> Value {
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

fn key_text(key: Option<&EventKey>) -> String {
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
    let mut t = format!("{} {}", s.input.kind_name(), s.input.path().display());
    let mut parts = Vec::new();
    if let Some(n) = s.set.events {
        parts.push(format!("{n} events"));
    }
    parts.push(format!("{} coefficients", s.set.order.len()));
    if s.set.unmapped > 0 {
        parts.push(format!("{} lines not mapped", s.set.unmapped));
    }
    t.push_str(&format!(" ({})", parts.join(", ")));
    t
}

fn print_text(out: &mut impl Write, a: &Side, b: &Side, r: &DiffReport) -> io::Result<()> {
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
        for c in &r.counts {
            writeln!(
                out,
                "  {}  A x{} | B x{}  {}",
                &c.coefficient.to_hex()[..16],
                c.a,
                c.b,
                key_text(c.key.as_ref())
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
            for d in &ch.fields {
                writeln!(
                    out,
                    "    {:<24} {} | {}",
                    d.field,
                    d.learned.as_deref().unwrap_or("(absent)"),
                    d.now.as_deref().unwrap_or("(absent)")
                )?;
            }
        }
    }
    Ok(())
}

fn report_json(a: &Side, b: &Side, r: &DiffReport, profile: Profile, identical: bool) -> Value {
    json!({
        "identical": identical,
        "profile": profile.name(),
        "a": a.summary(),
        "b": b.summary(),
        "only_in_a": r.only_a.iter().map(entry_json).collect::<Vec<_>>(),
        "only_in_b": r.only_b.iter().map(entry_json).collect::<Vec<_>>(),
        "counts_differ": r.counts.iter().map(|c| json!({
            "coefficient": c.coefficient.to_hex(),
            "a": c.a,
            "b": c.b,
            "event": key_json(c.key.as_ref()),
        })).collect::<Vec<_>>(),
        "changed": r.changed.iter().map(|ch| json!({
            "event": key_json(Some(&ch.key)),
            "a": ch.a.to_hex(),
            "b": ch.b.to_hex(),
            "fields": ch.fields.iter().map(|d| json!({
                "field": d.field,
                "a": d.learned,
                "b": d.now,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Runs the command: exit 0 when the inputs have the same coefficients (and
/// the same counts where both keep counts), 1 when they differ.
pub fn run(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let mut a = Side::detect(&args.a)?;
    let mut b = Side::detect(&args.b)?;
    for side in [&mut a, &mut b] {
        if matches!(side.input, Input::Model(_) | Input::Store(_)) {
            side.load_model()?;
        }
    }
    // Events are mapped as the models among the inputs were, unless told otherwise.
    let profile = match args.profile {
        Some(p) => p.into(),
        None => a.set.profile.or(b.set.profile).unwrap_or(Profile::Quixote),
    };
    let pseudonyms = match &args.pseudonyms {
        Some(path) => super::load_pseudonyms(Some(path))?,
        None => {
            let mut p = Pseudonyms::new();
            for d in a.set.pseudonyms.iter().chain(&b.set.pseudonyms) {
                p.insert(*d);
            }
            p
        }
    };
    let mapper = Mapper::new(profile, pseudonyms);
    for side in [&mut a, &mut b] {
        if matches!(
            side.input,
            Input::Archive(_) | Input::Events(_) | Input::Stdin
        ) {
            side.load_events(&mapper)?;
        }
    }
    let report = compare(&a.set, &b.set);
    let identical = report.is_empty();
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
