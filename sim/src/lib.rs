//! The kernel simulator (`tsem-stream sim`): plays the kernel's side of the
//! external-TMA protocol (kernel-interface.md K2, K3, K5) over FIFOs, so that a TMA can
//! be run, tested and measured without a TSEM kernel.
//!
//! It builds a fake securityfs tree (`control`, `id`, `aggregate`,
//! `external_tma/<id>`), sends the aggregate record and then every event line
//! of a file as an export record with a unique `(pid, tnum)`, and reads the
//! TMA's verdicts from `control`: each synchronous event must be answered
//! exactly once, and the time from sending an event to reading its verdict
//! is recorded. Like a real kernel, whose tasks sleep until released, it
//! never has more than `max_outstanding` synchronous events unanswered.
//!
//! With [`SimOptions::wait_external`] it also plays the namespace's birth
//! and life (process mode, kernel-interface.md K5): the tree starts without an export file
//! and `id` reads `0` (the root namespace); when a TMA writes `external …`
//! to `control`, the simulator creates `external_tma/<id>`, rewrites `id` in
//! place with the new id (the kernel answers `id` per caller; a TMA's child
//! re-reads the file until it changes), and replays the events as that
//! namespace's while the workload runs. The export file then stays open,
//! like the kernel's, until the TMA closes it (its workload has ended).
//!
//! With [`SimKernel::V4`] the tree is a FUSE filesystem instead, which
//! knows which thread calls and plays the v4 kernel's rules on who may do
//! what (kernel-interface.md K6; the rules and the simulator's one approximation are
//! described in `sim/v4.rs`), and reports what they refused
//! ([`V4Report`]). Process mode is implied there: the namespace is created
//! by an accepted `external key=…`.

pub mod corpus;
mod fifo;
mod ledger;
mod procfs;
mod rewrite;
mod v4;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tsem_ingest::{for_each_record, open_path, RecordSource, DEFAULT_MAX_RECORD_LEN};

pub use ledger::{pid_of, SIMULATED_PIDS};
pub use rewrite::{rewrite_event, RewriteError};
pub use v4::{Refusals, V4Report};

use fifo::{Stop, Tree};
use ledger::Ledger;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Root of the fake securityfs tree (stands for `/sys/kernel/security/tsem`).
    pub tsem_root: PathBuf,
    /// The modeling namespace id (`id` file, `external_tma/<id>`).
    pub namespace: u64,
    /// Event description lines to send (trajectory lines or export records).
    pub events: PathBuf,
    /// Events per second on an absolute schedule; `None`: as fast as the TMA reads.
    pub rate: Option<f64>,
    /// Share of events sent as synchronous `event` records (0..=1); the others
    /// are `async_event`. The choice is deterministic (every 1/fraction-th event).
    pub sync_fraction: f64,
    /// The hardware aggregate as hex; `None`: 64 zeros (no TPM).
    pub aggregate: Option<String>,
    /// How long a synchronous event waits for its verdict before it counts as timed out.
    pub verdict_timeout: Duration,
    /// Most synchronous events waiting for a verdict at once.
    pub max_outstanding: usize,
    /// How long to wait for the TMA to open the export FIFO.
    pub open_timeout: Duration,
    /// After the export FIFO is closed, how long to keep reading `control`
    /// (late or duplicate verdicts) unless the TMA closes it first.
    pub linger: Duration,
    /// Longer input lines are skipped.
    pub max_record_len: usize,
    /// Process mode: create the namespace only when a TMA writes `external …`
    /// to `control` (waiting at most `open_timeout`), and keep its export
    /// file open after the events until the TMA closes it.
    pub wait_external: bool,
    /// Which kernel to play: FIFOs that accept anyone, or the v4 kernel's
    /// rules on a FUSE tree.
    pub kernel: SimKernel,
}

/// The kernel the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimKernel {
    /// FIFOs: the protocol without the question of who calls (a FIFO cannot
    /// tell); any process structure passes.
    #[default]
    Fifo,
    /// The v4 kernel (kernel-interface.md K6) on a FUSE tree: `external` needs `key=`,
    /// `id`, `enforce` and the export file answer for the caller's
    /// namespace, and only the thread that forked the namespace's creator
    /// may write verdicts. Implies `wait_external`.
    V4,
}

impl SimOptions {
    /// Options with the defaults: namespace 1, no rate limit, all events
    /// synchronous, zero aggregate, 5 s verdict timeout, 64 outstanding,
    /// 30 s to open, 200 ms linger.
    pub fn new(tsem_root: impl Into<PathBuf>, events: impl Into<PathBuf>) -> SimOptions {
        SimOptions {
            tsem_root: tsem_root.into(),
            namespace: 1,
            events: events.into(),
            rate: None,
            sync_fraction: 1.0,
            aggregate: None,
            verdict_timeout: Duration::from_secs(5),
            max_outstanding: 64,
            open_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(200),
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            wait_external: false,
            kernel: SimKernel::Fifo,
        }
    }
}

/// What happened, for `serde_json::to_string`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimReport {
    /// Event records sent.
    pub events: u64,
    /// Of which `event` (the task waits for a verdict).
    pub sync_events: u64,
    /// Of which `async_event`.
    pub async_events: u64,
    /// Input lines not sent (oversized, or without an `event` object).
    pub skipped: u64,
    /// Synchronous events answered (first verdicts, late ones included).
    pub verdicts: u64,
    /// Of which `trusted`.
    pub trusted: u64,
    /// Of which `untrusted`.
    pub untrusted: u64,
    /// Synchronous events never answered.
    pub missing: u64,
    /// Further verdicts for an already answered event.
    pub duplicates: u64,
    /// Verdicts for no waiting event (unknown or asynchronous event, wrong
    /// pid, malformed verdict command).
    pub unexpected: u64,
    /// Synchronous events not answered within `verdict_timeout`.
    pub timeouts: u64,
    /// Of the timed-out events, those answered later.
    pub late: u64,
    /// Times sending paused because `max_outstanding` events were waiting.
    pub stalls: u64,
    /// Round trip (event sent to verdict read), median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest round trip, µs.
    pub max_us: u64,
    /// 1-based input line numbers of the events answered `untrusted`, ascending.
    pub untrusted_lines: Vec<u64>,
    /// Non-verdict commands received (`enforce`, `seal`, …) in order.
    pub commands: Vec<String>,
    /// From the first event sent until every verdict was in (or timed out), s.
    pub duration_s: f64,
    /// Time spent sending the events, s.
    pub emit_s: f64,
    /// The requested rate (events/s), `null` when unlimited.
    pub offered_rate: Option<f64>,
    /// Events per second between the first and the last event sent.
    pub achieved_rate: f64,
    /// The `external …` command that created the namespace (`wait_external`
    /// mode), `null` otherwise.
    pub external: Option<ExternalCommand>,
    /// [`SimKernel::V4`]: what the v4 rules refused, and the namespace;
    /// `null` for the FIFO simulator.
    pub v4: Option<V4Report>,
}

/// An `external …` command as the simulator received it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExternalCommand {
    /// The command line, e.g. `external nsref=current digest=sha256`.
    pub command: String,
    /// Its `key=value` options (a word without `=` maps to an empty value).
    pub options: BTreeMap<String, String>,
}

impl ExternalCommand {
    /// Parses a command line; `None` when it is not an `external` command.
    pub fn parse(line: &str) -> Option<ExternalCommand> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("external") {
            return None;
        }
        let options = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (w.to_owned(), String::new()),
            })
            .collect();
        Some(ExternalCommand {
            command: line.to_owned(),
            options,
        })
    }
}

/// Why the simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An option is out of range.
    #[error("invalid simulator option: {0}")]
    Options(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No TMA opened the export FIFO in time.
    #[error("no TMA opened {} within {waited:?}", path.display())]
    OpenTimeout {
        /// The export FIFO.
        path: PathBuf,
        /// The time waited.
        waited: Duration,
    },
    /// The TMA closed the export FIFO before the end.
    #[error("the TMA closed {} after {sent} event records", path.display())]
    TmaClosed {
        /// The export FIFO.
        path: PathBuf,
        /// Event records written before.
        sent: u64,
    },
    /// The control reader thread died.
    #[error("the control reader failed: {0}")]
    Control(String),
    /// The FUSE tree of [`SimKernel::V4`] could not be mounted.
    #[error(
        "cannot mount the simulated securityfs (FUSE) on {}: {source} \
         (needs /dev/fuse and root, or fusermount3)",
        path.display()
    )]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No TMA asked for a namespace (`wait_external`).
    #[error("no `external` command arrived on {} within {waited:?}", path.display())]
    NoExternal {
        /// The control FIFO.
        path: PathBuf,
        /// The time waited.
        waited: Duration,
    },
}

/// Runs one simulation: creates the tree, waits for a TMA, sends the events,
/// collects the verdicts, closes the export FIFO and reports.
pub fn run(opts: &SimOptions) -> Result<SimReport, SimError> {
    let aggregate = check(opts)?;
    // The input first: a wrong path should fail before anything is created.
    let mut source =
        open_path(&opts.events, opts.max_record_len).map_err(|source| SimError::Io {
            what: format!("opening {}", opts.events.display()),
            source,
        })?;
    match opts.kernel {
        SimKernel::Fifo => run_fifo(opts, &aggregate, &mut *source),
        SimKernel::V4 => run_v4(opts, &aggregate, &mut *source),
    }
}

/// [`SimKernel::V4`]: mounts the tree, waits for an accepted `external`,
/// queues the events, waits for the namespace to end (its creator exits).
fn run_v4(
    opts: &SimOptions,
    aggregate: &str,
    source: &mut dyn RecordSource,
) -> Result<SimReport, SimError> {
    let ledger = Arc::new(Ledger::new());
    let fs = v4::Mounted::mount(
        &opts.tsem_root,
        opts.namespace,
        aggregate,
        aggregate_record(aggregate),
        Arc::clone(&ledger),
    )?;
    // Only an accepted `external` reaches the ledger; refused ones are counted.
    let line = ledger
        .wait_for_command(|c| ExternalCommand::parse(c).is_some(), opts.open_timeout)
        .ok_or_else(|| SimError::NoExternal {
            path: opts.tsem_root.join("control"),
            waited: opts.open_timeout,
        })?;
    let sent = send(opts, source, &ledger, &mut V4Outlet(&fs))?;
    fs.wait_end();
    // Late verdicts of the TMA (it outlives the namespace) still count.
    std::thread::sleep(opts.linger);
    let v4 = fs.finish(sent.unsent);
    let mut report = report(opts, &sent, &ledger);
    report.external = ExternalCommand::parse(&line);
    report.v4 = Some(v4);
    Ok(report)
}

/// The FIFO simulator.
fn run_fifo(
    opts: &SimOptions,
    aggregate: &str,
    source: &mut dyn RecordSource,
) -> Result<SimReport, SimError> {
    let tree = if opts.wait_external {
        // `id` answers for the caller: the root namespace until it asks for one.
        fifo::create_host(&opts.tsem_root, opts.namespace, 0, aggregate)?
    } else {
        let tree = fifo::create_host(&opts.tsem_root, opts.namespace, opts.namespace, aggregate)?;
        fifo::create_export(&tree)?;
        tree
    };
    let control = fifo::open_control(&tree.control)?;
    let ledger = Arc::new(Ledger::new());
    let stop = Arc::new(Stop {
        ending: AtomicBool::new(false),
        linger: opts.linger,
    });
    let reader = {
        let (path, ledger, stop) = (tree.control.clone(), ledger.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sim-control".into())
            .spawn(move || fifo::read_control(path, control, ledger, stop))
            .map_err(|source| SimError::Io {
                what: "starting the control reader".into(),
                source,
            })?
    };
    // The export FIFO is closed when `send` returns, so the TMA sees the end
    // of input and can close `control`, which ends the reader.
    let sent = create_namespace(opts, &tree, &ledger).and_then(|external| {
        send_fifo(opts, &tree, aggregate, source, &ledger).map(|sent| (sent, external))
    });
    stop.ending.store(true, Ordering::Release);
    let control_result = reader.join();
    let (sent, external) = sent?;
    match control_result {
        Ok(r) => r?,
        Err(_) => return Err(SimError::Control("the thread panicked".into())),
    }
    let mut report = report(opts, &sent, &ledger);
    report.external = external;
    Ok(report)
}

/// `wait_external` mode: waits for `external …` on `control`, then creates
/// the export FIFO and publishes the namespace id.
fn create_namespace(
    opts: &SimOptions,
    tree: &Tree,
    ledger: &Ledger,
) -> Result<Option<ExternalCommand>, SimError> {
    if !opts.wait_external {
        return Ok(None);
    }
    let line = ledger
        .wait_for_command(|c| ExternalCommand::parse(c).is_some(), opts.open_timeout)
        .ok_or_else(|| SimError::NoExternal {
            path: tree.control.clone(),
            waited: opts.open_timeout,
        })?;
    // The FIFO first: a TMA that sees the new id opens it at once.
    fifo::create_export(tree)?;
    fifo::write_id(tree, opts.namespace)?;
    Ok(ExternalCommand::parse(&line))
}

/// Validates the options; returns the aggregate to use.
fn check(opts: &SimOptions) -> Result<String, SimError> {
    let bad = |m: String| Err(SimError::Options(m));
    if !(0.0..=1.0).contains(&opts.sync_fraction) {
        return bad(format!(
            "sync fraction {} is not within 0..=1",
            opts.sync_fraction
        ));
    }
    if let Some(rate) = opts.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return bad(format!("rate {rate} is not a positive number"));
        }
    }
    if opts.max_outstanding == 0 {
        return bad("max outstanding must be at least 1".into());
    }
    if (opts.wait_external || opts.kernel == SimKernel::V4) && opts.namespace == 0 {
        return bad("the namespace of a workload cannot be 0 (the root namespace)".into());
    }
    let aggregate = opts.aggregate.clone().unwrap_or_else(|| "0".repeat(64));
    if aggregate.is_empty()
        || aggregate.len() & 1 == 1
        || !aggregate.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return bad(format!("aggregate {aggregate:?} is not a hex digest"));
    }
    Ok(aggregate)
}

/// Whether the event with 0-based index `index` is synchronous: the events
/// where `index * fraction` crosses an integer, so 0.5 makes every second
/// event synchronous, 1.0 every event, 0.0 none.
pub fn is_sync(index: u64, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    if fraction <= 0.0 {
        return false;
    }
    ((index + 1) as f64 * fraction).floor() > (index as f64 * fraction).floor()
}

/// Sleeps until `t`; the last stretch is spent yielding, because sleeps
/// overshoot by tens of µs, too much for rates of 10^4 events/s and more.
fn wait_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::thread::yield_now();
        }
    }
}

/// What the sender did.
struct Sent {
    events: u64,
    sync_events: u64,
    async_events: u64,
    skipped: u64,
    /// Lines not sent because nobody could receive them any more.
    unsent: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    drained: Option<Instant>,
}

fn write_record(
    export: &mut std::fs::File,
    rec: &[u8],
    tree: &Tree,
    sent: u64,
) -> Result<(), SimError> {
    export.write_all(rec).map_err(|source| {
        if source.kind() == io::ErrorKind::BrokenPipe {
            SimError::TmaClosed {
                path: tree.export.clone(),
                sent,
            }
        } else {
            SimError::Io {
                what: format!("writing {}", tree.export.display()),
                source,
            }
        }
    })
}

/// Where the sender puts the records.
trait Outlet {
    /// False once nobody can receive records any more (v4: the namespace
    /// has ended); may wait for room first.
    fn accepting(&mut self) -> bool {
        true
    }
    /// Delivers one record; `sent` records were delivered before.
    fn deliver(&mut self, record: &[u8], sent: u64) -> Result<(), SimError>;
}

/// The export FIFO.
struct FifoOutlet<'a> {
    export: std::fs::File,
    tree: &'a Tree,
}

impl Outlet for FifoOutlet<'_> {
    fn deliver(&mut self, record: &[u8], sent: u64) -> Result<(), SimError> {
        write_record(&mut self.export, record, self.tree, sent)
    }
}

/// The export queue of the v4 FUSE tree.
struct V4Outlet<'a>(&'a v4::Mounted);

impl Outlet for V4Outlet<'_> {
    fn accepting(&mut self) -> bool {
        self.0.accepting()
    }

    fn deliver(&mut self, record: &[u8], _sent: u64) -> Result<(), SimError> {
        self.0.deliver(record);
        Ok(())
    }
}

/// The first record of a namespace (kernel-interface.md K3).
fn aggregate_record(aggregate: &str) -> Vec<u8> {
    let mut rec = Vec::with_capacity(128);
    rec.extend_from_slice(b"{\"export\": {\"type\": \"aggregate\"}, \"aggregate\": {\"value\": \"");
    rec.extend_from_slice(aggregate.as_bytes());
    rec.extend_from_slice(b"\"}}\n");
    rec
}

/// The FIFO simulator's sending: opens the export FIFO (waiting for the
/// TMA), writes the aggregate record and the events, and in process mode
/// keeps the FIFO open until the TMA closes it.
fn send_fifo(
    opts: &SimOptions,
    tree: &Tree,
    aggregate: &str,
    source: &mut dyn RecordSource,
    ledger: &Ledger,
) -> Result<Sent, SimError> {
    let mut export = fifo::open_export(&tree.export, opts.open_timeout)?;
    write_record(&mut export, &aggregate_record(aggregate), tree, 0)?;
    let mut outlet = FifoOutlet { export, tree };
    let s = send(opts, source, ledger, &mut outlet)?;
    if opts.wait_external {
        fifo::hold_until_reader_closes(&outlet.export)?;
    }
    Ok(s)
}

/// Sends every event line to `outlet` (rate, synchronous share and
/// outstanding limit applied), then waits for the verdicts.
fn send(
    opts: &SimOptions,
    source: &mut dyn RecordSource,
    ledger: &Ledger,
    outlet: &mut dyn Outlet,
) -> Result<Sent, SimError> {
    let mut rec = Vec::with_capacity(4096);
    let mut s = Sent {
        events: 0,
        sync_events: 0,
        async_events: 0,
        skipped: 0,
        unsent: 0,
        first: None,
        last: None,
        drained: None,
    };
    let mut closed = false;
    let start = Instant::now();
    let flow = for_each_record(source, |number, line| {
        let Ok(line) = line else {
            s.skipped += 1;
            return ControlFlow::Continue(());
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            return ControlFlow::Continue(());
        }
        if closed {
            s.unsent += 1;
            return ControlFlow::Continue(());
        }
        let sync = is_sync(s.events, opts.sync_fraction);
        let kind = if sync { "event" } else { "async_event" };
        rec.clear();
        if rewrite_event(line, kind, pid_of(number), number, &mut rec).is_err() {
            s.skipped += 1;
            return ControlFlow::Continue(());
        }
        if let Some(rate) = opts.rate {
            wait_until(start + Duration::from_secs_f64(s.events as f64 / rate));
        }
        if sync {
            ledger.wait_for_slot(opts.max_outstanding, opts.verdict_timeout);
        }
        if !outlet.accepting() {
            closed = true;
            s.unsent += 1;
            return ControlFlow::Continue(());
        }
        // Registered before the write: the verdict may be read before write() returns.
        let now = Instant::now();
        ledger.register(number, sync, now);
        if let Err(e) = outlet.deliver(&rec, s.events) {
            return ControlFlow::Break(e);
        }
        s.first.get_or_insert(now);
        s.last = Some(now);
        s.events += 1;
        if sync {
            s.sync_events += 1;
        } else {
            s.async_events += 1;
        }
        ControlFlow::Continue(())
    });
    match flow {
        Ok(None) => {}
        Ok(Some(e)) => return Err(e),
        Err(source) => {
            return Err(SimError::Io {
                what: format!("reading {}", opts.events.display()),
                source,
            })
        }
    }
    ledger.drain(opts.verdict_timeout);
    s.drained = Some(Instant::now());
    Ok(s)
}

fn report(opts: &SimOptions, s: &Sent, ledger: &Ledger) -> SimReport {
    let (mut tally, missing) = ledger.finish();
    let h = &tally.hist;
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    let secs = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let emit_s = secs(s.first, s.last);
    let achieved_rate = if s.events >= 2 && emit_s > 0.0 {
        (s.events - 1) as f64 / emit_s
    } else {
        0.0
    };
    tally.untrusted_lines.sort_unstable();
    SimReport {
        events: s.events,
        sync_events: s.sync_events,
        async_events: s.async_events,
        skipped: s.skipped,
        verdicts: tally.trusted + tally.untrusted,
        trusted: tally.trusted,
        untrusted: tally.untrusted,
        missing,
        duplicates: tally.duplicates,
        unexpected: tally.unexpected,
        timeouts: tally.timeouts,
        late: tally.late,
        stalls: tally.stalls,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if h.is_empty() { 0 } else { h.max() },
        untrusted_lines: std::mem::take(&mut tally.untrusted_lines),
        commands: std::mem::take(&mut tally.commands),
        duration_s: secs(s.first, s.drained),
        emit_s,
        offered_rate: opts.rate,
        achieved_rate,
        external: None,
        v4: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_choice_is_deterministic_and_proportional() {
        let count = |f: f64| (0..1000).filter(|&i| is_sync(i, f)).count();
        assert_eq!(count(1.0), 1000);
        assert_eq!(count(0.0), 0);
        assert_eq!(count(0.5), 500);
        assert_eq!(count(0.25), 250);
        assert!((0..10).map(|i| is_sync(i, 0.5)).eq([false, true]
            .iter()
            .copied()
            .cycle()
            .take(10)));
    }

    #[test]
    fn options_are_checked() {
        let mut o = SimOptions::new("/nonexistent", "/nonexistent");
        assert_eq!(check(&o).unwrap(), "0".repeat(64));
        o.sync_fraction = 1.5;
        assert!(matches!(check(&o), Err(SimError::Options(_))));
        o.sync_fraction = 0.5;
        o.rate = Some(0.0);
        assert!(matches!(check(&o), Err(SimError::Options(_))));
        o.rate = None;
        o.aggregate = Some("xyz".into());
        assert!(matches!(check(&o), Err(SimError::Options(_))));
        o.aggregate = None;
        o.wait_external = true;
        o.namespace = 0;
        assert!(matches!(check(&o), Err(SimError::Options(_))));
    }

    #[test]
    fn external_commands_parse() {
        let c =
            ExternalCommand::parse("external nsref=current digest=sha256 cache=96 odd").unwrap();
        assert_eq!(
            c.command,
            "external nsref=current digest=sha256 cache=96 odd"
        );
        assert_eq!(c.options["nsref"], "current");
        assert_eq!(c.options["digest"], "sha256");
        assert_eq!(c.options["cache"], "96");
        assert_eq!(c.options["odd"], "");
        assert_eq!(ExternalCommand::parse("external").unwrap().options.len(), 0);
        assert!(ExternalCommand::parse("externally").is_none());
        assert!(ExternalCommand::parse("enforce").is_none());
    }
}
