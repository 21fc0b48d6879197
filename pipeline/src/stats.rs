//! Counters and latency histograms of a pipeline run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tsem_ingest::event_type::NAMES;
use tsem_ingest::ExportKind;

use crate::sink::ModelSink;

fn histogram() -> Histogram<u64> {
    // 1 ns/µs .. 1 hour with 2 significant digits (percentiles within 1 %):
    // 3 digits made each histogram 360 KiB, and a run has ten of them to
    // allocate, zero and merge (milliseconds of start-up, tens under
    // emulation, for precision nobody reads). Creation cannot fail for
    // these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 2)
        .unwrap_or_else(|_| Histogram::new(2).expect("histogram"))
}

/// Per-worker measurements, merged at the end of a run.
pub struct WorkerStats {
    /// Parse+map time per event (ns).
    pub map_ns: Histogram<u64>,
    /// From the batch being read to the verdict written (µs).
    pub verdict_us: Histogram<u64>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            map_ns: histogram(),
            verdict_us: histogram(),
        }
    }
}

impl WorkerStats {
    pub(crate) fn record_map(&mut self, batch: Duration, events: u64) {
        let per = (batch.as_nanos() as u64 / events).max(1);
        let _ = self.map_ns.record_n(per, events);
    }
    pub(crate) fn record_verdict(&mut self, since_read: Duration) {
        let _ = self
            .verdict_us
            .record((since_read.as_micros() as u64).max(1));
    }
}

/// Everything counted and measured in one run.
pub struct Stats {
    /// Worker threads.
    pub workers: usize,
    /// Lines applied to the model (records of any kind, not blank lines).
    pub records: u64,
    /// Records per export kind: aggregate, event, async_event, log, and bare trajectory lines.
    pub by_export: [u64; 5],
    /// Events per event type (index = table row; 0 = names outside the table).
    pub by_type: [u64; 89],
    /// Bad lines.
    pub errors: u64,
    /// Events the kernel numbered but nobody received (gaps in `event.number`).
    pub lost_events: u64,
    /// Times the reader found the work queue full (back-pressure).
    pub stalls: u64,
    /// Times the sequencer found the archive queue full (slow archive storage).
    pub tap_stalls: u64,
    /// Deepest work queue seen.
    pub max_queue_depth: u64,
    /// Synchronous events that could not be answered (no pid).
    pub unanswerable: u64,
    /// Failed verdict writes.
    pub verdict_errors: u64,
    /// Verdicts written.
    pub trusted: u64,
    /// Verdicts written.
    pub untrusted: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Parse+map per event (ns), all workers.
    pub map_ns: Histogram<u64>,
    /// Read to verdict written (µs).
    pub verdict_us: Histogram<u64>,
    /// Sequencer time per batch (µs).
    pub apply_us: Histogram<u64>,
    /// Read to applied to the model (µs), per batch.
    pub read_to_apply_us: Histogram<u64>,
}

impl Stats {
    pub(crate) fn new(workers: usize) -> Stats {
        Stats {
            workers,
            records: 0,
            by_export: [0; 5],
            by_type: [0; 89],
            errors: 0,
            lost_events: 0,
            stalls: 0,
            tap_stalls: 0,
            max_queue_depth: 0,
            unanswerable: 0,
            verdict_errors: 0,
            trusted: 0,
            untrusted: 0,
            elapsed: Duration::ZERO,
            map_ns: histogram(),
            verdict_us: histogram(),
            apply_us: histogram(),
            read_to_apply_us: histogram(),
        }
    }

    pub(crate) fn count_export(&mut self, kind: Option<ExportKind>) {
        let i = match kind {
            Some(ExportKind::Aggregate) => 0,
            Some(ExportKind::Event) => 1,
            Some(ExportKind::AsyncEvent) => 2,
            Some(ExportKind::Log) => 3,
            None => 4,
        };
        self.by_export[i] += 1;
        self.records += 1;
    }

    pub(crate) fn record_apply(&mut self, apply: Duration, since_read: Duration) {
        let _ = self.apply_us.record((apply.as_micros() as u64).max(1));
        let _ = self
            .read_to_apply_us
            .record((since_read.as_micros() as u64).max(1));
    }

    pub(crate) fn merge_worker(&mut self, w: &WorkerStats) {
        let _ = self.map_ns.add(&w.map_ns);
        let _ = self.verdict_us.add(&w.verdict_us);
    }

    /// Records per second over the run.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A one-line progress report for `--stats-interval`.
    pub fn progress_line(&self, sink: &ModelSink, elapsed: Duration, queued: usize) -> String {
        format!(
            "tsem-stream: {} records ({:.0}/s), {} points, {} forensics, {} errors, queue {} (max {}), stalls {}",
            self.records,
            self.records as f64 / elapsed.as_secs_f64().max(1e-9),
            sink.model().points().len(),
            sink.model().forensics_points(),
            self.errors,
            queued,
            self.max_queue_depth,
            self.stalls
        )
    }

    /// The statistics as JSON for `--summary json`.
    pub fn to_json(&self) -> Value {
        let pct = |h: &Histogram<u64>| {
            json!({
                "count": h.len(),
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            })
        };
        let mut types = serde_json::Map::new();
        for (i, n) in self.by_type.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = if i == 0 {
                "(unknown names)"
            } else {
                NAMES[i - 1]
            };
            types.insert(name.to_owned(), json!(n));
        }
        json!({
            "workers": self.workers,
            "records": self.records,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "records_per_s": self.rate(),
            "by_export_type": {
                "aggregate": self.by_export[0], "event": self.by_export[1],
                "async_event": self.by_export[2], "log": self.by_export[3], "trajectory": self.by_export[4],
            },
            "by_event_type": types,
            "lost_events": self.lost_events,
            "backpressure_stalls": self.stalls,
            "archive_stalls": self.tap_stalls,
            "max_queue_depth": self.max_queue_depth,
            "verdicts": { "trusted": self.trusted, "untrusted": self.untrusted,
                          "unanswerable": self.unanswerable, "write_errors": self.verdict_errors },
            "latency": {
                "map_ns_per_event": pct(&self.map_ns),
                "read_to_verdict_us": pct(&self.verdict_us),
                "apply_us_per_batch": pct(&self.apply_us),
                "read_to_apply_us": pct(&self.read_to_apply_us),
            },
        })
    }
}
