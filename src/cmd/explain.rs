//! `tsem-stream explain` (being implemented).

use std::process::ExitCode;

use clap::Args;

/// Options of `explain`.
#[derive(Args, Clone, Debug)]
pub struct ExplainArgs {}

/// Runs the command.
pub fn run(_args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("explain is not implemented yet")
}
