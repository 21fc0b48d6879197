//! `tsem-stream`: a fast external Trusted Modeling Agent for Linux TSEM.
//!
//! This binary only parses arguments and wires the library crates together.

mod cmd;
mod input;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// A fast external Trusted Modeling Agent (TMA) for Linux TSEM.
///
/// Without a subcommand it runs the pipeline (`run`); with no input at all it
/// models a bundled example of real kernel records.
#[derive(Parser)]
#[command(
    name = "tsem-stream",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: cmd::run::RunArgs,
}

/// The mapping profile of the command line.
#[derive(Clone, Copy, Debug, ValueEnum, Default, PartialEq, Eq)]
pub enum ProfileArg {
    /// Quixote v1.8 userspace mapping (Profile Q).
    #[default]
    Quixote,
    /// The kernel's mapping (Profile K).
    Kernel,
}

impl From<ProfileArg> for tsem_model::Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Quixote => tsem_model::Profile::Quixote,
            ProfileArg::Kernel => tsem_model::Profile::Kernel,
        }
    }
}

/// What to do with a line that cannot be parsed or mapped.
#[derive(Clone, Copy, Debug, ValueEnum, Default, PartialEq, Eq)]
pub enum OnError {
    /// Report it and stop with a non-zero exit status.
    #[default]
    Stop,
    /// Report it, print `-` in its place, go on, and exit 1 at the end.
    Skip,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: events from a file, stdin, the kernel's export file or
    /// the bundled example, into a model; verdicts to the kernel.
    Run(cmd::run::RunArgs),
    /// Free modeling over events; writes the model.
    Learn(cmd::run::LearnArgs),
    /// A sealed model over events: one verdict per event; exit 3 on violations.
    Enforce(cmd::run::EnforceArgs),
    /// Show a view of a store, a model file or modeled events.
    Show(cmd::show::ShowArgs),
    /// Sign a model (-k KEY -m MODEL), or generate a key (-G -k KEY).
    Sign(cmd::sign::SignArgs),
    /// Simulate a TSEM kernel: serve events as export records, collect verdicts.
    Sim(cmd::sim::SimArgs),
    /// Compressed, indexed, tamper-evident archives of records.
    Archive(cmd::archive::ArchiveArgs),
    /// Feed an archive or an event file into the pipeline as if it came from the kernel.
    Replay(cmd::replay::ReplayArgs),
    /// Compare two archives, event files, model files or stores.
    Diff(cmd::diff::DiffArgs),
    /// The live console of a running workload (like quixote-console).
    Console(cmd::console::ConsoleArgs),
    /// Explain forensics: what differs from the learned behaviour and what to do.
    Explain(cmd::explain::ExplainArgs),
    /// Model maintenance (`model rebuild`).
    Model(cmd::rebuild::RebuildArgs),
    /// Measure throughput per worker count and sync latency per offered rate.
    Bench(cmd::bench::BenchArgs),
    /// Fleets: model, replay or archive the records many hosts published to NATS.
    Fleet(cmd::fleet::FleetArgs),
    /// Generate a large event corpus from real event lines (for load tests).
    Generate {
        /// Number of events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Share of events with a new task identity (model growth).
        #[arg(long, default_value_t = 0.02)]
        new_fraction: f64,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Template event lines (default: the bundled conformance mix).
        #[arg(long, value_name = "FILE")]
        templates: Option<PathBuf>,
    },
    /// Print the security state coefficient of each event line, in input order.
    Coefficients {
        /// Mapping profile.
        #[arg(long, value_enum, default_value_t)]
        profile: ProfileArg,
        /// File of `pseudonym HEX` lines (a model file is accepted too).
        #[arg(long, value_name = "FILE")]
        pseudonyms: Option<PathBuf>,
        /// Prefix each coefficient with `state ` (model file syntax).
        #[arg(short = 'p')]
        prefix: bool,
        /// Policy for bad lines.
        #[arg(long, value_enum, default_value_t)]
        on_error: OnError,
        /// Event lines (`-` or nothing: standard input).
        #[arg(default_value = "-")]
        input: PathBuf,
    },
    /// Print `pseudonym HEX` for pathnames (mapping.md M11).
    Pseudonym {
        /// Read pathnames from FILE, one per line.
        #[arg(short = 'f', value_name = "FILE", conflicts_with = "events")]
        file: Option<PathBuf>,
        /// Read event lines from FILE and use their `file.path.pathname`.
        #[arg(short = 'T', value_name = "FILE")]
        events: Option<PathBuf>,
        /// Pathnames.
        paths: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The libraries report what they cannot return (a refused verdict on a
    // relay thread, say) through `tracing`: warnings and errors go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .without_time()
        .init();
    let result = match cli.command {
        None => cmd::run::run(&cli.run),
        Some(Command::Run(args)) => cmd::run::run(&args),
        Some(Command::Learn(args)) => cmd::run::learn(&args),
        Some(Command::Enforce(args)) => cmd::run::enforce(&args),
        Some(Command::Show(args)) => cmd::show::show(&args),
        Some(Command::Sign(args)) => cmd::sign::run(&args),
        Some(Command::Sim(args)) => cmd::sim::run(&args),
        Some(Command::Archive(args)) => cmd::archive::run(&args),
        Some(Command::Replay(args)) => cmd::replay::run(&args),
        Some(Command::Diff(args)) => cmd::diff::run(&args),
        Some(Command::Console(args)) => cmd::console::run(&args),
        Some(Command::Explain(args)) => cmd::explain::run(&args),
        Some(Command::Model(args)) => cmd::rebuild::run(&args),
        Some(Command::Bench(args)) => cmd::bench::run(&args),
        Some(Command::Fleet(args)) => cmd::fleet::run(&args),
        Some(Command::Generate {
            events,
            new_fraction,
            seed,
            templates,
        }) => cmd::bench::generate_command(events, new_fraction, seed, templates.as_deref()),
        Some(Command::Coefficients {
            profile,
            pseudonyms,
            prefix,
            on_error,
            input,
        }) => cmd::coefficients::run(
            profile.into(),
            pseudonyms.as_deref(),
            prefix,
            on_error,
            &input,
        ),
        Some(Command::Pseudonym {
            file,
            events,
            paths,
        }) => cmd::pseudonym::run(file.as_deref(), events.as_deref(), &paths),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tsem-stream: {e:#}");
            ExitCode::from(2)
        }
    }
}
