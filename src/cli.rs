//! The command line: the top-level parser, the subcommands, and the option
//! types several commands share. Each command's own options live beside it
//! in `cmd/` (they change together); what is shared is here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cmd;

/// A fast external Trusted Modeling Agent (TMA) for Linux TSEM.
///
/// Without a subcommand it runs the pipeline (`run`); with no input at all it
/// models a bundled example of real kernel records.
#[derive(Parser)]
#[command(
    name = "tsem-stream",
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Exit status, for every command: 0 success, 1 bad input, 2 failure, \
                  3 violations of an enforced model (enforce, run -e, replay -e)."
)]
pub struct Cli {
    /// The subcommand (`run` when none is given).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The options of `run`, when no subcommand is given.
    #[command(flatten)]
    pub run: cmd::run::RunArgs,
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

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
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
    /// Print the security state coefficient of each event line, in input order
    /// (an `aggregate` record has none: nothing is printed for it).
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

/// Output format of the run summary.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SummaryFormat {
    /// One JSON object on stdout.
    Json,
    /// A few readable lines on stderr.
    Text,
}

/// What a modeling run leaves behind: shared by `run`, `replay` and
/// `fleet replay`.
#[derive(Args, Clone, Debug, Default)]
pub struct OutputArgs {
    /// Seal the model first (needs a model, -m); with a kernel, also write
    /// `enforce` to its control file. Violations make the exit status 3.
    #[arg(short = 'e', long, requires = "model")]
    pub enforce: bool,
    /// Write the model here at the end (`-`: standard output).
    #[arg(short = 'o', long = "output", value_name = "MODEL_OUT")]
    pub output: Option<PathBuf>,
    /// With -o, write the trajectory (event descriptions) instead of the model.
    #[arg(short = 't', long = "trajectory", requires = "output")]
    pub trajectory: bool,
    /// Print a summary.
    #[arg(long, value_enum)]
    pub summary: Option<SummaryFormat>,
}

/// What to do with an archive's open segment (records not yet sealed into
/// its chain) when a model is built from the archive: refused unless said.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct UnsealedArgs {
    /// Leave out an archive's open segment (only records sealed into its chain).
    #[arg(long, conflicts_with = "include_unsealed")]
    pub sealed_only: bool,
    /// Read an archive's open segment too (records no chain vouches for yet).
    #[arg(long)]
    pub include_unsealed: bool,
}

impl UnsealedArgs {
    /// The policy: refuse an open segment unless told to leave it out or read it.
    pub fn policy(self) -> tsem_archive::OpenSegmentPolicy {
        use tsem_archive::OpenSegmentPolicy;
        match (self.sealed_only, self.include_unsealed) {
            (true, _) => OpenSegmentPolicy::Exclude,
            (false, true) => OpenSegmentPolicy::Include,
            (false, false) => OpenSegmentPolicy::Refuse,
        }
    }
}
