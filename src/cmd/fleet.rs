//! `tsem-stream fleet` (`model`, `replay`, `archive`) and the publishing
//! options of `run` (`--publish nats://… | mqtt://…`): every host's records
//! in one JetStream stream, and the fleet modeled or archived from there.
//! See the `tsem-fleet` crate for subjects, ids and delivery guarantees.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use tsem_archive::{DurableWriter, WriterOptions};
use tsem_fleet::nats::{AckWhenDurable, Next};
use tsem_fleet::publish::default_buffer_root;
use tsem_fleet::target::NatsTarget;
use tsem_fleet::{
    FleetModel, NatsSource, PublishReport, PublisherConfig, Publishing, Server, SourceOptions,
    Target,
};
use tsem_ingest::{LineTap, TeeTap};
use tsem_pipeline::Outputs;

use super::modeling::{write_file_atomically, ModelArgs, RunTuning};
use super::run::{execute, finish, RunOutcome};
use crate::cli::ProfileArg;
use crate::cli::{OutputArgs, SummaryFormat};
use crate::report::Summary;

/// Publishing options of `run` (and `replay`).
#[derive(Args, Clone, Debug, Default)]
pub struct PublishArgs {
    /// Publish every record to a NATS JetStream server (`nats://HOST:PORT`,
    /// subject `tsem.HOST.NAMESPACE.events`, forensics and verdict summaries
    /// to `….forensics`) or an MQTT broker (`mqtt://HOST:PORT`, QoS 1, one
    /// record per message); repeatable. Options as a query:
    /// `?stream=NAME&prefix=tsem&max_age=7d&max_bytes=10G&duplicate_window=2m`
    /// (NATS), `?client_id=ID` (MQTT), `buffer_max=1G&drain=10s&batch=512` (both).
    #[arg(long = "publish", value_name = "URL")]
    pub publish: Vec<String>,
    /// MQTT topic of the records (default `tsem/HOST/NAMESPACE/events`).
    #[arg(long, value_name = "T")]
    pub topic: Option<String>,
    /// Host name in subjects and ids (default: the system's host name).
    #[arg(long = "host", value_name = "NAME")]
    pub host: Option<String>,
    /// Directory of the disk buffers (one subdirectory per destination);
    /// default: DIR/publish with --archive DIR, else a state directory.
    #[arg(long, value_name = "DIR")]
    pub publish_buffer: Option<PathBuf>,
}

/// Starts the publishers of `args` (`None` when nothing is published).
/// `namespace`: the modeling namespace id (`local` without one).
pub fn start_publishing(
    args: &PublishArgs,
    namespace: Option<u64>,
    archive: Option<&Path>,
) -> anyhow::Result<Option<Publishing>> {
    if args.publish.is_empty() {
        if args.topic.is_some() || args.host.is_some() || args.publish_buffer.is_some() {
            bail!("--topic, --host and --publish-buffer go with --publish URL");
        }
        return Ok(None);
    }
    let host = match &args.host {
        Some(h) => {
            tsem_fleet::subject::check_token(h).map_err(|e| anyhow::anyhow!("--host: {e}"))?;
            h.clone()
        }
        None => tsem_fleet::subject::system_host(),
    };
    let namespace = namespace.map_or_else(|| "local".to_owned(), |n| n.to_string());
    let root = match (&args.publish_buffer, archive) {
        (Some(dir), _) => dir.clone(),
        (None, Some(archive)) => archive.join("publish"),
        (None, None) => default_buffer_root().join(format!("{host}.{namespace}")),
    };
    let mut configs = Vec::new();
    let mut mqtt = false;
    for url in &args.publish {
        let target = Target::parse(url)?;
        mqtt |= matches!(target.server, Server::Mqtt(_));
        configs.push(PublisherConfig {
            buffer: root.join(target.key()),
            target,
            host: host.clone(),
            namespace: namespace.clone(),
            topic: args.topic.clone(),
        });
    }
    if args.topic.is_some() && !mqtt {
        bail!("--topic is for mqtt:// destinations");
    }
    Ok(Some(Publishing::start(configs)?))
}

/// One tap out of several (the archive's and the publishers'): `None` for
/// none, the tap itself for one, a [`TeeTap`] otherwise.
pub fn combine_taps(mut taps: Vec<Box<dyn LineTap>>) -> Option<Box<dyn LineTap>> {
    match taps.len() {
        0 => None,
        1 => taps.pop(),
        _ => Some(Box::new(TeeTap(taps))),
    }
}

/// Publishes the final summary, drains the buffers and says on stderr what
/// was lost or is still waiting; returns the `publish` part of the summary.
pub fn finish_publishing(
    publishing: Publishing,
    outcome: &RunOutcome,
) -> anyhow::Result<Vec<PublishReport>> {
    let summary = serde_json::to_value(Summary::of(&outcome.sink, None))?;
    let reports = publishing.finish(&summary);
    for r in &reports {
        if r.dropped > 0 {
            eprintln!(
                "tsem-stream: publish {}: {} records LOST (the buffer {} was full{})",
                r.url,
                r.dropped,
                r.buffer.display(),
                r.buffer_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" or failed: {e}"))
            );
        }
        if r.pending > 0 {
            eprintln!(
                "tsem-stream: publish {}: {} records not yet delivered wait in {} (sent by the next run with this buffer){}",
                r.url,
                r.pending,
                r.buffer.display(),
                r.last_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; last error: {e}"))
            );
        }
    }
    Ok(reports)
}

/// `finish` of `run`, with the publishing report in the summary.
pub fn finish_with_publish(
    outcome: &RunOutcome,
    output: Option<&PathBuf>,
    trajectory: bool,
    summary_format: Option<SummaryFormat>,
    publish: Option<Vec<PublishReport>>,
) -> anyhow::Result<ExitCode> {
    let Some(publish) = publish else {
        return finish(outcome, output, trajectory, summary_format);
    };
    let code = finish(outcome, output, trajectory, None)?;
    let summary = Summary {
        publish: Some(publish),
        ..Summary::of(&outcome.sink, outcome.stats.as_ref())
    };
    match summary_format {
        Some(SummaryFormat::Json) => summary.write_json(&mut io::stdout().lock())?,
        Some(SummaryFormat::Text) => {
            summary.write_text(&mut io::stderr().lock(), outcome.stats.as_ref())?
        }
        None => {}
    }
    Ok(code)
}

/// How records are read from a JetStream stream.
#[derive(Args, Clone, Debug, Default)]
pub struct NatsSourceArgs {
    /// Subject to consume (wildcards allowed; default `PREFIX.*.*.events`,
    /// every host and namespace).
    #[arg(long, value_name = "SUBJECT")]
    pub subject: Option<String>,
    /// Durable consumer name: a later run with the same name goes on after
    /// what this one acknowledged (`archive write` uses `tsem-archive` by
    /// default; give each archive of the same stream a name of its own).
    #[arg(long, value_name = "NAME")]
    pub durable: Option<String>,
    /// Stop once no record came for SECS seconds (default: follow the stream).
    #[arg(long, value_name = "SECS")]
    pub until_idle: Option<f64>,
}

impl NatsSourceArgs {
    fn options(&self, target: &NatsTarget, durable: Option<&str>) -> anyhow::Result<SourceOptions> {
        let until_idle = match self.until_idle {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(_) => bail!("--until-idle must be a positive number of seconds"),
            None => None,
        };
        let durable = self.durable.clone().or(durable.map(str::to_owned));
        if let Some(d) = &durable {
            tsem_fleet::subject::check_stream_name(d)
                .map_err(|e| anyhow::anyhow!("--durable: {e}"))?;
        }
        Ok(SourceOptions {
            subject: self
                .subject
                .clone()
                .unwrap_or_else(|| format!("{}.*.*.events", target.prefix)),
            ack: durable.is_some(),
            durable,
            until_idle,
        })
    }
}

fn nats_target(url: &str) -> anyhow::Result<NatsTarget> {
    match Target::parse(url)?.server {
        Server::Nats(n) => Ok(n),
        Server::Mqtt(_) => bail!("{url}: records are read from NATS (nats://HOST:PORT)"),
    }
}

/// `replay nats://…`: the records of a stream through the pipeline, in
/// stream order, each acknowledged (with `--durable`) once applied.
pub fn replay_from_nats(
    url: &str,
    nats: &NatsSourceArgs,
    model: &ModelArgs,
    tuning: &RunTuning,
    out: &OutputArgs,
) -> anyhow::Result<ExitCode> {
    let (enforce, output, trajectory, summary_format) = (
        out.enforce,
        out.output.as_ref(),
        out.trajectory,
        out.summary,
    );
    let target = nats_target(url)?;
    let options = nats.options(&target, None)?;
    let source = NatsSource::open(&target, &options)?;
    let tap = options.ack.then(|| source.acker().tap());
    let outcome = execute(
        model,
        tuning,
        Box::new(source),
        false,
        enforce,
        Outputs {
            verdicts: None,
            tap,
            requests: None,
            progress: super::modeling::progress_to_stderr(),
        },
        None,
    )?;
    let summary_format = summary_format.or(if output.is_none() && model.store.is_none() {
        Some(SummaryFormat::Text)
    } else {
        None
    });
    finish(&outcome, output, trajectory, summary_format)
}

/// `archive write DIR nats://…`: the records of a stream into an archive,
/// each acknowledged once durable in it (default durable consumer
/// `tsem-archive`, so that a restart goes on where the last run stopped).
pub fn archive_from_nats(
    dir: &Path,
    url: &str,
    writer_options: WriterOptions,
    nats: &NatsSourceArgs,
    report_durable: bool,
) -> anyhow::Result<ExitCode> {
    let target = nats_target(url)?;
    let options = nats.options(&target, Some("tsem-archive"))?;
    let writer = DurableWriter::open(dir, writer_options)
        .with_context(|| format!("archive {}", dir.display()))?;
    let durable = Arc::new(AtomicU64::new(writer.durable_seq()));
    {
        let durable = Arc::clone(&durable);
        writer.on_durable(Box::new(move |seq| {
            durable.store(seq, Ordering::SeqCst);
            if report_durable {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "durable {seq}").and_then(|()| out.flush());
            }
        }));
    }
    let first = writer.durable_seq() + 1;
    let mut source = NatsSource::open(&target, &options)?;
    let mut acks = AckWhenDurable::new(source.acker());
    let mut next = first;
    let mut oversized = 0u64;
    loop {
        match source.next_message(acks.is_empty())? {
            Next::Message(m) if m.payload.len() > tsem_ingest::DEFAULT_MAX_RECORD_LEN => {
                oversized += 1;
                eprintln!(
                    "{}:{}: record of {} bytes exceeds the limit; not archived",
                    url,
                    m.seq,
                    m.payload.len()
                );
            }
            // Empty messages are not records (as in the pipeline's tap).
            Next::Message(m) if m.payload.is_empty() => {}
            Next::Message(m) => {
                let seq = m.seq;
                writer
                    .append([m.payload])
                    .with_context(|| format!("archive {}", dir.display()))?;
                acks.wait(next, seq);
                next += 1;
            }
            Next::Idle => std::thread::sleep(Duration::from_millis(20)),
            Next::End => break,
        }
        acks.release_through(durable.load(Ordering::SeqCst))?;
    }
    let last = writer
        .finish()
        .with_context(|| format!("archive {}", dir.display()))?;
    acks.release_through(last)?;
    acks.flush()?;
    if last >= first {
        eprintln!(
            "tsem-stream: archived {} records (seq {first}..{last}) from {} in {}",
            last - first + 1,
            source.stream(),
            dir.display()
        );
    }
    Ok(if oversized > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Options of `fleet`.
#[derive(Args, Clone, Debug)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// The `fleet` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum FleetCommand {
    /// Build a model from the streams of many hosts: the coefficients seen on
    /// at least K hosts; report per host the others (outliers).
    Model(FleetModelArgs),
    /// The records of a stream through the pipeline (as `replay nats://…`).
    Replay(FleetReplayArgs),
    /// The records of a stream into an archive (as `archive write DIR nats://…`).
    Archive(FleetArchiveArgs),
}

/// Options of `fleet model`.
#[derive(Args, Clone, Debug)]
pub struct FleetModelArgs {
    /// The server (`nats://HOST:PORT[?stream=NAME&prefix=P]`).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Subject of the hosts' records (default `PREFIX.*.*.events`); the
    /// host is the subject's second token.
    #[arg(long, value_name = "SUBJECT")]
    pub subject: Option<String>,
    /// Keep the coefficients seen on at least K hosts.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub min_hosts: usize,
    /// Mapping profile.
    #[arg(long, value_enum, default_value_t)]
    pub profile: ProfileArg,
    /// File of `pseudonym HEX` lines (a model file is accepted too).
    #[arg(long, value_name = "FILE")]
    pub pseudonyms: Option<PathBuf>,
    /// Write the model here.
    #[arg(short = 'o', long = "output", value_name = "MODEL")]
    pub output: PathBuf,
    /// Write the outliers here, one JSON object per line (host,
    /// coefficient, hosts, seq: the stream sequence of its first record there).
    #[arg(long, value_name = "FILE")]
    pub outliers: Option<PathBuf>,
    /// Stop once no record came for SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub until_idle: f64,
    /// Print a summary (default text on stderr).
    #[arg(long, value_enum)]
    pub summary: Option<SummaryFormat>,
}

/// Options of `fleet replay`.
#[derive(Args, Clone, Debug)]
pub struct FleetReplayArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tuning: RunTuning,
    #[command(flatten)]
    pub nats: NatsSourceArgs,
    /// Seal (-e), model and summary outputs (default summary: text, when
    /// neither -o nor --store is given).
    #[command(flatten)]
    pub out: OutputArgs,
    /// The server (`nats://HOST:PORT[?stream=NAME&prefix=P]`).
    pub url: String,
}

/// Options of `fleet archive`.
#[derive(Args, Clone, Debug)]
pub struct FleetArchiveArgs {
    /// Archive directory (created if missing).
    pub dir: PathBuf,
    /// The server (`nats://HOST:PORT[?stream=NAME&prefix=P]`).
    pub url: String,
    #[command(flatten)]
    pub nats: NatsSourceArgs,
    /// zstd level.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub level: i32,
    /// Close a segment before its records (uncompressed) exceed this size (suffix K, M or G).
    #[arg(long, value_name = "BYTES", default_value = "256M")]
    pub segment_size: String,
    /// Make records durable (fdatasync) at most this many milliseconds after they arrive.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub sync_ms: u64,
    /// Print `durable SEQ` on standard output each time records up to SEQ are durable.
    #[arg(long)]
    pub report_durable: bool,
}

/// Runs the command.
pub fn run(args: &FleetArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        FleetCommand::Model(m) => model(m),
        FleetCommand::Replay(r) => replay_from_nats(&r.url, &r.nats, &r.model, &r.tuning, &r.out),
        FleetCommand::Archive(a) => {
            if !(-7..=22).contains(&a.level) {
                bail!("--level must be -7 to 22");
            }
            let segment_bytes = tsem_fleet::target::parse_size(&a.segment_size)
                .map_err(|e| anyhow::anyhow!("--segment-size: {e}"))?;
            let options = WriterOptions {
                level: a.level,
                segment_bytes: segment_bytes.max(1),
                sync_interval: Duration::from_millis(a.sync_ms.max(1)),
                ..WriterOptions::default()
            };
            archive_from_nats(&a.dir, &a.url, options, &a.nats, a.report_durable)
        }
    }
}

fn model(args: &FleetModelArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.min_hosts >= 1, "--min-hosts must be at least 1");
    let target = nats_target(&args.from)?;
    let source_args = NatsSourceArgs {
        subject: args.subject.clone(),
        durable: None,
        until_idle: Some(args.until_idle),
    };
    let options = source_args.options(&target, None)?;
    let mut source = NatsSource::open(&target, &options)?;
    let mut fleet = FleetModel::new(
        args.profile.into(),
        super::load_pseudonyms(args.pseudonyms.as_deref())?,
    );
    let mut records = 0u64;
    loop {
        match source.next_message(true)? {
            Next::Message(m) => {
                records += 1;
                let host = tsem_fleet::subject::host_of(m.subject).unwrap_or("?");
                fleet.add(host, m.seq, m.payload);
            }
            Next::Idle => {}
            Next::End => break,
        }
    }
    let result = fleet.result(args.min_hosts);
    write_file_atomically(&args.output, &fleet.model_text(&result))?;
    if let Some(path) = &args.outliers {
        let mut text = String::new();
        for (host, list) in &result.outliers {
            for o in list {
                let line = json!({
                    "host": host,
                    "coefficient": o.coefficient,
                    "hosts": o.hosts,
                    "seq": o.seq,
                });
                text.push_str(&line.to_string());
                text.push('\n');
            }
        }
        write_file_atomically(path, &text)?;
    }
    if let Some(e) = fleet.first_error() {
        eprintln!("tsem-stream: some records could not be mapped and were skipped; the first: {e}");
    }
    match args.summary {
        Some(SummaryFormat::Json) => {
            let mut v = serde_json::to_value(&result)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("records".into(), json!(records));
                obj.insert("stream".into(), json!(source.stream()));
            }
            let mut out = BufWriter::new(io::stdout().lock());
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
            out.flush()?;
        }
        Some(SummaryFormat::Text) | None => {
            eprintln!(
                "fleet model: {} points (seen on at least {} of {} hosts), {} coefficients in all, {records} records from {}",
                result.points,
                args.min_hosts,
                result.hosts.len(),
                result.coefficients,
                source.stream()
            );
            for (host, c) in &result.hosts {
                eprintln!(
                    "  {host}: {} events, {} coefficients, {} outliers{}",
                    c.events,
                    c.coefficients,
                    result.outliers.get(host).map_or(0, Vec::len),
                    if c.errors > 0 {
                        format!(", {} bad records", c.errors)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    Ok(if result.hosts.values().any(|c| c.errors > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
