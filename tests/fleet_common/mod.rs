//! Servers for the fleet tests: a NATS server with JetStream and an MQTT
//! broker on loopback. `.ci/run` starts both and names them in
//! `TSEM_NATS_URL` and `TSEM_MQTT_URL`; without those, a test binary starts
//! its own (shared by its tests) when `nats-server` / `mosquitto` is
//! installed, and the tests skip with a message when it is not.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// An installed program, looked up in PATH and the sbin directories
/// (Debian installs both servers in /usr/sbin).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free loopback port (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A name unique to this test process and call (streams, prefixes, hosts).
pub fn unique(base: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{base}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A server started in the background for the whole test binary. It is
/// run by a shell that waits for its standard input to close: when the
/// test process exits, however it exits, the kernel closes the pipe and
/// the shell stops the server and removes its directory.
struct Background {
    url: String,
    _stdin: Mutex<ChildStdin>,
}

fn background(
    program: &Path,
    args: &[String],
    dir: &Path,
    port: u16,
    scheme: &str,
) -> Option<Background> {
    let script = r#"p="$1"; d="$2"; shift 2; "$p" "$@" >"$d/log" 2>&1 & pid=$!; read _; kill $pid; wait $pid; rm -rf "$d""#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(program)
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let stdin = child.stdin.take()?;
    if !wait_for_port(port, Duration::from_secs(10)) {
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        panic!("{} did not start on port {port}: {log}", program.display());
    }
    Some(Background {
        url: format!("{scheme}://127.0.0.1:{port}"),
        _stdin: Mutex::new(stdin),
    })
}

fn private_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tsem-fleet-test-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("server directory");
    dir
}

/// The NATS server of the tests, or `None` (with a message) to skip.
pub fn nats_url(test: &str) -> Option<String> {
    if let Ok(url) = std::env::var("TSEM_NATS_URL") {
        if !url.is_empty() {
            return Some(url);
        }
    }
    static SERVER: OnceLock<Option<Background>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let program = find_program("nats-server")?;
        let dir = private_dir("nats");
        let port = free_port();
        let args: Vec<String> = [
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-sd",
            &dir.join("store").to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        background(&program, &args, &dir, port, "nats")
    });
    match server {
        Some(s) => Some(s.url.clone()),
        None => {
            eprintln!("SKIPPED {test}: no NATS server (set TSEM_NATS_URL or install nats-server)");
            None
        }
    }
}

/// The MQTT broker of the tests, or `None` (with a message) to skip.
pub fn mqtt_url(test: &str) -> Option<String> {
    if let Ok(url) = std::env::var("TSEM_MQTT_URL") {
        if !url.is_empty() {
            return Some(url);
        }
    }
    static SERVER: OnceLock<Option<Background>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let program = find_program("mosquitto")?;
        let dir = private_dir("mqtt");
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .ok()?;
        let args = vec!["-c".to_owned(), conf.to_string_lossy().into_owned()];
        background(&program, &args, &dir, port, "mqtt")
    });
    match server {
        Some(s) => Some(s.url.clone()),
        None => {
            eprintln!("SKIPPED {test}: no MQTT broker (set TSEM_MQTT_URL or install mosquitto)");
            None
        }
    }
}

/// A NATS server of one test's own (to stop and start again); killed when dropped.
pub struct OwnNats {
    program: PathBuf,
    /// Its port.
    pub port: u16,
    /// Its storage directory (kept across restarts).
    pub store: PathBuf,
    child: Option<Child>,
}

impl OwnNats {
    /// Starts one, or `None` when nats-server is not installed.
    pub fn start(store: &Path) -> Option<OwnNats> {
        let mut s = OwnNats::stopped(store)?;
        s.restart();
        Some(s)
    }

    /// One with its port chosen, not started yet (`None`: not installed).
    pub fn stopped(store: &Path) -> Option<OwnNats> {
        Some(OwnNats {
            program: find_program("nats-server")?,
            port: free_port(),
            store: store.to_path_buf(),
            child: None,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL, no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.store.with_extension("log")).expect("server log");
        let child = Command::new(&self.program)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "nats-server did not start"
        );
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The message count of a stream.
pub fn stream_messages(url: &str, stream: &str) -> u64 {
    let target = match tsem_fleet::Target::parse(url).expect("url").server {
        tsem_fleet::Server::Nats(n) => n,
        tsem_fleet::Server::Mqtt(_) => panic!("not nats"),
    };
    tsem_fleet::nats::stream_state(&target, stream)
        .map(|s| s.messages)
        .unwrap_or(0)
}

/// Waits until a stream holds `n` messages; returns the count seen last.
pub fn wait_for_messages(url: &str, stream: &str, n: u64, limit: Duration) -> u64 {
    let t0 = Instant::now();
    loop {
        let got = stream_messages(url, stream);
        if got >= n || t0.elapsed() > limit {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The conformance corpus split in three parts (files in `dir`): 1000 lines each.
pub fn corpus_parts(dir: &Path) -> Vec<PathBuf> {
    let all = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/events.jsonl"),
    )
    .expect("conformance corpus");
    let lines: Vec<&str> = all.lines().collect();
    let size = lines.len().div_ceil(3);
    lines
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let p = dir.join(format!("part{}.jsonl", i + 1));
            let mut f = std::fs::File::create(&p).expect("part");
            for l in chunk {
                writeln!(f, "{l}").expect("write part");
            }
            p
        })
        .collect()
}
