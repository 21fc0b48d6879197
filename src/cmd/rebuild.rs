//! `tsem-stream rebuild` (being implemented).

use std::process::ExitCode;

use clap::Args;

/// Options of `rebuild`.
#[derive(Args, Clone, Debug)]
pub struct RebuildArgs {}

/// Runs the command.
pub fn run(_args: &RebuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rebuild is not implemented yet")
}
