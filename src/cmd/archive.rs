//! `tsem-stream archive`: write, list, verify, read and export archives of
//! records (see the `tsem-archive` crate for the format and the durability
//! policy), and the archive sink of `run --archive DIR`.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tsem_archive::{
    export_parquet, Archive, ArchiveSource, ArchiveTap, DurableWriter, Filter, OpenReport,
    OpenSegmentPolicy, WriterOptions,
};
use tsem_ingest::{Fetch, RecordSource};

use super::{display_name, open_lines};
use crate::input::archive_source;

/// Options of `archive`.
#[derive(Args, Clone, Debug)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub command: ArchiveCommand,
}

/// The `archive` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum ArchiveCommand {
    /// Archive the records of a file or of standard input (appends to an existing archive).
    Write(WriteArgs),
    /// List the segments: sequence and time ranges, sizes, the chain head.
    Ls {
        /// Archive directory.
        dir: PathBuf,
        /// Print the index entries as JSON lines instead.
        #[arg(long)]
        json: bool,
    },
    /// Check every segment and the chain; exit 1 when the archive is damaged.
    ///
    /// Records the chain does not vouch for as written are listed as
    /// `unsealed:` lines: the open segment, segments a later writer sealed
    /// after an unclean stop (`recovered`), and, with --head, everything after
    /// that head. They are not damage (a running or crashed writer leaves
    /// them) unless --strict is given.
    Verify {
        /// Archive directory.
        dir: PathBuf,
        /// The chain head the archive must end with (from an earlier `ls` or `verify`).
        #[arg(long, value_name = "HEX")]
        head: Option<String>,
        /// Also exit 1 when any record is unsealed (see above): for an
        /// archive no writer has open, checked against a head kept elsewhere.
        #[arg(long)]
        strict: bool,
    },
    /// Print the matching records verbatim, in order.
    Cat {
        /// Archive directory.
        dir: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Export the matching records to a Parquet file.
    Export {
        /// Archive directory.
        dir: PathBuf,
        /// Output file.
        #[arg(long, value_name = "OUT")]
        parquet: PathBuf,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// Record selection of `cat` and `export`.
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only records of this type (`event.type`; `aggregate` for the aggregate record; repeatable).
    #[arg(long = "type", value_name = "T")]
    pub types: Vec<String>,
    /// Only records of this process (`event.process`; repeatable).
    #[arg(long = "process", value_name = "P")]
    pub processes: Vec<String>,
    /// Only records of this task (`event.task_id` or a prefix of it; repeatable).
    #[arg(long = "task-id", value_name = "HEX")]
    pub task_ids: Vec<String>,
    /// Only records with `event.ts` >= TS (ns).
    #[arg(long, value_name = "TS")]
    pub since: Option<u64>,
    /// Only records with `event.ts` <= TS (ns).
    #[arg(long, value_name = "TS")]
    pub until: Option<u64>,
    /// Leave out the open segment (records not yet sealed into the chain).
    #[arg(long)]
    pub sealed_only: bool,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            types: self.types.clone(),
            processes: self.processes.clone(),
            task_ids: self.task_ids.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

/// How `archive write` compresses, rotates and syncs.
#[derive(Args, Clone, Debug)]
pub struct WriterArgs {
    /// zstd level.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub level: i32,
    /// Close a segment before its records (uncompressed) exceed this size (suffix K, M or G).
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = tsem_fleet::target::parse_size)]
    pub segment_size: u64,
    /// Close a segment once it has been open this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600.0)]
    pub segment_age: f64,
    /// Make records durable (fdatasync) at most this many milliseconds after they arrive.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub sync_ms: u64,
}

impl WriterArgs {
    fn options(&self) -> anyhow::Result<WriterOptions> {
        if !(-7..=22).contains(&self.level) {
            bail!("--level must be -7 to 22");
        }
        if !(self.segment_age.is_finite() && self.segment_age > 0.0) {
            bail!("--segment-age must be a positive number of seconds");
        }
        Ok(WriterOptions {
            level: self.level,
            segment_bytes: self.segment_size.max(1),
            segment_age: Duration::from_secs_f64(self.segment_age),
            sync_interval: Duration::from_millis(self.sync_ms.max(1)),
        })
    }
}

/// Options of `archive write`.
#[derive(Args, Clone, Debug)]
pub struct WriteArgs {
    /// Archive directory (created if missing).
    pub dir: PathBuf,
    /// Records (`-` for standard input).
    #[arg(default_value = "-")]
    pub input: PathBuf,
    #[command(flatten)]
    pub writer: WriterArgs,
    /// Print `durable SEQ` on standard output each time records up to SEQ are durable.
    #[arg(long)]
    pub report_durable: bool,
    /// Reading a JetStream stream (`nats://…` as the input).
    #[command(flatten)]
    pub nats: super::fleet::NatsSourceArgs,
}

/// Says on stderr what opening an archive found.
fn tell_open(dir: &Path, report: Option<OpenReport>) {
    let Some(r) = report else {
        return;
    };
    if let Some(e) = &r.recovered {
        let rec = e.recovered.as_ref();
        eprintln!(
            "tsem-stream: {}: closed {} left open by an earlier writer: {} records (seq {}..{}) kept, {} bytes of a torn record dropped ({})",
            dir.display(),
            e.segment,
            e.records,
            e.first_seq,
            e.last_seq,
            rec.map_or(0, |r| r.dropped_bytes),
            rec.map_or("", |r| r.reason.as_str()),
        );
    }
    if r.index_torn_bytes > 0 {
        eprintln!(
            "tsem-stream: {}: cut an incomplete index line of {} bytes",
            dir.display(),
            r.index_torn_bytes
        );
    }
}

/// The archive sink of `run --archive DIR`: every record, verbatim, in arrival order.
pub fn tap_for(dir: &Path, level: i32) -> anyhow::Result<Box<dyn tsem_ingest::LineTap>> {
    let options = WriterOptions {
        level,
        ..WriterOptions::default()
    };
    let writer =
        DurableWriter::open(dir, options).with_context(|| format!("archive {}", dir.display()))?;
    tell_open(dir, writer.open_report());
    Ok(Box::new(ArchiveTap::new(writer)))
}

/// Runs the command.
pub fn run(args: &ArchiveArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ArchiveCommand::Write(w) => write(w),
        ArchiveCommand::Ls { dir, json } => ls(dir, *json),
        ArchiveCommand::Verify { dir, head, strict } => verify(dir, head.as_deref(), *strict),
        ArchiveCommand::Cat { dir, filter } => cat(dir, filter),
        ArchiveCommand::Export {
            dir,
            parquet,
            filter,
        } => export(dir, parquet, filter),
    }
}

fn write(args: &WriteArgs) -> anyhow::Result<ExitCode> {
    // A stream of the fleet (see `fleet.rs`): acknowledged once durable here.
    if let Some(url) = args.input.to_str().filter(|s| s.starts_with("nats://")) {
        return super::fleet::archive_from_nats(
            &args.dir,
            url,
            args.writer.options()?,
            &args.nats,
            args.report_durable,
        );
    }
    let writer = DurableWriter::open(&args.dir, args.writer.options()?)
        .with_context(|| format!("archive {}", args.dir.display()))?;
    tell_open(&args.dir, writer.open_report());
    if args.report_durable {
        writer.on_durable(Box::new(|seq| {
            let mut out = io::stdout().lock();
            // A closed stdout must not stop the archiving.
            let _ = writeln!(out, "durable {seq}").and_then(|()| out.flush());
        }));
    }
    let first = writer.durable_seq() + 1;
    let name = display_name(&args.input);
    let mut source = open_lines(&args.input)?;
    let mut failed = None;
    let mut oversized = 0u64;
    let read = tsem_ingest::for_each_record(&mut *source, |n, line| match line {
        // Empty lines are not records (as in the pipeline's tap).
        Ok([]) => ControlFlow::Continue(()),
        Ok(bytes) => match writer.append([bytes]) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        },
        Err(over) => {
            oversized += 1;
            eprintln!(
                "{name}:{n}: record of {} bytes exceeds the limit; not archived",
                over.0
            );
            ControlFlow::Continue(())
        }
    });
    if let Some(e) = failed {
        return Err(e).context(format!("archive {}", args.dir.display()));
    }
    // What was read before a read error is archived and closed all the same.
    let last = writer
        .finish()
        .with_context(|| format!("archive {}", args.dir.display()))?;
    read.with_context(|| format!("reading {name}"))?;
    if last >= first {
        eprintln!(
            "tsem-stream: archived {} records (seq {first}..{last}) in {}",
            last - first + 1,
            args.dir.display()
        );
    }
    Ok(if oversized > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn open_archive(dir: &Path) -> anyhow::Result<Archive> {
    Archive::open(dir).with_context(|| format!("archive {}", dir.display()))
}

fn ratio(bytes: u64, stored: u64) -> f64 {
    if stored == 0 {
        0.0
    } else {
        bytes as f64 / stored as f64
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn ls(dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let archive = open_archive(dir)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if json {
        for e in archive.entries() {
            serde_json::to_writer(&mut out, e)?;
            writeln!(out)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<28} {:>10} {:>10} {:>9} {:>20} {:>20} {:>12} {:>11} {:>6}  note",
        "segment", "first", "last", "records", "ts_min", "ts_max", "bytes", "stored", "ratio"
    )?;
    let (mut records, mut bytes, mut stored) = (0u64, 0u64, 0u64);
    for e in archive.entries() {
        records += e.records;
        bytes += e.bytes;
        stored += e.file_bytes;
        writeln!(
            out,
            "{:<28} {:>10} {:>10} {:>9} {:>20} {:>20} {:>12} {:>11} {:>6.1}  {}",
            e.segment,
            e.first_seq,
            e.last_seq,
            e.records,
            opt(e.ts_min),
            opt(e.ts_max),
            e.bytes,
            e.file_bytes,
            ratio(e.bytes, e.file_bytes),
            match &e.recovered {
                Some(r) => format!("recovered: {}", r.reason),
                None => String::new(),
            }
        )?;
    }
    if let Some(name) = archive.open_segment() {
        let size = std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        writeln!(
            out,
            "{name:<28} {:>10} {:>10} {:>9} {:>20} {:>20} {:>12} {size:>11} {:>6}  open (not yet in the index)",
            archive.open_segment_first_seq(),
            "-",
            "-",
            "-",
            "-",
            "-",
            "-"
        )?;
    }
    writeln!(
        out,
        "{} closed segments, {records} records, {bytes} bytes in {stored} ({:.1}x); chain head {}",
        archive.entries().len(),
        ratio(bytes, stored),
        archive.head().unwrap_or("-")
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &Path, head: Option<&str>, strict: bool) -> anyhow::Result<ExitCode> {
    let archive = open_archive(dir)?;
    let report = archive
        .verify(head)
        .with_context(|| format!("archive {}", dir.display()))?;
    for note in &report.notes {
        println!("note: {note}");
    }
    for u in &report.unsealed {
        println!("unsealed: {}", dir.join(u.to_string()).display());
    }
    for p in &report.problems {
        println!("damaged: {}: {}", dir.join(&p.place).display(), p.what);
    }
    let unsealed: u64 = report.unsealed.iter().map(|u| u.records).sum();
    // Unsealed records are not damage (a running or crashed writer leaves
    // them): they fail only under --strict.
    let strictly_failed = strict && !report.is_strictly_sealed();
    if report.problems.is_empty() && !strictly_failed {
        println!(
            "ok: {} segments, {} records, chain head {}{}",
            report.segments,
            report.records,
            report.head.as_deref().unwrap_or("-"),
            if report.unsealed.is_empty() {
                String::new()
            } else {
                format!("; {unsealed} records unsealed (see above; --strict fails on them)")
            }
        );
        Ok(ExitCode::SUCCESS)
    } else if report.problems.is_empty() {
        println!(
            "{}: {unsealed} unsealed records in {} segments (--strict)",
            dir.display(),
            report.unsealed.len()
        );
        Ok(ExitCode::from(1))
    } else {
        println!(
            "{}: {} problem(s) in {} segments",
            dir.display(),
            report.problems.len(),
            report.segments
        );
        Ok(ExitCode::from(1))
    }
}

/// The records of `dir` that `filter` selects, with a note on stderr when
/// the open segment is read.
fn source_for(dir: &Path, filter: &FilterArgs) -> anyhow::Result<ArchiveSource> {
    let open_segment = if filter.sealed_only {
        OpenSegmentPolicy::Exclude
    } else {
        OpenSegmentPolicy::Include
    };
    Ok(archive_source(dir, usize::MAX, open_segment)?.with_filter(filter.filter()))
}

fn cat(dir: &Path, filter: &FilterArgs) -> anyhow::Result<ExitCode> {
    let mut source = source_for(dir, filter)?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let written = (|| -> io::Result<()> {
        loop {
            match source.fetch(true)? {
                Fetch::Record { bytes, .. } => {
                    out.write_all(bytes)?;
                    out.write_all(b"\n")?;
                }
                Fetch::End => break,
                Fetch::Oversized { .. } | Fetch::Idle => {}
            }
        }
        out.flush()
    })();
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context(format!("archive {}", dir.display())),
    }
}

fn export(dir: &Path, parquet: &Path, filter: &FilterArgs) -> anyhow::Result<ExitCode> {
    let mut source = source_for(dir, filter)?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(parquet)
        .with_context(|| format!("cannot write {}", parquet.display()))?;
    let stats = export_parquet(&mut source, file)
        .with_context(|| format!("export to {}", parquet.display()))?;
    eprintln!(
        "tsem-stream: {} rows in {} row groups to {}{}",
        stats.rows,
        stats.row_groups,
        parquet.display(),
        if stats.unparsed > 0 {
            format!(
                " ({} records did not parse: seq and raw only)",
                stats.unparsed
            )
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use tsem_fleet::target::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
