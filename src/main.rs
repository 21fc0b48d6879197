//! `tsem-stream`: a fast external Trusted Modeling Agent for Linux TSEM.
//!
//! This binary only parses arguments and wires the library crates together.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// A fast external Trusted Modeling Agent (TMA) for Linux TSEM.
#[derive(Parser)]
#[command(name = "tsem-stream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The mapping profile of the command line.
#[derive(Clone, Copy, Debug, ValueEnum, Default)]
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
    /// Print `pseudonym HEX` for pathnames (spec §5.8).
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
    let result = match cli.command {
        Command::Coefficients {
            profile,
            pseudonyms,
            prefix,
            on_error,
            input,
        } => cmd::coefficients::run(profile.into(), pseudonyms.as_deref(), prefix, on_error, &input),
        Command::Pseudonym { file, events, paths } => {
            cmd::pseudonym::run(file.as_deref(), events.as_deref(), &paths)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tsem-stream: {e:#}");
            ExitCode::from(2)
        }
    }
}
