//! `tsem-stream run -P`: the external trust orchestrator in process mode (being implemented).

use std::process::ExitCode;

use super::run::RunArgs;

/// Runs a workload in a new modeling namespace and models it.
pub fn run(_args: &RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("process mode is not implemented yet")
}
