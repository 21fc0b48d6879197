//! NATS JetStream: the publishing destination (stream created if missing,
//! de-duplication ids, acknowledged batches) and the record source (a pull
//! consumer, acknowledged once the records are applied or archived).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use tsem_ingest::{Fetch, LineTap, RecordSource, TapBatch};

use crate::spool::Entry;
use crate::target::NatsTarget;
use crate::FleetError;

/// The stream a publisher creates when the address names none: `TSEM` for
/// the default prefix, the prefix in capitals otherwise.
pub fn default_stream(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// Connects; with `retry`, in the background (a publisher starts whether or
/// not the server is up), else failing at once.
async fn connect(target: &NatsTarget, retry: bool) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("tsem-stream")
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(target.timeout))
        // Reconnect soon after a restart of the server: the disk buffer, not
        // the client, is what holds records meanwhile.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
        });
    if retry {
        options = options.retry_on_initial_connect();
    }
    options
        .connect(target.server.as_str())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.server))
}

fn context(client: async_nats::Client, target: &NatsTarget, inflight: usize) -> Context {
    jetstream::context::ContextBuilder::new()
        .timeout(target.timeout)
        .ack_timeout(target.timeout)
        .max_ack_inflight(inflight.max(1))
        .backpressure_on_inflight(true)
        .build(client)
}

/// Publishes batches of spool entries to JetStream.
pub struct NatsDestination {
    target: NatsTarget,
    batch: usize,
    js: Option<Context>,
    stream_ready: bool,
}

impl NatsDestination {
    /// A destination (nothing is connected before the first batch).
    pub fn new(target: NatsTarget, batch: usize) -> NatsDestination {
        NatsDestination {
            target,
            batch,
            js: None,
            stream_ready: false,
        }
    }

    /// How long the server may take to answer.
    pub fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// Makes sure a stream captures `PREFIX.>`: the named one (created if
    /// missing), or any stream that already does, or a new one.
    async fn ensure_stream(&self, js: &Context) -> Result<(), String> {
        let all = format!("{}.>", self.target.prefix);
        let name = match &self.target.stream {
            Some(name) => name.clone(),
            None => {
                if js.stream_by_subject(all.as_str()).await.is_ok() {
                    return Ok(());
                }
                default_stream(&self.target.prefix)
            }
        };
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![all],
            max_age: self.target.max_age.unwrap_or_default(),
            max_bytes: self.target.max_bytes.unwrap_or(-1),
            max_messages: -1,
            duplicate_window: self.target.duplicate_window,
            storage: stream::StorageType::File,
            ..stream::Config::default()
        };
        js.get_or_create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| format!("stream {name}: {e}"))
    }

    /// Publishes `entries` in order and waits for every acknowledgement;
    /// returns how many the server reported as duplicates (already stored).
    pub async fn send(&mut self, entries: &[Entry]) -> Result<u64, String> {
        if self.js.is_none() {
            let client = connect(&self.target, true).await?;
            self.js = Some(context(client, &self.target, 2 * self.batch));
        }
        let Some(js) = self.js.clone() else {
            return Err("not connected".into());
        };
        if !self.stream_ready {
            self.ensure_stream(&js).await?;
            self.stream_ready = true;
        }
        let result = async {
            let mut acks = Vec::with_capacity(entries.len());
            for e in entries {
                let mut message =
                    jetstream::message::PublishMessage::build().payload(e.payload.clone());
                if !e.id.is_empty() {
                    message = message.message_id(&e.id);
                }
                let ack = js
                    .send_publish(e.subject.clone(), message)
                    .await
                    .map_err(|err| format!("publish: {err}"))?;
                acks.push(ack);
            }
            // Everything on the wire before waiting: a batch cut by a server
            // crash is then a prefix stored and a rest to send again.
            js.client()
                .flush()
                .await
                .map_err(|err| format!("flush: {err}"))?;
            let mut duplicates = 0;
            for ack in acks {
                let ack = ack.await.map_err(|err| format!("acknowledgement: {err}"))?;
                duplicates += u64::from(ack.duplicate);
            }
            Ok(duplicates)
        }
        .await;
        if result.is_err() {
            // The stream may be gone with a server that lost its storage.
            self.stream_ready = false;
        }
        result
    }
}

/// How a [`NatsSource`] consumes.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Filter subject (wildcards allowed): `tsem.*.*.events`.
    pub subject: String,
    /// Durable consumer name: a later run with the same name continues
    /// after what was acknowledged. `None`: an ephemeral consumer from the start.
    pub durable: Option<String>,
    /// Stop when no record came for this long (`None`: follow forever).
    pub until_idle: Option<Duration>,
    /// Acknowledge records ([`NatsAcker`]); without, nothing is acknowledged
    /// and a durable consumer would deliver everything again next time.
    pub ack: bool,
}

/// One delivered message.
pub struct Delivered<'a> {
    /// Stream sequence number.
    pub seq: u64,
    /// Subject.
    pub subject: &'a str,
    /// Payload (one record).
    pub payload: &'a [u8],
}

/// What the source produced.
pub enum Next<'a> {
    /// A message.
    Message(Delivered<'a>),
    /// None right now (only when not waiting).
    Idle,
    /// Idle for the configured time, or the consumer ended.
    End,
}

struct AckShared {
    runtime: Arc<tokio::runtime::Runtime>,
    client: async_nats::Client,
    /// Delivered, not yet acknowledged: stream sequence and the ack handle.
    pending: Mutex<VecDeque<(u64, jetstream::message::Acker)>>,
    acked: AtomicU64,
}

/// Acknowledges delivered records up to a stream sequence number. The
/// consumer acknowledges cumulatively (`AckPolicy::All`): the acknowledgement
/// of a record covers all before it, so one message per batch is enough.
#[derive(Clone)]
pub struct NatsAcker {
    shared: Arc<AckShared>,
}

impl NatsAcker {
    /// Acknowledges every delivered record with a sequence number up to `seq`.
    pub fn ack_through(&self, seq: u64) -> io::Result<()> {
        let last = {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut last = None;
            while pending.front().is_some_and(|(s, _)| *s <= seq) {
                last = pending.pop_front();
            }
            last
        };
        let Some((s, acker)) = last else {
            return Ok(());
        };
        self.shared
            .runtime
            .block_on(acker.ack())
            .map_err(|e| io::Error::other(format!("acknowledging stream sequence {s}: {e}")))?;
        self.shared.acked.store(s, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the acknowledgements sent have reached the server.
    pub fn flush(&self) -> io::Result<()> {
        let client = self.shared.client.clone();
        self.shared
            .runtime
            .block_on(
                async move { tokio::time::timeout(Duration::from_secs(10), client.flush()).await },
            )
            .map_err(|_| io::Error::other("flushing acknowledgements: timed out"))?
            .map_err(|e| io::Error::other(format!("flushing acknowledgements: {e}")))
    }

    /// The highest stream sequence acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Relaxed)
    }

    /// A pipeline tap that acknowledges each batch once it was applied to
    /// the model (the pipeline hands batches to taps after applying them).
    pub fn tap(&self) -> Box<dyn LineTap> {
        Box::new(AckTap {
            acker: self.clone(),
        })
    }
}

struct AckTap {
    acker: NatsAcker,
}

impl LineTap for AckTap {
    fn write_batch(&mut self, batch: &TapBatch<'_>) -> io::Result<()> {
        match batch.records().map(|(n, _)| n).max() {
            Some(n) => self.acker.ack_through(n),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.acker.flush()
    }
}

/// Records of a JetStream stream, through a pull consumer, as a pipeline
/// source. A record's line number is its stream sequence number. Delivery
/// is at least once: a record delivered again (its acknowledgement came too
/// late) has a sequence number already seen and is skipped, so the pipeline
/// sees every record once, in stream order.
pub struct NatsSource {
    runtime: Arc<tokio::runtime::Runtime>,
    messages: Option<consumer::pull::Stream>,
    acker: NatsAcker,
    ack: bool,
    until_idle: Option<Duration>,
    name: String,
    stream: String,
    current: Bytes,
    subject: String,
    last_seq: u64,
    delivered: u64,
    redelivered: u64,
    reported_error: Option<Instant>,
}

impl NatsSource {
    /// Connects to `target`'s server and starts consuming `options.subject`
    /// from the stream named in the address (or the one that captures the subject).
    pub fn open(target: &NatsTarget, options: &SourceOptions) -> Result<NatsSource, FleetError> {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("tsem-nats")
                .enable_all()
                .build()
                .map_err(|e| FleetError::Nats(format!("runtime: {e}")))?,
        );
        let (client, stream_name, messages) = runtime
            .block_on(open_consumer(target, options))
            .map_err(FleetError::Nats)?;
        let acker = NatsAcker {
            shared: Arc::new(AckShared {
                runtime: Arc::clone(&runtime),
                client,
                pending: Mutex::new(VecDeque::new()),
                acked: AtomicU64::new(0),
            }),
        };
        Ok(NatsSource {
            runtime,
            messages: Some(messages),
            acker,
            ack: options.ack,
            until_idle: options.until_idle,
            name: format!("nats://{}/{}", target.server, options.subject),
            stream: stream_name,
            current: Bytes::new(),
            subject: String::new(),
            last_seq: 0,
            delivered: 0,
            redelivered: 0,
            reported_error: None,
        })
    }

    /// The acknowledging side (share it with the pipeline's tap or the archive writer).
    pub fn acker(&self) -> NatsAcker {
        self.acker.clone()
    }

    /// The stream read.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Records delivered so far (not counting redeliveries).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Redeliveries skipped.
    pub fn redelivered(&self) -> u64 {
        self.redelivered
    }

    /// The next message; with `wait == false`, [`Next::Idle`] when none is there now.
    pub fn next_message(&mut self, wait: bool) -> io::Result<Next<'_>> {
        let forever = Duration::from_secs(3600);
        loop {
            let Some(messages) = self.messages.as_mut() else {
                return Ok(Next::End);
            };
            let timeout = if wait {
                self.until_idle.unwrap_or(forever)
            } else {
                Duration::ZERO
            };
            let next = self
                .runtime
                .block_on(async { tokio::time::timeout(timeout, messages.next()).await });
            let message = match next {
                Err(_) if !wait => return Ok(Next::Idle),
                Err(_) if self.until_idle.is_some() => return Ok(Next::End),
                Err(_) => continue,
                Ok(None) => return Ok(Next::End),
                Ok(Some(Err(e))) => {
                    use consumer::pull::MessagesErrorKind as K;
                    match e.kind() {
                        K::ConsumerDeleted | K::PushBasedConsumer => {
                            return Err(io::Error::other(format!("{}: {e}", self.name)))
                        }
                        // Heartbeats missed while the server restarts: the
                        // client reconnects and the consumer goes on.
                        _ => {
                            if self
                                .reported_error
                                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                            {
                                tracing::warn!("{}: {e} (still trying)", self.name);
                                self.reported_error = Some(Instant::now());
                            }
                            continue;
                        }
                    }
                }
                Ok(Some(Ok(m))) => m,
            };
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "{}: a message without JetStream metadata: {e}",
                        self.name
                    )))
                }
            };
            if seq <= self.last_seq {
                self.redelivered += 1;
                continue;
            }
            self.last_seq = seq;
            self.delivered += 1;
            let (message, acker) = message.split();
            if self.ack {
                self.acker
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back((seq, acker));
            }
            self.current = message.payload;
            self.subject.clear();
            self.subject.push_str(message.subject.as_str());
            return Ok(Next::Message(Delivered {
                seq,
                subject: &self.subject,
                payload: &self.current,
            }));
        }
    }
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        // The pull stream's tasks live in the runtime: end them inside it.
        let _guard = self.runtime.enter();
        drop(self.messages.take());
    }
}

impl RecordSource for NatsSource {
    fn fetch(&mut self, wait: bool) -> io::Result<Fetch<'_>> {
        let max = tsem_ingest::DEFAULT_MAX_RECORD_LEN;
        Ok(match self.next_message(wait)? {
            Next::Message(m) if m.payload.len() > max => Fetch::Oversized {
                number: m.seq,
                len: m.payload.len(),
            },
            Next::Message(m) => Fetch::Record {
                number: m.seq,
                bytes: m.payload,
            },
            Next::Idle => Fetch::Idle,
            Next::End => Fetch::End,
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

async fn open_consumer(
    target: &NatsTarget,
    options: &SourceOptions,
) -> Result<(async_nats::Client, String, consumer::pull::Stream), String> {
    let client = connect(target, false).await?;
    let js = context(client.clone(), target, 1024);
    let stream_name = match &target.stream {
        Some(s) => s.clone(),
        None => js
            .stream_by_subject(options.subject.as_str())
            .await
            .map_err(|e| format!("no stream captures {}: {e}", options.subject))?,
    };
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| format!("stream {stream_name}: {e}"))?;
    let config = consumer::pull::Config {
        durable_name: options.durable.clone(),
        filter_subject: options.subject.clone(),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: if options.ack {
            consumer::AckPolicy::All
        } else {
            consumer::AckPolicy::None
        },
        ack_wait: target.ack_wait,
        // Records are acknowledged a batch at a time after they are applied:
        // let many be in flight so that delivery never waits on that.
        max_ack_pending: 1 << 20,
        inactive_threshold: if options.durable.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        },
        ..consumer::pull::Config::default()
    };
    let consumer: consumer::PullConsumer = match &options.durable {
        Some(name) => stream
            .get_or_create_consumer(name, config)
            .await
            .map_err(|e| format!("consumer {name} on {stream_name}: {e}"))?,
        None => stream
            .create_consumer(config)
            .await
            .map_err(|e| format!("consumer on {stream_name}: {e}"))?,
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .map_err(|e| format!("consuming {}: {e}", options.subject))?;
    Ok((client, stream_name, messages))
}

/// The state of a stream: message count, bytes, first and last sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamState {
    /// Stream name.
    pub name: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence number.
    pub first_seq: u64,
    /// Last sequence number.
    pub last_seq: u64,
}

/// Reads the state of `stream` (blocking; for reports and tests).
pub fn stream_state(target: &NatsTarget, stream: &str) -> Result<StreamState, FleetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FleetError::Nats(format!("runtime: {e}")))?;
    runtime
        .block_on(async {
            let client = connect(target, false).await?;
            let js = context(client, target, 16);
            let mut s = js
                .get_stream(stream)
                .await
                .map_err(|e| format!("stream {stream}: {e}"))?;
            let info = s
                .info()
                .await
                .map_err(|e| format!("stream {stream}: {e}"))?;
            Ok(StreamState {
                name: stream.to_owned(),
                messages: info.state.messages,
                bytes: info.state.bytes,
                first_seq: info.state.first_sequence,
                last_seq: info.state.last_sequence,
            })
        })
        .map_err(FleetError::Nats)
}

/// Acknowledges stream messages only once the records they carried are
/// durable elsewhere (an archive): the server keeps, and sends again after a
/// restart, every message whose record a crash could still lose.
pub struct AckWhenDurable {
    acker: NatsAcker,
    /// (local sequence number, stream sequence number), in order.
    waiting: VecDeque<(u64, u64)>,
}

impl AckWhenDurable {
    /// Acknowledges through `acker`.
    pub fn new(acker: NatsAcker) -> AckWhenDurable {
        AckWhenDurable {
            acker,
            waiting: VecDeque::new(),
        }
    }

    /// Notes that the message of stream sequence `stream_seq` became the
    /// record of local sequence `local_seq`, not yet durable.
    pub fn wait(&mut self, local_seq: u64, stream_seq: u64) {
        self.waiting.push_back((local_seq, stream_seq));
    }

    /// Whether no record waits to become durable.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Acknowledges every message whose record is now durable (local
    /// sequence numbers up to `durable`).
    pub fn release_through(&mut self, durable: u64) -> io::Result<()> {
        let mut last = None;
        while self
            .waiting
            .front()
            .is_some_and(|&(local, _)| local <= durable)
        {
            last = self.waiting.pop_front().map(|(_, stream)| stream);
        }
        match last {
            Some(stream) => self.acker.ack_through(stream),
            None => Ok(()),
        }
    }

    /// Waits until the server has every acknowledgement sent.
    pub fn flush(&self) -> io::Result<()> {
        self.acker.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_stream_names_are_valid() {
        assert_eq!(default_stream("tsem"), "TSEM");
        assert_eq!(default_stream("t-1x"), "T_1X");
    }
}
