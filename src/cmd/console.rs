//! `tsem-stream console` (being implemented).

use std::process::ExitCode;

use clap::Args;

/// Options of `console`.
#[derive(Args, Clone, Debug)]
pub struct ConsoleArgs {}

/// Runs the command.
pub fn run(_args: &ConsoleArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("console is not implemented yet")
}
