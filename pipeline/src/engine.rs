//! The staged pipeline: a reader thread fills batches (reused arenas) ->
//! bounded crossbeam channel -> rayon workers parse and map each line (and
//! answer synchronous events at once) -> an in-order sequencer applies the
//! results to the model and the store in batches.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use tsem_ingest::{
    lenient, ExportKind, Fetch, LineTap, Parser, RecordSource, Serial, TapBatch,
    DEFAULT_MAX_RECORD_LEN,
};
use tsem_model::views::View;
use tsem_model::{map_line, Coefficient, Mapped, Mapper, Observer};

use crate::sink::{ModelSink, SinkError};
use crate::stats::{Stats, WorkerStats};
use crate::verdict::VerdictWriter;

/// What to do with a line that cannot be parsed or mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop at the first bad line (in input order).
    #[default]
    Stop,
    /// Count it, report it, and go on.
    Skip,
}

/// Tuning of the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Worker threads that parse and map (at least 1).
    pub workers: usize,
    /// Most lines in one batch.
    pub batch_lines: usize,
    /// Most bytes in one batch.
    pub batch_bytes: usize,
    /// Batches in flight between reader and workers.
    pub queue_depth: usize,
    /// Bad-line policy.
    pub on_error: ErrorPolicy,
    /// Longest accepted record.
    pub max_record_len: usize,
    /// Longest time between two store commits while events keep coming.
    pub commit_interval: Duration,
    /// Hand a stats line to [`Outputs::progress`] this often.
    pub stats_interval: Option<Duration>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            workers: 1,
            batch_lines: 256,
            batch_bytes: 256 * 1024,
            queue_depth: 8,
            on_error: ErrorPolicy::Stop,
            max_record_len: DEFAULT_MAX_RECORD_LEN,
            commit_interval: Duration::from_millis(50),
            stats_interval: None,
        }
    }
}

/// The kernel's event numbers seen, per namespace: what lies between the
/// lowest and the highest and was never seen is lost (queue overflow, a
/// record the kernel dropped). Events before the first one seen cannot be
/// told from events of another consumer, so they are not counted.
#[derive(Debug, Default)]
struct Numbering {
    /// context -> (lowest, highest, how many distinct numbers seen)
    contexts: std::collections::HashMap<u64, (u64, u64, u64)>,
}

impl Numbering {
    /// Notes one event; returns how many numbers it skipped past the
    /// highest seen so far (0 when it follows on, or comes late).
    fn note(&mut self, s: Serial) -> u64 {
        let e = self
            .contexts
            .entry(s.context)
            .or_insert((s.number, s.number, 0));
        let skipped = s.number.saturating_sub(e.1.saturating_add(1));
        e.0 = e.0.min(s.number);
        e.1 = e.1.max(s.number);
        e.2 += 1;
        skipped
    }

    /// Numbers missing between the lowest and the highest, over all namespaces.
    fn lost(&self) -> u64 {
        self.contexts
            .values()
            .map(|&(lo, hi, seen)| (hi - lo + 1).saturating_sub(seen))
            .sum()
    }
}

/// Decides the verdicts workers write: a snapshot of what they need of the model.
#[derive(Debug, Default)]
pub struct VerdictPolicy {
    /// Sealed model: only coefficients in `valid` are trusted.
    pub sealed: bool,
    /// `-e`: violations of asynchronous events are also reported.
    pub enforcing: bool,
    /// Valid points of the sealed model.
    pub valid: std::collections::HashSet<Coefficient>,
}

impl VerdictPolicy {
    /// Trusted or not, for a mapped coefficient.
    ///
    /// Why a worker may answer before the sequencer applies the event: in a
    /// sealed model the set of *valid* points never changes (new points are
    /// added as invalid forensics), and an event is trusted exactly when its
    /// coefficient is a valid point. So the answer from this frozen set equals
    /// the sequencer's answer for every interleaving. While learning, every
    /// event is trusted whatever the model holds.
    pub fn trusted(&self, coefficient: &Coefficient) -> bool {
        !self.sealed || self.valid.contains(coefficient)
    }
}

/// A request to the running model, answered by the sequencer between batches
/// (so it sees a consistent model without locks): the management socket's views.
pub enum ModelRequest {
    /// Render a view of the model.
    View {
        /// Which view.
        view: View,
        /// Prefix coefficient lines with `state `.
        prefix: bool,
        /// Where the rendered bytes go.
        reply: Sender<Result<Vec<u8>, SinkError>>,
    },
    /// Seal the model: from now on new coefficients are forensics and
    /// verdicts come from the sealed set.
    Seal {
        /// Acknowledgement.
        reply: Sender<Result<(), SinkError>>,
    },
}

/// Where the pipeline's results go besides the model.
#[derive(Default)]
pub struct Outputs {
    /// Verdicts to the kernel's control file.
    pub verdicts: Option<Arc<VerdictWriter>>,
    /// A copy of every record (the archive).
    pub tap: Option<Box<dyn LineTap>>,
    /// Requests from the management socket.
    pub requests: Option<Receiver<ModelRequest>>,
    /// Where the periodic stats line goes ([`PipelineOptions::stats_interval`]).
    pub progress: Option<ProgressSink>,
}

/// Takes the periodic stats line (the binary prints it to stderr).
pub type ProgressSink = Box<dyn FnMut(&str) + Send>;

/// Why the pipeline stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the input failed.
    #[error("{source_name}: read error: {error}")]
    Read {
        /// Source name.
        source_name: String,
        /// The error.
        error: io::Error,
    },
    /// A bad line under [`ErrorPolicy::Stop`].
    #[error("{source_name}:{line}: {message}")]
    BadLine {
        /// Source name.
        source_name: String,
        /// Line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The model store failed.
    #[error("store: {0}")]
    Store(#[from] SinkError),
    /// The observer failed (e.g. stdout closed).
    #[error("output: {0}")]
    Output(io::Error),
    /// The record tap (archive) failed.
    #[error("archive: {0}")]
    Tap(io::Error),
}

struct LineRef {
    number: u64,
    /// When the record was read (for the read-to-verdict latency).
    read_at: Instant,
    start: u32,
    len: u32,
    oversized: usize,
}

struct Batch {
    seq: u64,
    data: Vec<u8>,
    lines: Vec<LineRef>,
    results: Vec<Mapped>,
    read_at: Instant,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            seq: 0,
            data: Vec::new(),
            lines: Vec::new(),
            results: Vec::new(),
            read_at: Instant::now(),
        }
    }
    fn clear(&mut self) {
        self.data.clear();
        self.lines.clear();
        self.results.clear();
    }
    /// Adds a record read now (`oversized > 0`: one whose bytes were
    /// dropped, of that length, but for the head in `bytes`).
    fn push(&mut self, number: u64, bytes: &[u8], oversized: usize) {
        let read_at = Instant::now();
        if self.lines.is_empty() {
            self.read_at = read_at;
        }
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        self.lines.push(LineRef {
            number,
            read_at,
            start,
            len: bytes.len() as u32,
            oversized,
        });
    }

    fn line(&self, l: &LineRef) -> &[u8] {
        &self.data[l.start as usize..(l.start + l.len) as usize]
    }

    /// The batch's records as a tap sees them; oversized lines are not records.
    fn tap_view(&self) -> TapBatch<'_> {
        TapBatch::new(
            self.lines
                .iter()
                .filter(|l| l.oversized == 0 && l.len > 0)
                .map(|l| (l.number, self.line(l)))
                .collect(),
        )
    }
}

/// Shared state of one run.
struct Shared {
    stop: AtomicBool,
    stalls: AtomicU64,
    max_queue: AtomicU64,
    unanswerable: AtomicU64,
    verdict_errors: AtomicU64,
}

/// Runs the pipeline over `source` until it ends (or a stop condition), applying
/// every record to `sink` in input order; returns the run's statistics.
///
/// A reader thread of its own reads the input; workers map full batches and
/// answer their synchronous events, the reader maps small idle ones; the
/// calling thread applies the results in order (the sequencer).
pub fn run(
    source: Box<dyn RecordSource>,
    mapper: Arc<Mapper>,
    sink: &mut ModelSink,
    outputs: Outputs,
    options: &PipelineOptions,
    observer: &mut dyn Observer,
) -> Result<Stats, PipelineError> {
    let (mut run, reading) = Run::start(source, mapper, sink, outputs, options, Mapping::Spread)?;
    let reader = {
        let stage = run.stage();
        let options = options.clone();
        std::thread::Builder::new()
            .name("tsem-reader".into())
            .spawn(move || reading.read(&options, stage))
            .map_err(|e| PipelineError::Read {
                source_name: run.source_name.clone(),
                error: e,
            })?
    };
    let result = run.sequence(sink, observer);
    let read = reader.join().unwrap_or_else(|_| {
        (
            Err(io::Error::other("reader thread panicked")),
            WorkerStats::default(),
        )
    });
    run.finish(sink, result, read)
}

/// Like [`run`], but the calling thread reads the input and maps every
/// record itself, so that it alone writes every verdict; the sequencer runs
/// on a thread of its own. For v4 kernels, which take verdicts only from the
/// thread that forked the namespace's creator (kernel-interface.md K6); `workers` does
/// not apply.
pub fn run_answering_here(
    source: Box<dyn RecordSource>,
    mapper: Arc<Mapper>,
    sink: &mut ModelSink,
    outputs: Outputs,
    options: &PipelineOptions,
    observer: &mut (dyn Observer + Send),
) -> Result<Stats, PipelineError> {
    let (mut run, reading) = Run::start(source, mapper, sink, outputs, options, Mapping::OnReader)?;
    let stage = run.stage();
    let source_name = run.source_name.clone();
    let (joined, result) = std::thread::scope(|scope| {
        let sequencer = std::thread::Builder::new()
            .name("tsem-sequencer".into())
            .spawn_scoped(scope, || {
                let result = run.sequence(sink, observer);
                (run, result)
            });
        let sequencer = match sequencer {
            Ok(s) => s,
            Err(e) => {
                return (
                    None,
                    Err(PipelineError::Read {
                        source_name: source_name.clone(),
                        error: e,
                    }),
                )
            }
        };
        let read = reading.read(options, stage);
        match sequencer.join() {
            Ok((run, result)) => (Some((run, read)), result),
            Err(_) => (None, Err(thread_failed(&source_name, "sequencer"))),
        }
    });
    let Some((run, read)) = joined else {
        return Err(result
            .err()
            .unwrap_or_else(|| thread_failed(&source_name, "sequencer")));
    };
    run.finish(sink, result, read)
}

fn thread_failed(source_name: &str, which: &str) -> PipelineError {
    PipelineError::Read {
        source_name: source_name.to_owned(),
        error: io::Error::other(format!("the {which} thread failed")),
    }
}

/// Where lines are parsed and mapped (and synchronous events answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mapping {
    /// Full batches on the workers, small idle ones on the reader.
    Spread,
    /// Every batch on the reader.
    OnReader,
}

/// What the reader stage takes with it.
struct Reading {
    source: Box<dyn RecordSource>,
    work_tx: Sender<Batch>,
    done_tx: Sender<Batch>,
    pool_rx: Receiver<Batch>,
    mapping: Mapping,
}

impl Reading {
    /// The reader stage: reads until the source ends (or the run stops);
    /// returns how that went and what its inline mapping measured.
    fn read(
        self,
        options: &PipelineOptions,
        mut inline: MapStage,
    ) -> (io::Result<()>, WorkerStats) {
        let Reading {
            mut source,
            work_tx,
            done_tx,
            pool_rx,
            mapping,
        } = self;
        let result = read_loop(
            &mut *source,
            &work_tx,
            &done_tx,
            &pool_rx,
            options,
            &mut inline,
            mapping,
        );
        (result, inline.stats)
    }
}

/// One run of the pipeline: its channels, threads and shared state.
struct Run {
    source_name: String,
    options: PipelineOptions,
    mapper: Arc<Mapper>,
    policy: Arc<RwLock<Arc<VerdictPolicy>>>,
    shared: Arc<Shared>,
    verdicts: Option<Arc<VerdictWriter>>,
    requests: Option<Receiver<ModelRequest>>,
    progress: Option<ProgressSink>,
    done_rx: Receiver<Batch>,
    pool_tx: Sender<Batch>,
    tap_tx: Option<Sender<Batch>>,
    tap_thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    dispatcher: Option<std::thread::JoinHandle<Vec<WorkerStats>>>,
    workers: usize,
    started: Instant,
    stats: Stats,
}

impl Run {
    /// Sets up the channels and starts the workers (for [`Mapping::Spread`])
    /// and the tap thread; returns the run and its reader stage, for the
    /// caller to run on the thread it chooses.
    fn start(
        source: Box<dyn RecordSource>,
        mapper: Arc<Mapper>,
        sink: &ModelSink,
        outputs: Outputs,
        options: &PipelineOptions,
        mapping: Mapping,
    ) -> Result<(Run, Reading), PipelineError> {
        let Outputs {
            verdicts,
            tap,
            requests,
            progress,
        } = outputs;
        let workers = match mapping {
            Mapping::Spread => options.workers.max(1),
            Mapping::OnReader => 1,
        };
        let source_name = source.name().to_owned();
        let policy = Arc::new(RwLock::new(Arc::new(sink.verdict_policy())));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stalls: AtomicU64::new(0),
            max_queue: AtomicU64::new(0),
            unanswerable: AtomicU64::new(0),
            verdict_errors: AtomicU64::new(0),
        });
        let (work_tx, work_rx) = bounded::<Batch>(options.queue_depth.max(1));
        let (done_tx, done_rx) = unbounded::<Batch>();
        let (pool_tx, pool_rx) = unbounded::<Batch>();
        let mut run = Run {
            source_name,
            options: options.clone(),
            mapper,
            policy,
            shared,
            verdicts,
            requests,
            progress,
            done_rx,
            pool_tx,
            tap_tx: None,
            tap_thread: None,
            dispatcher: None,
            workers,
            started: Instant::now(),
            stats: Stats::new(workers),
        };
        if mapping == Mapping::Spread {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .thread_name(|i| format!("tsem-worker-{i}"))
                .build()
                .map_err(|e| run.read_error(io::Error::other(e.to_string())))?;
            let stages: Vec<std::sync::Mutex<Option<MapStage>>> = (0..workers)
                .map(|_| std::sync::Mutex::new(Some(run.stage())))
                .collect();
            let done_tx = done_tx.clone();
            let dispatcher = std::thread::Builder::new()
                .name("tsem-dispatch".into())
                .spawn(move || {
                    // Every pool thread runs the same long-lived worker loop: the
                    // pool size is the worker count, and the channel balances load.
                    pool.broadcast(|ctx| {
                        let stage = stages[ctx.index()].lock().ok().and_then(|mut s| s.take());
                        match stage {
                            Some(stage) => work_stage(&work_rx, &done_tx, stage),
                            None => WorkerStats::default(),
                        }
                    })
                })
                .map_err(|e| run.read_error(e))?;
            run.dispatcher = Some(dispatcher);
        }
        // The tap thread writes each applied batch, then hands the arena back to the reader.
        if let Some(mut tap) = tap {
            let (tx, rx) = bounded::<Batch>(options.queue_depth.max(1));
            let pool_tx = run.pool_tx.clone();
            let shared = Arc::clone(&run.shared);
            let handle = std::thread::Builder::new()
                .name("tsem-tap".into())
                .spawn(move || -> io::Result<()> {
                    let mut failed = None;
                    for mut batch in rx.iter() {
                        if failed.is_none() {
                            if let Err(e) = tap.write_batch(&batch.tap_view()) {
                                shared.stop.store(true, Ordering::SeqCst);
                                failed = Some(e);
                            }
                        }
                        batch.clear();
                        let _ = pool_tx.send(batch);
                    }
                    match failed {
                        Some(e) => Err(e),
                        None => tap.finish(),
                    }
                })
                .map_err(PipelineError::Tap)?;
            run.tap_tx = Some(tx);
            run.tap_thread = Some(handle);
        }
        let reading = Reading {
            source,
            work_tx,
            done_tx,
            pool_rx,
            mapping,
        };
        Ok((run, reading))
    }

    fn read_error(&self, error: io::Error) -> PipelineError {
        PipelineError::Read {
            source_name: self.source_name.clone(),
            error,
        }
    }

    /// A parser and mapper for one thread.
    fn stage(&self) -> MapStage {
        MapStage {
            parser: Parser::new(self.options.max_record_len),
            mapper: Arc::clone(&self.mapper),
            policy: Arc::clone(&self.policy),
            verdicts: self.verdicts.clone(),
            shared: Arc::clone(&self.shared),
            max_len: self.options.max_record_len,
            stats: WorkerStats::default(),
        }
    }

    /// The sequencer: applies mapped batches in order until the input ends;
    /// after a failure it stops the run and hands the arenas still arriving
    /// back, so that a reader waiting for one wakes up, sees the stop and
    /// ends (and the workers after it).
    fn sequence(
        &mut self,
        sink: &mut ModelSink,
        observer: &mut dyn Observer,
    ) -> Result<(), PipelineError> {
        let mut stats = Stats::new(self.workers);
        let result = sequence_stage(
            &self.done_rx,
            &self.pool_tx,
            self.tap_tx.as_ref(),
            self.requests.as_ref(),
            &self.policy,
            sink,
            &self.options,
            observer,
            self.progress.as_mut(),
            &self.source_name,
            &mut stats,
            self.started,
        );
        self.stats = stats;
        if result.is_err() {
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.tap_tx = None;
        while let Ok(mut batch) = self.done_rx.recv() {
            batch.clear();
            let _ = self.pool_tx.send(batch);
        }
        result
    }

    /// Joins the threads and completes the statistics.
    fn finish(
        mut self,
        sink: &mut ModelSink,
        result: Result<(), PipelineError>,
        read: (io::Result<()>, WorkerStats),
    ) -> Result<Stats, PipelineError> {
        let (read_result, reader_stats) = read;
        drop(self.pool_tx);
        let worker_stats: Vec<WorkerStats> = self
            .dispatcher
            .take()
            .map(|d| d.join().unwrap_or_default())
            .unwrap_or_default();
        let tap_result = self.tap_thread.take().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("archive thread panicked")))
        });
        result?;
        if let Some(Err(e)) = tap_result {
            return Err(PipelineError::Tap(e));
        }
        if let Err(error) = read_result {
            return Err(PipelineError::Read {
                source_name: self.source_name,
                error,
            });
        }
        sink.commit().map_err(PipelineError::Store)?;
        let mut stats = self.stats;
        for w in worker_stats.iter().chain([&reader_stats]) {
            stats.merge_worker(w);
        }
        let shared = &self.shared;
        stats.stalls = shared.stalls.load(Ordering::Relaxed);
        stats.max_queue_depth = shared.max_queue.load(Ordering::Relaxed);
        stats.unanswerable = shared.unanswerable.load(Ordering::Relaxed);
        stats.verdict_errors = shared.verdict_errors.load(Ordering::Relaxed);
        if let Some(v) = &self.verdicts {
            (stats.trusted, stats.untrusted) = v.counts();
        }
        stats.elapsed = self.started.elapsed();
        Ok(stats)
    }
}

/// A batch of at most this many lines, sent because the input went idle, is
/// mapped on the reader thread itself and handed straight to the sequencer:
/// a waiting task's verdict then costs no thread hand-off (the latency path),
/// while full batches under load still spread over the workers.
const INLINE_MAX_LINES: usize = 4;

fn read_loop(
    source: &mut dyn RecordSource,
    work_tx: &Sender<Batch>,
    done_tx: &Sender<Batch>,
    pool_rx: &Receiver<Batch>,
    options: &PipelineOptions,
    inline: &mut MapStage,
    mapping: Mapping,
) -> io::Result<()> {
    let shared = Arc::clone(&inline.shared);
    let mut seq = 0u64;
    // Memory is bounded by the number of batch arenas: once `max_batches`
    // exist, the reader waits for one to come back (from the sequencer or the
    // archive tap) instead of allocating, and stops reading: back-pressure
    // reaches the kernel's queue, where waiting events cost us nothing.
    let max_batches = 2 * options.queue_depth.max(1) + 8;
    let mut allocated = 0usize;
    let next_batch = |allocated: &mut usize| -> Option<Batch> {
        if let Ok(b) = pool_rx.try_recv() {
            return Some(b);
        }
        if *allocated < max_batches {
            *allocated += 1;
            return Some(Batch::new());
        }
        shared.stalls.fetch_add(1, Ordering::Relaxed);
        pool_rx.recv().ok()
    };
    let Some(mut batch) = next_batch(&mut allocated) else {
        return Ok(());
    };
    let send = |mut b: Batch, seq: &mut u64| -> bool {
        b.seq = *seq;
        *seq += 1;
        let depth = work_tx.len() as u64;
        shared.max_queue.fetch_max(depth + 1, Ordering::Relaxed);
        match work_tx.try_send(b) {
            Ok(()) => true,
            Err(TrySendError::Full(b)) => {
                shared.stalls.fetch_add(1, Ordering::Relaxed);
                work_tx.send(b).is_ok()
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    };
    // A batch mapped here goes straight to the sequencer.
    let to_sequencer = |mut b: Batch, seq: &mut u64| -> bool {
        b.seq = *seq;
        *seq += 1;
        done_tx.send(b).is_ok()
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Never hold a line back unmapped waiting for more input: ask the
        // source not to block while the batch has lines to map (spread: any
        // line; on the reader: lines not mapped yet).
        let unmapped = match mapping {
            Mapping::Spread => batch.lines.len(),
            Mapping::OnReader => batch.lines.len() - batch.results.len(),
        };
        let wait = unmapped == 0;
        let fetched = source.fetch(wait)?;
        let idle = matches!(fetched, Fetch::Idle);
        match fetched {
            Fetch::Record { number, bytes } => batch.push(number, bytes, 0),
            // Only the head of an oversized record is kept: enough for the
            // lenient header scan to find the task that waits for a verdict.
            Fetch::Oversized { number, len } => batch.push(number, source.oversized_head(), len),
            Fetch::Idle => {}
            Fetch::End => {
                if !batch.lines.is_empty() {
                    if mapping == Mapping::OnReader {
                        inline.map_batch(&mut batch);
                        to_sequencer(batch, &mut seq);
                    } else {
                        send(batch, &mut seq);
                    }
                }
                return Ok(());
            }
        }
        let full =
            batch.lines.len() >= options.batch_lines || batch.data.len() >= options.batch_bytes;
        if batch.lines.is_empty() || !(full || idle) {
            continue;
        }
        if mapping == Mapping::OnReader {
            // Every line is mapped (and answered) as soon as the input pauses;
            // the batch goes to the sequencer only when full or after a whole
            // wait step without input. One event at a time is the normal
            // case in process mode (each task sleeps until its verdict), and
            // waking the sequencer for every one would cost a context switch
            // per event; the model lags the verdicts by at most a wait step.
            inline.map_batch(&mut batch);
            if !(full || wait) {
                continue;
            }
            if !to_sequencer(batch, &mut seq) {
                return Ok(());
            }
        } else if idle && batch.lines.len() <= INLINE_MAX_LINES {
            inline.map_batch(&mut batch);
            if !to_sequencer(batch, &mut seq) {
                return Ok(());
            }
        } else if !send(batch, &mut seq) {
            return Ok(());
        }
        batch = match next_batch(&mut allocated) {
            Some(b) => b,
            None => return Ok(()),
        };
        batch.clear();
    }
}

/// What parsing and mapping needs, per thread: its own parser, shared mapper,
/// verdict policy and writer.
struct MapStage {
    parser: Parser,
    mapper: Arc<Mapper>,
    policy: Arc<RwLock<Arc<VerdictPolicy>>>,
    verdicts: Option<Arc<VerdictWriter>>,
    shared: Arc<Shared>,
    max_len: usize,
    stats: WorkerStats,
}

impl MapStage {
    /// Parses and maps every line of `batch`, answering synchronous events at once.
    fn map_batch(&mut self, batch: &mut Batch) {
        let t0 = Instant::now();
        let policy: Arc<VerdictPolicy> = self
            .policy
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_default();
        let max_len = self.max_len;
        let Batch {
            data,
            lines,
            results,
            ..
        } = batch;
        // Lines mapped earlier (a batch the reader keeps filling) are done.
        let first = results.len();
        for l in &lines[first..] {
            let mapped = if l.oversized > 0 {
                // Too long to parse, but a synchronous event's task still
                // sleeps until answered: its header (kept by the source)
                // names it, and `answer` releases it like any bad line.
                let head =
                    lenient::scan_header(&data[l.start as usize..(l.start + l.len) as usize]);
                Mapped::Error {
                    message: format!(
                        "record of {} bytes exceeds the limit of {max_len} bytes",
                        l.oversized
                    ),
                    kind: head.kind,
                    task: head.task(),
                    serial: head.serial(),
                }
            } else {
                map_line(
                    &mut self.parser,
                    &self.mapper,
                    &data[l.start as usize..(l.start + l.len) as usize],
                )
            };
            if let Some(v) = &self.verdicts {
                answer(
                    v,
                    &policy,
                    &mapped,
                    &self.shared,
                    &mut self.stats,
                    l.read_at,
                );
            }
            results.push(mapped);
        }
        let n = (lines.len() - first).max(1) as u64;
        self.stats.record_map(t0.elapsed(), n);
    }
}

fn work_stage(
    work_rx: &Receiver<Batch>,
    done_tx: &Sender<Batch>,
    mut stage: MapStage,
) -> WorkerStats {
    while let Ok(mut batch) = work_rx.recv() {
        stage.map_batch(&mut batch);
        if done_tx.send(batch).is_err() {
            break;
        }
    }
    stage.stats
}

/// Writes the verdict an export record is owed, as soon as it is mapped.
fn answer(
    v: &VerdictWriter,
    policy: &VerdictPolicy,
    mapped: &Mapped,
    shared: &Shared,
    stats: &mut WorkerStats,
    read_at: Instant,
) {
    let (trusted, kind, task) = match mapped {
        Mapped::Event {
            coefficient,
            kind,
            task,
            ..
        } => (policy.trusted(coefficient), *kind, *task),
        // A synchronous event we cannot map still holds a sleeping task: release
        // it, failing closed when a sealed model is in force (documented policy).
        Mapped::Error { kind, task, .. } => (!policy.sealed, *kind, *task),
        _ => return,
    };
    let owed = match kind {
        Some(ExportKind::Event) => true,
        // kernel-interface.md K5: an asynchronous violation is reported only when enforcing.
        Some(ExportKind::AsyncEvent) => policy.sealed && policy.enforcing && !trusted,
        _ => false,
    };
    if !owed {
        return;
    }
    let Some(task) = task else {
        shared.unanswerable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if v.release(task, trusted).is_err() {
        shared.verdict_errors.fetch_add(1, Ordering::Relaxed);
    }
    stats.record_verdict(read_at.elapsed());
}

#[allow(clippy::too_many_arguments)]
fn sequence_stage(
    done_rx: &Receiver<Batch>,
    pool_tx: &Sender<Batch>,
    tap_tx: Option<&Sender<Batch>>,
    requests: Option<&Receiver<ModelRequest>>,
    policy: &RwLock<Arc<VerdictPolicy>>,
    sink: &mut ModelSink,
    options: &PipelineOptions,
    observer: &mut dyn Observer,
    mut progress: Option<&mut ProgressSink>,
    source_name: &str,
    stats: &mut Stats,
    started: Instant,
) -> Result<(), PipelineError> {
    let mut next = 0u64;
    let mut pending: BTreeMap<u64, Batch> = BTreeMap::new();
    let mut numbering = Numbering::default();
    let mut last_commit = Instant::now();
    let mut last_stats = Instant::now();
    let never = crossbeam_channel::never();
    let requests = requests.unwrap_or(&never);
    loop {
        let batch = crossbeam_channel::select! {
            recv(done_rx) -> b => match b {
                Ok(b) => b,
                Err(_) => break,
            },
            recv(requests) -> r => {
                if let Ok(request) = r {
                    answer_request(request, sink, Some(policy));
                }
                continue;
            }
        };
        pending.insert(batch.seq, batch);
        while let Some(batch) = pending.remove(&next) {
            next += 1;
            let t0 = Instant::now();
            for (l, mapped) in batch.lines.iter().zip(&batch.results) {
                // An oversized line's kept head served its verdict only; it
                // is not the record, so observers see no bytes (as taps).
                let bytes = if l.oversized > 0 {
                    &[][..]
                } else {
                    batch.line(l)
                };
                if let Mapped::Event {
                    serial: Some(serial),
                    ..
                }
                | Mapped::Error {
                    serial: Some(serial),
                    ..
                } = mapped
                {
                    let skipped = numbering.note(*serial);
                    if skipped > 0 {
                        // Said at once: under a v4 kernel the task of a lost
                        // synchronous event sleeps until someone kills it.
                        tracing::warn!(
                            "{source_name}:{}: the kernel numbered {skipped} event(s) of \
                             namespace {} before event {} that never arrived (lost; a v4 \
                             kernel loses records over 4 KiB, and a task waiting on a lost \
                             event sleeps until it is killed with SIGKILL)",
                            l.number,
                            serial.context,
                            serial.number
                        );
                    }
                }
                let outcome = match mapped {
                    Mapped::Error { message, .. } => {
                        stats.errors += 1;
                        sink.note_error();
                        observer
                            .line(source_name, l.number, bytes, mapped, None)
                            .map_err(PipelineError::Output)?;
                        if options.on_error == ErrorPolicy::Stop {
                            return Err(PipelineError::BadLine {
                                source_name: source_name.to_owned(),
                                line: l.number,
                                message: message.clone(),
                            });
                        }
                        continue;
                    }
                    _ => sink.apply(mapped, bytes, stats),
                };
                observer
                    .line(source_name, l.number, bytes, mapped, outcome.as_ref())
                    .map_err(PipelineError::Output)?;
            }
            stats.record_apply(t0.elapsed(), batch.read_at.elapsed());
            match tap_tx {
                Some(tx) => {
                    if let Err(TrySendError::Full(b)) = tx.try_send(batch) {
                        stats.tap_stalls += 1;
                        let _ = tx.send(b);
                    }
                }
                None => {
                    let mut batch = batch;
                    batch.clear();
                    let _ = pool_tx.send(batch);
                }
            }
            // Commit at batch boundaries, at most every commit_interval while
            // busy, and at once when nothing else is waiting (idle input).
            if sink.has_store()
                && (last_commit.elapsed() >= options.commit_interval || done_rx.is_empty())
            {
                sink.commit().map_err(PipelineError::Store)?;
                last_commit = Instant::now();
            }
        }
        if let (Some(every), Some(progress)) = (options.stats_interval, progress.as_mut()) {
            if last_stats.elapsed() >= every {
                progress(&stats.progress_line(sink, started.elapsed(), done_rx.len()));
                last_stats = Instant::now();
            }
        }
    }
    stats.lost_events = numbering.lost();
    Ok(())
}

impl ModelRequest {
    /// Answers the request from the model itself, when no pipeline runs
    /// (it has ended, and the workload may still run for a while).
    pub fn answer(self, sink: &mut ModelSink) {
        answer_request(self, sink, None);
    }
}

/// Answers a management request against `sink`; a seal also refreshes the
/// workers' verdict policy when a pipeline is running (`policy`).
fn answer_request(
    request: ModelRequest,
    sink: &mut ModelSink,
    policy: Option<&RwLock<Arc<VerdictPolicy>>>,
) {
    match request {
        ModelRequest::View {
            view,
            prefix,
            reply,
        } => {
            let _ = reply.send(sink.render(view, prefix));
        }
        ModelRequest::Seal { reply } => {
            sink.model_mut().seal();
            let result = sink.sync_all();
            if let Some(Ok(mut p)) = policy.map(RwLock::write) {
                *p = Arc::new(sink.verdict_policy());
            }
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(context: u64, number: u64) -> Serial {
        Serial { context, number }
    }

    #[test]
    fn gaps_in_the_kernels_numbering_are_lost_events() {
        let mut n = Numbering::default();
        assert_eq!(n.note(serial(1, 4)), 0);
        assert_eq!(n.note(serial(1, 5)), 0);
        // 6 and 7 never came.
        assert_eq!(n.note(serial(1, 8)), 2);
        // Another namespace has a numbering of its own.
        assert_eq!(n.note(serial(2, 100)), 0);
        assert_eq!(n.note(serial(2, 101)), 0);
        assert_eq!(n.lost(), 2);
        // A late arrival fills its gap.
        assert_eq!(n.note(serial(1, 6)), 0);
        assert_eq!(n.lost(), 1);
    }
}
