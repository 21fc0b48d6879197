//! `tsem-stream run` (the default command), `learn` and `enforce`: events
//! through the pipeline into a model.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tsem_ingest::RecordSource;
use tsem_model::{modelfile, Outcome};
use tsem_model::{Mapped, Observer};
use tsem_pipeline::{ControlProtocol, ModelSink, Outputs, PipelineError, VerdictWriter};

use super::modeling::{write_file_atomically, ModelArgs, RunTuning};
use crate::cli::{OutputArgs, SummaryFormat};
use crate::input::Input;
use crate::report::Summary;
use tsem_archive::OpenSegmentPolicy;

/// Release protocol for verdicts (and, with -P, the process structure).
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq, Default)]
pub enum ProtocolArg {
    /// Whichever the kernel takes: with -P, `external key=` (v4) first, then
    /// plain `external` (2025); without -P, `key` when --key is given, else `tnum`.
    #[default]
    Auto,
    /// `trusted pid=P tnum=T` (2025 kernels, Quixote v1.8).
    Tnum,
    /// `trusted pid=P key=HEX` (2024 v4 kernels, Quixote v1.7); with -P the
    /// namespace's monitor process reads the export file inside the namespace.
    Key,
}

/// Options of `run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tuning: RunTuning,
    /// Event file (`-` for stdin). Without it and without --tsem-root, a bundled example is used.
    #[arg(long, value_name = "FILE", conflicts_with = "tsem_root")]
    pub input: Option<PathBuf>,
    /// Keep reading --input as it grows (like `tail -f`); Ctrl-C (SIGINT) or
    /// SIGTERM ends the run cleanly (summary, model, sealed archive).
    #[arg(long, requires = "input")]
    pub follow: bool,
    /// Root of the TSEM securityfs tree (e.g. /sys/kernel/security/tsem, or a simulator's).
    /// (With -P the default is /sys/kernel/security/tsem; without, --namespace is needed.)
    #[arg(long, value_name = "DIR")]
    pub tsem_root: Option<PathBuf>,
    /// Modeling namespace id whose export file `external_tma/ID` is read.
    #[arg(long, value_name = "ID")]
    pub namespace: Option<u64>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Verdict protocol.
    #[arg(long, value_enum, default_value_t)]
    pub control_protocol: ProtocolArg,
    /// Microseconds to keep re-reading an empty export file before sleeping
    /// in poll (lower verdict latency for bursts, some CPU after each burst).
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 30)]
    pub spin_us: u64,
    /// Archive every record received into this directory (see `tsem-stream archive`).
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,
    /// zstd level of the archive.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub archive_level: i32,
    /// Process mode: run a workload (a command, or your shell) in a new
    /// modeling namespace and model it (the external trust orchestrator).
    #[arg(short = 'P', long = "process", requires = "workload")]
    pub process: bool,
    /// Workload name (management socket and console name).
    #[arg(short = 'w', long = "workload", value_name = "NAME")]
    pub workload: Option<String>,
    /// Directory of the management sockets.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/tsem-stream/mgmt")]
    pub mgmt_dir: PathBuf,
    /// The workload's command (process mode); default: $SHELL.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Process mode: the user namespace that translates ids in the events
    /// (`external nsref=`); default: the kernel's (initial).
    #[arg(long, value_enum, requires = "process")]
    pub nsref: Option<super::process::NsRefArg>,
    /// Process mode: the kernel's cache of atomic-context events (`external cache=N`).
    #[arg(long, value_name = "N", requires = "process")]
    pub cache: Option<u32>,
    /// The namespace key of the `key` protocol (64 hex digits). With -P the
    /// default is 32 fresh random bytes; without -P it is needed for `key`.
    #[arg(long, value_name = "HEX")]
    pub key: Option<String>,
    #[command(flatten)]
    pub publish: Box<super::fleet::PublishArgs>,
}

/// Prints `FILE:LINE: what` for bad lines, in input order.
/// and advances the progress bar of long file runs.
struct ErrorReporter<'a> {
    inner: Option<&'a mut dyn Observer>,
    progress: Option<indicatif::ProgressBar>,
    bytes: u64,
    lines: u64,
}

impl Observer for ErrorReporter<'_> {
    fn line(
        &mut self,
        source: &str,
        number: u64,
        bytes: &[u8],
        mapped: &Mapped,
        outcome: Option<&Outcome>,
    ) -> io::Result<()> {
        if let Mapped::Error { message, .. } = mapped {
            match &self.progress {
                Some(p) => p.suspend(|| eprintln!("{source}:{number}: {message}")),
                None => eprintln!("{source}:{number}: {message}"),
            }
        }
        if let Some(p) = &self.progress {
            self.bytes += bytes.len() as u64 + 1;
            self.lines += 1;
            if self.lines.is_multiple_of(16_384) {
                p.set_position(self.bytes);
            }
        }
        match &mut self.inner {
            Some(o) => o.line(source, number, bytes, mapped, outcome),
            None => Ok(()),
        }
    }
}

/// The outcome of one pipeline run, for the commands' exit status.
pub struct RunOutcome {
    pub sink: ModelSink,
    pub stats: Option<tsem_pipeline::Stats>,
    pub stopped_on_error: bool,
    /// The model was sealed for this run (`-e`, `enforce`): violations
    /// make the exit status 3.
    pub enforced: bool,
}

/// Runs the pipeline over `source` into the model of `args`.
pub fn execute(
    model_args: &ModelArgs,
    tuning: &RunTuning,
    source: Box<dyn RecordSource>,
    unseal: bool,
    seal: bool,
    outputs: Outputs,
    observer: Option<&mut dyn Observer>,
) -> anyhow::Result<RunOutcome> {
    let mut model = model_args.build_model(unseal)?;
    if seal {
        model.seal();
    }
    let (mut sink, mapper) = model_args.sink(model)?;
    // A progress bar for long runs over files, on a terminal only.
    let progress = source
        .size_hint()
        .filter(|&n| n >= 16 << 20 && io::stderr().is_terminal())
        .map(|n| {
            let bar = indicatif::ProgressBar::new(n);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
    let mut reporter = ErrorReporter {
        inner: observer,
        progress,
        bytes: 0,
        lines: 0,
    };
    let result = tsem_pipeline::run(
        source,
        mapper,
        &mut sink,
        outputs,
        &tuning.options(),
        &mut reporter,
    );
    if let Some(p) = &reporter.progress {
        p.finish_and_clear();
    }
    match result {
        Ok(stats) => Ok(RunOutcome {
            sink,
            stats: Some(stats),
            stopped_on_error: false,
            enforced: seal,
        }),
        // Already reported by the ErrorReporter, in order.
        Err(PipelineError::BadLine { .. }) => {
            sink.commit().map_err(anyhow::Error::msg)?;
            Ok(RunOutcome {
                sink,
                stats: None,
                stopped_on_error: true,
                enforced: seal,
            })
        }
        Err(PipelineError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(RunOutcome {
            sink,
            stats: None,
            stopped_on_error: false,
            enforced: seal,
        }),
        Err(e) => Err(e.into()),
    }
}

/// The records of `--input` (`-`: stdin), or of the bundled example.
pub fn open_input(input: Option<&PathBuf>) -> anyhow::Result<Box<dyn RecordSource>> {
    Input::records_or_bundled(input.map(PathBuf::as_path)).records(OpenSegmentPolicy::Include)
}

/// Writes the requested outputs and picks the exit status.
pub fn finish(
    outcome: &RunOutcome,
    output: Option<&PathBuf>,
    trajectory: bool,
    summary_format: Option<SummaryFormat>,
) -> anyhow::Result<ExitCode> {
    let model = outcome.sink.model();
    if let Some(path) = output {
        // A run that stopped at a bad line learned only part of its input:
        // it must not replace the model a user had (which may be good).
        let partial;
        let path = if outcome.stopped_on_error {
            let mut name = path.as_os_str().to_owned();
            name.push(".partial");
            partial = PathBuf::from(name);
            eprintln!(
                "tsem-stream: the run stopped at a bad line: {} is unchanged; what was \
                 modeled before it is in {}",
                path.display(),
                partial.display()
            );
            &partial
        } else {
            path
        };
        let text = if trajectory {
            let t = outcome
                .sink
                .render(tsem_model::views::View::Trajectory, false)
                .map_err(anyhow::Error::msg)?;
            String::from_utf8_lossy(&t).into_owned()
        } else {
            modelfile::write(model, false)
        };
        write_file_atomically(path, &text)?;
    }
    match summary_format {
        Some(SummaryFormat::Json) => {
            Summary::of(&outcome.sink, outcome.stats.as_ref())
                .write_json(&mut io::stdout().lock())?;
        }
        Some(SummaryFormat::Text) => {
            Summary::of(&outcome.sink, outcome.stats.as_ref())
                .write_text(&mut io::stderr().lock(), outcome.stats.as_ref())?;
        }
        None => {}
    }
    // One rule for every command: 1 bad input, 3 violations of an enforced
    // model, else 0 (2, a failure, comes from main).
    Ok(if outcome.stopped_on_error || outcome.sink.errors() > 0 {
        ExitCode::from(1)
    } else if outcome.enforced && model.violations() > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Refuses to write `output` over the event file being read: the run would
/// read what it is replacing (`learn -o X X`).
fn refuse_output_over_input(output: &Path, input: Option<&Path>) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (Some(input), Ok(out)) = (input, std::fs::metadata(output)) else {
        return Ok(());
    };
    if let Ok(inp) = std::fs::metadata(input) {
        anyhow::ensure!(
            (inp.dev(), inp.ino()) != (out.dev(), out.ino()),
            "the output {} is the input {}: write the model elsewhere",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// `tsem-stream run`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(output) = &args.out.output {
        refuse_output_over_input(output, args.input.as_deref())?;
    }
    if args.process {
        anyhow::ensure!(
            args.publish.publish.is_empty(),
            "--publish is not available with -P yet"
        );
        return super::process::run(args);
    }
    anyhow::ensure!(
        args.tsem_root.is_none() || args.namespace.is_some(),
        "--tsem-root needs --namespace ID (or -P to start a workload in a new namespace)"
    );
    // A live input ends only by a signal: before any thread starts, so that
    // every thread leaves SIGINT/SIGTERM to the one that waits for them.
    let live = args.tsem_root.is_some() || args.follow;
    let stop = if live {
        Some(super::signals::stop_on_signals()?)
    } else {
        None
    };
    let (source, verdicts): (Box<dyn RecordSource>, Option<Arc<VerdictWriter>>) =
        match (&args.tsem_root, args.namespace) {
            (Some(root), Some(ns)) => {
                let verdicts = if ns == 0 {
                    // The root namespace (a kernel booted with
                    // `tsem_mode=root_export_only`) is export-only: its tasks
                    // wait for nobody, and the kernel refuses verdicts for it.
                    anyhow::ensure!(
                        !args.out.enforce,
                        "the root namespace (--namespace 0) is export-only: it cannot be enforced"
                    );
                    None
                } else {
                    let protocol = match (args.control_protocol, &args.key) {
                        (ProtocolArg::Key | ProtocolArg::Auto, Some(key)) => {
                            ControlProtocol::Key(key.clone())
                        }
                        (ProtocolArg::Key, None) => {
                            anyhow::bail!("--control-protocol key needs the namespace's --key")
                        }
                        (ProtocolArg::Tnum | ProtocolArg::Auto, _) => ControlProtocol::Tnum,
                    };
                    let control = root.join("control");
                    let writer = VerdictWriter::open(&control, protocol)
                        .with_context(|| format!("cannot open {}", control.display()))?;
                    if args.out.enforce {
                        writer.command("enforce").context("writing enforce")?;
                    }
                    Some(Arc::new(writer))
                };
                let export = root.join("external_tma").join(ns.to_string());
                (
                    super::export_source(
                        &export,
                        std::time::Duration::from_micros(args.spin_us),
                        stop.clone(),
                    )?,
                    verdicts,
                )
            }
            _ => match (&args.input, args.follow) {
                (Some(path), true) => (super::follow_source(path, stop.clone())?, None),
                (None, _) => {
                    eprintln!(
                        "tsem-stream: no input given: modeling the bundled example \
                         (examples/real-kernel-export.jsonl, 109 records of a real TSEM kernel); \
                         use --input FILE or --tsem-root DIR --namespace ID for your own"
                    );
                    (open_input(None)?, None)
                }
                (Some(path), false) => (open_input(Some(path))?, None),
            },
        };
    let mut model_args = args.model.clone();
    model_args.drop_descriptions = !args.out.trajectory;
    // The archive first: publishing buffers default to a directory inside it.
    let mut taps = Vec::new();
    if let Some(dir) = &args.archive {
        taps.push(super::archive::tap_for(dir, args.archive_level)?);
    }
    let mut publishing =
        super::fleet::start_publishing(&args.publish, args.namespace, args.archive.as_deref())?;
    if let Some(p) = &publishing {
        taps.extend(p.taps());
    }
    let outcome = execute(
        &model_args,
        &args.tuning,
        source,
        false,
        args.out.enforce,
        Outputs {
            verdicts,
            tap: super::fleet::combine_taps(taps),
            requests: None,
            progress: super::modeling::progress_to_stderr(),
        },
        publishing
            .as_mut()
            .map(|p| p.observer() as &mut dyn Observer),
    )?;
    let published = publishing
        .map(|p| super::fleet::finish_publishing(p, &outcome))
        .transpose()?;
    // A run that writes nothing else says what it did (as `replay` does).
    let summary_format =
        args.out
            .summary
            .or(if args.out.output.is_none() && args.model.store.is_none() {
                Some(SummaryFormat::Text)
            } else {
                None
            });
    super::fleet::finish_with_publish(
        &outcome,
        args.out.output.as_ref(),
        args.out.trajectory,
        summary_format,
        published,
    )
}

/// Options of `learn`.
#[derive(Args, Clone, Debug)]
pub struct LearnArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tuning: RunTuning,
    /// Write the learned model here.
    #[arg(short = 'o', long = "output", value_name = "MODEL_OUT")]
    pub output: PathBuf,
    /// Print a summary.
    #[arg(long, value_enum)]
    pub summary: Option<SummaryFormat>,
    /// Write the model even when the input held no event (such a model,
    /// once sealed, denies everything).
    #[arg(long)]
    pub allow_empty: bool,
    /// Event lines (`-` for stdin).
    #[arg(default_value = "-")]
    pub input: PathBuf,
}

/// `tsem-stream learn`: free modeling, then the model file.
pub fn learn(args: &LearnArgs) -> anyhow::Result<ExitCode> {
    refuse_output_over_input(&args.output, Some(&args.input))?;
    let source = open_input(Some(&args.input))?;
    let outcome = execute(
        &args.model,
        &args.tuning,
        source,
        true,
        false,
        Outputs::default(),
        None,
    )?;
    let model = outcome.sink.model();
    if model.points().is_empty() && !args.allow_empty && !outcome.stopped_on_error {
        eprintln!(
            "tsem-stream: {}: no security event to learn from: a model of nothing denies \
             every event once sealed; {} was not written (give --allow-empty to write it)",
            args.input.display(),
            args.output.display()
        );
        return Ok(ExitCode::from(1));
    }
    finish(&outcome, Some(&args.output), false, args.summary)
}

/// Options of `enforce`.
#[derive(Args, Clone, Debug)]
pub struct EnforceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tuning: RunTuning,
    /// Write forensics descriptions (new behaviour) here.
    #[arg(long, value_name = "OUT")]
    pub forensics: Option<PathBuf>,
    /// Print a summary (instead of the per-event verdicts).
    #[arg(long, value_enum)]
    pub summary: Option<SummaryFormat>,
    /// Event lines (`-` for stdin).
    #[arg(default_value = "-")]
    pub input: PathBuf,
}

/// Prints one verdict line per event.
struct VerdictPrinter<W: Write> {
    out: W,
}

impl<W: Write> Observer for VerdictPrinter<W> {
    fn line(
        &mut self,
        _: &str,
        number: u64,
        _: &[u8],
        mapped: &Mapped,
        outcome: Option<&Outcome>,
    ) -> io::Result<()> {
        let (
            Mapped::Event {
                coefficient, task, ..
            },
            Some(outcome),
        ) = (mapped, outcome)
        else {
            return Ok(());
        };
        let word = if outcome.violation {
            "untrusted"
        } else {
            "trusted"
        };
        write!(self.out, "{word} line={number}")?;
        if let Some(t) = task {
            write!(self.out, " pid={}", t.pid)?;
            if let Some(tnum) = t.tnum {
                write!(self.out, " tnum={tnum}")?;
            }
        }
        writeln!(self.out, " coefficient={coefficient}")
    }
}

/// `tsem-stream enforce`: a sealed model over events; exit 3 on any violation.
pub fn enforce(args: &EnforceArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.model.model.is_some()
            || args
                .model
                .store
                .as_deref()
                .is_some_and(tsem_store::ModelStore::exists),
        "enforce needs a model (-m MODEL, or --store DIR of an existing store)"
    );
    let source = open_input(Some(&args.input))?;
    let mut printer = VerdictPrinter {
        out: BufWriter::new(io::stdout().lock()),
    };
    let observer: Option<&mut dyn Observer> = if args.summary.is_none() {
        Some(&mut printer)
    } else {
        None
    };
    let outcome = execute(
        &args.model,
        &args.tuning,
        source,
        false,
        true,
        Outputs::default(),
        observer,
    )?;
    printer.out.flush()?;
    drop(printer);
    if let Some(path) = &args.forensics {
        let text = outcome
            .sink
            .render(tsem_model::views::View::Forensics, false)
            .map_err(anyhow::Error::msg)?;
        write_file_atomically(path, &String::from_utf8_lossy(&text))?;
    }
    finish(&outcome, None, false, args.summary)
}
