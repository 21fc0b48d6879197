//! The workload side of process mode (`tsem-stream run -P`): start a command
//! in a new externally modeled namespace, follow it, pass signals on, and end
//! the input once it has ended.
//!
//! Two kernel generations want two process structures; [`launch`] finds out
//! which one the kernel takes ([`Generation`]) by what it accepts:
//!
//! * **v4 (2024, `key=` protocol, kernel-interface.md K6; Quixote v1.7's structure).**
//!   The calling thread T forks a *monitor* M. M writes `external … key=K`:
//!   M's namespace becomes the new one, and the kernel records T (M's
//!   `real_parent`, the exact *thread* that forked it) as the namespace's TMA
//!   (`tma_for_ns`). From then on:
//!   - only T may write verdicts (from any other thread, or any child, the
//!     kernel answers `EINVAL` and the task sleeps forever): the caller
//!     reads, maps and answers every record on T
//!     (`tsem_pipeline::run_answering_here`);
//!   - `id` and the export file answer for the *reader's* namespace (a
//!     reader in the root namespace always gets `ENODATA`), and `enforce`
//!     applies to the *writer's*: M reads `id`, writes `enforce`, opens
//!     `external_tma/<id>`, and forwards every record to T over a pipe;
//!   - M is modeled itself, and a synchronous event of M would wait for a
//!     verdict that only M could forward: after `external` M does nothing
//!     that raises one. It only reads and writes descriptors opened before
//!     (the control plane files are exempt from `file_open`), polls, forks
//!     and reaps; it never executes anything. Whatever it needs (buffers,
//!     the command line, the messages) is prepared before T forks it, and
//!     T forks it before the process has any thread, so M can be a
//!     complete copy.
//!
//!   M forks the workload W, which drops CAP_MAC_ADMIN and executes the
//!   command. M is a child subreaper (set before `external`: `prctl` is
//!   itself an event), so every task of the namespace stays below it; M
//!   reports W's pid and exit status to T, and ends once no task of the
//!   namespace is left and the export queue is drained: no task is left
//!   asleep waiting for a record nobody reads.
//! * **2025 kernels (`tnum=` protocol, kernel-interface.md K5; Quixote v1.8's structure).**
//!   The forked child C writes `external`, re-reads `id` until it changes
//!   (as Quixote polls it), and reports the id; T opens
//!   `external_tma/<id>` itself, writes `enforce`, and lets C execute the
//!   command. Any thread of T may write verdicts.
//!
//! With [`GenerationChoice::Auto`] the child first writes `external … key=K`
//! (v4 requires a key); a kernel that refuses it with `EINVAL` gets the
//! plain `external` of the 2025 protocol.
//!
//! Before the fork, the signals the orchestrator handles are blocked (M keeps
//! them blocked: a terminal's SIGINT must not end the forwarder). The
//! [`Monitor`] thread then follows the workload and forwards SIGINT,
//! SIGTERM, SIGHUP and SIGQUIT to it when another process sent them to the
//! orchestrator. Signals the terminal generated (the kernel is their
//! sender) are not forwarded: the terminal already sent them to the whole
//! foreground process group, the workload included.
//!
//! [`WorkloadSource`] turns the export file (2025) or M's pipe (v4) into a
//! pipeline source that ends when the input ends: at the end of M's pipe,
//! or once the workload has exited and nothing more arrives.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, pthread_sigmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use tsem_ingest::{Fetch, RecordSource, TimedReader};

/// The longest control command the kernel takes, `\n` included [K-v3 fs.c].
pub const MAX_CONTROL_COMMAND: usize = 127;

/// Signals passed on to the workload.
pub const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Why process mode could not start or follow its workload.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The `external` command cannot be built from the options.
    #[error("{0}")]
    Command(String),
    /// The process has threads already; forking it would be unsafe.
    #[error("process mode must start before any thread ({0} threads are running)")]
    Threads(usize),
    /// The workload process could not create the namespace.
    #[error("creating the modeling namespace: {0}")]
    Namespace(String),
    /// The workload process ended or misbehaved during start-up.
    #[error("the workload process failed during start-up: {0}")]
    Startup(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> OrchestrateError {
    let what = what.into();
    move |e| OrchestrateError::Io {
        what,
        source: e.into(),
    }
}

/// Which user namespace the kernel uses to translate ids in the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsRef {
    /// The initial user namespace (the kernel's default).
    Initial,
    /// The user namespace of the task that creates the modeling namespace.
    Current,
}

/// The options of the `external` control command (kernel-interface.md K2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalOptions {
    /// `nsref=`; `None` leaves the kernel's default.
    pub nsref: Option<NsRef>,
    /// `digest=`; the events are modeled with SHA-256, so only `sha256` makes sense.
    pub digest: Option<String>,
    /// `cache=N`, the size of the kernel's magazine for atomic-context events.
    pub cache: Option<u32>,
}

impl ExternalOptions {
    /// The command text, without its `\n`, e.g. `external digest=sha256 cache=96`;
    /// with `key` (mandatory for 2024 v3/v4 kernels) it ends in `key=HEX`.
    pub fn command(&self, key: Option<&str>) -> Result<String, OrchestrateError> {
        let mut c = String::from("external");
        match self.nsref {
            Some(NsRef::Initial) => c.push_str(" nsref=initial"),
            Some(NsRef::Current) => c.push_str(" nsref=current"),
            None => {}
        }
        if let Some(d) = &self.digest {
            if d.is_empty() || !d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(OrchestrateError::Command(format!(
                    "invalid digest name {d:?}"
                )));
            }
            c.push_str(" digest=");
            c.push_str(d);
        }
        if let Some(n) = self.cache {
            c.push_str(&format!(" cache={n}"));
        }
        if let Some(k) = key {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(OrchestrateError::Command(
                    "the key must be hex digits".into(),
                ));
            }
            c.push_str(" key=");
            c.push_str(k);
        }
        if c.len() + 1 > MAX_CONTROL_COMMAND {
            return Err(OrchestrateError::Command(format!(
                "the command {c:?} is longer than the kernel's {MAX_CONTROL_COMMAND} bytes"
            )));
        }
        Ok(c)
    }
}

/// The kernel generation a namespace was created under, which fixes the
/// process structure and the verdict protocol (module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 2024 v3/v4 kernels: `key=` protocol, in-namespace monitor (kernel-interface.md K6).
    Key,
    /// 2025 kernels: `tnum=` protocol, the TMA reads the export file (kernel-interface.md K5).
    Tnum,
}

impl Generation {
    fn word(self) -> &'static str {
        match self {
            Generation::Key => "key",
            Generation::Tnum => "tnum",
        }
    }
}

/// Which generation to create the namespace for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenerationChoice {
    /// Whichever the kernel accepts: `key=` first, then the plain command.
    #[default]
    Auto,
    /// Only this one.
    Only(Generation),
}

/// How to start a workload.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The TSEM securityfs root (`/sys/kernel/security/tsem` or a simulator's).
    pub tsem_root: PathBuf,
    /// The options of `external`.
    pub external: ExternalOptions,
    /// The v4 namespace key, 64 hex digits (kernel-interface.md K6).
    pub key: String,
    /// Which generation to create.
    pub generation: GenerationChoice,
    /// v4: the monitor writes `enforce` in the namespace (kernel-interface.md K6: the
    /// kernel applies it to the writer's namespace). Under the 2025 protocol
    /// the caller writes it after [`launch`].
    pub enforce: bool,
    /// The program and its arguments (the program is looked up in `PATH`).
    pub argv: Vec<String>,
    /// How long to wait for the namespace id to appear in `id`.
    pub id_timeout: Duration,
}

impl LaunchOptions {
    /// Options for `argv` with automatic generation, no enforcement and a
    /// 10 s namespace timeout.
    pub fn new(
        tsem_root: impl Into<PathBuf>,
        external: ExternalOptions,
        key: String,
        argv: Vec<String>,
    ) -> Self {
        LaunchOptions {
            tsem_root: tsem_root.into(),
            external,
            key,
            generation: GenerationChoice::Auto,
            enforce: false,
            argv,
            id_timeout: Duration::from_secs(10),
        }
    }

    /// The `external` command lines (with `\n`) the child tries, in order.
    fn commands(&self) -> Result<Vec<(Generation, Vec<u8>)>, OrchestrateError> {
        let generations: &[Generation] = match self.generation {
            GenerationChoice::Auto => &[Generation::Key, Generation::Tnum],
            GenerationChoice::Only(Generation::Key) => &[Generation::Key],
            GenerationChoice::Only(Generation::Tnum) => &[Generation::Tnum],
        };
        generations
            .iter()
            .map(|&g| {
                let key = (g == Generation::Key).then_some(self.key.as_str());
                Ok((g, (self.external.command(key)? + "\n").into_bytes()))
            })
            .collect()
    }
}

/// Checks a v4 namespace key: 32 bytes as 64 hex digits (kernel-interface.md K2, K6).
pub fn check_key(key: &str) -> Result<(), OrchestrateError> {
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(OrchestrateError::Command(
            "a namespace key is 64 hex digits (32 bytes)".into(),
        ))
    }
}

/// The signals the orchestrator handles itself (via a signalfd).
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Threads of this process, when /proc can tell.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// A workload in its namespace, stopped just before it starts its command.
pub struct Launched {
    /// The forked child: the monitor (v4) or the workload itself (2025).
    pid: Pid,
    namespace: u64,
    generation: Generation,
    go: Option<OwnedFd>,
    /// v4: M's later reports (workload pid and exit status).
    reports: Option<OwnedFd>,
    /// v4: the records M forwards.
    records: Option<File>,
    old_mask: SigSet,
}

/// The pipe buffer asked for M's records: room for bursts while T is busy
/// (a full pipe only makes M wait, which leaves the records in the kernel).
const RECORD_PIPE_SIZE: i32 = 1 << 20;

/// The most the monitor reads from the export file in one `read()`; a
/// longer record is read in several (kernel-interface.md K3).
const MONITOR_READ: usize = 64 * 1024;

/// Forks the child that creates the namespace (module documentation). Must
/// be called while the process has a single thread, so that the child may
/// allocate and print; it fails otherwise. The calling thread is the one the
/// kernel will take verdicts from under the v4 protocol.
///
/// On success the calling thread keeps SIGINT, SIGTERM, SIGHUP, SIGQUIT and
/// SIGCHLD blocked (threads started later inherit that): the [`Monitor`]
/// receives them.
pub fn launch(opts: &LaunchOptions) -> Result<Launched, OrchestrateError> {
    if let Some(n) = thread_count().filter(|&n| n > 1) {
        return Err(OrchestrateError::Threads(n));
    }
    if opts.argv.is_empty() {
        return Err(OrchestrateError::Command("no command to run".into()));
    }
    let commands = opts.commands()?;
    if commands.iter().any(|(g, _)| *g == Generation::Key) {
        check_key(&opts.key)?;
    }
    let argv = opts
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| OrchestrateError::Command("a command argument contains a NUL byte".into()))?;
    let open = |name: &str, write: bool| {
        let path = opts.tsem_root.join(name);
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(&path)
            .map_err(|source| OrchestrateError::Io {
                what: format!("opening {}", path.display()),
                source,
            })
    };
    let control = open("control", true)?;
    let id = open("id", false)?;
    // The directory, so that M opens `external_tma/<id>` by name only.
    let export_dir = open("external_tma", false)?;
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    let (records_r, records_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    // Best effort: a smaller pipe works too, with less slack.
    let _ = nix::fcntl::fcntl(
        &records_w,
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(RECORD_PIPE_SIZE),
    );
    let mut old_mask = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&handled_signals()),
        Some(&mut old_mask),
    )
    .map_err(sys("blocking signals"))?;
    let child = Child {
        control,
        id,
        export_dir,
        report_w,
        go_r,
        records_w,
        commands: &commands,
        enforce: opts.enforce,
        argv: &argv,
        old_mask: &old_mask,
        id_timeout: opts.id_timeout,
        buffer: vec![0u8; MONITOR_READ],
    };
    // SAFETY: the process has one thread (checked above), so the child is a
    // complete copy of it and may use any function; it never returns.
    match unsafe { fork() } {
        Err(e) => {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            Err(sys("forking the workload process")(e))
        }
        Ok(ForkResult::Child) => {
            drop((report_r, go_w, records_r));
            child.run()
        }
        Ok(ForkResult::Parent { child: pid }) => {
            drop(child);
            // Beyond the child's own limit: it reports its timeout itself.
            let timeout = opts.id_timeout + Duration::from_secs(5);
            let report = read_handshake(&report_r, timeout);
            // From here on, dropping `launched` ends and reaps the child.
            let mut launched = Launched {
                pid,
                namespace: 0,
                generation: Generation::Tnum,
                go: Some(go_w),
                reports: None,
                records: None,
                old_mask,
            };
            match report {
                Ok((namespace, generation)) => {
                    launched.namespace = namespace;
                    launched.generation = generation;
                    if generation == Generation::Key {
                        launched.reports = Some(report_r);
                        launched.records = Some(File::from(records_r));
                    }
                    Ok(launched)
                }
                Err(e) => {
                    let _ = kill(pid, Signal::SIGKILL);
                    Err(e)
                }
            }
        }
    }
}

impl Launched {
    /// The forked child's process id (the monitor under v4, else the workload).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The id of the new modeling namespace (`external_tma/<id>`).
    pub fn namespace(&self) -> u64 {
        self.namespace
    }

    /// The generation the kernel accepted.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// v4: the namespace's records as M forwards them (a pipe that ends
    /// when the namespace has no task left); `None` under the 2025 protocol,
    /// where the caller opens `external_tma/<id>` itself. Taken once.
    pub fn take_records(&mut self) -> Option<File> {
        self.records.take()
    }

    /// Lets the workload start its command and starts following it. Under
    /// the 2025 protocol, call once the export file is open (and `enforce`
    /// written).
    pub fn release(mut self) -> Result<Monitor, OrchestrateError> {
        let sfd = SignalFd::with_flags(
            &handled_signals(),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        )
        .map_err(sys("creating a signalfd"))?;
        let go = self
            .go
            .take()
            .ok_or_else(|| OrchestrateError::Startup("released twice".into()))?;
        write_all(&go, b"g").map_err(sys("releasing the workload"))?;
        let followed = match self.reports.take() {
            // M waits for `a` (pid known) before it reaps anything, and
            // ends when the pipe closes: keep it.
            Some(reports) => Followed::Monitored {
                monitor: self.pid,
                reports,
                acks: go,
            },
            None => {
                drop(go);
                Followed::Child(self.pid)
            }
        };
        Monitor::start(followed, sfd)
    }
}

impl Drop for Launched {
    /// Not released: the child sees its pipe close and exits; reap it.
    fn drop(&mut self) {
        if let Some(go) = self.go.take() {
            drop(go);
            let _ = waitpid(self.pid, None);
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old_mask), None);
        }
    }
}

fn write_all(fd: &impl AsFd, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the child's first report: `ns N GENERATION` or `error MESSAGE`.
fn read_handshake(fd: &OwnedFd, timeout: Duration) -> Result<(u64, Generation), OrchestrateError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..end]);
            if let Some(rest) = line.strip_prefix("ns ") {
                let mut words = rest.split(' ');
                let id = words.next().and_then(|w| w.parse().ok());
                let generation = match words.next() {
                    Some("key") => Some(Generation::Key),
                    Some("tnum") => Some(Generation::Tnum),
                    _ => None,
                };
                return match (id, generation) {
                    (Some(id), Some(g)) => Ok((id, g)),
                    _ => Err(OrchestrateError::Startup(format!(
                        "bad namespace report {line:?}"
                    ))),
                };
            }
            if let Some(message) = line.strip_prefix("error ") {
                return Err(OrchestrateError::Namespace(message.to_owned()));
            }
            return Err(OrchestrateError::Startup(format!(
                "unexpected report {line:?}"
            )));
        }
        if buf.len() > 4096 {
            return Err(OrchestrateError::Startup("overlong report".into()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(OrchestrateError::Startup(format!(
                "no namespace id within {timeout:?}"
            )));
        }
        let ms = left.as_millis().clamp(1, 100) as u16;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(sys("waiting for the workload process")(e)),
        }
        // One byte at a time: nothing after the first line may be consumed
        // here (M's later reports are read by the monitor thread).
        match nix::unistd::read(fd, &mut chunk[..1]) {
            Ok(0) => {
                return Err(OrchestrateError::Startup(
                    "it ended before reporting the namespace".into(),
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(sys("reading from the workload process")(e)),
        }
    }
}

/// What the forked child needs, prepared before the fork.
struct Child<'a> {
    control: File,
    id: File,
    export_dir: File,
    report_w: OwnedFd,
    go_r: OwnedFd,
    records_w: OwnedFd,
    commands: &'a [(Generation, Vec<u8>)],
    enforce: bool,
    argv: &'a [CString],
    old_mask: &'a SigSet,
    id_timeout: Duration,
    /// M's read buffer, allocated before the fork.
    buffer: Vec<u8>,
}

/// Reads the namespace id from offset 0 (the kernel computes it per read).
fn read_id(id: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = nix::sys::uio::pread(id, &mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// Ends the child without running the parent's destructors or flushing its
/// copied buffers.
fn exit_child(code: i32) -> ! {
    // SAFETY: _exit only ends the process.
    unsafe { nix::libc::_exit(code) }
}

/// Formats `prefix N\n` into a stack buffer (M allocates nothing once in the
/// namespace, kernel-interface.md K6) and writes it to `fd`.
fn report_number(fd: &OwnedFd, prefix: &str, n: i64) -> Result<(), Errno> {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut cursor = io::Cursor::new(&mut buf[..]);
    let _ = writeln!(cursor, "{prefix} {n}");
    let len = cursor.position() as usize;
    write_all(fd, &buf[..len])
}

/// `prctl(PR_SET_CHILD_SUBREAPER)`: orphans of the namespace are reparented
/// to M, so M sees every task of the namespace end.
fn set_subreaper(on: bool) -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        nix::libc::prctl(
            nix::libc::PR_SET_CHILD_SUBREAPER,
            nix::libc::c_ulong::from(on),
            0,
            0,
            0,
        )
    };
    Errno::result(r).map(drop)
}

impl Child<'_> {
    fn fail(&self, message: &str) -> ! {
        let _ = write_all(&self.report_w, format!("error {message}\n").as_bytes());
        exit_child(1)
    }

    /// Writes `external …`, trying the generations in order; returns the one
    /// the kernel accepted.
    fn create_namespace(&self) -> Generation {
        let wants_key = self.commands.iter().any(|(g, _)| *g == Generation::Key);
        // Before `external`: inside the namespace prctl would be an event
        // that M, its only forwarder, could never get answered.
        if wants_key {
            if let Err(e) = set_subreaper(true) {
                self.fail(&format!("cannot become a child subreaper: {e}"));
            }
        }
        let mut refused = Vec::new();
        for (generation, line) in self.commands {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            // One write(): the kernel takes exactly one command per write.
            match nix::unistd::write(&self.control, line) {
                Ok(n) if n == line.len() => {
                    if *generation == Generation::Tnum && wants_key {
                        // The 2025 child becomes the workload itself.
                        let _ = set_subreaper(false);
                    }
                    return *generation;
                }
                Ok(n) => self.fail(&format!("short write of {text:?} to control ({n} bytes)")),
                // EINVAL: this kernel speaks another generation; try the next.
                Err(Errno::EINVAL) => refused.push(format!("{text:?}")),
                Err(e) => self.fail(&format!("writing {text:?} to control: {e}")),
            }
        }
        self.fail(&format!(
            "the kernel refused {} (Invalid argument)",
            refused.join(" and ")
        ))
    }

    fn run(self) -> ! {
        let before = read_id(&self.id);
        let generation = self.create_namespace();
        // v4 answers `id` for the reader at once; a 2025 kernel (and the
        // simulator) may take a moment, as Quixote's 200 µs polling expects.
        let deadline = Instant::now() + self.id_timeout;
        let namespace = loop {
            match read_id(&self.id) {
                Some(n) if Some(n) != before => break n,
                _ => {}
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the namespace id did not change within {:?}",
                    self.id_timeout
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        match generation {
            Generation::Tnum => self.run_2025(namespace),
            Generation::Key => self.run_monitor(namespace),
        }
    }

    /// Reports the namespace to T (`ns N GENERATION`), then waits for T's
    /// go-ahead (`g`); ends the child when T went away.
    fn report_and_wait(&self, namespace: u64, generation: Generation) {
        let report = format!("ns {namespace} {}\n", generation.word());
        if write_all(&self.report_w, report.as_bytes()).is_err() || !self.wait_go() {
            exit_child(1);
        }
    }

    /// Waits for T's go-ahead (`g`); false when T went away.
    fn wait_go(&self) -> bool {
        let mut b = [0u8; 1];
        loop {
            match nix::unistd::read(&self.go_r, &mut b) {
                Ok(1) if b[0] == b'g' => return true,
                Err(Errno::EINTR) => {}
                _ => return false,
            }
        }
    }

    /// The 2025 structure: report the id, wait until T reads the export
    /// file (from here on every hooked operation of this process is an
    /// event that waits for it), then become the workload.
    fn run_2025(self, namespace: u64) -> ! {
        self.report_and_wait(namespace, Generation::Tnum);
        let Child {
            control,
            id,
            export_dir,
            report_w,
            go_r,
            records_w,
            argv,
            old_mask,
            ..
        } = self;
        drop((control, id, export_dir, report_w, go_r, records_w));
        exec_workload(argv, old_mask)
    }

    /// The v4 monitor M (kernel-interface.md K6): in the namespace, enforce, open the
    /// export file, start the workload, forward records until no task is left.
    fn run_monitor(mut self, namespace: u64) -> ! {
        if self.enforce {
            // `enforce` applies to the writer's namespace: M's, now.
            if let Err(e) = nix::unistd::write(&self.control, b"enforce\n") {
                self.fail(&format!("writing enforce to control: {e}"));
            }
        }
        let name = namespace.to_string();
        // O_NONBLOCK changes nothing for the kernel's file (an empty queue
        // answers ENODATA); a simulator's FIFO would block M's reads.
        let export = match nix::fcntl::openat(
            &self.export_dir,
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => self.fail(&format!("opening external_tma/{name}: {e}")),
        };
        self.report_and_wait(namespace, Generation::Key);
        // SAFETY: M has one thread (a copy of the single-threaded T).
        let workload = match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(export);
                exec_workload(self.argv, self.old_mask)
            }
            Ok(ForkResult::Parent { child }) => child,
            // T sees M end without a workload: its status stands for the run.
            Err(_) => exit_child(1),
        };
        if report_number(&self.report_w, "pid", i64::from(workload.as_raw())).is_err() {
            exit_child(1);
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        self.forward(&export, workload, &mut buffer)
    }

    /// M's loop: export records to T, reaping (once T has the workload's
    /// pid, so that T never signals a recycled pid), until no child is left.
    fn forward(&self, export: &OwnedFd, workload: Pid, buf: &mut [u8]) -> ! {
        // SIGCHLD is blocked in M (inherited from T): a signalfd makes an
        // exit wake the poll below. Without one, the poll timeout alone
        // paces the reaping.
        let mut only_chld = SigSet::empty();
        only_chld.add(Signal::SIGCHLD);
        let chld =
            SignalFd::with_flags(&only_chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
        let mut acked = false;
        let mut go_open = true;
        let mut reap = false;
        loop {
            if !self.drain(export, buf) {
                exit_child(1);
            }
            if acked && reap {
                reap = false;
                loop {
                    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::Exited(pid, code)) => {
                            if pid == workload {
                                let _ = report_number(&self.report_w, "exit", i64::from(code));
                            }
                        }
                        Ok(WaitStatus::Signaled(pid, sig, _)) => {
                            if pid == workload {
                                let _ = report_number(&self.report_w, "signal", sig as i64);
                            }
                        }
                        Ok(WaitStatus::StillAlive) => break,
                        Ok(_) | Err(Errno::EINTR) => {}
                        // No task of the namespace is left: nothing more can
                        // be queued. Forward what is, and end.
                        Err(_) => {
                            let ok = self.drain(export, buf);
                            exit_child(if ok { 0 } else { 1 });
                        }
                    }
                }
            }
            let idle = || PollFd::new(export.as_fd(), PollFlags::empty());
            let mut fds = [
                PollFd::new(export.as_fd(), PollFlags::POLLIN),
                if go_open {
                    PollFd::new(self.go_r.as_fd(), PollFlags::POLLIN)
                } else {
                    idle()
                },
                match &chld {
                    Some(fd) => PollFd::new(fd.as_fd(), PollFlags::POLLIN),
                    None => idle(),
                },
            ];
            let timeout: u16 = if chld.is_some() { 1000 } else { 20 };
            if let Ok(0) = poll(&mut fds, PollTimeout::from(timeout)) {
                // A safety net: look for exits anyway.
                reap = true;
            }
            let ready = |f: &PollFd| {
                f.revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
            };
            if ready(&fds[2]) {
                if let Some(fd) = &chld {
                    while let Ok(Some(_)) = fd.read_signal() {}
                }
                reap = true;
            }
            if go_open && ready(&fds[1]) {
                let mut b = [0u8; 1];
                match nix::unistd::read(&self.go_r, &mut b) {
                    Ok(1) if b[0] == b'a' => {
                        acked = true;
                        reap = true;
                    }
                    Ok(1) | Err(Errno::EINTR | Errno::EAGAIN) => {}
                    // T has gone: nobody can answer; reaping is safe now.
                    _ => {
                        go_open = false;
                        acked = true;
                        reap = true;
                    }
                }
            }
        }
    }

    /// Forwards every queued record to T; false when T is gone.
    ///
    /// Each read at offset 0 dequeues one record; a record longer than the
    /// buffer comes in several reads without a seek, and the seek back to 0
    /// happens only at the record's end (the `\n`), as `ExportReader` does.
    fn drain(&self, export: &OwnedFd, buf: &mut [u8]) -> bool {
        let mut mid_record = false;
        loop {
            match nix::unistd::read(export, buf) {
                Ok(0) => {
                    if !mid_record {
                        return true;
                    }
                    // The rest of an overlong record was cut: end the line.
                    if write_all(&self.records_w, b"\n").is_err() {
                        return false;
                    }
                    mid_record = false;
                    let _ = nix::unistd::lseek(export, 0, nix::unistd::Whence::SeekSet);
                }
                Ok(n) => {
                    if write_all(&self.records_w, &buf[..n]).is_err() {
                        return false;
                    }
                    mid_record = buf[n - 1] != b'\n';
                    if !mid_record {
                        let _ = nix::unistd::lseek(export, 0, nix::unistd::Whence::SeekSet);
                    }
                }
                Err(Errno::EINTR) => {}
                // The queue is empty; a failed read at offset 0 leaves the
                // offset there, so no seek is needed (one system call less
                // per record than the reference TMA).
                Err(Errno::ENODATA | Errno::EAGAIN) if !mid_record => return true,
                Err(_) => {
                    let _ = nix::unistd::lseek(export, 0, nix::unistd::Whence::SeekSet);
                    return true;
                }
            }
        }
    }
}

/// The workload's last steps before its command: the signal mask and
/// SIGPIPE of a normal process, no CAP_MAC_ADMIN, then `execvp`.
fn exec_workload(argv: &[CString], old_mask: &SigSet) -> ! {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
    // The Rust runtime ignores SIGPIPE, and an ignored signal stays
    // ignored across exec: give the workload the default back.
    // SAFETY: setting a default disposition installs no handler.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    if let Err(e) = drop_mac_admin() {
        child_error(&format!("tsem-stream: cannot drop CAP_MAC_ADMIN: {e}\n"));
        exit_child(126);
    }
    let err = match nix::unistd::execvp(&argv[0], argv) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    child_error(&format!(
        "tsem-stream: cannot run {}: {err}\n",
        argv[0].to_string_lossy()
    ));
    exit_child(127)
}

/// Tells the user, on the workload's stderr, why it could not start (as a
/// shell says "command not found"). A forked child that is about to exec
/// must not log through `tracing`: the subscriber's locks may be held by a
/// thread that does not exist in the child.
fn child_error(text: &str) {
    let _ = nix::unistd::write(std::io::stderr(), text.as_bytes());
}

/// Drops CAP_MAC_ADMIN so that the workload cannot write to `control`
/// (release itself, or create namespaces of its own). The bounding set
/// matters most: an exec recomputes the other sets from it (a root workload
/// would get the capability back otherwise). Without the capability, or
/// without CAP_SETPCAP to change the bounding set while not holding
/// CAP_MAC_ADMIN either, there is nothing to drop (an unprivileged user).
pub fn drop_mac_admin() -> Result<(), caps::errors::CapsError> {
    use caps::{CapSet, Capability::CAP_MAC_ADMIN};
    let holds = |set| caps::has_cap(None, set, CAP_MAC_ADMIN).unwrap_or(false);
    let privileged = holds(CapSet::Permitted);
    if holds(CapSet::Bounding) {
        if let Err(e) = caps::drop(None, CapSet::Bounding, CAP_MAC_ADMIN) {
            if privileged {
                return Err(e);
            }
        }
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        if holds(set) {
            caps::drop(None, set, CAP_MAC_ADMIN)?;
        }
    }
    Ok(())
}

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadExit {
    /// It exited with this status.
    Exited(i32),
    /// A signal (this number) ended it.
    Signaled(i32),
}

impl WorkloadExit {
    /// The exit status a shell would report: the status, or 128 + signal.
    pub fn code(self) -> u8 {
        match self {
            WorkloadExit::Exited(c) => (c & 0xff) as u8,
            WorkloadExit::Signaled(s) => (128 + s).clamp(0, 255) as u8,
        }
    }
}

impl std::fmt::Display for WorkloadExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkloadExit::Exited(c) => write!(f, "exit status {c}"),
            WorkloadExit::Signaled(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {sig}"),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// What the monitor thread follows.
enum Followed {
    /// 2025: the workload is the orchestrator's own child.
    Child(Pid),
    /// v4: the orchestrator's child is M, which reports the workload.
    Monitored {
        /// M.
        monitor: Pid,
        /// M's reports: `pid N`, then `exit N` or `signal N`.
        reports: OwnedFd,
        /// Where T acknowledges `pid` with `a` (M reaps nothing before).
        acks: OwnedFd,
    },
}

/// Whom [`WorkloadHandle::signal`] reaches.
enum Target {
    /// Not known yet (v4, before M's report).
    Unknown,
    /// The orchestrator's own child: its pid cannot be recycled before the
    /// monitor reaps it, which it does under the same lock.
    Pid(Pid),
    /// A pidfd of M's child: never a recycled process.
    Pidfd(OwnedFd),
}

/// State shared by the monitor thread and the handles.
struct Shared {
    /// The child this process reaps (the workload, or M).
    child: Pid,
    /// `Some` once `child` is reaped. Held while reaping and while
    /// signalling, so a signal never reaches a recycled pid.
    status: Mutex<Option<WorkloadExit>>,
    target: Mutex<Target>,
    /// v4: the workload's status as M reported it.
    reported: Mutex<Option<WorkloadExit>>,
    exited: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `pidfd_open(2)`.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: a plain system call; on success it returns a new descriptor we own.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`.
fn pidfd_signal(fd: &OwnedFd, sig: Signal) -> bool {
    // SAFETY: a plain system call on a descriptor we own.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

impl Shared {
    /// Reaps the child if it has ended; true when it has.
    fn try_reap(&self, tx: &Sender<WorkloadExit>) -> bool {
        let mut status = lock(&self.status);
        if status.is_some() {
            return true;
        }
        let own = match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => WorkloadExit::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => WorkloadExit::Signaled(sig as i32),
            // Someone else reaped it (nothing in this program does): unknown status.
            Err(Errno::ECHILD) => WorkloadExit::Exited(255),
            _ => return false,
        };
        // v4: M's status stands for the workload's only if M never reported it.
        let exit = lock(&self.reported).unwrap_or(own);
        *status = Some(exit);
        *lock(&self.target) = Target::Unknown;
        self.exited.store(true, Ordering::SeqCst);
        let _ = tx.try_send(exit);
        true
    }

    fn signal(&self, sig: Signal) -> bool {
        let status = lock(&self.status);
        if status.is_some() {
            return false;
        }
        match &*lock(&self.target) {
            Target::Unknown => false,
            Target::Pid(pid) => kill(*pid, sig).is_ok(),
            Target::Pidfd(fd) => pidfd_signal(fd, sig),
        }
    }

    /// v4: one line of M's reports.
    fn report(&self, line: &[u8], acks: &OwnedFd) {
        let text = String::from_utf8_lossy(line);
        let mut words = text.split(' ');
        let (Some(word), Some(Ok(n))) = (words.next(), words.next().map(str::parse::<i32>)) else {
            return;
        };
        match word {
            "pid" => {
                let pid = Pid::from_raw(n);
                *lock(&self.target) = match pidfd_open(pid) {
                    Some(fd) => Target::Pidfd(fd),
                    None => Target::Pid(pid),
                };
                let _ = write_all(acks, b"a");
            }
            "exit" => *lock(&self.reported) = Some(WorkloadExit::Exited(n)),
            "signal" => *lock(&self.reported) = Some(WorkloadExit::Signaled(n)),
            _ => {}
        }
    }
}

/// A handle to signal the workload (cheap to clone, usable from any thread).
#[derive(Clone)]
pub struct WorkloadHandle {
    shared: Arc<Shared>,
}

impl WorkloadHandle {
    /// Sends `sig` to the workload while it runs; false once it has ended.
    pub fn signal(&self, sig: Signal) -> bool {
        self.shared.signal(sig)
    }

    /// Asks the workload to end (SIGTERM); false once it has ended.
    pub fn terminate(&self) -> bool {
        self.shared.signal(Signal::SIGTERM)
    }

    /// True once the workload has ended (and was reaped).
    pub fn has_exited(&self) -> bool {
        self.shared.exited.load(Ordering::SeqCst)
    }
}

/// Follows a released workload: reaps it and forwards signals.
pub struct Monitor {
    shared: Arc<Shared>,
    exits: Receiver<WorkloadExit>,
    _thread: JoinHandle<()>,
}

impl Monitor {
    fn start(followed: Followed, sfd: SignalFd) -> Result<Monitor, OrchestrateError> {
        let (child, target) = match &followed {
            Followed::Child(pid) => (*pid, Target::Pid(*pid)),
            Followed::Monitored { monitor, .. } => (*monitor, Target::Unknown),
        };
        let shared = Arc::new(Shared {
            child,
            status: Mutex::new(None),
            target: Mutex::new(target),
            reported: Mutex::new(None),
            exited: Arc::new(AtomicBool::new(false)),
        });
        let (tx, exits) = bounded(1);
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tsem-workload".into())
                .spawn(move || monitor_loop(&shared, &sfd, followed, &tx))
                .map_err(|source| OrchestrateError::Io {
                    what: "starting the workload monitor".into(),
                    source,
                })?
        };
        Ok(Monitor {
            shared,
            exits,
            _thread: thread,
        })
    }

    /// A handle to signal the workload.
    pub fn handle(&self) -> WorkloadHandle {
        WorkloadHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Set once the workload (v4: with every task of its namespace) has
    /// ended (for [`WorkloadSource`]).
    pub fn exited_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.exited)
    }

    /// Receives the exit status once (for `select!`); see also [`Monitor::status`].
    pub fn exits(&self) -> &Receiver<WorkloadExit> {
        &self.exits
    }

    /// How the workload ended, once it has.
    pub fn status(&self) -> Option<WorkloadExit> {
        *lock(&self.shared.status)
    }

    /// Waits until the workload ends.
    pub fn wait(&self) -> WorkloadExit {
        loop {
            if let Some(s) = self.status() {
                return s;
            }
            let _ = self.exits.recv_timeout(Duration::from_millis(100));
        }
    }

    /// Waits at most `timeout` for the workload to end.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<WorkloadExit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status() {
                return Some(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self
                .exits
                .recv_timeout(left.min(Duration::from_millis(100)));
        }
    }

    /// Ends the workload when nobody can answer its events any more:
    /// SIGTERM, and after `grace` SIGKILL for the orchestrator's child and
    /// every process below it. A task asleep in a synchronous event wakes
    /// only for SIGKILL (kernel-interface.md K5), and under v4 the namespace's other tasks
    /// would otherwise sleep forever once M stops forwarding.
    pub fn terminate(&self, grace: Duration) -> WorkloadExit {
        self.shared.signal(Signal::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return s;
        }
        for _ in 0..10 {
            let below = descendants(self.shared.child);
            if below.is_empty() {
                break;
            }
            for pid in below {
                let _ = kill(pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        {
            let status = lock(&self.shared.status);
            if status.is_none() {
                let _ = kill(self.shared.child, Signal::SIGKILL);
            }
        }
        self.wait()
    }
}

/// Every process below `root` (children, their children, ...), from /proc.
fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may hold spaces and parentheses: the fields
            // after the last ')' are `state ppid ...`.
            let rest = &stat[stat.rfind(')')? + 1..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root.as_raw()];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found[1..].iter().map(|&p| Pid::from_raw(p)).collect()
}

fn monitor_loop(shared: &Shared, sfd: &SignalFd, followed: Followed, tx: &Sender<WorkloadExit>) {
    let (mut reports, acks) = match followed {
        Followed::Child(_) => (None, None),
        Followed::Monitored { reports, acks, .. } => (Some(reports), Some(acks)),
    };
    let mut line = Vec::new();
    loop {
        // Checked on every round, not only on SIGCHLD: a wake-up lost for
        // any reason costs at most one poll interval.
        if reports.is_none() && shared.try_reap(tx) {
            return;
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(r) = &reports {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(250u16)) {
            Ok(0) | Err(_) => continue,
            Ok(_) => {}
        }
        let report_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
        if let (true, Some(r), Some(acks)) = (report_ready, &reports, &acks) {
            let mut chunk = [0u8; 256];
            match nix::unistd::read(r, &mut chunk) {
                Ok(0) | Err(Errno::EBADF) => {
                    // M is gone (or going): its status decides the rest.
                    reports = None;
                }
                Ok(n) => {
                    line.extend_from_slice(&chunk[..n]);
                    while let Some(end) = line.iter().position(|&b| b == b'\n') {
                        shared.report(&line[..end], acks);
                        line.drain(..=end);
                    }
                    // M writes short lines; anything longer is not M.
                    if line.len() > 1024 {
                        line.clear();
                    }
                }
                Err(_) => {}
            }
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            // The terminal's signals (sent by the kernel) reached the
            // workload already: it is in the same foreground process group.
            if FORWARDED.contains(&sig) && info.ssi_code != nix::libc::SI_KERNEL {
                shared.signal(sig);
            }
        }
    }
}

/// The export file of a workload's namespace as a pipeline source: it ends
/// at end of file (a FIFO whose writer closed), or when the workload has
/// ended and no record arrived for a short grace time (the kernel's export
/// file never ends by itself).
pub struct WorkloadSource<R> {
    reader: R,
    name: String,
    number: u64,
    exited: Arc<AtomicBool>,
    poll: Duration,
    grace: Duration,
    ended: bool,
}

impl<R: TimedReader> WorkloadSource<R> {
    /// A source over `reader`, ending after `exited` is set; waits in steps
    /// of 50 ms, with a 100 ms grace after the exit.
    pub fn new(reader: R, name: impl Into<String>, exited: Arc<AtomicBool>) -> Self {
        WorkloadSource {
            reader,
            name: name.into(),
            number: 0,
            exited,
            poll: Duration::from_millis(50),
            grace: Duration::from_millis(100),
            ended: false,
        }
    }

    /// Changes the wait step and the grace time after the exit.
    pub fn with_timing(mut self, poll: Duration, grace: Duration) -> Self {
        self.poll = poll;
        self.grace = grace;
        self
    }
}

impl<R: TimedReader> RecordSource for WorkloadSource<R> {
    fn fetch(&mut self, wait: bool) -> io::Result<Fetch<'_>> {
        use tsem_ingest::export::Next;
        if self.ended {
            return Ok(Fetch::End);
        }
        // Read the flag before reading: a record queued before the exit is
        // then found by this read, and an idle read means the queue is drained.
        let exited = self.exited.load(Ordering::SeqCst);
        let timeout = match (wait, exited) {
            (false, _) => Duration::ZERO,
            (true, false) => self.poll,
            (true, true) => self.grace,
        };
        // Waiting in bounded steps (returning Idle in between) lets the
        // pipeline notice a stop, and this source notice the exit.
        let next = self.reader.next_timed(Some(timeout))?;
        if let Some(line) = tsem_ingest::source::numbered(&next, &mut self.number) {
            return Ok(line);
        }
        Ok(match next {
            Next::Record(_) | Next::Oversized(_) | Next::Idle | Next::Truncated => {
                if wait && exited {
                    self.ended = true;
                    Fetch::End
                } else {
                    Fetch::Idle
                }
            }
            Next::End => {
                self.ended = true;
                Fetch::End
            }
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn oversized_head(&self) -> &[u8] {
        // An oversized synchronous event is still answered from its header.
        self.reader.oversized_head()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tsem_ingest::export::Next;

    /// A reader that plays a script: `Some(bytes)` a record, `None` idle;
    /// after the script, idle (or the end, when `ends`).
    struct Script {
        steps: VecDeque<Option<Vec<u8>>>,
        current: Vec<u8>,
        ends: bool,
        timeouts: Vec<Option<Duration>>,
    }

    impl Script {
        fn new(steps: &[Option<&str>], ends: bool) -> Script {
            Script {
                steps: steps
                    .iter()
                    .map(|s| s.map(|s| s.as_bytes().to_vec()))
                    .collect(),
                current: Vec::new(),
                ends,
                timeouts: Vec::new(),
            }
        }
    }

    impl TimedReader for Script {
        fn next_timed(&mut self, timeout: Option<Duration>) -> io::Result<Next<'_>> {
            self.timeouts.push(timeout);
            match self.steps.pop_front() {
                Some(Some(r)) => {
                    self.current = r;
                    Ok(Next::Record(&self.current))
                }
                Some(None) => Ok(Next::Idle),
                None if self.ends => Ok(Next::End),
                None => Ok(Next::Idle),
            }
        }
    }

    fn fetch_all(
        src: &mut WorkloadSource<Script>,
        exited: &AtomicBool,
        exit_after: usize,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..100 {
            if i == exit_after {
                exited.store(true, Ordering::SeqCst);
            }
            match src.fetch(true).unwrap() {
                Fetch::Record { number, bytes } => {
                    out.push(format!("{number}:{}", String::from_utf8_lossy(bytes)))
                }
                Fetch::Oversized { .. } => out.push("oversized".into()),
                Fetch::Idle => out.push("idle".into()),
                Fetch::End => {
                    out.push("end".into());
                    return out;
                }
            }
        }
        out
    }

    #[test]
    fn idle_after_the_exit_is_the_end() {
        let flag = Arc::new(AtomicBool::new(false));
        let script = Script::new(&[Some("a"), None, Some("b"), None, None], false);
        let mut src = WorkloadSource::new(script, "x", Arc::clone(&flag));
        // The workload ends after the fourth fetch: the idle read before it
        // is not the end, the first idle read after it is.
        assert_eq!(
            fetch_all(&mut src, &flag, 4),
            ["1:a", "idle", "2:b", "idle", "end"]
        );
        // Sticky.
        assert!(matches!(src.fetch(true).unwrap(), Fetch::End));
        let t = &src.reader.timeouts;
        assert_eq!(t[0], Some(Duration::from_millis(50)));
        assert_eq!(t[4], Some(Duration::from_millis(100)));
    }

    #[test]
    fn records_queued_before_the_exit_are_drained() {
        let flag = Arc::new(AtomicBool::new(true));
        let script = Script::new(&[Some("a"), Some("b"), Some("c")], false);
        let mut src = WorkloadSource::new(script, "x", Arc::clone(&flag));
        assert_eq!(fetch_all(&mut src, &flag, 0), ["1:a", "2:b", "3:c", "end"]);
    }

    #[test]
    fn end_of_file_ends_while_the_workload_runs() {
        let flag = Arc::new(AtomicBool::new(false));
        let script = Script::new(&[Some("a"), None], true);
        let mut src = WorkloadSource::new(script, "x", Arc::clone(&flag));
        assert_eq!(fetch_all(&mut src, &flag, 1000), ["1:a", "idle", "end"]);
    }

    #[test]
    fn not_waiting_never_ends_on_idle() {
        let flag = Arc::new(AtomicBool::new(true));
        let script = Script::new(&[None], false);
        let mut src = WorkloadSource::new(script, "x", Arc::clone(&flag));
        assert!(matches!(src.fetch(false).unwrap(), Fetch::Idle));
        assert_eq!(src.reader.timeouts, [Some(Duration::ZERO)]);
        assert!(matches!(src.fetch(true).unwrap(), Fetch::End));
    }

    #[test]
    fn external_commands() {
        assert_eq!(
            ExternalOptions::default().command(None).unwrap(),
            "external"
        );
        let o = ExternalOptions {
            nsref: Some(NsRef::Current),
            digest: Some("sha256".into()),
            cache: Some(96),
        };
        assert_eq!(
            o.command(None).unwrap(),
            "external nsref=current digest=sha256 cache=96"
        );
        let key = "ab".repeat(32);
        assert_eq!(
            ExternalOptions::default().command(Some(&key)).unwrap(),
            format!("external key={key}")
        );
        let bad_digest = ExternalOptions {
            digest: Some("sha 256".into()),
            ..Default::default()
        };
        let long = "a".repeat(200);
        for (options, key) in [
            (&bad_digest, None),
            (&ExternalOptions::default(), Some("xyz")),
            (&ExternalOptions::default(), Some(long.as_str())),
        ] {
            assert!(matches!(
                options.command(key),
                Err(OrchestrateError::Command(_))
            ));
        }
    }

    #[test]
    fn auto_tries_the_v4_key_first_then_the_2025_command() {
        let key = "ab".repeat(32);
        let mut opts = LaunchOptions::new(
            "/x",
            ExternalOptions {
                cache: Some(96),
                ..Default::default()
            },
            key.clone(),
            vec!["true".into()],
        );
        let text = |o: &LaunchOptions| -> Vec<(Generation, String)> {
            o.commands()
                .unwrap()
                .into_iter()
                .map(|(g, c)| (g, String::from_utf8(c).unwrap()))
                .collect()
        };
        let v4 = (Generation::Key, format!("external cache=96 key={key}\n"));
        let v2025 = (Generation::Tnum, "external cache=96\n".to_owned());
        assert_eq!(text(&opts), [v4.clone(), v2025.clone()]);
        opts.generation = GenerationChoice::Only(Generation::Key);
        assert_eq!(text(&opts), [v4]);
        opts.generation = GenerationChoice::Only(Generation::Tnum);
        assert_eq!(text(&opts), [v2025]);
    }

    #[test]
    fn a_v4_key_is_64_hex_digits() {
        assert!(check_key(&"0f".repeat(32)).is_ok());
        for bad in [
            "",
            "ab",
            &"0f".repeat(31),
            &"zz".repeat(32),
            &"0f".repeat(33),
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn descendants_are_found_through_proc() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5; wait"])
            .spawn()
            .unwrap();
        let me = Pid::from_raw(child.id() as i32);
        let start = Instant::now();
        let mut found = Vec::new();
        while found.len() < 2 && start.elapsed() < Duration::from_secs(5) {
            found = descendants(me);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(found.len(), 2, "two sleeps below the shell");
        for p in &found {
            let _ = kill(*p, Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(WorkloadExit::Exited(0).code(), 0);
        assert_eq!(WorkloadExit::Exited(3).code(), 3);
        assert_eq!(WorkloadExit::Signaled(15).code(), 143);
        assert_eq!(WorkloadExit::Signaled(9).to_string(), "signal SIGKILL");
    }

    #[test]
    fn launching_from_a_threaded_process_is_refused() {
        // The test harness runs tests on threads.
        let opts = LaunchOptions::new(
            "/nonexistent",
            ExternalOptions::default(),
            "0".repeat(64),
            vec!["true".into()],
        );
        if thread_count().is_some_and(|n| n > 1) {
            assert!(matches!(launch(&opts), Err(OrchestrateError::Threads(_))));
        }
    }
}
