//! The server side of the management socket: creating it safely, checking
//! every peer, and turning requests into [`ModelRequest`]s.

use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};
use tsem_model::views::View;

use super::wire::{self, Reply, Request, Sizes, WireError};
use super::MgmtError;
use tsem_pipeline::{ModelRequest, SinkError};

/// Longest workload name.
const MAX_NAME: usize = 64;
/// Room for a socket path in `sockaddr_un` (108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Connections served at once; more are refused with an error reply.
const MAX_CONNECTIONS: usize = 16;
/// A connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that does not take its reply for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for the model's answer (the sequencer answers between
/// batches, which take milliseconds; this only guards against a stuck run).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL_MS: u16 = 100;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> MgmtError {
    let what = what.into();
    move |source| MgmtError::Io { what, source }
}

/// Checks that `name` can name a socket: 1 to 64 letters, digits, `.`, `_`
/// or `-`, not starting with `.` (no path separators, no hidden files).
pub fn validate_name(name: &str) -> Result<(), MgmtError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(MgmtError::InvalidName(name.to_owned()))
    }
}

/// The socket path of workload `name` in `dir` (checked to fit a `sockaddr_un`).
pub fn socket_path(dir: &Path, name: &str) -> Result<PathBuf, MgmtError> {
    validate_name(name)?;
    let path = dir.join(name);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(MgmtError::Insecure(format!(
            "socket path {} is longer than {MAX_SOCKET_PATH} bytes",
            path.display()
        )));
    }
    Ok(path)
}

/// Creates `dir` (mode 0700) or checks an existing one: a real directory
/// owned by `uid`; a mode open to others is tightened to 0700.
fn prepare_dir(dir: &Path, uid: u32) -> Result<(), MgmtError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(format!("creating {}", dir.display())))?;
    let meta = fs::symlink_metadata(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(MgmtError::Insecure(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.uid() != uid {
        return Err(MgmtError::Insecure(format!(
            "{} belongs to uid {}, not to uid {uid}",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("setting the mode of {}", dir.display())))?;
    }
    Ok(())
}

/// Removes a socket left by an orchestrator that is gone; fails when one
/// still answers, or when something else has the name.
fn clear_stale(path: &Path, name: &str) -> Result<(), MgmtError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Err(MgmtError::Insecure(format!(
            "{} exists and is not a socket",
            path.display()
        )));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(MgmtError::InUse {
            name: name.to_owned(),
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(io_err(format!("removing stale {}", path.display())))
        }
        Err(e) => Err(io_err(format!("checking {}", path.display()))(e)),
    }
}

/// Removes the socket file when dropped, unless another process has
/// replaced it meanwhile (same path, another inode).
struct SocketGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// A bound management socket that does not serve yet. Binding and serving
/// are two steps so that the socket can be created (and a name clash
/// reported) before the orchestrator forks, while the serving threads start
/// after the fork.
pub struct Endpoint {
    listener: UnixListener,
    guard: SocketGuard,
    uid: u32,
}

impl Endpoint {
    /// Creates `<dir>/<name>`: the directory with mode 0700, the socket with
    /// mode 0600, both owned by the effective uid.
    pub fn bind(dir: &Path, name: &str) -> Result<Endpoint, MgmtError> {
        let path = socket_path(dir, name)?;
        let uid = nix::unistd::geteuid().as_raw();
        prepare_dir(dir, uid)?;
        clear_stale(&path, name)?;
        let listener =
            UnixListener::bind(&path).map_err(io_err(format!("binding {}", path.display())))?;
        // bind() made the file with the umask's mode; the 0700 directory keeps
        // everyone else out until this chmod.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("setting the mode of {}", path.display())))?;
        let meta =
            fs::symlink_metadata(&path).map_err(io_err(format!("reading {}", path.display())))?;
        // Non-blocking, so that a connection that went away between poll()
        // and accept() cannot block the accept loop.
        listener
            .set_nonblocking(true)
            .map_err(io_err(format!("configuring {}", path.display())))?;
        Ok(Endpoint {
            listener,
            guard: SocketGuard {
                path,
                dev: meta.dev(),
                ino: meta.ino(),
            },
            uid,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }

    /// Starts answering connections on a thread of its own; each request is
    /// sent to `requests` (the pipeline's, see [`crate::Outputs::requests`]).
    pub fn serve(self, requests: Sender<ModelRequest>) -> Result<Server, MgmtError> {
        let stop = Arc::new(AtomicBool::new(false));
        let Endpoint {
            listener,
            guard,
            uid,
        } = self;
        let path = guard.path.clone();
        // Closing `wake` ends the accept thread's poll at once: shutting
        // down costs no poll interval.
        let (woken, wake) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("creating a pipe")(e.into()))?;
        let accept = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("tsem-mgmt".into())
                .spawn(move || accept_loop(listener, path, uid, requests, stop, woken))
                .map_err(io_err("starting the management thread"))?
        };
        Ok(Server {
            stop,
            wake: Some(wake),
            accept: Some(accept),
            guard: Some(guard),
        })
    }
}

/// A serving management socket; stopped and removed by [`Server::shutdown`]
/// or when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    /// Dropped to wake the accept thread.
    wake: Option<std::os::fd::OwnedFd>,
    accept: Option<JoinHandle<()>>,
    guard: Option<SocketGuard>,
}

impl Server {
    /// The socket's path.
    pub fn path(&self) -> Option<&Path> {
        self.guard.as_ref().map(|g| g.path.as_path())
    }

    /// Stops accepting connections and removes the socket. Connections being
    /// served finish on their own threads (their requests fail once nobody
    /// answers the model requests any more).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.take();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        // Dropping the guard removes the socket.
        self.guard.take();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Who may use the socket: root, and the orchestrator's own user.
fn allowed(peer_uid: u32, server_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == server_uid
}

fn accept_loop(
    listener: UnixListener,
    path: PathBuf,
    uid: u32,
    requests: Sender<ModelRequest>,
    stop: Arc<AtomicBool>,
    woken: std::os::fd::OwnedFd,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(woken.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(ACCEPT_POLL_MS)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) if fds[0].revents().is_none_or(|r| r.is_empty()) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("management socket {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS.into()));
                continue;
            }
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                continue
            }
            Err(e) => {
                // EMFILE and the like: report, back off, go on serving.
                tracing::warn!("management socket {}: {e}", path.display());
                std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS.into()));
                continue;
            }
        };
        admit(stream, &path, uid, &requests, &active);
    }
}

/// Checks a new connection and hands it to a thread of its own.
fn admit(
    mut stream: UnixStream,
    path: &Path,
    uid: u32,
    requests: &Sender<ModelRequest>,
    active: &Arc<AtomicUsize>,
) {
    // Replies to refused peers must not block the accept loop.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    match getsockopt(&stream, sockopt::PeerCredentials) {
        Ok(cred) if allowed(cred.uid(), uid) => {}
        Ok(cred) => {
            tracing::warn!(
                "management socket {}: refused a connection from uid {} (pid {})",
                path.display(),
                cred.uid(),
                cred.pid()
            );
            let _ = wire::write_reply(&mut stream, &Reply::Error("permission denied".into()));
            return;
        }
        Err(e) => {
            tracing::warn!(
                "management socket {}: refused a connection whose credentials \
                 cannot be read: {e}",
                path.display()
            );
            return;
        }
    }
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::SeqCst);
        let _ = wire::write_reply(
            &mut stream,
            &Reply::Error("too many management connections, try again".into()),
        );
        return;
    }
    let requests = requests.clone();
    let slot = Slot(Arc::clone(active));
    let spawned = std::thread::Builder::new()
        .name("tsem-mgmt-conn".into())
        .spawn(move || {
            let _slot = slot;
            serve_connection(stream, &requests);
        });
    if let Err(e) = spawned {
        tracing::warn!("management socket {}: {e}", path.display());
    }
}

/// Gives a connection slot back when its thread ends (or never starts).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers the requests of one connection, in order, until it closes.
fn serve_connection(mut stream: UnixStream, requests: &Sender<ModelRequest>) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    loop {
        let reply = match wire::read_request(&mut stream) {
            Ok(request) => handle(request, requests),
            Err(WireError::Eof | WireError::Io(_) | WireError::Truncated { .. }) => return,
            Err(e) => {
                let framing_lost = e.loses_framing();
                let _ = wire::write_reply(&mut stream, &Reply::Error(e.to_string()));
                if framing_lost {
                    return;
                }
                continue;
            }
        };
        if wire::write_reply(&mut stream, &reply).is_err() {
            return;
        }
    }
}

/// The view names a request may use.
const VIEW_NAMES: &str = "trajectory, coefficients, counts, forensics, forensics-coefficients, \
                          forensics-counts, state, measurement, model";

/// Answers one request.
pub(crate) fn handle(request: Request, requests: &Sender<ModelRequest>) -> Reply {
    let result = match request {
        Request::View {
            view,
            prefix,
            update,
        } => match View::from_name(&view, update) {
            Some(v) => ask_view(requests, v, prefix),
            None => Err(format!("unknown view {view:?} (one of {VIEW_NAMES})")),
        },
        Request::Sizes => sizes(requests).map(|s| serde_json::to_vec(&s).unwrap_or_default()),
        Request::Seal => ask_seal(requests).map(|()| Vec::new()),
    };
    match result {
        Ok(payload) => Reply::Ok(payload),
        Err(message) => Reply::Error(message),
    }
}

const GONE: &str = "the workload's model is no longer available";

/// The model's answer, as the text a client is sent on failure.
fn wait_reply<T>(rx: crossbeam_channel::Receiver<Result<T, SinkError>>) -> Result<T, String> {
    match rx.recv_timeout(REPLY_TIMEOUT) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(RecvTimeoutError::Timeout) => Err("the model did not answer in time".into()),
        Err(RecvTimeoutError::Disconnected) => Err(GONE.into()),
    }
}

fn ask_view(requests: &Sender<ModelRequest>, view: View, prefix: bool) -> Result<Vec<u8>, String> {
    let (reply, rx) = bounded(1);
    requests
        .send_timeout(
            ModelRequest::View {
                view,
                prefix,
                reply,
            },
            REPLY_TIMEOUT,
        )
        .map_err(|_| GONE.to_owned())?;
    wait_reply(rx)
}

fn ask_seal(requests: &Sender<ModelRequest>) -> Result<(), String> {
    let (reply, rx) = bounded(1);
    requests
        .send_timeout(ModelRequest::Seal { reply }, REPLY_TIMEOUT)
        .map_err(|_| GONE.to_owned())?;
    wait_reply(rx)
}

fn sizes(requests: &Sender<ModelRequest>) -> Result<Sizes, String> {
    // One line per point in the count views; counting lines keeps the
    // sequencer's request set unchanged.
    let lines = |v: Vec<u8>| v.iter().filter(|&&b| b == b'\n').count() as u64;
    Ok(Sizes {
        valid: lines(ask_view(requests, View::Counts, false)?),
        forensics: lines(ask_view(requests, View::ForensicsCounts, false)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["web", "a", "my-workload_1.2", &"x".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "..",
            "a/b",
            "../etc",
            "sp ace",
            "nul\0",
            "é",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(validate_name(bad), Err(MgmtError::InvalidName(_))),
                "{bad:?}"
            );
        }
        let long = PathBuf::from("/".to_owned() + &"d".repeat(100));
        assert!(matches!(
            socket_path(&long, "workload"),
            Err(MgmtError::Insecure(_))
        ));
    }

    #[test]
    fn only_root_and_the_owner_are_allowed() {
        assert!(allowed(0, 1000));
        assert!(allowed(1000, 1000));
        assert!(!allowed(65534, 1000));
        assert!(!allowed(65534, 0));
    }

    #[test]
    fn unknown_views_and_a_gone_model_are_errors() {
        let (tx, rx) = crossbeam_channel::unbounded();
        match handle(Request::view("nope", false, false), &tx) {
            Reply::Error(m) => assert!(m.contains("unknown view"), "{m}"),
            r => panic!("{r:?}"),
        }
        drop(rx);
        match handle(Request::view("state", false, false), &tx) {
            Reply::Error(m) => assert_eq!(m, GONE),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let uid = fs::metadata(dir.path()).unwrap().uid();
        assert!(matches!(
            prepare_dir(dir.path(), uid.wrapping_add(1)),
            Err(MgmtError::Insecure(_))
        ));
        // Our own, too open: tightened.
        let sub = dir.path().join("mgmt");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(&sub, uid).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
    }
}
