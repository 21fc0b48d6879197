//! `tsem-stream show VIEW`: the console views of a store, a model file, or
//! events modeled in memory.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use tsem_model::views::{render, View};
use tsem_model::{modelfile, Model};
use tsem_store::model_from_snapshot;
use tsem_store::StoreSnapshot;

use super::modeling::{read_model_file, ModelArgs, RunTuning};
use super::run::{execute, open_input};

/// Options of `show`.
#[derive(Args, Clone, Debug)]
pub struct ShowArgs {
    /// trajectory, coefficients, counts, forensics, forensics-coefficients,
    /// forensics-counts, state, measurement or model.
    pub view: String,
    /// Read a model store (safe while a writer runs).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["model_file", "events"])]
    pub store: Option<PathBuf>,
    /// Read a model file.
    #[arg(
        short = 'm',
        long = "model",
        value_name = "MODEL",
        conflicts_with = "events"
    )]
    pub model_file: Option<PathBuf>,
    /// Model these events in memory first.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Prefix coefficients with `state `.
    #[arg(short = 'p')]
    pub prefix: bool,
    /// With `model`: add the forensics points (like quixote-console -M -u).
    #[arg(short = 'u', long)]
    pub update: bool,
    /// Mapping profile (for -m and --events).
    #[arg(long, value_enum, default_value_t)]
    pub profile: crate::cli::ProfileArg,
}

/// Loads the model a view is shown from.
pub fn load_view_model(args: &ShowArgs) -> anyhow::Result<Model> {
    if let Some(dir) = &args.store {
        let snapshot =
            StoreSnapshot::open(dir).with_context(|| format!("store {}", dir.display()))?;
        return Ok(model_from_snapshot(&snapshot));
    }
    if let Some(path) = &args.model_file {
        let text = read_model_file(path)?;
        let mut model = Model::new(modelfile::declared_profile(&text)?);
        modelfile::load(&text, &mut model).with_context(|| format!("{}", path.display()))?;
        return Ok(model);
    }
    if let Some(events) = &args.events {
        let model_args = ModelArgs {
            profile: Some(args.profile),
            ..ModelArgs::default()
        };
        let tuning = RunTuning {
            workers: 1,
            batch_lines: 256,
            on_error: crate::cli::OnError::Stop,
            stats_interval: None,
        };
        let outcome = execute(
            &model_args,
            &tuning,
            open_input(Some(events))?,
            false,
            false,
            Default::default(),
            None,
        )?;
        if outcome.stopped_on_error {
            bail!("{}: stopped at a bad line", events.display());
        }
        return Ok(outcome.sink.into_model());
    }
    bail!("show needs one of --store DIR, -m MODEL, --events FILE")
}

/// `tsem-stream show`.
pub fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let view = View::from_name(&args.view, args.update)
        .with_context(|| format!("unknown view {:?}", args.view))?;
    let model = load_view_model(args)?;
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = BufWriter::new(stdout.lock());
    if terminal {
        if let Some(h) = view.terminal_header(&model) {
            writeln!(out, "{h}")?;
        }
    }
    match render(&model, view, args.prefix, &mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => r.map(|()| ExitCode::SUCCESS).map_err(Into::into),
    }
}
