//! The workload side of process mode (`tsem-stream run -P`, spec §1.1 and
//! §7): start a command in a new externally modeled namespace, follow it,
//! pass signals on, and end the input once it has exited.
//!
//! Start-up ([`launch`], then [`Launched::release`]):
//!
//! 1. Before forking, everything the child needs is prepared (the command
//!    line, the `control` and `id` files opened, two pipes), and the signals
//!    the orchestrator handles are blocked.
//! 2. The child reads `id` (its current namespace), writes `external …` to
//!    `control` in a single `write()` (the kernel creates the namespace for
//!    the task that writes), then re-reads `id` from offset 0 every 200 µs
//!    until it changes (as Quixote polls it; the kernel answers per caller,
//!    a simulator rewrites the file), and sends `id N` to the parent.
//!    Both files were opened *before* the namespace existed: an open in the
//!    new namespace would be a synchronous `file_open` event, and nobody
//!    reads the export file yet to release it.
//! 3. The parent opens `external_tma/N`, writes `enforce` if asked (the
//!    caller's business, outside this module), and releases the child.
//! 4. The child restores the signal mask and SIGPIPE, drops CAP_MAC_ADMIN
//!    (so that nothing in the workload can change its own trust state),
//!    and executes the command.
//!
//! The [`Monitor`] thread then reaps the workload and forwards SIGINT,
//! SIGTERM, SIGHUP and SIGQUIT to it when another process sent them to the
//! orchestrator. Signals the terminal generated (the kernel is their
//! sender) are not forwarded: the terminal already sent them to the whole
//! foreground process group, the workload included.
//!
//! [`WorkloadSource`] turns the export file into a pipeline source that ends
//! once the workload has exited and nothing more arrives (or at end of file,
//! for a FIFO).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
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

use crate::source::{Fetch, RecordSource, TimedReader};

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

/// The options of the `external` control command (spec §1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalOptions {
    /// `nsref=`; `None` leaves the kernel's default.
    pub nsref: Option<NsRef>,
    /// `digest=`; the events are modeled with SHA-256, so only `sha256` makes sense.
    pub digest: Option<String>,
    /// `cache=N`, the size of the kernel's magazine for atomic-context events.
    pub cache: Option<u32>,
    /// `key=HEX`, mandatory for 2024 (v3/v4) kernels.
    pub key: Option<String>,
}

impl ExternalOptions {
    /// The command text, without its `\n`, e.g. `external digest=sha256 cache=96`.
    pub fn command(&self) -> Result<String, OrchestrateError> {
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
        if let Some(k) = &self.key {
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

/// How to start a workload.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The TSEM securityfs root (`/sys/kernel/security/tsem` or a simulator's).
    pub tsem_root: PathBuf,
    /// The `external …` command, without `\n` (see [`ExternalOptions::command`]).
    pub external: String,
    /// The program and its arguments (the program is looked up in `PATH`).
    pub argv: Vec<String>,
    /// How long to wait for the namespace id to appear in `id`.
    pub id_timeout: Duration,
}

impl LaunchOptions {
    /// Options with a 10 s namespace timeout.
    pub fn new(tsem_root: impl Into<PathBuf>, external: String, argv: Vec<String>) -> Self {
        LaunchOptions {
            tsem_root: tsem_root.into(),
            external,
            argv,
            id_timeout: Duration::from_secs(10),
        }
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

/// A workload in its namespace, stopped just before it executes its command.
pub struct Launched {
    pid: Pid,
    namespace: u64,
    go: Option<OwnedFd>,
    old_mask: SigSet,
}

/// Forks the workload process and creates its namespace (steps 1–2 of the
/// module documentation). Must be called while the process has a single
/// thread, so that the child may allocate and print; it fails otherwise.
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
    let argv = opts
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| OrchestrateError::Command("a command argument contains a NUL byte".into()))?;
    let mut line = opts.external.clone().into_bytes();
    line.push(b'\n');
    if line.len() > MAX_CONTROL_COMMAND {
        return Err(OrchestrateError::Command(format!(
            "the command {:?} is longer than the kernel's {MAX_CONTROL_COMMAND} bytes",
            opts.external
        )));
    }
    let control_path = opts.tsem_root.join("control");
    let control = OpenOptions::new()
        .write(true)
        .open(&control_path)
        .map_err(|source| OrchestrateError::Io {
            what: format!("opening {}", control_path.display()),
            source,
        })?;
    let id_path = opts.tsem_root.join("id");
    let id = File::open(&id_path).map_err(|source| OrchestrateError::Io {
        what: format!("opening {}", id_path.display()),
        source,
    })?;
    let (id_r, id_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
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
        id_w,
        go_r,
        line: &line,
        argv: &argv,
        old_mask: &old_mask,
        id_timeout: opts.id_timeout,
    };
    // SAFETY: the process has one thread (checked above), so the child is a
    // complete copy of it and may use any function; it never returns.
    match unsafe { fork() } {
        Err(e) => {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            Err(sys("forking the workload process")(e))
        }
        Ok(ForkResult::Child) => {
            drop(id_r);
            drop(go_w);
            child.run()
        }
        Ok(ForkResult::Parent { child: pid }) => {
            drop(child);
            // Beyond the child's own limit: it reports its timeout itself.
            let timeout = opts.id_timeout + Duration::from_secs(5);
            let report = read_handshake(&id_r, timeout);
            // From here on, dropping `launched` ends and reaps the child.
            let mut launched = Launched {
                pid,
                namespace: 0,
                go: Some(go_w),
                old_mask,
            };
            match report {
                Ok(namespace) => {
                    launched.namespace = namespace;
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
    /// The workload's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The id of the new modeling namespace (`external_tma/<id>`).
    pub fn namespace(&self) -> u64 {
        self.namespace
    }

    /// Lets the workload execute its command and starts following it.
    /// Call once the export file is open (and `enforce` written).
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
        drop(go);
        Monitor::start(self.pid, sfd)
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

fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the child's one-line report: `id N` or `error MESSAGE`.
fn read_handshake(fd: &OwnedFd, timeout: Duration) -> Result<u64, OrchestrateError> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..end]);
            if let Some(id) = line.strip_prefix("id ") {
                return id
                    .trim()
                    .parse()
                    .map_err(|_| OrchestrateError::Startup(format!("bad namespace id {id:?}")));
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
        match nix::unistd::read(fd, &mut chunk) {
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
    id_w: OwnedFd,
    go_r: OwnedFd,
    line: &'a [u8],
    argv: &'a [CString],
    old_mask: &'a SigSet,
    id_timeout: Duration,
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

impl Child<'_> {
    fn fail(&self, message: &str) -> ! {
        let _ = write_all(&self.id_w, format!("error {message}\n").as_bytes());
        exit_child(1)
    }

    fn run(self) -> ! {
        let before = read_id(&self.id);
        let command = String::from_utf8_lossy(&self.line[..self.line.len() - 1]).into_owned();
        // One write(): the kernel takes exactly one command per write.
        match nix::unistd::write(&self.control, self.line) {
            Ok(n) if n == self.line.len() => {}
            Ok(n) => self.fail(&format!(
                "short write of {command:?} to control ({n} bytes)"
            )),
            Err(e) => self.fail(&format!("writing {command:?} to control: {e}")),
        }
        let deadline = Instant::now() + self.id_timeout;
        let namespace = loop {
            match read_id(&self.id) {
                Some(n) if Some(n) != before => break n,
                _ => {}
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the namespace id did not change within {:?} after {command:?}",
                    self.id_timeout
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        if write_all(&self.id_w, format!("id {namespace}\n").as_bytes()).is_err() {
            exit_child(1);
        }
        let Child {
            control,
            id,
            id_w,
            go_r,
            argv,
            old_mask,
            ..
        } = self;
        drop((control, id, id_w));
        // Wait until the parent reads the export file: from here on every
        // hooked operation of this process is an event that waits for it.
        let mut b = [0u8; 1];
        loop {
            match nix::unistd::read(&go_r, &mut b) {
                Ok(1) if b[0] == b'g' => break,
                Err(Errno::EINTR) => {}
                _ => exit_child(1),
            }
        }
        drop(go_r);
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
        // The Rust runtime ignores SIGPIPE, and an ignored signal stays
        // ignored across exec: give the workload the default back.
        // SAFETY: setting a default disposition installs no handler.
        let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
        if let Err(e) = drop_mac_admin() {
            eprintln!("tsem-stream: cannot drop CAP_MAC_ADMIN: {e}");
            exit_child(126);
        }
        let err = match nix::unistd::execvp(&argv[0], argv) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        eprintln!(
            "tsem-stream: cannot run {}: {err}",
            argv[0].to_string_lossy()
        );
        exit_child(127)
    }
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

/// State shared by the monitor thread and the handles.
struct Shared {
    pid: Pid,
    /// `Some` once reaped. Held while reaping and while signalling, so a
    /// signal never reaches a recycled pid.
    status: Mutex<Option<WorkloadExit>>,
    exited: Arc<AtomicBool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<WorkloadExit>> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reaps the workload if it has ended; true when it has.
    fn try_reap(&self, tx: &Sender<WorkloadExit>) -> bool {
        let mut status = self.lock();
        if status.is_some() {
            return true;
        }
        let exit = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => WorkloadExit::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => WorkloadExit::Signaled(sig as i32),
            // Someone else reaped it (nothing in this program does): unknown status.
            Err(Errno::ECHILD) => WorkloadExit::Exited(255),
            _ => return false,
        };
        *status = Some(exit);
        self.exited.store(true, Ordering::SeqCst);
        let _ = tx.try_send(exit);
        true
    }

    fn signal(&self, sig: Signal) -> bool {
        let status = self.lock();
        status.is_none() && kill(self.pid, sig).is_ok()
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
    fn start(pid: Pid, sfd: SignalFd) -> Result<Monitor, OrchestrateError> {
        let shared = Arc::new(Shared {
            pid,
            status: Mutex::new(None),
            exited: Arc::new(AtomicBool::new(false)),
        });
        let (tx, exits) = bounded(1);
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tsem-workload".into())
                .spawn(move || monitor_loop(&shared, &sfd, &tx))
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

    /// The workload's process id.
    pub fn pid(&self) -> Pid {
        self.shared.pid
    }

    /// A handle to signal the workload.
    pub fn handle(&self) -> WorkloadHandle {
        WorkloadHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Set once the workload has ended (for [`WorkloadSource`]).
    pub fn exited_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.exited)
    }

    /// Receives the exit status once (for `select!`); see also [`Monitor::status`].
    pub fn exits(&self) -> &Receiver<WorkloadExit> {
        &self.exits
    }

    /// How the workload ended, once it has.
    pub fn status(&self) -> Option<WorkloadExit> {
        *self.shared.lock()
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

    /// Ends the workload: SIGTERM, and SIGKILL if it is still there after `grace`.
    pub fn terminate(&self, grace: Duration) -> WorkloadExit {
        self.shared.signal(Signal::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return s;
        }
        self.shared.signal(Signal::SIGKILL);
        self.wait()
    }
}

fn monitor_loop(shared: &Shared, sfd: &SignalFd, tx: &Sender<WorkloadExit>) {
    loop {
        // Checked on every round, not only on SIGCHLD: a wake-up lost for
        // any reason costs at most one poll interval.
        if shared.try_reap(tx) {
            return;
        }
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(250u16)) {
            Ok(0) | Err(_) => continue,
            Ok(_) => {}
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
        Ok(match self.reader.next_timed(Some(timeout))? {
            Next::Record(bytes) => {
                self.number += 1;
                Fetch::Record {
                    number: self.number,
                    bytes,
                }
            }
            Next::Oversized(len) => {
                self.number += 1;
                Fetch::Oversized {
                    number: self.number,
                    len,
                }
            }
            Next::Idle | Next::Truncated => {
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
        assert_eq!(ExternalOptions::default().command().unwrap(), "external");
        let o = ExternalOptions {
            nsref: Some(NsRef::Current),
            digest: Some("sha256".into()),
            cache: Some(96),
            key: None,
        };
        assert_eq!(
            o.command().unwrap(),
            "external nsref=current digest=sha256 cache=96"
        );
        let k = ExternalOptions {
            key: Some("ab".repeat(32)),
            ..ExternalOptions::default()
        };
        assert_eq!(
            k.command().unwrap(),
            format!("external key={}", "ab".repeat(32))
        );
        for bad in [
            ExternalOptions {
                digest: Some("sha 256".into()),
                ..Default::default()
            },
            ExternalOptions {
                key: Some("xyz".into()),
                ..Default::default()
            },
            ExternalOptions {
                key: Some("a".repeat(200)),
                ..Default::default()
            },
        ] {
            assert!(matches!(bad.command(), Err(OrchestrateError::Command(_))));
        }
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
        let opts = LaunchOptions::new("/nonexistent", "external".into(), vec!["true".into()]);
        if thread_count().is_some_and(|n| n > 1) {
            assert!(matches!(launch(&opts), Err(OrchestrateError::Threads(_))));
        }
    }
}
