//! `tsem-stream sim`: the kernel simulator, as its own process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tsem_pipeline::sim::{self, SimOptions};

/// Options of `sim`.
#[derive(Args, Clone, Debug)]
pub struct SimArgs {
    /// Where to create the fake securityfs tree (control, id, external_tma/ID).
    #[arg(long, value_name = "DIR")]
    pub tsem_root: PathBuf,
    /// Namespace id.
    #[arg(long, value_name = "ID", default_value_t = 1)]
    pub namespace: u64,
    /// Event lines to serve.
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// Offered rate in events per second (default: as fast as the TMA reads).
    #[arg(long, value_name = "EVENTS_PER_S")]
    pub rate: Option<f64>,
    /// Share of synchronous events (the rest are async_event).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub sync_fraction: f64,
    /// Hardware aggregate (hex) of the first record.
    #[arg(long, value_name = "HEX")]
    pub aggregate: Option<String>,
    /// Seconds a synchronous event waits for its verdict.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub verdict_timeout: f64,
    /// Most synchronous events waiting at once.
    #[arg(long, default_value_t = 64)]
    pub max_outstanding: usize,
    /// Process mode: create the namespace when a TMA writes `external` to
    /// `control` (`id` reads 0 until then), and keep its export file open
    /// until the TMA closes it.
    #[arg(long)]
    pub wait_external: bool,
}

/// Runs the simulator and prints its JSON report; exit 1 when a synchronous
/// event was left unanswered or answered twice.
pub fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let mut opts = SimOptions::new(&args.tsem_root, &args.events);
    opts.namespace = args.namespace;
    opts.rate = args.rate;
    opts.sync_fraction = args.sync_fraction;
    opts.aggregate = args.aggregate.clone();
    opts.verdict_timeout = Duration::from_secs_f64(args.verdict_timeout);
    opts.max_outstanding = args.max_outstanding;
    opts.wait_external = args.wait_external;
    let report = sim::run(&opts)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(
        if report.missing > 0 || report.duplicates > 0 || report.unexpected > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}
