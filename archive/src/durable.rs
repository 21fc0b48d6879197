//! The writer as the pipeline and `archive write` use it: a background thread
//! makes records durable within the sync interval even when no more records
//! come, and closes segments that grew old while the input was idle.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::writer::{ArchiveWriter, WriterOptions};
use crate::ArchiveError;

/// Called with the durable sequence number each time it advances.
pub type DurableHook = Box<dyn FnMut(u64) + Send>;

struct State {
    writer: Option<ArchiveWriter>,
    last_sync: Instant,
    stop: bool,
    /// A failure of the background thread, reported by the next call.
    error: Option<ArchiveError>,
    hook: Option<DurableHook>,
    reported: u64,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// An [`ArchiveWriter`] with a sync thread.
///
/// Durability: a record handed to [`append`](Self::append) is durable (its
/// zstd block written and `fdatasync`ed) at most `sync_interval` later plus
/// the time of the sync itself; while records keep coming, syncs happen at
/// batch boundaries at most once per interval, so the cost does not grow with
/// the rate. A record is *acknowledged* once the durable sequence number
/// ([`durable_seq`](Self::durable_seq), the hook) covers it; a crash
/// (of the process or the machine) loses only records not yet acknowledged,
/// all of them in the open segment.
pub struct DurableWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    interval: Duration,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the writer as it was; the data
    // on disk is consistent at every step, so carry on.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn sync_now(state: &mut State) -> Result<(), ArchiveError> {
    let Some(w) = state.writer.as_mut() else {
        return Ok(());
    };
    let durable = w.sync()?;
    state.last_sync = Instant::now();
    report(state, durable);
    Ok(())
}

fn close_now(state: &mut State) -> Result<(), ArchiveError> {
    let Some(w) = state.writer.as_mut() else {
        return Ok(());
    };
    if let Some(entry) = w.rotate_if_old()? {
        state.last_sync = Instant::now();
        report(state, entry.last_seq);
    }
    Ok(())
}

fn report(state: &mut State, durable: u64) {
    if durable > state.reported {
        state.reported = durable;
        if let Some(hook) = state.hook.as_mut() {
            hook(durable);
        }
    }
}

impl DurableWriter {
    /// Opens the archive in `dir` and starts the sync thread.
    pub fn open(dir: &std::path::Path, options: WriterOptions) -> Result<Self, ArchiveError> {
        let interval = options.sync_interval.max(Duration::from_millis(1));
        let segment_age = options.segment_age;
        let writer = ArchiveWriter::open(dir, options)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                reported: writer.durable_seq(),
                writer: Some(writer),
                last_sync: Instant::now(),
                stop: false,
                error: None,
                hook: None,
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tsem-archive-sync".into())
                .spawn(move || sync_loop(&shared, interval, segment_age))
                .map_err(|e| ArchiveError::io(dir, e))?
        };
        Ok(DurableWriter {
            shared,
            thread: Some(thread),
            interval,
        })
    }

    /// Calls `hook` with the durable sequence number each time it advances.
    pub fn on_durable(&self, hook: DurableHook) {
        lock(&self.shared).hook = Some(hook);
    }

    /// What opening found (a recovered segment, ...).
    pub fn open_report(&self) -> Option<crate::writer::OpenReport> {
        lock(&self.shared)
            .writer
            .as_ref()
            .map(|w| w.open_report().clone())
    }

    /// Appends records in order.
    pub fn append<'a>(
        &self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), ArchiveError> {
        let mut state = lock(&self.shared);
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let Some(w) = state.writer.as_mut() else {
            return Err(ArchiveError::Finished);
        };
        if let Some(entry) = w.rotate_if_old()? {
            let last = entry.last_seq;
            report(&mut state, last);
        }
        let Some(w) = state.writer.as_mut() else {
            return Err(ArchiveError::Finished);
        };
        for r in records {
            w.append(r)?;
        }
        if state.last_sync.elapsed() >= self.interval {
            sync_now(&mut state)?;
        }
        Ok(())
    }

    /// The last durable sequence number.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.shared).reported
    }

    /// Stops the sync thread, closes the open segment (it gets its index
    /// entry) and releases the archive; returns the last sequence number.
    pub fn finish(mut self) -> Result<u64, ArchiveError> {
        self.stop_thread();
        let mut state = lock(&self.shared);
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let Some(w) = state.writer.take() else {
            return Err(ArchiveError::Finished);
        };
        let last = w.finish()?;
        report(&mut state, last);
        Ok(last)
    }

    fn stop_thread(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DurableWriter {
    /// Without [`finish`](Self::finish) (an error elsewhere), what was
    /// appended is still synced; the segment stays open and the next writer
    /// closes it.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_thread();
            let _ = sync_now(&mut lock(&self.shared));
        }
    }
}

fn sync_loop(shared: &Shared, interval: Duration, segment_age: Duration) {
    let mut state = lock(shared);
    loop {
        if state.stop {
            return;
        }
        let now = Instant::now();
        let (unsynced, age) = match state.writer.as_ref() {
            Some(w) => (w.has_unsynced(), w.open_age()),
            None => return,
        };
        let result = if age.is_some_and(|a| a >= segment_age) {
            close_now(&mut state)
        } else if unsynced && now.duration_since(state.last_sync) >= interval {
            sync_now(&mut state)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            state.error = Some(e);
            return;
        }
        // Sleep until the next sync or segment age deadline.
        let mut wait = interval;
        if unsynced {
            wait = (state.last_sync + interval).saturating_duration_since(Instant::now());
        }
        if let Some(age) = state.writer.as_ref().and_then(|w| w.open_age()) {
            wait = wait.min(segment_age.saturating_sub(age));
        }
        let wait = wait.max(Duration::from_millis(1));
        state = shared
            .wake
            .wait_timeout(state, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn idle_records_become_durable_within_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let w = DurableWriter::open(
            dir.path(),
            WriterOptions {
                sync_interval: Duration::from_millis(20),
                ..WriterOptions::default()
            },
        )
        .unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let s = Arc::clone(&seen);
        w.on_durable(Box::new(move |n| s.store(n, Ordering::SeqCst)));
        w.append([&b"{}"[..], b"{}"]).unwrap();
        let t0 = Instant::now();
        while seen.load(Ordering::SeqCst) < 2 {
            assert!(t0.elapsed() < Duration::from_secs(5), "never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.durable_seq(), 2);
        assert_eq!(w.finish().unwrap(), 2);
    }

    #[test]
    fn old_segments_are_closed_while_idle() {
        let dir = tempfile::tempdir().unwrap();
        let w = DurableWriter::open(
            dir.path(),
            WriterOptions {
                segment_age: Duration::from_millis(30),
                ..WriterOptions::default()
            },
        )
        .unwrap();
        w.append([&b"{}"[..]]).unwrap();
        let t0 = Instant::now();
        while crate::reader::Archive::open(dir.path())
            .unwrap()
            .entries()
            .is_empty()
        {
            assert!(t0.elapsed() < Duration::from_secs(5), "never rotated");
            std::thread::sleep(Duration::from_millis(5));
        }
        w.append([&b"{}"[..]]).unwrap();
        assert_eq!(w.finish().unwrap(), 2);
        assert_eq!(
            crate::reader::Archive::open(dir.path())
                .unwrap()
                .entries()
                .len(),
            2
        );
    }
}
