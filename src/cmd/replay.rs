//! `tsem-stream replay` (being implemented).

use std::process::ExitCode;

use clap::Args;

/// Options of `replay`.
#[derive(Args, Clone, Debug)]
pub struct ReplayArgs {}

/// Runs the command.
pub fn run(_args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("replay is not implemented yet")
}
