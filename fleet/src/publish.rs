//! Publishing a run: a tap that spools every record, an observer that spools
//! forensics and verdict summaries, and per destination a drainer thread that
//! sends the spool to the server in acknowledged batches.
//!
//! Nothing here can hold a verdict back: the pipeline answers the kernel
//! before taps and observers see a record; the tap only appends to a local
//! file; the network is the drainer's business alone.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tsem_ingest::{LineTap, TapBatch};
use tsem_model::Outcome;
use tsem_model::{Mapped, Observer};

use crate::mqtt::MqttDestination;
use crate::nats::NatsDestination;
use crate::spool::{Spool, SpoolReader, SpoolStats};
use crate::subject::Names;
use crate::target::{Server, Target};
use crate::FleetError;

/// Where one destination's records go.
enum Destination {
    Nats(Box<NatsDestination>),
    Mqtt(MqttDestination),
}

impl Destination {
    async fn send(&mut self, entries: &[crate::spool::Entry]) -> Result<u64, String> {
        match self {
            Destination::Nats(d) => d.send(entries).await,
            Destination::Mqtt(d) => d.send(entries).await,
        }
    }

    /// The longest one attempt may take (a server that went away can leave
    /// a publish waiting for the reconnection).
    fn attempt_limit(&self) -> Duration {
        match self {
            Destination::Nats(d) => 2 * d.timeout() + Duration::from_secs(1),
            Destination::Mqtt(d) => 2 * d.timeout() + Duration::from_secs(1),
        }
    }

    async fn close(&mut self) {
        if let Destination::Mqtt(d) = self {
            d.close().await;
        }
    }
}

/// When the drainer should stop.
struct Control {
    finishing: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl Control {
    fn finish_by(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.finishing.store(true, Ordering::SeqCst);
    }

    fn finishing(&self) -> bool {
        self.finishing.load(Ordering::SeqCst)
    }

    /// Time left before giving up (`None`: not finishing).
    fn left(&self) -> Option<Duration> {
        if !self.finishing() {
            return None;
        }
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// What a drainer did.
#[derive(Default)]
struct DrainReport {
    sent: u64,
    duplicates: u64,
    batches: u64,
    failures: u64,
    first_send: Option<Instant>,
    last_ack: Option<Instant>,
    last_error: Option<String>,
}

/// What publishing to one destination did, for the run summary.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    /// The destination (without options).
    pub url: String,
    /// Subject (NATS) or topic (MQTT) of the records.
    pub subject: String,
    /// The disk buffer.
    pub buffer: PathBuf,
    /// Records (and forensics messages) the server acknowledged in this run.
    pub published: u64,
    /// Of those, how many the server already had (same de-duplication id).
    pub duplicates: u64,
    /// Lost: dropped because the buffer was full (or could not be written).
    pub dropped: u64,
    /// Still waiting in the buffer at exit (sent by the next run with this buffer).
    pub pending: u64,
    /// Left in the buffer by an earlier run and found at start.
    pub recovered: u64,
    /// Failed attempts (each retried).
    pub failures: u64,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The first write error of the buffer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_error: Option<String>,
    /// Seconds from the first batch sent to the last acknowledgement.
    pub seconds: f64,
    /// Messages acknowledged per second over that time.
    pub rate: f64,
}

/// One destination: its spool, what goes into it, and its drainer thread.
pub struct Publisher {
    url: String,
    subject: String,
    spool: Spool,
    control: Arc<Control>,
    drain: Duration,
    thread: Option<JoinHandle<DrainReport>>,
    /// `HOST.NS.` for NATS message ids; `None` for MQTT (no ids).
    id_prefix: Option<String>,
    /// Forensics subject (NATS only).
    forensics: Option<String>,
    names: Names,
}

/// How to start one [`Publisher`].
pub struct PublisherConfig {
    /// The destination.
    pub target: Target,
    /// Host and namespace (the prefix comes from the NATS address).
    pub host: String,
    /// Namespace token.
    pub namespace: String,
    /// MQTT topic (default `tsem/HOST/NS/events`).
    pub topic: Option<String>,
    /// The spool directory of this destination.
    pub buffer: PathBuf,
}

impl Publisher {
    /// Opens the spool and starts the drainer (which connects on its own:
    /// a server that is down is not an error, records wait).
    pub fn start(config: PublisherConfig) -> Result<Publisher, FleetError> {
        let PublisherConfig {
            target,
            host,
            namespace,
            topic,
            buffer,
        } = config;
        let prefix = match &target.server {
            Server::Nats(n) => n.prefix.clone(),
            Server::Mqtt(_) => "tsem".to_owned(),
        };
        let names = Names::new(&prefix, &host, &namespace).map_err(|what| FleetError::Address {
            url: target.display.clone(),
            what,
        })?;
        let (destination, subject, id_prefix, forensics) = match &target.server {
            Server::Nats(n) => (
                Destination::Nats(Box::new(NatsDestination::new(
                    n.clone(),
                    target.buffer.batch,
                ))),
                names.events_subject(),
                Some(format!("{host}.{namespace}.")),
                Some(names.forensics_subject()),
            ),
            Server::Mqtt(m) => {
                let topic = topic.unwrap_or_else(|| format!("tsem/{host}/{namespace}/events"));
                if topic.is_empty()
                    || topic.len() > u16::MAX as usize
                    || topic.contains(['+', '#', '\0'])
                {
                    return Err(FleetError::Address {
                        url: target.display.clone(),
                        what: format!("{topic:?} is not a topic to publish to"),
                    });
                }
                let client_id = format!("tsem-stream-{host}-{namespace}-{}", std::process::id());
                (
                    Destination::Mqtt(MqttDestination::new(
                        m.clone(),
                        client_id,
                        target.buffer.batch,
                    )),
                    topic,
                    None,
                    None,
                )
            }
        };
        let (spool, reader) = Spool::open(&buffer, target.buffer.max_bytes)?;
        let control = Arc::new(Control {
            finishing: AtomicBool::new(false),
            deadline: Mutex::new(None),
        });
        let thread = {
            let control = Arc::clone(&control);
            let url = target.display.clone();
            let batch = target.buffer.batch;
            let dir = buffer.clone();
            std::thread::Builder::new()
                .name("tsem-publish".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(drain(reader, destination, control, batch, url, dir)),
                        Err(e) => DrainReport {
                            last_error: Some(format!("runtime: {e}")),
                            ..DrainReport::default()
                        },
                    }
                })
                .map_err(|e| FleetError::Io {
                    path: buffer.clone(),
                    source: e,
                })?
        };
        Ok(Publisher {
            url: target.display.clone(),
            subject,
            spool,
            control,
            drain: target.buffer.drain,
            thread: Some(thread),
            id_prefix,
            forensics,
            names,
        })
    }

    /// The destination (without options).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The buffer directory.
    pub fn buffer(&self) -> &Path {
        self.spool.dir()
    }

    /// A tap that spools every record of the pipeline.
    pub fn tap(&self) -> Box<dyn LineTap> {
        Box::new(PublishTap {
            spool: self.spool.clone(),
            subject: self.subject.clone(),
            id_prefix: self.id_prefix.clone(),
            id: String::new(),
        })
    }

    /// The spool's counters now.
    pub fn stats(&self) -> SpoolStats {
        self.spool.stats()
    }

    /// Spools one message for the forensics subject (NATS only; ignored for MQTT).
    fn spool_forensics(&self, id: &str, payload: &[u8]) {
        if let Some(subject) = &self.forensics {
            self.spool.append(subject, id, payload);
        }
    }

    /// Writes what is buffered, waits (at most the `drain` option) for the
    /// spool to be sent, stops the drainer and reports.
    pub fn finish(mut self) -> PublishReport {
        self.spool.flush();
        self.stop(Instant::now() + self.drain)
    }

    fn stop(&mut self, deadline: Instant) -> PublishReport {
        self.control.finish_by(deadline);
        self.spool.wake();
        let drained = self
            .thread
            .take()
            .map(|t| {
                t.join().unwrap_or_else(|_| DrainReport {
                    last_error: Some("the publisher thread panicked".into()),
                    ..DrainReport::default()
                })
            })
            .unwrap_or_default();
        let s = self.spool.stats();
        let seconds = match (drained.first_send, drained.last_ack) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        PublishReport {
            url: self.url.clone(),
            subject: self.subject.clone(),
            buffer: self.spool.dir().to_path_buf(),
            published: drained.sent,
            duplicates: drained.duplicates,
            dropped: s.dropped,
            pending: s.pending,
            recovered: s.recovered,
            failures: drained.failures,
            last_error: drained.last_error,
            buffer_error: s.write_error,
            seconds,
            rate: if seconds > 0.0 {
                drained.sent as f64 / seconds
            } else {
                0.0
            },
        }
    }
}

impl Drop for Publisher {
    /// Without [`finish`](Publisher::finish) (the run failed): stop at once;
    /// what was spooled stays for the next run.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.spool.flush();
            let _ = self.stop(Instant::now());
        }
    }
}

async fn drain(
    mut reader: SpoolReader,
    mut destination: Destination,
    control: Arc<Control>,
    batch: usize,
    url: String,
    dir: PathBuf,
) -> DrainReport {
    let mut report = DrainReport::default();
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    'batches: loop {
        let (entries, end) = match reader.read_batch(batch, 4 << 20) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("publish {url}: buffer {}: {e}", dir.display());
                report.last_error = Some(e.to_string());
                break;
            }
        };
        if entries.is_empty() {
            if control.finishing() {
                break;
            }
            reader.wait(Duration::from_millis(250)).await;
            continue;
        }
        loop {
            let started = Instant::now();
            // While finishing, an attempt may not outlast the deadline.
            let limit = destination.attempt_limit();
            let attempt = match control.left() {
                Some(left) if left.is_zero() => break 'batches,
                Some(left) if left < limit => {
                    tokio::time::timeout(left, destination.send(&entries))
                        .await
                        .unwrap_or_else(|_| Err("gave up at the end of the run".into()))
                }
                _ => tokio::time::timeout(limit, destination.send(&entries))
                    .await
                    .unwrap_or_else(|_| Err("no answer from the server".into())),
            };
            match attempt {
                Ok(duplicates) => {
                    report.first_send.get_or_insert(started);
                    report.last_ack = Some(Instant::now());
                    report.sent += entries.len() as u64;
                    report.duplicates += duplicates;
                    report.batches += 1;
                    backoff = Duration::from_millis(50);
                    if let Some(since) = down_since.take() {
                        tracing::warn!(
                            "publish {url}: delivering again (after {:.1} s)",
                            since.elapsed().as_secs_f64()
                        );
                    }
                    let bytes = SpoolReader::encoded_len(&entries);
                    if let Err(e) = reader.commit(end, entries.len() as u64, bytes) {
                        tracing::error!("publish {url}: buffer {}: {e}", dir.display());
                        report.last_error = Some(e.to_string());
                        break 'batches;
                    }
                    break;
                }
                Err(e) => {
                    report.failures += 1;
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        tracing::warn!("publish {url}: {e}; records wait in {}", dir.display());
                    }
                    report.last_error = Some(e);
                    let pause = match control.left() {
                        Some(left) => backoff.min(left),
                        None => backoff,
                    };
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    destination.close().await;
    report
}

/// Spools every record of each batch with its subject and id.
struct PublishTap {
    spool: Spool,
    subject: String,
    id_prefix: Option<String>,
    id: String,
}

impl LineTap for PublishTap {
    fn write_batch(&mut self, batch: &TapBatch<'_>) -> io::Result<()> {
        {
            let mut appender = self.spool.appender();
            for (number, bytes) in batch.records() {
                self.id.clear();
                if let Some(prefix) = &self.id_prefix {
                    self.id.push_str(prefix);
                    let _ = write!(self.id, "{number}");
                }
                appender.push(&self.subject, &self.id, bytes);
            }
        }
        self.spool.flush();
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.spool.flush();
        Ok(())
    }
}

/// Publishes forensics (every event that violates the sealed model) and a
/// verdict summary every `every` to the forensics subject of each NATS
/// destination. It runs on the sequencer thread, in input order; it only
/// appends to the spools.
pub struct ForensicsObserver {
    publishers: Vec<Arc<Publisher>>,
    every: Duration,
    last_summary: Instant,
    lines: u64,
    /// Counters so far.
    pub counts: Counts,
}

/// What the observer counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events modeled.
    pub events: u64,
    /// New points (coefficients first seen).
    pub new_points: u64,
    /// Events that violated the sealed model (released untrusted).
    pub violations: u64,
    /// Bad lines.
    pub errors: u64,
}

impl ForensicsObserver {
    fn publish(&self, id: &str, message: &Value) {
        let payload = message.to_string();
        for p in &self.publishers {
            p.spool_forensics(id, payload.as_bytes());
        }
    }

    fn summary(&mut self, fin: bool) {
        let Some(first) = self.publishers.first() else {
            return;
        };
        let names = first.names.clone();
        let message = json!({
            "kind": "summary",
            "host": names.host,
            "namespace": names.namespace,
            "final": fin,
            "events": self.counts.events,
            "new_points": self.counts.new_points,
            "violations": self.counts.violations,
            "errors": self.counts.errors,
        });
        self.publish(&names.summary_id(self.counts.events), &message);
        self.last_summary = Instant::now();
    }
}

impl Observer for ForensicsObserver {
    fn line(
        &mut self,
        _source: &str,
        number: u64,
        bytes: &[u8],
        mapped: &Mapped,
        outcome: Option<&Outcome>,
    ) -> io::Result<()> {
        match (mapped, outcome) {
            (
                Mapped::Event {
                    coefficient,
                    task,
                    event_type,
                    ..
                },
                Some(outcome),
            ) => {
                self.counts.events += 1;
                self.counts.new_points += u64::from(outcome.new_point);
                if outcome.violation {
                    self.counts.violations += 1;
                    if let Some(first) = self.publishers.first() {
                        let names = &first.names;
                        let message = json!({
                            "kind": "forensics",
                            "host": names.host,
                            "namespace": names.namespace,
                            "seq": number,
                            "coefficient": coefficient.to_hex(),
                            "new_point": outcome.new_point,
                            "event": event_type.map(|t| t.name()),
                            "pid": task.map(|t| t.pid),
                            "record": String::from_utf8_lossy(bytes),
                        });
                        let id = names.forensics_id(number);
                        self.publish(&id, &message);
                    }
                }
            }
            (Mapped::Error { .. }, _) => self.counts.errors += 1,
            _ => {}
        }
        // Reading the clock for every line would cost more than the rest.
        self.lines += 1;
        if self.lines.is_multiple_of(1024) && self.last_summary.elapsed() >= self.every {
            self.summary(false);
        }
        Ok(())
    }
}

/// Everything a run publishes: its destinations, their taps and the
/// forensics observer.
pub struct Publishing {
    publishers: Vec<Arc<Publisher>>,
    observer: ForensicsObserver,
}

impl Publishing {
    /// Starts one publisher per destination.
    pub fn start(configs: Vec<PublisherConfig>) -> Result<Publishing, FleetError> {
        let publishers: Vec<Arc<Publisher>> = configs
            .into_iter()
            .map(|c| Publisher::start(c).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let forensic: Vec<Arc<Publisher>> = publishers
            .iter()
            .filter(|p| p.forensics.is_some())
            .cloned()
            .collect();
        Ok(Publishing {
            publishers,
            observer: ForensicsObserver {
                publishers: forensic,
                every: Duration::from_secs(10),
                last_summary: Instant::now(),
                lines: 0,
                counts: Counts::default(),
            },
        })
    }

    /// One tap per destination (combine them with the archive's in a `TeeTap`).
    pub fn taps(&self) -> Vec<Box<dyn LineTap>> {
        self.publishers.iter().map(|p| p.tap()).collect()
    }

    /// The observer that publishes forensics and summaries.
    pub fn observer(&mut self) -> &mut ForensicsObserver {
        &mut self.observer
    }

    /// The destinations.
    pub fn publishers(&self) -> impl Iterator<Item = &Publisher> {
        self.publishers.iter().map(|p| &**p)
    }

    /// Publishes the final summary (`extra`'s fields added: the model's
    /// state, measurement, ...), drains every destination (each for at most
    /// its `drain` option) and reports.
    pub fn finish(mut self, extra: &Value) -> Vec<PublishReport> {
        if let Some(first) = self.observer.publishers.first() {
            let names = first.names.clone();
            let mut message = json!({
                "kind": "summary",
                "host": names.host,
                "namespace": names.namespace,
                "final": true,
                "events": self.observer.counts.events,
                "new_points": self.observer.counts.new_points,
                "violations": self.observer.counts.violations,
                "errors": self.observer.counts.errors,
            });
            if let (Some(m), Some(extra)) = (message.as_object_mut(), extra.as_object()) {
                for (k, v) in extra {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            self.observer
                .publish(&names.summary_id(self.observer.counts.events), &message);
        }
        self.observer.publishers.clear();
        // Drain all destinations at the same time: each got its own deadline.
        let deadline_each: Vec<Instant> = self
            .publishers
            .iter()
            .map(|p| {
                p.spool.flush();
                Instant::now() + p.drain
            })
            .collect();
        for (p, d) in self.publishers.iter().zip(&deadline_each) {
            p.control.finish_by(*d);
            p.spool.wake();
        }
        self.publishers
            .drain(..)
            .filter_map(|p| Arc::try_unwrap(p).ok())
            .map(|mut p| {
                let deadline = *p.control.deadline.lock().unwrap_or_else(|e| e.into_inner());
                p.stop(deadline.unwrap_or_else(Instant::now))
            })
            .collect()
    }
}

/// Where buffers go when neither `--publish-buffer` nor an archive names a
/// place: `/var/lib/tsem-stream/publish` for root (beside the management
/// sockets), else `$XDG_STATE_HOME/tsem-stream/publish` or
/// `~/.local/state/tsem-stream/publish`, else the temporary directory.
pub fn default_buffer_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/tsem-stream/publish");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        });
    match state {
        Some(dir) => dir.join("tsem-stream/publish"),
        None => std::env::temp_dir().join(format!(
            "tsem-stream-publish-{}",
            nix::unistd::geteuid().as_raw()
        )),
    }
}
