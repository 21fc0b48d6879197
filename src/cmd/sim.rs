//! `tsem-stream sim`: the kernel simulator, as its own process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tsem_sim::{self as sim, SimKernel, SimOptions};

/// `--kernel` of `sim`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum KernelArg {
    /// FIFOs: the protocol, whoever calls (a FIFO cannot tell who reads or
    /// writes).
    #[default]
    Fifo,
    /// The v4 kernel's rules on who may do what (kernel-interface.md K6), on a FUSE
    /// filesystem: `external` needs `key=`, `id`, `enforce` and the export
    /// file answer for the caller's namespace, only the thread that forked
    /// the namespace's creator may write verdicts. Implies
    /// `--wait-external`; needs /dev/fuse (and root, or fusermount3).
    V4,
}

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
    /// Which kernel to play.
    #[arg(long, value_enum, default_value_t = KernelArg::Fifo)]
    pub kernel: KernelArg,
    /// Seconds to wait for the TMA (to open the export FIFO, or to create
    /// the namespace with `external`).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub open_timeout: f64,
}

/// Runs the simulator and prints its JSON report; exit 1 when a synchronous
/// event was left unanswered or answered twice, or (`--kernel v4`) the v4
/// rules refused anything.
pub fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let mut opts = SimOptions::new(&args.tsem_root, &args.events);
    opts.namespace = args.namespace;
    opts.rate = args.rate;
    opts.sync_fraction = args.sync_fraction;
    opts.aggregate = args.aggregate.clone();
    opts.verdict_timeout = Duration::from_secs_f64(args.verdict_timeout);
    opts.max_outstanding = args.max_outstanding;
    opts.wait_external = args.wait_external;
    opts.kernel = match args.kernel {
        KernelArg::Fifo => SimKernel::Fifo,
        KernelArg::V4 => SimKernel::V4,
    };
    anyhow::ensure!(
        args.open_timeout.is_finite() && args.open_timeout > 0.0,
        "--open-timeout must be a positive number of seconds"
    );
    opts.open_timeout = Duration::from_secs_f64(args.open_timeout);
    let report = sim::run(&opts)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(
        if report.missing > 0
            || report.duplicates > 0
            || report.unexpected > 0
            || report.v4.as_ref().is_some_and(|v| v.refused.total > 0)
        {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}
