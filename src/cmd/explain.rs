//! `tsem-stream explain`: why events were refused by a sealed model. For each
//! forensic event, the closest learned events, what differs in plain words
//! and what to do (a pseudonym, a rebuild, a review); and what is wrong with
//! the model file itself. The logic is in `tsem_analysis::explain`; this module
//! opens the inputs and prints.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use tsem_analysis::explain::{Context, Explainer, Finding, Report};
use tsem_ingest::Parser;
use tsem_ingest::{Fetch, RecordSource};
use tsem_model::{modelfile, Model, Profile};
use tsem_store::model_from_snapshot;
use tsem_store::StoreSnapshot;

use super::modeling::read_model_file;
use super::rebuild::{lines_source, open_descriptions, Descriptions};
use crate::cli::ProfileArg;

/// Options of `explain`.
#[derive(Args, Clone, Debug)]
pub struct ExplainArgs {
    /// The sealed model the forensics were recorded against (default with
    /// --store: the store's model).
    #[arg(
        short = 'm',
        long = "model",
        value_name = "MODEL",
        required_unless_present = "store"
    )]
    pub model: Option<PathBuf>,
    /// Forensic event descriptions (`enforce --forensics`, `show forensics`,
    /// `console -F` output).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    pub forensics: Option<PathBuf>,
    /// A model store: its forensics, its model (without -m) and its
    /// trajectory as the learned events (without --learned).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The events the model was learned from: an events file, an archive or
    /// a store. Without them, explain can only check the model's pseudonyms.
    #[arg(long, value_name = "FILE|ARCHIVE|STORE")]
    pub learned: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Mapping profile (default: the model's).
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
}

/// Feeds every record of `source` to `f`; bad lines are reported as
/// `SOURCE:LINE: what` and counted.
fn each_record(
    source: &mut dyn RecordSource,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), tsem_analysis::explain::ExplainError>,
) -> anyhow::Result<u64> {
    let name = source.name().to_owned();
    let mut errors = 0;
    loop {
        match source
            .fetch(true)
            .with_context(|| format!("reading {name}"))?
        {
            Fetch::Record { number, bytes } => {
                if let Err(e) = f(number, bytes) {
                    eprintln!("{name}:{number}: {e}");
                    errors += 1;
                }
            }
            Fetch::Oversized { number, len } => {
                eprintln!("{name}:{number}: record of {len} bytes exceeds the limit");
                errors += 1;
            }
            Fetch::Idle => {}
            Fetch::End => return Ok(errors),
        }
    }
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "line": f.line,
        "kind": f.kind.name(),
        "event": f.event.as_ref().map(|e| json!({
            "type": e.type_name,
            "process": e.process,
            "pid": e.pid,
            "target": e.target,
        })),
        "learned_line": f.learned_line,
        "differences": f.differences.iter().map(|d| json!({
            "field": d.field,
            "learned": d.learned,
            "now": d.now,
        })).collect::<Vec<_>>(),
        "summary": f.summary,
        "advice": f.advice,
        "command": f.command,
    })
}

fn report_json(args: &ExplainArgs, model: &Model, report: &Report, errors: u64) -> Value {
    let counts: serde_json::Map<String, Value> = report
        .counts()
        .into_iter()
        .map(|(k, n)| (k.name().to_owned(), json!(n)))
        .collect();
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    json!({
        "model": path(&args.model),
        "store": path(&args.store),
        "forensics": path(&args.forensics),
        "learned": path(&args.learned),
        "profile": model.profile().name(),
        "learned_events": report.learned_events,
        "forensic_events": report.forensic_events,
        "counts": counts,
        "findings": report.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "errors": errors,
    })
}

/// Runs the command.
pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let snapshot = match &args.store {
        Some(dir) => {
            Some(StoreSnapshot::open(dir).with_context(|| format!("store {}", dir.display()))?)
        }
        None => None,
    };
    let model = match (&args.model, &snapshot) {
        (Some(path), _) => {
            let text = read_model_file(path)?;
            let profile: Profile = match args.profile {
                Some(p) => p.into(),
                None => modelfile::declared_profile(&text)?,
            };
            let mut model = Model::new(profile);
            modelfile::load(&text, &mut model).with_context(|| format!("{}", path.display()))?;
            model
        }
        (None, Some(s)) => {
            let model = model_from_snapshot(s);
            if let Some(p) = args.profile {
                let p: Profile = p.into();
                if p != model.profile() {
                    bail!(
                        "the store was made under profile {}, not {p}",
                        model.profile()
                    );
                }
            }
            model
        }
        (None, None) => bail!("explain needs a model (-m MODEL) or a store (--store DIR)"),
    };

    let mut explainer = Explainer::new(&model);
    let mut parser = Parser::default();
    let mut errors = 0;
    let mut ctx = Context {
        model: args.model.as_ref().map(|p| p.display().to_string()),
        ..Context::default()
    };

    // The learned run: --learned, else the store's own trajectory.
    let learned_source: Option<Box<dyn RecordSource>> = match (&args.learned, &snapshot) {
        (Some(path), _) => {
            ctx.learned = Some(path.display().to_string());
            Some(
                match open_descriptions(path, tsem_archive::OpenSegmentPolicy::Include)? {
                    Descriptions::Records(source) => source,
                    Descriptions::Store(s) => {
                        lines_source(&s.trajectory, format!("{}:trajectory", path.display()))
                    }
                },
            )
        }
        (None, Some(s)) if !s.trajectory.is_empty() => {
            let dir = args.store.as_ref().map(|d| d.display().to_string());
            ctx.learned.clone_from(&dir);
            Some(lines_source(
                &s.trajectory,
                format!("{}:trajectory", dir.unwrap_or_default()),
            ))
        }
        _ => None,
    };
    if let Some(mut source) = learned_source {
        errors += each_record(source.as_mut(), |n, line| {
            explainer.learn(&mut parser, n, line)
        })?;
    }

    let (mut forensics, name) = match (&args.forensics, &snapshot) {
        (Some(path), _) => {
            ctx.forensics = Some(path.display().to_string());
            let name = path.display().to_string();
            let source = match open_descriptions(path, tsem_archive::OpenSegmentPolicy::Include)? {
                Descriptions::Records(source) => source,
                Descriptions::Store(s) => lines_source(&s.forensics, format!("{name}:forensics")),
            };
            (source, name)
        }
        (None, Some(s)) => {
            let dir = args
                .store
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            ctx.forensics = Some(dir.clone());
            let name = format!("{dir}:forensics");
            (lines_source(&s.forensics, name.clone()), name)
        }
        (None, None) => bail!("explain needs forensics (--forensics FILE or --store DIR)"),
    };
    errors += each_record(forensics.as_mut(), |n, line| {
        explainer.forensic(&mut parser, n, line)
    })?;

    let report = explainer.report(&ctx);
    let mut out = io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report_json(args, &model, &report, errors))
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        out.write_all(report.text(&name).as_bytes())
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
