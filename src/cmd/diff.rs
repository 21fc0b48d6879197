//! `tsem-stream diff` (being implemented).

use std::process::ExitCode;

use clap::Args;

/// Options of `diff`.
#[derive(Args, Clone, Debug)]
pub struct DiffArgs {}

/// Runs the command.
pub fn run(_args: &DiffArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("diff is not implemented yet")
}
