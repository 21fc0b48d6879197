//! `tsem-stream run -P -w NAME [-- COMMAND...]`: the external trust
//! orchestrator in process mode (kernel-interface.md K5, like `quixote-us -P`). It starts
//! the workload in a new externally modeled namespace, models its events
//! until it exits, serves the management socket meanwhile, writes the model
//! and exits with the workload's status.

use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use tsem_ingest::export::ExportReader;
use tsem_ingest::ExportKind;
use tsem_model::{Mapped, Observer};
use tsem_model::{Mapper, Outcome};
use tsem_pipeline::{
    ControlProtocol, ModelSink, Outputs, PipelineError, PipelineOptions, VerdictWriter,
};
use tsem_process::mgmt::{self, Endpoint};
use tsem_process::orchestrate::{
    self, ExternalOptions, Generation, GenerationChoice, LaunchOptions, Monitor, NsRef,
    WorkloadHandle, WorkloadSource,
};

use super::run::{finish, ProtocolArg, RunArgs, RunOutcome};

/// Where TSEM's securityfs tree is.
const DEFAULT_TSEM_ROOT: &str = "/sys/kernel/security/tsem";

/// How long a workload gets to end after SIGTERM before SIGKILL, when the
/// orchestrator cannot go on (its synchronous events could not be answered).
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// `--nsref` of process mode.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum NsRefArg {
    /// The initial user namespace (the kernel's default).
    Initial,
    /// The user namespace of the workload.
    Current,
}

/// The workload's command line: the command after `--`, else the user's
/// shell (`$SHELL`, or `/bin/sh`).
fn workload_argv(command: &[String]) -> Vec<String> {
    if !command.is_empty() {
        return command.to_vec();
    }
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".to_owned());
    vec![shell]
}

/// Reports bad lines (like `run`) and applies kernel-interface.md K5 to asynchronous
/// events: a violation in atomic context under `-e` ends the workload (the
/// engine has already written `untrusted` for it).
struct ProcessObserver {
    workload: WorkloadHandle,
    enforcing: bool,
    terminated: bool,
}

impl Observer for ProcessObserver {
    fn line(
        &mut self,
        source: &str,
        number: u64,
        _bytes: &[u8],
        mapped: &Mapped,
        outcome: Option<&Outcome>,
    ) -> io::Result<()> {
        match mapped {
            Mapped::Error { message, .. } => eprintln!("{source}:{number}: {message}"),
            Mapped::Event {
                kind: Some(ExportKind::AsyncEvent),
                ..
            } if self.enforcing && !self.terminated && outcome.is_some_and(|o| o.violation) => {
                eprintln!(
                    "tsem-stream: {source}:{number}: security violation in atomic context, \
                     terminating the workload"
                );
                self.workload.terminate();
                self.terminated = true;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A fresh v4 namespace key: 32 random bytes as hex (kernel-interface.md K6), unless the
/// user gave one.
fn namespace_key(given: Option<&str>) -> anyhow::Result<String> {
    if let Some(key) = given {
        orchestrate::check_key(key)?;
        return Ok(key.to_owned());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random key: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `tsem-stream run -P`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .workload
        .as_deref()
        .context("process mode needs a workload name (-w NAME)")?;
    anyhow::ensure!(
        args.namespace.is_none(),
        "-P creates the workload's namespace; --namespace is for an existing one"
    );
    anyhow::ensure!(
        args.input.is_none(),
        "-P models the workload's events; --input cannot be used with it"
    );
    let root = args
        .tsem_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TSEM_ROOT));
    let generation = match args.control_protocol {
        ProtocolArg::Auto => GenerationChoice::Auto,
        ProtocolArg::Key => GenerationChoice::Only(Generation::Key),
        ProtocolArg::Tnum => GenerationChoice::Only(Generation::Tnum),
    };
    let key = namespace_key(args.key.as_deref())?;
    let external = ExternalOptions {
        nsref: args.nsref.map(|n| match n {
            NsRefArg::Initial => NsRef::Initial,
            NsRefArg::Current => NsRef::Current,
        }),
        // The events are modeled with SHA-256 whatever the kernel's default.
        digest: Some("sha256".into()),
        cache: args.cache,
    };

    // Everything that can fail for a reason of its own is done before the
    // namespace exists: the model, the control file, the socket name.
    let mut model = args.model.build_model(false)?;
    if args.out.enforce {
        model.set_enforcing(true);
    }
    let (sink, mapper) = args.model.sink(model)?;
    let control_path = root.join("control");
    let control = OpenOptions::new()
        .write(true)
        .open(&control_path)
        .with_context(|| format!("cannot open {}", control_path.display()))?;
    let endpoint = Endpoint::bind(&args.mgmt_dir, name)?;
    let options = args.tuning.options();

    // No thread may exist before this point (the child of a fork may only
    // allocate when the parent had a single thread). This thread forks the
    // namespace's creator: under v4 it is the only one whose verdicts the
    // kernel takes (kernel-interface.md K6).
    let mut launch = LaunchOptions::new(&root, external, key.clone(), workload_argv(&args.command));
    launch.generation = generation;
    launch.enforce = args.out.enforce;
    let mut launched = orchestrate::launch(&launch)?;
    let export = root
        .join("external_tma")
        .join(launched.namespace().to_string());
    let export_name = export.display().to_string();
    // Dropping `launched` on an error below ends the waiting child.
    let generation = launched.generation();
    let (reader, protocol) = match generation {
        Generation::Key => {
            let records = launched
                .take_records()
                .context("the namespace monitor gave no record pipe")?;
            // `enforce` was written by the monitor, inside the namespace.
            let reader = ExportReader::from_file(records, options.max_record_len)
                .context("reading the namespace monitor's pipe")?;
            (reader, ControlProtocol::Key(key))
        }
        Generation::Tnum => {
            let reader = ExportReader::open(&export)
                .map(|r| r.with_spin(Duration::from_micros(args.spin_us)))
                .with_context(|| format!("cannot open {export_name}"))?;
            (reader, ControlProtocol::Tnum)
        }
    };
    let writer = VerdictWriter::from_file(control, protocol);
    if generation == Generation::Tnum && args.out.enforce {
        writer.command("enforce").context("writing enforce")?;
    }
    let monitor = launched.release()?;
    let source = WorkloadSource::new(reader, export_name, monitor.exited_flag());
    let workload = Workload {
        name,
        generation,
        monitor,
        source: Box::new(source),
        writer: Arc::new(writer),
        endpoint,
    };
    model_workload(args, workload, sink, mapper, &options)
}

/// A started workload and what modeling it needs.
struct Workload<'a> {
    name: &'a str,
    generation: Generation,
    monitor: Monitor,
    source: Box<WorkloadSource<ExportReader>>,
    writer: Arc<VerdictWriter>,
    endpoint: Endpoint,
}

/// Models a released workload until its input ends, then writes the outputs.
fn model_workload(
    args: &RunArgs,
    workload: Workload<'_>,
    mut sink: ModelSink,
    mapper: Arc<Mapper>,
    options: &PipelineOptions,
) -> anyhow::Result<ExitCode> {
    let Workload {
        name,
        generation,
        monitor,
        source,
        writer,
        endpoint,
    } = workload;
    let (req_tx, req_rx) = mgmt::request_channel();
    // From here on, a failure must not leave the workload running unmodeled.
    let setup = || -> anyhow::Result<_> {
        let server = endpoint.serve(req_tx)?;
        let tap = args
            .archive
            .as_ref()
            .map(|dir| super::archive::tap_for(dir, args.archive_level))
            .transpose()?;
        Ok((server, tap))
    };
    let (server, tap) = match setup() {
        Ok(v) => v,
        Err(e) => {
            monitor.terminate(TERMINATE_GRACE);
            return Err(e);
        }
    };
    let mut observer = ProcessObserver {
        workload: monitor.handle(),
        enforcing: args.out.enforce,
        terminated: false,
    };
    let outputs = Outputs {
        verdicts: Some(writer),
        tap,
        requests: Some(req_rx.clone()),
        progress: super::modeling::progress_to_stderr(),
    };
    let result = match generation {
        // kernel-interface.md K6: only this thread, which forked the namespace's creator,
        // may write verdicts; it reads and maps every record itself.
        Generation::Key => tsem_pipeline::run_answering_here(
            source,
            mapper,
            &mut sink,
            outputs,
            options,
            &mut observer,
        ),
        Generation::Tnum => {
            tsem_pipeline::run(source, mapper, &mut sink, outputs, options, &mut observer)
        }
    };
    let (stats, stopped_on_error, failure) = match result {
        Ok(stats) => (Some(stats), false, None),
        // Already reported by the observer, in order.
        Err(PipelineError::BadLine { .. }) => (None, true, None),
        Err(e) => (None, false, Some(e)),
    };
    if stopped_on_error || failure.is_some() {
        // Nobody answers the workload's events any more.
        eprintln!("tsem-stream: modeling stopped, terminating the workload {name}");
        monitor.terminate(TERMINATE_GRACE);
    }
    // The console keeps working until the workload has ended.
    let exit =
        mgmt::answer_until(&req_rx, &mut sink, monitor.exits()).unwrap_or_else(|| monitor.wait());
    server.shutdown();
    if let Err(e) = sink.commit() {
        eprintln!("tsem-stream: store: {e}");
    }
    // The workload's own exit status decides process mode's (below).
    let outcome = RunOutcome {
        sink,
        stats,
        stopped_on_error,
        enforced: false,
    };
    let code = finish(
        &outcome,
        args.out.output.as_ref(),
        args.out.trajectory,
        args.out.summary,
    )?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    if stopped_on_error {
        return Ok(code);
    }
    Ok(ExitCode::from(exit.code()))
}
