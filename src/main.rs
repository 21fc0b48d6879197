//! `tsem-stream`: a fast external Trusted Modeling Agent for Linux TSEM.
//!
//! This binary only parses arguments and wires the library crates together.

mod cli;
mod cmd;
mod input;
mod report;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

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
        // The reader of our output went away (`… | head`): nothing more to
        // say, and no one to say it to.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // The input's fault, not ours: exit status 1, as a bad line.
        Err(e) if e.chain().any(|c| c.is::<input::BadInput>()) => {
            eprintln!("tsem-stream: {e:#}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tsem-stream: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether an error comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
