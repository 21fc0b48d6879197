//! `tsem-stream archive` (being implemented).

use std::process::ExitCode;

use clap::Args;

/// Options of `archive`.
#[derive(Args, Clone, Debug)]
pub struct ArchiveArgs {}

/// The archive sink of `run --archive DIR`: every record, verbatim, in arrival order.
pub fn tap_for(
    _dir: &std::path::Path,
    _level: i32,
) -> anyhow::Result<Box<dyn tsem_pipeline::LineTap>> {
    anyhow::bail!("archiving is not implemented yet")
}

/// Runs the command.
pub fn run(_args: &ArchiveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("archive is not implemented yet")
}
