//! `sim --kernel v4`: the simulated securityfs tree as a FUSE filesystem,
//! so that the simulator knows *who* reads and writes, and refuses what the
//! v4 kernel refuses (kernel-interface.md K6).
//!
//! A FIFO cannot tell its callers apart, so the FIFO simulator accepted
//! process structures that hang on the real kernel. Every FUSE request
//! carries the calling thread's id; with `/proc` ([`super::procfs`]) that is
//! enough to play the v4 rules:
//!
//! 1. `external key=HEX` (64 hex digits; a plain `external` gets `EINVAL`)
//!    is written by a task C, whose namespace becomes the new one. The
//!    kernel records C's `real_parent`, the exact thread that forked C, as
//!    the namespace's TMA (`namespace.c allocate_external`).
//! 2. `id` shows the *reader's* namespace (0 in the root namespace).
//! 3. `enforce` applies to the *writer's* namespace (`fs.c config_context`):
//!    written from the root namespace it is accepted but leaves the workload
//!    unenforced.
//! 4. A read of `external_tma/<id>` dequeues from the *reader's* namespace
//!    (`export.c tsem_export_show`): a reader in the root namespace always
//!    gets `ENODATA`, and its `poll` returns at once (`export_poll` returns
//!    `-ENOENT` as an event mask, which `poll(2)` reports as
//!    `POLLERR|POLLHUP`).
//! 5. `trusted|untrusted pid=P key=HEX` is accepted only from the TMA thread
//!    of P's namespace with the right key; otherwise `EINVAL`, the line
//!    "tsem: Invalid process release request." in the kernel log (here: on
//!    standard error), and the task stays asleep (here: its verdict stays
//!    missing).
//!
//! Namespace membership: C and every task forked below C after `external`.
//! The simulator decides it from the calling thread: C's own thread, the
//! threads of C's process when C is its main thread, and every process
//! whose chain of parents (`PPid`) reaches C's process while C lives. A task
//! that was reparented away from below C (C exited, no subreaper) is lost;
//! the v4 monitor is a subreaper that outlives the namespace's tasks, so
//! this does not happen with it.
//!
//! **Approximation.** `/proc` gives a thread's parent *process*, not the
//! thread that forked it. The simulator takes as the TMA exactly the thread
//! whose id equals C's `PPid`: the parent's main thread. That is stricter
//! than the kernel when a TMA forks C from another thread (the kernel would
//! accept that thread's verdicts, the simulator refuses them); the
//! orchestrator forks the monitor from its main thread, before it has any
//! other, so for it both agree.
//!
//! The export file keeps the kernel's read semantics (`seq_file` with
//! `single_open`, kernel-interface.md K3): a read at offset 0 dequeues one record and
//! returns as much of it as fits, reads without a seek return the rest and
//! then 0, and an empty queue fails with `ENODATA`. Its `poll` reports
//! `POLLIN` when a record was queued since the last poll (`have_event`).
//! Every file is opened with `FOPEN_DIRECT_IO`, so that each read reaches
//! the simulator (no page cache) and answers the reader who asked.
//!
//! What FUSE changes for a reader: `fstatfs` reports FUSE's magic, not
//! securityfs's, so `tsem_ingest::export::ExportReader` takes the file for
//! a stream (a read of 0 bytes after a record ends its input); readers that
//! read at offset 0 and seek back after each record (Quixote, the v4
//! monitor of `run -P`) see exactly the kernel's behaviour.
//!
//! The simulator plays one namespace: a second `external` gets `EOPNOTSUPP`
//! (the kernel would create another one), as do `internal` and `export`.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    BackgroundSession, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenAccMode, OpenFlags, PollEvents, PollFlags,
    PollNotifier, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyPoll, ReplyWrite, Request, Session, SessionACL, TimeOrNow, WriteFlags,
};
use serde::Serialize;

use super::ledger::{Command, Ledger, TaskRef, SIMULATED_PIDS};
use super::procfs::{self, Process};
use super::SimError;

/// The longest command `control` takes: `write_control` copies into a
/// 128-byte buffer and refuses more than 127 bytes [K-v4 fs.c].
const MAX_COMMAND: usize = 127;

/// Hex digits of a key: `hex2bin` of the writer's digest size, and the
/// TMA writes from the root namespace (SHA-256) [K-v4 namespace.c].
const KEY_DIGITS: usize = 64;

/// Records queued before the sender waits for the TMA to read. The kernel
/// has no such bound for sleeping tasks; it only stands for a workload that
/// runs no faster than its events are read.
const QUEUE_LIMIT: usize = 1024;

/// Examples kept per kind of refusal.
const EXAMPLES_PER_KIND: u64 = 3;

/// Refused verdicts logged on standard error (the kernel log line).
const MAX_LOGGED: u64 = 20;

const INO_ROOT: u64 = 1;
const INO_CONTROL: u64 = 2;
const INO_ID: u64 = 3;
const INO_AGGREGATE: u64 = 4;
const INO_EXPORT_DIR: u64 = 5;
const INO_EXPORT: u64 = 6;

/// The kernel's answers decide, not cached attributes or names.
const TTL: Duration = Duration::ZERO;

/// What the v4 kernel refused, or (`enforce_from_root`) applied to the root
/// namespace instead of the workload's, counted per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Refusals {
    /// `external` without `key=` (`EINVAL`: mandatory on v4).
    pub external_without_key: u64,
    /// `external` with a bad option or key (`EINVAL`).
    pub external_invalid: u64,
    /// A second `external` (`EOPNOTSUPP`: the simulator plays one namespace).
    pub external_repeated: u64,
    /// Verdicts from a thread other than the namespace's TMA (`EINVAL`).
    pub verdicts_wrong_thread: u64,
    /// Verdicts from the TMA thread with another key (`EINVAL`).
    pub verdicts_wrong_key: u64,
    /// Verdicts the kernel cannot parse, e.g. `tnum=` (`EINVAL`).
    pub verdicts_malformed: u64,
    /// Verdicts for a pid that is no task of the namespace (`ESRCH`, or
    /// `EINVAL` for a task of another namespace).
    pub verdicts_unknown_task: u64,
    /// Reads of the export file from outside the namespace (`ENODATA`).
    pub export_reads_outside: u64,
    /// `enforce` written from outside the namespace (accepted, applied
    /// there: the workload stays unenforced).
    pub enforce_from_root: u64,
    /// `control` opened other than write-only (`EACCES`).
    pub control_open_denied: u64,
    /// Unknown or malformed commands (`EINVAL`).
    pub commands_invalid: u64,
    /// Commands the simulator does not play (`internal`, `export`: `EOPNOTSUPP`).
    pub commands_unsupported: u64,
    /// All of the above.
    pub total: u64,
}

/// The v4 part of the simulator's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct V4Report {
    /// The namespace id, once `external` created it.
    pub namespace: Option<u64>,
    /// The thread that wrote `external` (the namespace's creator C).
    pub creator_tid: Option<u32>,
    /// The thread the simulator takes verdicts from: C's parent's main
    /// thread (module documentation: approximation).
    pub tma_tid: Option<u32>,
    /// Whether `enforce` was written from inside the namespace.
    pub enforced: bool,
    /// Records dequeued by readers inside the namespace.
    pub records_read: u64,
    /// Reads inside the namespace that found the queue empty (`ENODATA`).
    pub empty_reads: u64,
    /// Event lines not sent because the namespace had ended (its creator exited).
    pub unsent: u64,
    /// Refusals, per kind.
    pub refused: Refusals,
    /// The first few refusals of each kind, described.
    pub examples: Vec<String>,
}

/// The kinds of [`Refusals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    ExternalWithoutKey,
    ExternalInvalid,
    ExternalRepeated,
    VerdictWrongThread,
    VerdictWrongKey,
    VerdictMalformed,
    VerdictUnknownTask,
    ExportReadOutside,
    EnforceFromRoot,
    ControlOpenDenied,
    CommandInvalid,
    CommandUnsupported,
}

impl Refusal {
    fn counter(self, r: &mut Refusals) -> &mut u64 {
        match self {
            Refusal::ExternalWithoutKey => &mut r.external_without_key,
            Refusal::ExternalInvalid => &mut r.external_invalid,
            Refusal::ExternalRepeated => &mut r.external_repeated,
            Refusal::VerdictWrongThread => &mut r.verdicts_wrong_thread,
            Refusal::VerdictWrongKey => &mut r.verdicts_wrong_key,
            Refusal::VerdictMalformed => &mut r.verdicts_malformed,
            Refusal::VerdictUnknownTask => &mut r.verdicts_unknown_task,
            Refusal::ExportReadOutside => &mut r.export_reads_outside,
            Refusal::EnforceFromRoot => &mut r.enforce_from_root,
            Refusal::ControlOpenDenied => &mut r.control_open_denied,
            Refusal::CommandInvalid => &mut r.commands_invalid,
            Refusal::CommandUnsupported => &mut r.commands_unsupported,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Refusal::ExternalWithoutKey => "external without key (EINVAL)",
            Refusal::ExternalInvalid => "external refused (EINVAL)",
            Refusal::ExternalRepeated => {
                "second external (EOPNOTSUPP: the simulator plays one namespace)"
            }
            Refusal::VerdictWrongThread => "verdict refused, wrong thread (EINVAL)",
            Refusal::VerdictWrongKey => "verdict refused, wrong key (EINVAL)",
            Refusal::VerdictMalformed => "verdict refused, malformed (EINVAL)",
            Refusal::VerdictUnknownTask => "verdict for no task of the namespace",
            Refusal::ExportReadOutside => "export read from outside the namespace (ENODATA)",
            Refusal::EnforceFromRoot => {
                "enforce from the root namespace (applied there, not to the workload)"
            }
            Refusal::ControlOpenDenied => "control opened other than write-only (EACCES)",
            Refusal::CommandInvalid => "invalid command (EINVAL)",
            Refusal::CommandUnsupported => "command the simulator does not play (EOPNOTSUPP)",
        }
    }

    /// The refusals the kernel logs as an invalid release request.
    fn logged(self) -> bool {
        matches!(self, Refusal::VerdictWrongThread | Refusal::VerdictWrongKey)
    }
}

/// The simulated namespace.
#[derive(Debug)]
struct Namespace {
    id: u64,
    /// The key of `external`, lower case (`hex2bin` ignores the case).
    key: String,
    /// C, the thread that wrote `external`.
    creator_tid: u32,
    /// C's process, followed until it ends (the end of the namespace).
    creator: Process,
    /// C is its process's main thread: the process's threads are C's.
    creator_leader: bool,
    /// The thread verdicts are taken from (module documentation).
    tma_tid: u32,
}

impl Namespace {
    /// Whether thread `tid` is a task of the (live) namespace.
    fn contains(&self, tid: u32) -> bool {
        if tid == 0 || self.creator.has_exited() {
            return false;
        }
        if tid == self.creator_tid {
            return true;
        }
        let Some(t) = procfs::task(tid) else {
            return false;
        };
        let c = self.creator.pid();
        if t.tgid == c {
            return self.creator_leader;
        }
        // Up the chain of parent processes; C alive means pid `c` is C.
        let mut parent = t.ppid;
        for _ in 0..4096 {
            if parent == c {
                return true;
            }
            if parent <= 1 {
                return false;
            }
            match procfs::task(parent) {
                Some(p) => parent = p.ppid,
                None => return false,
            }
        }
        false
    }
}

struct State {
    ns: Option<Arc<Namespace>>,
    /// The namespace's creator has exited: the namespace and its export
    /// file are gone.
    ended: bool,
    enforced: bool,
    sealed: bool,
    queue: VecDeque<Vec<u8>>,
    /// `have_event` of `export.c`: a record was queued since the last poll.
    have_event: bool,
    /// Pollers waiting for a record, one per open export file.
    pollers: Vec<PollNotifier>,
    /// Per open export file: the record its last read at offset 0 took
    /// (the `seq_file` buffer).
    held: HashMap<u64, Vec<u8>>,
    next_fh: u64,
    records_read: u64,
    empty_reads: u64,
    refused: Refusals,
    examples: Vec<String>,
    logged: u64,
}

/// State shared by the FUSE thread and the sender.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a record is dequeued or the namespace ends.
    changed: Condvar,
    ledger: Arc<Ledger>,
    namespace_id: u64,
    /// The first record of a new namespace (`export.c` queues it at creation).
    aggregate_record: Vec<u8>,
    /// The contents of `aggregate`.
    aggregate_text: Vec<u8>,
    mounted_at: SystemTime,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few assignments: a panic elsewhere leaves the
        // state consistent enough for the report.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The namespace while its creator lives; marks its end once it has exited.
    fn live_namespace(&self) -> Option<Arc<Namespace>> {
        let ns = {
            let st = self.lock();
            if st.ended {
                return None;
            }
            st.ns.clone()?
        };
        if ns.creator.has_exited() {
            self.end();
            return None;
        }
        Some(ns)
    }

    fn end(&self) {
        let pollers = {
            let mut st = self.lock();
            st.ended = true;
            std::mem::take(&mut st.pollers)
        };
        self.changed.notify_all();
        // Pollers wake and find the file gone for them.
        for p in pollers {
            let _ = p.notify();
        }
    }

    /// Whether thread `tid` is in the namespace (rules 2-4).
    fn member(&self, tid: u32) -> bool {
        self.live_namespace().is_some_and(|ns| ns.contains(tid))
    }

    /// Counts a refusal and keeps the first few as examples.
    fn refuse(&self, st: &mut State, kind: Refusal, tid: u32, detail: &str) {
        let counter = kind.counter(&mut st.refused);
        *counter += 1;
        let n = *counter;
        st.refused.total += 1;
        if n <= EXAMPLES_PER_KIND {
            let example = format!(
                "{}: {detail} (thread {tid}, {})",
                kind.text(),
                procfs::comm(tid)
            );
            // A reader retrying in a loop would fill the list with one line.
            if !st.examples.contains(&example) {
                st.examples.push(example);
            }
        }
        if kind.logged() {
            st.logged += 1;
            if st.logged <= MAX_LOGGED {
                // What the kernel logs (printk) for each refused release.
                tracing::warn!("tsem: Invalid process release request.");
            }
        }
    }

    fn refuse_now(&self, kind: Refusal, tid: u32, detail: &str) {
        let mut st = self.lock();
        self.refuse(&mut st, kind, tid, detail);
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm) = match ino {
            INO_ROOT | INO_EXPORT_DIR => (FileType::Directory, 0o755),
            INO_CONTROL => (FileType::RegularFile, 0o200),
            INO_ID => (FileType::RegularFile, 0o444),
            INO_AGGREGATE => (FileType::RegularFile, 0o400),
            INO_EXPORT if self.live_namespace().is_some() => (FileType::RegularFile, 0o400),
            _ => return None,
        };
        let t = self.mounted_at;
        Some(FileAttr {
            ino: INodeNo(ino),
            // Like securityfs: sizes say nothing, reads do (direct I/O).
            size: 0,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// One write to `control` by thread `tid` [K-v4 fs.c write_control].
    fn control(&self, tid: u32, data: &[u8]) -> Result<(), Errno> {
        let shown = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
        if data.len() > MAX_COMMAND {
            let detail = format!("{} bytes, more than {MAX_COMMAND}", data.len());
            self.refuse_now(Refusal::CommandInvalid, tid, &detail);
            return Err(Errno::EINVAL);
        }
        // One command per write, up to its `\n`; the rest is ignored.
        let Some(end) = data.iter().position(|&b| b == b'\n') else {
            let detail = format!("{:?} has no newline", shown.trim_end());
            self.refuse_now(Refusal::CommandInvalid, tid, &detail);
            return Err(Errno::EINVAL);
        };
        let text = String::from_utf8_lossy(&data[..end]).into_owned();
        let (word, arg) = match text.split_once(' ') {
            Some((w, a)) => (w, Some(a)),
            None => (text.as_str(), None),
        };
        match word {
            "external" => self.external(tid, &text, arg),
            "trusted" | "untrusted" => self.verdict(tid, word == "trusted", &text, arg),
            "enforce" | "seal" => self.context(tid, &text, word == "enforce"),
            "internal" | "export" => {
                let detail = format!("{text:?}: only one externally modeled namespace");
                self.refuse_now(Refusal::CommandUnsupported, tid, &detail);
                Err(Errno::EOPNOTSUPP)
            }
            // The kernel TMA's commands: accepted, nothing to simulate.
            "state" | "pseudonym" | "base" | "lock" => Ok(()),
            _ => {
                let detail = format!("{text:?} is no command");
                self.refuse_now(Refusal::CommandInvalid, tid, &detail);
                Err(Errno::EINVAL)
            }
        }
    }

    /// `external …` [K-v4 fs.c config_namespace, namespace.c tsem_ns_create].
    fn external(&self, tid: u32, text: &str, arg: Option<&str>) -> Result<(), Errno> {
        let invalid = |detail: String| {
            self.refuse_now(
                Refusal::ExternalInvalid,
                tid,
                &format!("{text:?}: {detail}"),
            );
            Err(Errno::EINVAL)
        };
        let mut digest_bytes = 32;
        let mut key = None;
        for w in arg.unwrap_or("").split_ascii_whitespace() {
            let Some((k, v)) = w.split_once('=') else {
                return invalid(format!("{w:?} is not NAME=VALUE"));
            };
            match k {
                "model" => return invalid(format!("no event model {v:?} is loaded")),
                "nsref" if v == "current" || v == "initial" => {}
                "digest" => match digest_size(v) {
                    Some(n) => digest_bytes = n,
                    None => return invalid(format!("unknown digest {v:?}")),
                },
                "key" if v.len() % 2 == 0 => key = Some(v),
                "cache"
                    if parse_kernel_int(v).is_some_and(|n| n > 0 && n <= i64::from(u32::MAX)) => {}
                _ => return invalid(format!("bad option {w:?}")),
            }
        }
        let Some(key) = key else {
            let detail = format!("{text:?}: a v4 kernel needs key=HEX ({KEY_DIGITS} hex digits)");
            self.refuse_now(Refusal::ExternalWithoutKey, tid, &detail);
            return Err(Errno::EINVAL);
        };
        if key.len() != digest_bytes * 2 || key.len() != KEY_DIGITS || !is_hex(key) {
            return invalid(format!(
                "the key must be {} hex digits, not {} characters",
                digest_bytes * 2,
                key.len()
            ));
        }
        if self.lock().ns.is_some() {
            let detail = format!(
                "{}: namespace {} exists",
                elide_key(text),
                self.namespace_id
            );
            self.refuse_now(Refusal::ExternalRepeated, tid, &detail);
            return Err(Errno::EOPNOTSUPP);
        }
        // C's real_parent becomes the TMA; /proc names its process only.
        let task = procfs::task(tid).ok_or(Errno::ESRCH)?;
        let creator = Process::open(task.tgid).map_err(|_| Errno::ESRCH)?;
        let ns = Namespace {
            id: self.namespace_id,
            key: key.to_ascii_lowercase(),
            creator_tid: tid,
            creator,
            creator_leader: tid == task.tgid,
            tma_tid: task.ppid,
        };
        {
            let mut st = self.lock();
            if st.ns.is_some() {
                // Lost a race with another `external`.
                return Err(Errno::EOPNOTSUPP);
            }
            st.ns = Some(Arc::new(ns));
            st.queue.push_back(self.aggregate_record.clone());
            st.have_event = true;
        }
        self.ledger
            .apply([Command::Other(text.to_owned())], Instant::now());
        Ok(())
    }

    /// `trusted|untrusted pid=P key=HEX` [K-v4 fs.c config_COE, control_COE].
    fn verdict(&self, tid: u32, trusted: bool, text: &str, arg: Option<&str>) -> Result<(), Errno> {
        let shown = elide_key(text);
        let malformed = |detail: &str| {
            self.refuse_now(
                Refusal::VerdictMalformed,
                tid,
                &format!("{shown:?}: {detail}"),
            );
            Err(Errno::EINVAL)
        };
        let (mut key, mut pid) = (None, 0i64);
        for w in arg.unwrap_or("").split_ascii_whitespace() {
            match w.split_once('=') {
                Some(("key", v)) if v.len() == KEY_DIGITS => key = Some(v),
                Some(("key", _)) => return malformed("the key is not 64 characters"),
                Some(("pid", v)) => match parse_kernel_int(v) {
                    Some(p) => pid = p,
                    None => return malformed("the pid is no number"),
                },
                // `tnum=` (2025 protocol) included: v4 knows `key` and `pid` only.
                _ => return malformed(&format!("{w:?} is not pid=P or key=HEX")),
            }
        }
        let Some(key) = key.filter(|_| pid != 0) else {
            return malformed("needs pid=P and key=HEX");
        };
        let simulated = u64::try_from(pid).is_ok_and(|p| SIMULATED_PIDS.contains(&p));
        let ns = match self.live_namespace() {
            Some(ns) if simulated => ns,
            _ => {
                // find_task_by_vpid: a real task is of another namespace
                // (EINVAL), no task at all is ESRCH.
                let real = pid > 0 && Path::new(&format!("/proc/{pid}")).exists();
                let detail = format!("{shown:?}: pid {pid} is no waiting task of the namespace");
                self.refuse_now(Refusal::VerdictUnknownTask, tid, &detail);
                return Err(if real { Errno::EINVAL } else { Errno::ESRCH });
            }
        };
        if tid != ns.tma_tid {
            let detail = format!(
                "{shown:?}: only thread {} (the parent of the namespace's creator {}) may \
                 release its tasks",
                ns.tma_tid, ns.creator_tid
            );
            self.refuse_now(Refusal::VerdictWrongThread, tid, &detail);
            return Err(Errno::EINVAL);
        }
        if !is_hex(key) || key.to_ascii_lowercase() != ns.key {
            let detail = format!("{shown:?}: not the key of `external`");
            self.refuse_now(Refusal::VerdictWrongKey, tid, &detail);
            return Err(Errno::EINVAL);
        }
        let pid = u64::try_from(pid).map_err(|_| Errno::ESRCH)?;
        self.ledger.apply(
            [Command::Verdict {
                trusted,
                pid,
                task: TaskRef::Key,
            }],
            Instant::now(),
        );
        Ok(())
    }

    /// `enforce` / `seal`: the writer's namespace [K-v4 fs.c config_context].
    fn context(&self, tid: u32, text: &str, enforce: bool) -> Result<(), Errno> {
        if !self.member(tid) {
            if enforce {
                let detail = "the workload's namespace stays unenforced";
                self.refuse_now(Refusal::EnforceFromRoot, tid, detail);
            }
            // The root namespace takes it; nothing of it is simulated.
            return Ok(());
        }
        {
            let mut st = self.lock();
            if st.sealed {
                return Err(Errno::EPERM);
            }
            if enforce {
                st.enforced = true;
            } else {
                st.sealed = true;
            }
        }
        self.ledger
            .apply([Command::Other(text.to_owned())], Instant::now());
        Ok(())
    }

    /// A read of the export file [K-v4 export.c tsem_export_show].
    fn export_read(&self, tid: u32, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let inside = self.member(tid);
        let mut st = self.lock();
        if !inside {
            let detail = "a reader in the root namespace never gets a record";
            self.refuse(&mut st, Refusal::ExportReadOutside, tid, detail);
            return Err(Errno::ENODATA);
        }
        let size = size as usize;
        if offset == 0 {
            match st.queue.pop_front() {
                None => {
                    st.empty_reads += 1;
                    st.held.remove(&fh);
                    Err(Errno::ENODATA)
                }
                Some(rec) => {
                    st.records_read += 1;
                    let out = rec[..rec.len().min(size)].to_vec();
                    st.held.insert(fh, rec);
                    drop(st);
                    self.changed.notify_all();
                    Ok(out)
                }
            }
        } else {
            // The rest of the record the last read at 0 took, then 0 bytes.
            let rest = st.held.get(&fh).map_or(&[][..], |r| {
                let from = usize::try_from(offset).unwrap_or(usize::MAX).min(r.len());
                &r[from..(from.saturating_add(size)).min(r.len())]
            });
            Ok(rest.to_vec())
        }
    }

    /// `poll` of the export file [K-v4 fs.c export_poll].
    fn export_poll(&self, tid: u32, ph: PollNotifier, flags: PollFlags) -> PollEvents {
        if !self.member(tid) {
            // `-ENOENT` as a mask: poll(2) keeps POLLERR|POLLHUP of it.
            return PollEvents::POLLERR | PollEvents::POLLHUP;
        }
        let mut st = self.lock();
        if st.have_event {
            st.have_event = false;
            return PollEvents::POLLIN | PollEvents::POLLRDNORM;
        }
        if flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY)
            && !st.pollers.iter().any(|p| p.handle().0 == ph.handle().0)
        {
            st.pollers.push(ph);
        }
        PollEvents::empty()
    }
}

/// The FUSE filesystem: every operation asks [`Shared`].
struct SecurityFs {
    shared: Arc<Shared>,
}

impl fuser::Filesystem for SecurityFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (parent.0, name.as_bytes()) {
            (INO_ROOT, b"control") => INO_CONTROL,
            (INO_ROOT, b"id") => INO_ID,
            (INO_ROOT, b"aggregate") => INO_AGGREGATE,
            (INO_ROOT, b"external_tma") => INO_EXPORT_DIR,
            (INO_EXPORT_DIR, n) if n == self.shared.namespace_id.to_string().as_bytes() => {
                INO_EXPORT
            }
            _ => return reply.error(Errno::ENOENT),
        };
        match self.shared.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.shared.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Truncation (`> control` in a shell) changes nothing of a pseudo file.
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.shared.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match ino.0 {
            // open_control: CAP_MAC_ADMIN and O_WRONLY (O_RDWR lacks the bit).
            INO_CONTROL if flags.acc_mode() != OpenAccMode::O_WRONLY => {
                let detail = "open_control wants O_WRONLY";
                self.shared
                    .refuse_now(Refusal::ControlOpenDenied, req.pid(), detail);
                return reply.error(Errno::EACCES);
            }
            INO_CONTROL | INO_ID | INO_AGGREGATE => {}
            INO_EXPORT if self.shared.live_namespace().is_some() => {}
            _ => return reply.error(Errno::ENOENT),
        }
        let fh = {
            let mut st = self.shared.lock();
            st.next_fh += 1;
            st.next_fh
        };
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let text = match ino.0 {
            INO_EXPORT => {
                return match self.shared.export_read(req.pid(), fh.0, offset, size) {
                    Ok(bytes) => reply.data(&bytes),
                    Err(e) => reply.error(e),
                }
            }
            INO_ID => {
                // id_show: the reader's namespace.
                let id = match self.shared.member(req.pid()) {
                    true => self.shared.namespace_id,
                    false => 0,
                };
                format!("{id}\n").into_bytes()
            }
            INO_AGGREGATE => self.shared.aggregate_text.clone(),
            _ => return reply.error(Errno::EINVAL),
        };
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        let to = from.saturating_add(size as usize).min(text.len());
        reply.data(&text[from..to]);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The offset is not checked: the kernel's `write_control` wants 0
        // and never advances it, but FUSE's direct I/O advances the file
        // position after each write.
        if ino.0 != INO_CONTROL {
            return reply.error(Errno::EINVAL);
        }
        match self.shared.control(req.pid(), data) {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().held.remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (INO_ROOT, FileType::Directory, "..".into()),
        ];
        match ino.0 {
            INO_ROOT => {
                entries.push((INO_CONTROL, FileType::RegularFile, "control".into()));
                entries.push((INO_ID, FileType::RegularFile, "id".into()));
                entries.push((INO_AGGREGATE, FileType::RegularFile, "aggregate".into()));
                entries.push((INO_EXPORT_DIR, FileType::Directory, "external_tma".into()));
            }
            INO_EXPORT_DIR => {
                if self.shared.live_namespace().is_some() {
                    let name = self.shared.namespace_id.to_string();
                    entries.push((INO_EXPORT, FileType::RegularFile, name));
                }
            }
            _ => return reply.error(Errno::ENOTDIR),
        }
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn poll(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        ph: PollNotifier,
        _events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        if ino.0 != INO_EXPORT {
            // Securityfs files without a poll method are always ready.
            return reply.poll(PollEvents::POLLIN | PollEvents::POLLOUT);
        }
        reply.poll(self.shared.export_poll(req.pid(), ph, flags));
    }
}

/// The simulated securityfs, mounted; unmounted when dropped.
pub struct Mounted {
    shared: Arc<Shared>,
    root: PathBuf,
    session: Option<BackgroundSession>,
}

impl Mounted {
    /// Mounts the tree on `root` (created if missing; a dead FUSE mount of
    /// an earlier run is detached first). `aggregate` is the hex aggregate.
    pub fn mount(
        root: &Path,
        namespace_id: u64,
        aggregate: &str,
        aggregate_record: Vec<u8>,
        ledger: Arc<Ledger>,
    ) -> Result<Mounted, SimError> {
        let io_err = |what: String| move |source: io::Error| SimError::Io { what, source };
        if let Err(e) = std::fs::metadata(root) {
            if e.raw_os_error() == Some(nix::libc::ENOTCONN) {
                detach(root);
            }
        }
        std::fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ns: None,
                ended: false,
                enforced: false,
                sealed: false,
                queue: VecDeque::new(),
                have_event: false,
                pollers: Vec::new(),
                held: HashMap::new(),
                next_fh: 0,
                records_read: 0,
                empty_reads: 0,
                refused: Refusals::default(),
                examples: Vec::new(),
                logged: 0,
            }),
            changed: Condvar::new(),
            ledger,
            namespace_id,
            aggregate_record,
            aggregate_text: format!("{aggregate}\n").into_bytes(),
            mounted_at: SystemTime::now(),
        });
        let mut config = Config::default();
        // allow_other: the TMA and its workload may run as other users.
        config.acl = SessionACL::All;
        config.mount_options = vec![
            MountOption::FSName("tsem-sim".into()),
            MountOption::Subtype("tsem-sim".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
        ];
        let fs = SecurityFs {
            shared: Arc::clone(&shared),
        };
        let mount_err = |source| SimError::Mount {
            path: root.to_path_buf(),
            source,
        };
        let session = Session::new(fs, root, &config)
            .and_then(Session::spawn)
            .map_err(mount_err)?;
        Ok(Mounted {
            shared,
            root: root.to_path_buf(),
            session: Some(session),
        })
    }

    /// Waits until the queue has room; false once the namespace has ended
    /// (nobody is left to raise or read events).
    pub fn accepting(&self) -> bool {
        loop {
            if self.shared.live_namespace().is_none() {
                return false;
            }
            let st = self.shared.lock();
            if st.queue.len() < QUEUE_LIMIT {
                return true;
            }
            // Bounded: the creator's exit is checked again after it.
            let _ = self
                .shared
                .changed
                .wait_timeout(st, Duration::from_millis(20));
        }
    }

    /// Queues one record and wakes the pollers.
    pub fn deliver(&self, record: &[u8]) {
        let pollers = {
            let mut st = self.shared.lock();
            st.queue.push_back(record.to_vec());
            st.have_event = true;
            std::mem::take(&mut st.pollers)
        };
        for p in pollers {
            // A poller that has gone (closed file) is not an error.
            let _ = p.notify();
        }
    }

    /// Waits until the namespace has ended: its creator has exited (the v4
    /// monitor ends after the namespace's last task, the kernel then frees
    /// the namespace and removes its export file).
    pub fn wait_end(&self) {
        let ns = self.shared.lock().ns.clone();
        if let Some(ns) = ns {
            while !ns.creator.wait_exit(Duration::from_millis(100)) {}
        }
        self.shared.end();
    }

    /// Unmounts and returns the v4 report; `unsent` event lines were not
    /// sent because the namespace had ended.
    pub fn finish(mut self, unsent: u64) -> V4Report {
        self.unmount();
        let st = self.shared.lock();
        let ns = st.ns.as_ref();
        V4Report {
            namespace: ns.map(|n| n.id),
            creator_tid: ns.map(|n| n.creator_tid),
            tma_tid: ns.map(|n| n.tma_tid),
            enforced: st.enforced,
            records_read: st.records_read,
            empty_reads: st.empty_reads,
            unsent,
            refused: st.refused.clone(),
            examples: st.examples.clone(),
        }
    }

    fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            // Detached, not unmounted: a TMA that still holds `control` or
            // `id` open (it outlives the namespace's last task) would make
            // a plain unmount fail with EBUSY. Its later calls fail once
            // this process has ended.
            detach(&self.root);
            drop(session);
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// `umount2(path, MNT_DETACH)`, best effort.
fn detach(path: &Path) {
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a plain system call on a NUL-terminated path.
        let _ = unsafe { nix::libc::umount2(c.as_ptr(), nix::libc::MNT_DETACH) };
    }
}

/// Output sizes of the kernel digests an `external` may name.
fn digest_size(name: &str) -> Option<usize> {
    Some(match name {
        "md5" => 16,
        "sha1" => 20,
        "sha224" | "sha3-224" => 28,
        "sha256" | "sha3-256" | "sm3" | "blake2s-256" | "streebog256" => 32,
        "sha384" | "sha3-384" => 48,
        "sha512" | "sha3-512" | "blake2b-512" | "streebog512" => 64,
        _ => return None,
    })
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `kstrtol(s, 0, …)`: decimal, `0x` hex or leading-`0` octal, with a sign.
fn parse_kernel_int(s: &str) -> Option<i64> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let value = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse().ok()?
    };
    Some(if negative { -value } else { value })
}

/// A command with its key replaced by `…` (keys do not belong in reports).
fn elide_key(text: &str) -> String {
    text.split(' ')
        .map(|w| match w.strip_prefix("key=") {
            Some(_) => "key=…",
            None => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_integers_parse_like_kstrtol() {
        assert_eq!(parse_kernel_int("1005"), Some(1005));
        assert_eq!(parse_kernel_int("0x3ed"), Some(1005));
        assert_eq!(parse_kernel_int("01755"), Some(1005));
        assert_eq!(parse_kernel_int("-7"), Some(-7));
        assert_eq!(parse_kernel_int("+7"), Some(7));
        assert_eq!(parse_kernel_int("0"), Some(0));
        for bad in ["", "x", "12a", "0x", "1 2", "09"] {
            assert_eq!(parse_kernel_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_elided() {
        assert_eq!(
            elide_key("trusted pid=1005 key=00ff"),
            "trusted pid=1005 key=…"
        );
        assert_eq!(
            elide_key("external digest=sha256"),
            "external digest=sha256"
        );
    }

    #[test]
    fn digests_have_their_sizes() {
        assert_eq!(digest_size("sha256"), Some(32));
        assert_eq!(digest_size("sha512"), Some(64));
        assert_eq!(digest_size("sha257"), None);
    }
}
