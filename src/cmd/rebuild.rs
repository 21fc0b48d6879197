//! `tsem-stream model rebuild`: a model recomputed from recorded event
//! descriptions (an events file, an archive, a store) without re-running the
//! workload: with new pseudonyms, under another profile, or with reviewed
//! forensics accepted into it.
//!
//! Why recompute instead of editing a model: a model holds coefficients, and a
//! coefficient already has the file digest hashed into it (mapping.md M8, M11).
//! A `pseudonym` line appended to a learned model changes how *new* events are
//! mapped, not the points learned before, so the only sound way to give a
//! model a pseudonym is to map the learned descriptions again with it.
//! Accepting forensics works the same way: their descriptions are mapped with
//! the new pseudonyms and added as valid points (what `quixote-console -M -u`
//! offers, but recomputed rather than copied).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tsem_ingest::MemorySource;
use tsem_ingest::RecordSource;
use tsem_ingest::{Parser, DEFAULT_MAX_RECORD_LEN};
use tsem_model::{modelfile, pseudonym_of, Digest, Mapper, Model, Profile};
use tsem_pipeline::ModelSink;
use tsem_store::StoreSnapshot;

use super::modeling::{read_model_file, write_file_atomically};
use crate::cli::ProfileArg;
use crate::cli::SummaryFormat;
use crate::cli::UnsealedArgs;
use crate::input::Input;
use crate::report::Summary;
use tsem_analysis::rebuild::{feed, FeedError};
use tsem_archive::OpenSegmentPolicy;

/// Options of `model`.
#[derive(Args, Clone, Debug)]
pub struct RebuildArgs {
    /// What to do with models.
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// The `model` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum ModelCommand {
    /// Recompute a model from recorded event descriptions without re-running
    /// the workload: new pseudonyms, another profile, reviewed forensics accepted.
    Rebuild(RebuildOptions),
}

/// Options of `model rebuild`.
#[derive(Args, Clone, Debug)]
pub struct RebuildOptions {
    /// The recorded descriptions: an events file (`-` for standard input), an
    /// archive directory, or a model store (its trajectory; its aggregate, base
    /// and pseudonyms are kept).
    #[arg(long, value_name = "FILE|ARCHIVE|STORE")]
    pub from: PathBuf,
    /// An archive's open segment: refused unless --sealed-only or --include-unsealed.
    #[command(flatten)]
    pub unsealed: UnsealedArgs,
    /// A pathname to treat as a pseudonym (repeatable).
    #[arg(long = "pseudonym", value_name = "PATH")]
    pub pseudonym_paths: Vec<String>,
    /// File of `pseudonym HEX` lines (a model file's pseudonym lines are accepted too).
    #[arg(long, value_name = "FILE")]
    pub pseudonyms: Option<PathBuf>,
    /// Mapping profile (default: that of -m, else of a store given with --from, else quixote).
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// Hardware aggregate to start from (hex); an aggregate record in the input wins.
    #[arg(long, value_name = "HEX")]
    pub aggregate: Option<String>,
    /// Base nonce (hex).
    #[arg(long, value_name = "HEX")]
    pub base: Option<String>,
    /// Forensic descriptions to accept as valid points after the recorded
    /// ones (`enforce --forensics` output, or a store's forensics); repeatable.
    /// Review them first: everything in them becomes trusted behaviour.
    #[arg(long, value_name = "FILE|STORE")]
    pub add_forensics: Vec<PathBuf>,
    /// A model to start from: its aggregate, base, pseudonyms and points are
    /// kept (to extend a model learned from several runs).
    #[arg(short = 'm', long = "model", value_name = "BASE_MODEL")]
    pub model: Option<PathBuf>,
    /// Write the rebuilt model here.
    #[arg(short = 'o', long = "output", value_name = "MODEL")]
    pub output: PathBuf,
    /// Summary format (default: one text line on standard error).
    #[arg(long, value_enum)]
    pub summary: Option<SummaryFormat>,
}

/// Recorded descriptions, wherever they were kept.
pub enum Descriptions {
    /// The records of an events file or an archive, in order.
    Records(Box<dyn RecordSource>),
    /// A model store: its model's settings and its descriptions.
    Store(Box<StoreSnapshot>),
}

/// Opens recorded descriptions: a model store directory, an archive
/// directory, or an events file (`-`: standard input). A model file is
/// refused with a hint, since it holds coefficients, not descriptions.
pub fn open_descriptions(
    path: &Path,
    open_segment: OpenSegmentPolicy,
) -> anyhow::Result<Descriptions> {
    match Input::detect(path)? {
        Input::Store(path) => {
            let snapshot =
                StoreSnapshot::open(&path).with_context(|| format!("store {}", path.display()))?;
            Ok(Descriptions::Store(Box::new(snapshot)))
        }
        input => Ok(Descriptions::Records(input.records(open_segment)?)),
    }
}

/// Turns a store's description lines into a record source.
pub fn lines_source(lines: &[Vec<u8>], name: String) -> Box<dyn RecordSource> {
    let mut data = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    Box::new(MemorySource::new(data, DEFAULT_MAX_RECORD_LEN, name))
}

fn digest_arg(name: &str, hex: &str) -> anyhow::Result<Digest> {
    hex.parse().with_context(|| format!("--{name}"))
}

/// `tsem-stream model rebuild`.
fn rebuild(args: &RebuildOptions) -> anyhow::Result<ExitCode> {
    let from = open_descriptions(&args.from, args.unsealed.policy())?;
    let store = match &from {
        Descriptions::Store(s) => Some(s.as_ref()),
        Descriptions::Records(_) => None,
    };
    let base_model = match &args.model {
        Some(path) => Some((path, read_model_file(path)?)),
        None => None,
    };
    let profile: Profile = match (args.profile, &base_model, store) {
        (Some(p), _, _) => p.into(),
        (None, Some((_, text)), _) => modelfile::declared_profile(text)?,
        (None, None, Some(s)) => s.meta.profile,
        (None, None, None) => Profile::default(),
    };
    if let Some(s) = store.filter(|s| s.meta.profile != profile) {
        // Pseudonyms only ever merge points, so a store's descriptions are
        // enough for them; another profile may tell apart events the
        // store's profile did not (generic CELLs under Profile Q).
        eprintln!(
            "tsem-stream: warning: {} keeps one description per {} point; events that profile \
             does not tell apart may be missing under {profile}: rebuild from the events file or \
             archive for an exact model",
            args.from.display(),
            s.meta.profile
        );
    }
    let mut model = Model::new(profile);
    if let Some(s) = store {
        // The store's own settings: its descriptions were recorded under them.
        model.set_base(s.meta.base);
        if let Some(a) = s.meta.aggregate {
            model.set_aggregate(a);
        }
        for p in &s.pseudonyms {
            model.add_pseudonym(*p);
        }
    }
    if let Some(b) = &args.base {
        model.set_base(digest_arg("base", b)?);
    }
    if let Some(a) = &args.aggregate {
        model.set_aggregate(digest_arg("aggregate", a)?);
    }
    if let Some((path, text)) = &base_model {
        modelfile::load(text, &mut model).with_context(|| format!("{}", path.display()))?;
        model.unseal();
    }
    for p in super::load_pseudonyms(args.pseudonyms.as_deref())?.iter() {
        model.add_pseudonym(*p);
    }
    for path in &args.pseudonym_paths {
        model.add_pseudonym(pseudonym_of(path.as_bytes()));
    }
    // Only the model file is written: descriptions need not be kept.
    model.keep_descriptions(false);
    let mapper = Mapper::new(profile, model.pseudonyms().clone());
    let mut parser = Parser::default();

    let from_name = args.from.display().to_string();
    let mut source = match from {
        Descriptions::Records(source) => source,
        Descriptions::Store(s) => lines_source(&s.trajectory, format!("{from_name}:trajectory")),
    };
    let learned = match feed(&mut model, &mapper, source.as_mut(), &mut parser) {
        Ok(fed) => fed,
        Err(e) => return bad_input(&e),
    };
    let mut accepted = Vec::new();
    for path in &args.add_forensics {
        let mut source = match open_descriptions(path, args.unsealed.policy())? {
            Descriptions::Records(source) => source,
            Descriptions::Store(s) => {
                lines_source(&s.forensics, format!("{}:forensics", path.display()))
            }
        };
        match feed(&mut model, &mapper, source.as_mut(), &mut parser) {
            Ok(fed) => accepted.push((path, fed)),
            Err(e) => return bad_input(&e),
        }
    }

    // Written sealed, like every model file: ready for `enforce -m`.
    model.seal();
    write_file_atomically(&args.output, &modelfile::write(&model, false))?;
    match args.summary {
        Some(SummaryFormat::Json) => {
            let sink = ModelSink::new(model);
            Summary::of(&sink, None).write_json(&mut io::stdout().lock())?;
        }
        Some(SummaryFormat::Text) | None => {
            let mut line = format!(
                "rebuilt {} (profile {}, {} pseudonym{}): {} point{} from {} event{} of {from_name}",
                args.output.display(),
                profile,
                model.pseudonyms().len(),
                plural(model.pseudonyms().len() as u64),
                learned.new_points,
                plural(learned.new_points),
                learned.events,
                plural(learned.events),
            );
            for (path, fed) in &accepted {
                line.push_str(&format!(
                    "; {} point{} added from {} forensic event{} of {}",
                    fed.new_points,
                    plural(fed.new_points),
                    fed.events,
                    plural(fed.events),
                    path.display()
                ));
            }
            eprintln!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A bad line: reported, nothing written, exit status 1 (as `learn` does).
fn bad_input(e: &FeedError) -> anyhow::Result<ExitCode> {
    eprintln!("{e}");
    eprintln!("tsem-stream: no model written");
    Ok(ExitCode::from(1))
}

/// Runs the command.
pub fn run(args: &RebuildArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ModelCommand::Rebuild(options) => rebuild(options),
    }
}
