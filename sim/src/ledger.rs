//! Book-keeping of the simulated kernel: which synchronous events wait for a
//! verdict, and what the TMA wrote to `control` (kernel-interface.md K2, K5).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Most non-verdict commands kept for the report (a TMA sends a handful).
const MAX_COMMANDS: usize = 10_000;

/// The simulated pid of the event on input line `line` (the tnum is the line
/// number itself, so every event has a unique (pid, tnum)).
pub fn pid_of(line: u64) -> u64 {
    SIMULATED_PIDS.start + line % (SIMULATED_PIDS.end - SIMULATED_PIDS.start)
}

/// Every pid [`pid_of`] gives: the simulated tasks of the namespace.
pub const SIMULATED_PIDS: std::ops::Range<u64> = 1000..1097;

/// How a verdict names its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRef {
    /// `tnum=N` (2025 kernels): one exact event.
    Tnum(u64),
    /// `key=HEX` (2024 kernels): any waiting event of the pid, oldest first.
    Key,
}

/// One command written to `control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `trusted …` / `untrusted …`.
    Verdict {
        /// True for `trusted`.
        trusted: bool,
        /// `pid=`.
        pid: u64,
        /// `tnum=` or `key=`.
        task: TaskRef,
    },
    /// A verdict without a usable `pid=` and `tnum=`/`key=`.
    Malformed(String),
    /// Anything else (`enforce`, `seal`, `external …`).
    Other(String),
}

/// Parses one command line (without its `\n`).
pub fn parse_command(line: &[u8]) -> Command {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let mut words = text.split_ascii_whitespace();
    let trusted = match words.next() {
        Some("trusted") => true,
        Some("untrusted") => false,
        _ => return Command::Other(text.to_owned()),
    };
    let (mut pid, mut task) = (None, None);
    for w in words {
        if let Some(v) = w.strip_prefix("pid=") {
            pid = v.parse::<u64>().ok();
        } else if let Some(v) = w.strip_prefix("tnum=") {
            task = v.parse::<u64>().ok().map(TaskRef::Tnum);
        } else if let Some(v) = w.strip_prefix("key=") {
            if !v.is_empty() && v.bytes().all(|c| c.is_ascii_hexdigit()) {
                task = Some(TaskRef::Key);
            }
        }
    }
    match (pid, task) {
        (Some(pid), Some(task)) => Command::Verdict { trusted, pid, task },
        _ => Command::Malformed(text.to_owned()),
    }
}

/// What became of one input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not sent (empty, skipped, or not yet reached).
    None,
    /// Sent as `async_event`: nobody waits.
    Async,
    /// Sent as `event`, waiting for its verdict.
    Pending,
    /// Waited longer than the verdict timeout, still unanswered.
    Expired,
    /// Answered.
    Answered,
}

/// Counters and samples, read by the report.
pub struct Tally {
    /// Latency from sending an event to reading its verdict, in µs.
    pub hist: Histogram<u64>,
    /// First verdicts that said `trusted`.
    pub trusted: u64,
    /// First verdicts that said `untrusted`.
    pub untrusted: u64,
    /// Second and later verdicts for one event.
    pub duplicates: u64,
    /// Verdicts for no waiting event (unknown, asynchronous, wrong pid, malformed).
    pub unexpected: u64,
    /// Events whose verdict took longer than the timeout (answered late or never).
    pub timeouts: u64,
    /// Verdicts that came after the timeout.
    pub late: u64,
    /// Input line numbers answered `untrusted`.
    pub untrusted_lines: Vec<u64>,
    /// Non-verdict commands, in arrival order.
    pub commands: Vec<String>,
    /// Times the sender waited because `max_outstanding` events were pending.
    pub stalls: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // One hour in µs with 3 significant digits: constant, valid bounds.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            trusted: 0,
            untrusted: 0,
            duplicates: 0,
            unexpected: 0,
            timeouts: 0,
            late: 0,
            untrusted_lines: Vec::new(),
            commands: Vec::new(),
            stalls: 0,
        }
    }
}

struct State {
    slots: Vec<Slot>,
    /// tnum -> send time; tnums grow with sending order, so the first entry is the oldest.
    pending: BTreeMap<u64, Instant>,
    /// Expired events (tnum -> send time) that may still be answered late.
    expired: BTreeMap<u64, Instant>,
    /// pid -> events of that pid answered (for duplicates of `key=` verdicts).
    answered_by_pid: HashMap<u64, u64>,
    tally: Tally,
}

/// Shared between the sender (main thread) and the control reader thread.
pub struct Ledger {
    state: Mutex<State>,
    changed: Condvar,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger {
            state: Mutex::new(State {
                slots: Vec::new(),
                pending: BTreeMap::new(),
                expired: BTreeMap::new(),
                answered_by_pid: HashMap::new(),
                tally: Tally::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in the other thread must not hide the report: the data
        // stays consistent (every update is a few plain assignments).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that line `line` is being sent now, synchronous or not.
    /// Call before writing the record: the verdict may come back at once.
    pub fn register(&self, line: u64, sync: bool, at: Instant) {
        let mut st = self.lock();
        let idx = line as usize;
        if st.slots.len() <= idx {
            st.slots.resize(idx + 1, Slot::None);
        }
        if sync {
            st.slots[idx] = Slot::Pending;
            st.pending.insert(line, at);
        } else {
            st.slots[idx] = Slot::Async;
        }
    }

    /// Applies commands read at `at`, then wakes the sender.
    pub fn apply(&self, commands: impl IntoIterator<Item = Command>, at: Instant) {
        let mut st = self.lock();
        for c in commands {
            match c {
                Command::Verdict { trusted, pid, task } => st.verdict(trusted, pid, task, at),
                Command::Malformed(text) => {
                    st.tally.unexpected += 1;
                    st.push_command(text);
                }
                Command::Other(text) => st.push_command(text),
            }
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Waits until fewer than `max` events are pending, expiring those older
    /// than `timeout`; counts a stall when it had to wait.
    pub fn wait_for_slot(&self, max: usize, timeout: Duration) {
        let mut st = self.lock();
        let mut stalled = false;
        loop {
            let next = st.expire(Instant::now(), timeout);
            if st.pending.len() < max {
                break;
            }
            if !stalled {
                stalled = true;
                st.tally.stalls += 1;
            }
            st = self.wait(st, next);
        }
    }

    /// Waits at most `timeout` for a non-verdict command that `matches`;
    /// returns the first such command received.
    pub fn wait_for_command(
        &self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.lock();
        loop {
            if let Some(c) = st.tally.commands.iter().find(|c| matches(c)) {
                return Some(c.clone());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            st = self.wait(st, deadline);
        }
    }

    /// Waits until no event is pending (each gets `timeout` from its sending).
    pub fn drain(&self, timeout: Duration) {
        let mut st = self.lock();
        loop {
            let next = st.expire(Instant::now(), timeout);
            if st.pending.is_empty() {
                return;
            }
            st = self.wait(st, next);
        }
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>, until: Option<Instant>) -> MutexGuard<'a, State> {
        // Bounded even without a deadline, so a missed wake-up costs at most this.
        let cap = Duration::from_millis(100);
        let d = until.map_or(cap, |u| {
            u.saturating_duration_since(Instant::now()).min(cap)
        });
        match self.changed.wait_timeout(st, d) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// Ends the book: returns the tally and the number of events never answered.
    pub fn finish(&self) -> (Tally, u64) {
        let mut st = self.lock();
        let missing = (st.pending.len() + st.expired.len()) as u64;
        (std::mem::replace(&mut st.tally, Tally::new()), missing)
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn push_command(&mut self, text: String) {
        if self.tally.commands.len() < MAX_COMMANDS {
            self.tally.commands.push(text);
        }
    }

    /// Moves pending events older than `timeout` to the expired set; returns
    /// when the oldest remaining one will expire.
    fn expire(&mut self, now: Instant, timeout: Duration) -> Option<Instant> {
        while let Some((&tnum, &sent)) = self.pending.first_key_value() {
            let due = sent.checked_add(timeout);
            match due {
                Some(due) if due > now => return Some(due),
                _ => {
                    self.pending.remove(&tnum);
                    self.expired.insert(tnum, sent);
                    self.slots[tnum as usize] = Slot::Expired;
                    self.tally.timeouts += 1;
                }
            }
        }
        None
    }

    fn verdict(&mut self, trusted: bool, pid: u64, task: TaskRef, at: Instant) {
        let tnum = match task {
            TaskRef::Tnum(t) => {
                if pid_of(t) != pid {
                    self.tally.unexpected += 1;
                    return;
                }
                t
            }
            TaskRef::Key => {
                // The 2024 protocol names only the pid: the oldest waiting
                // event of that pid, else the oldest expired one.
                let waiting =
                    |m: &BTreeMap<u64, Instant>| m.keys().copied().find(|&t| pid_of(t) == pid);
                match waiting(&self.pending).or_else(|| waiting(&self.expired)) {
                    Some(t) => t,
                    None => {
                        if self.answered_by_pid.get(&pid).copied().unwrap_or(0) > 0 {
                            self.tally.duplicates += 1;
                        } else {
                            self.tally.unexpected += 1;
                        }
                        return;
                    }
                }
            }
        };
        let slot = self.slots.get(tnum as usize).copied().unwrap_or(Slot::None);
        let sent = match slot {
            Slot::Pending => self.pending.remove(&tnum),
            Slot::Expired => {
                self.tally.late += 1;
                self.expired.remove(&tnum)
            }
            Slot::Answered => {
                self.tally.duplicates += 1;
                return;
            }
            Slot::None | Slot::Async => {
                self.tally.unexpected += 1;
                return;
            }
        };
        self.slots[tnum as usize] = Slot::Answered;
        *self.answered_by_pid.entry(pid).or_insert(0) += 1;
        if let Some(sent) = sent {
            let us = at.saturating_duration_since(sent).as_micros();
            self.tally
                .hist
                .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
        }
        if trusted {
            self.tally.trusted += 1;
        } else {
            self.tally.untrusted += 1;
            self.tally.untrusted_lines.push(tnum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn commands_are_awaited() {
        let l = Arc::new(Ledger::new());
        let t0 = Instant::now();
        assert_eq!(
            l.wait_for_command(|c| c.starts_with("external"), Duration::from_millis(20)),
            None
        );
        let l2 = Arc::clone(&l);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            l2.apply(
                [
                    Command::Other("enforce".into()),
                    Command::Other("external cache=4".into()),
                ],
                Instant::now(),
            );
        });
        assert_eq!(
            l.wait_for_command(|c| c.starts_with("external"), Duration::from_secs(10))
                .as_deref(),
            Some("external cache=4")
        );
        writer.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_command(b"trusted pid=1005 tnum=7"),
            Command::Verdict {
                trusted: true,
                pid: 1005,
                task: TaskRef::Tnum(7)
            }
        );
        assert_eq!(
            parse_command(b"untrusted pid=12 key=ab01\r"),
            Command::Verdict {
                trusted: false,
                pid: 12,
                task: TaskRef::Key
            }
        );
        assert_eq!(parse_command(b"enforce"), Command::Other("enforce".into()));
        assert_eq!(
            parse_command(b"trusted pid=x tnum=1"),
            Command::Malformed("trusted pid=x tnum=1".into())
        );
    }

    #[test]
    fn verdicts_are_matched_once() {
        let l = Ledger::new();
        let t0 = Instant::now();
        l.register(1, true, t0);
        l.register(2, false, t0);
        l.register(3, true, t0);
        let v = |trusted, line| Command::Verdict {
            trusted,
            pid: pid_of(line),
            task: TaskRef::Tnum(line),
        };
        l.apply(
            [v(true, 1), v(true, 1), v(true, 2), v(false, 3), v(true, 99)],
            t0 + Duration::from_micros(50),
        );
        // Wrong pid for an existing tnum.
        l.apply(
            [Command::Verdict {
                trusted: true,
                pid: 1,
                task: TaskRef::Tnum(3),
            }],
            t0,
        );
        l.drain(Duration::from_secs(1));
        let (t, missing) = l.finish();
        assert_eq!(
            (t.trusted, t.untrusted, t.duplicates, t.unexpected, missing),
            (1, 1, 1, 3, 0)
        );
        assert_eq!(t.untrusted_lines, vec![3]);
        assert_eq!(t.hist.len(), 2);
        assert_eq!(t.hist.max(), 50);
    }

    #[test]
    fn key_verdicts_take_the_oldest_event_of_the_pid() {
        let l = Ledger::new();
        let t0 = Instant::now();
        l.register(5, true, t0);
        l.register(5 + 97, true, t0);
        let k = |pid| Command::Verdict {
            trusted: true,
            pid,
            task: TaskRef::Key,
        };
        l.apply([k(pid_of(5))], t0);
        {
            let st = l.lock();
            assert!(st.pending.contains_key(&102) && !st.pending.contains_key(&5));
        }
        l.apply([k(pid_of(5)), k(pid_of(5)), k(4242)], t0);
        let (t, missing) = l.finish();
        assert_eq!(
            (t.trusted, t.duplicates, t.unexpected, missing),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn unanswered_events_expire_and_late_answers_count() {
        let l = Ledger::new();
        let t0 = Instant::now();
        l.register(1, true, t0);
        l.register(2, true, t0);
        l.drain(Duration::from_millis(20));
        let v = |line| Command::Verdict {
            trusted: true,
            pid: pid_of(line),
            task: TaskRef::Tnum(line),
        };
        l.apply([v(2)], Instant::now());
        let (t, missing) = l.finish();
        assert_eq!((t.timeouts, t.late, t.trusted, missing), (2, 1, 1, 1));
    }

    #[test]
    fn the_sender_stalls_at_the_limit() {
        let l = std::sync::Arc::new(Ledger::new());
        let t0 = Instant::now();
        l.register(1, true, t0);
        l.register(2, true, t0);
        let answer = {
            let l = l.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                l.apply(
                    [Command::Verdict {
                        trusted: true,
                        pid: pid_of(1),
                        task: TaskRef::Tnum(1),
                    }],
                    Instant::now(),
                );
            })
        };
        l.wait_for_slot(2, Duration::from_secs(10));
        answer.join().unwrap();
        let (t, missing) = l.finish();
        assert_eq!((t.stalls, t.trusted, t.timeouts, missing), (1, 1, 0, 1));
    }
}
