//! `tsem-stream replay`: an archive (or an event file) through the pipeline
//! exactly as its records came from the kernel, into the same models,
//! measurements and states as the original run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use tsem_ingest::RecordSource;
use tsem_pipeline::Outputs;

use super::modeling::{ModelArgs, RunTuning};
use super::run::execute;
use crate::cli::{OutputArgs, SummaryFormat, UnsealedArgs};
use crate::input::Input;
use tsem_archive::OpenSegmentPolicy;

/// Options of `replay`.
#[derive(Args, Clone, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub publish: Box<super::fleet::PublishArgs>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tuning: RunTuning,
    /// Seal (-e), model and summary outputs (default summary: text, when
    /// neither -o nor --store is given); nothing is written to any kernel.
    #[command(flatten)]
    pub out: OutputArgs,
    /// An archive's open segment: refused unless --sealed-only or --include-unsealed.
    #[command(flatten)]
    pub unsealed: UnsealedArgs,
    /// An archive directory or an event file (`-` for standard input).
    pub input: PathBuf,
    /// Reading a JetStream stream (`nats://…` as the input).
    #[command(flatten)]
    pub nats: super::fleet::NatsSourceArgs,
}

/// The records of an archive or an events file (a model file or a store
/// is refused with what it is).
pub fn source_of(
    input: &Path,
    open_segment: OpenSegmentPolicy,
) -> anyhow::Result<Box<dyn RecordSource>> {
    Input::detect(input)?.records(open_segment)
}

/// Runs the command.
pub fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    // A stream of the fleet (see `fleet.rs`): records in stream order.
    if let Some(url) = args.input.to_str().filter(|s| s.starts_with("nats://")) {
        return super::fleet::replay_from_nats(
            url,
            &args.nats,
            &args.model,
            &args.tuning,
            &args.out,
        );
    }
    let source = source_of(&args.input, args.unsealed.policy())?;
    let mut publishing = super::fleet::start_publishing(&args.publish, None, None)?;
    let tap = publishing
        .as_ref()
        .and_then(|p| super::fleet::combine_taps(p.taps()));
    let outcome = execute(
        &args.model,
        &args.tuning,
        source,
        false,
        args.out.enforce,
        Outputs {
            tap,
            progress: super::modeling::progress_to_stderr(),
            ..Outputs::default()
        },
        publishing
            .as_mut()
            .map(|p| p.observer() as &mut dyn tsem_model::Observer),
    )?;
    let published = publishing
        .map(|p| super::fleet::finish_publishing(p, &outcome))
        .transpose()?;
    let summary = args
        .out
        .summary
        .or(if args.out.output.is_none() && args.model.store.is_none() {
            Some(SummaryFormat::Text)
        } else {
            None
        });
    super::fleet::finish_with_publish(
        &outcome,
        args.out.output.as_ref(),
        args.out.trajectory,
        summary,
        published,
    )
}
