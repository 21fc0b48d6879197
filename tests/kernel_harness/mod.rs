//! Boots the real TSEM kernel (`../shared/tsem-kernel/bzImage`, Linux 6.12 +
//! TSEM v4) under QEMU/TCG with an initramfs holding the `tsem-stream` binary
//! under test, runs one scenario script of `tests/kernel/` in the guest, and
//! hands the test what came back: the serial console (between the
//! `=== SCENARIO BEGIN` / `=== SCENARIO END rc=N` markers), the `RESULT
//! key=value` lines in it, and the files the scenario left in the guest's
//! `/tmp/out` (written by `/init` as a tar archive onto a second, raw disk).
//!
//! A boot's files stay in `target/real-kernel/SCENARIO/` until the next boot
//! of that scenario: `console.txt`, `qemu.stderr`, `out/`, the disk images.
//!
//! Each boot gets its own ext4 disk (`mke2fs -t ext4 -d DIR`; ext4 and not
//! ext2 because TSEM refreshes a file's cached digest only when its
//! `i_version` changes, which ext2 lacks), mounted on `/root` in the guest:
//! files there hash their content, while everything in the initramfs hashes
//! as the empty file.
//!
//! Prerequisites: `qemu-system-x86_64`, busybox-static at `/bin/busybox`,
//! `cpio`, `mke2fs` and `tar`. Without one of them the tests print
//! `skipped: …` and pass, except under CI (`CI` set), where a missing QEMU is
//! a failure. A C compiler is optional: it builds the reference TMA
//! (`mini-tma.c`), `internal-launch.c`, `export-reader.c` and
//! `drain-watch.c`; comparisons that need them are skipped with a message
//! without one.
//!
//! Overrides: `TSEM_KERNEL_DIR` (the folder with `bzImage` and `mini-tma.c`),
//! `TSEM_STREAM_BIN` (the binary put into the guest and run for host-side
//! checks), `TSEM_KERNEL_CPUS` (virtual CPUs of a guest, default 1, as the
//! kernel folder's `boot.sh`; more change the timings, e.g. of the cost
//! test).
// Shared by several test binaries (real_kernel, real_kernel_cost), each of
// which uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Hard limit of one boot: a scenario takes 5-30 s under TCG (the slowest
/// waits out its own guards on this kernel), so a guest still running after
/// this is hung (typically a task waiting for a verdict nobody writes, in a
/// scenario step without a guard, or several guards in a row).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Guests booted at the same time: each is one TCG thread (`-smp 1`), and
/// the suite must fit a 2-core machine.
const MAX_CONCURRENT_BOOTS: usize = 2;

/// Console lines shown when a boot fails.
const CONSOLE_TAIL_LINES: usize = 60;

/// The prepared kernel, initramfs and helper programs, shared by all tests
/// of the binary.
pub struct Kernel {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The kernel image.
    pub bzimage: PathBuf,
    /// The initramfs with the binary under test and every scenario script.
    pub initramfs: PathBuf,
    /// The binary under test (also run on the host for offline checks).
    pub tsem_stream: PathBuf,
    /// The reference TMA, when a C compiler built it (it is in the guest as
    /// `/usr/local/bin/mini-tma`).
    pub mini_tma: Option<PathBuf>,
    /// `internal-launch`, when a C compiler built it (in the guest as
    /// `/usr/local/bin/internal-launch`).
    pub internal_launch: Option<PathBuf>,
    /// The C baseline consumer of the export file (`export-reader.c`), when
    /// a C compiler built it (in the guest as `/usr/local/bin/export-reader`).
    pub export_reader: Option<PathBuf>,
    /// The timer of drains (`drain-watch.c`), when a C compiler built it (in
    /// the guest as `/usr/local/bin/drain-watch`).
    pub drain_watch: Option<PathBuf>,
    /// Why the C helpers are missing, for skip messages.
    pub no_c_helpers: Option<String>,
    /// `target/real-kernel`: build products and transcripts.
    pub work: PathBuf,
}

/// Why the tests cannot run here.
struct Missing(String);

/// The prepared kernel, or `None` after printing why the test is skipped.
/// Under CI (`CI` set) a missing prerequisite fails the test instead.
pub fn kernel() -> Option<&'static Kernel> {
    static KERNEL: OnceLock<Result<Kernel, Missing>> = OnceLock::new();
    match KERNEL.get_or_init(prepare) {
        Ok(kernel) => Some(kernel),
        Err(Missing(why)) => {
            if std::env::var_os("CI").is_some() {
                panic!("the real-kernel tests cannot run in CI: {why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// `CARGO_MANIFEST_DIR/../shared/tsem-kernel`, or `TSEM_KERNEL_DIR`.
pub fn kernel_dir() -> PathBuf {
    match std::env::var_os("TSEM_KERNEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tsem-kernel"),
    }
}

/// `tests/kernel`: the scenario scripts and the initramfs builder.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel")
}

/// `target/real-kernel`.
pub fn work_dir() -> PathBuf {
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    target_tmp
        .parent()
        .unwrap_or(target_tmp)
        .join("real-kernel")
}

/// An installed program, looked up in PATH and the sbin directories
/// (Debian installs mke2fs in /usr/sbin, not in a user's PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a host command, panicking with its output when it fails.
fn run_host(command: &mut Command, what: &str) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes through a temporary name and renames, so that a concurrent test
/// run never boots a half-written file.
fn replace_atomically(dest: &Path, make: impl FnOnce(&Path)) {
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    make(&tmp);
    fs::rename(&tmp, dest)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), dest.display()));
}

fn prepare() -> Result<Kernel, Missing> {
    let qemu = find_program("qemu-system-x86_64").ok_or_else(|| {
        Missing("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)".into())
    })?;
    if !Path::new("/bin/busybox").is_file() {
        return Err(Missing(
            "/bin/busybox is missing (Debian: busybox-static)".into(),
        ));
    }
    for (tool, package) in [("cpio", "cpio"), ("mke2fs", "e2fsprogs"), ("tar", "tar")] {
        if find_program(tool).is_none() {
            return Err(Missing(format!(
                "{tool} is not installed (Debian: {package})"
            )));
        }
    }
    let dir = kernel_dir();
    let bzimage = dir.join("bzImage");
    if !bzimage.is_file() {
        return Err(Missing(format!(
            "no kernel image at {} (set TSEM_KERNEL_DIR)",
            bzimage.display()
        )));
    }
    let tsem_stream = match std::env::var_os("TSEM_STREAM_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_tsem-stream")),
    };
    assert!(
        tsem_stream.is_file(),
        "the binary under test {} does not exist",
        tsem_stream.display()
    );
    let work = work_dir();
    fs::create_dir_all(&work).unwrap_or_else(|e| panic!("{}: {e}", work.display()));

    // The C helpers: the reference TMA and internal-launch, static so that
    // the guest needs no C library of its own.
    let mut no_c_helpers = None;
    let mut build_c = |source: &Path, name: &str| -> Option<PathBuf> {
        if no_c_helpers.is_some() {
            return None;
        }
        let Some(cc) = find_program("cc") else {
            no_c_helpers = Some("no C compiler (cc) to build the C helpers".to_owned());
            return None;
        };
        let dest = work.join(name);
        let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
        let out = Command::new(cc)
            .args(["-O2", "-static", "-o"])
            .arg(&tmp)
            .arg(source)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cc: {e}"));
        if !out.status.success() {
            no_c_helpers = Some(format!(
                "cc -O2 -static {} failed (static C library missing?): {}",
                source.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        fs::rename(&tmp, &dest).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
        Some(dest)
    };
    let mini_tma = build_c(&dir.join("mini-tma.c"), "mini-tma");
    let internal_launch = build_c(&scenario_dir().join("internal-launch.c"), "internal-launch");
    let export_reader = build_c(&scenario_dir().join("export-reader.c"), "export-reader");
    let drain_watch = build_c(&scenario_dir().join("drain-watch.c"), "drain-watch");

    let mut extra = Vec::new();
    if let Some(p) = &mini_tma {
        extra.push(format!("{}:/usr/local/bin/mini-tma", p.display()));
    }
    for (program, name) in [
        (&internal_launch, "internal-launch"),
        (&export_reader, "export-reader"),
        (&drain_watch, "drain-watch"),
    ] {
        if let Some(p) = program {
            extra.push(format!("{}:/usr/local/bin/{name}", p.display()));
        }
    }
    let initramfs = work.join("initramfs.cpio.gz");
    replace_atomically(&initramfs, |tmp| {
        run_host(
            Command::new("bash")
                .arg(scenario_dir().join("mkinitramfs.sh"))
                .arg(&tsem_stream)
                .arg(scenario_dir())
                .arg(tmp)
                .env("EXTRA", extra.join(" ")),
            "mkinitramfs.sh",
        )
    });
    Ok(Kernel {
        qemu,
        bzimage,
        initramfs,
        tsem_stream,
        mini_tma,
        internal_launch,
        export_reader,
        drain_watch,
        no_c_helpers,
        work,
    })
}

/// At most [`MAX_CONCURRENT_BOOTS`] guests at a time.
struct BootSlots {
    running: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: BootSlots = BootSlots {
    running: Mutex::new(0),
    freed: Condvar::new(),
};

/// A boot slot, given back when dropped (also when the test panics).
struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut running = SLOTS.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_CONCURRENT_BOOTS {
            running = SLOTS.freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = SLOTS.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        SLOTS.freed.notify_one();
    }
}

/// The content of the guest's `/root` disk.
#[derive(Default)]
pub struct Disk {
    files: Vec<(String, Vec<u8>)>,
}

impl Disk {
    pub fn new() -> Disk {
        Disk::default()
    }

    /// A file (mode 0644; its owner is the host user running the tests, as
    /// mke2fs copies it) at `path`, relative to `/root`.
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>) -> Disk {
        self.files
            .push((path.to_owned(), contents.as_ref().to_vec()));
        self
    }

    /// Writes the tree under `dir` and makes `image` from it.
    fn make_image(&self, dir: &Path, image: &Path) {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (path, contents) in &self.files {
            let p = dir.join(path);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
            }
            fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        run_host(
            Command::new(find_program("mke2fs").expect("mke2fs"))
                .args(["-q", "-F", "-t", "ext4", "-d"])
                .arg(dir)
                .arg(image)
                .arg("64M"),
            "mke2fs",
        );
    }
}

/// What one boot gave back.
pub struct Boot {
    /// The scenario's name.
    pub scenario: String,
    /// The console between the scenario markers (the scenario's own output;
    /// the whole console is in `target/real-kernel/SCENARIO/console.txt`).
    pub output: String,
    /// The scenario's exit status.
    pub rc: i32,
    /// The guest's `/tmp/out`, extracted.
    pub out: PathBuf,
}

/// The kernel's `tsem_mode=` for a boot (and whether `/init` starts
/// tsem-stream first).
#[derive(Clone, Copy)]
enum TsemMode {
    /// The root namespace is not modeled; namespaces made through `control` are.
    NoRootModeling,
    /// Every event of the host is exported to `external_tma/0`.
    RootExportOnly,
    /// As `RootExportOnly`, and `/init` starts tsem-stream on it first
    /// thing, through the shipped init-top script (`tsem_early=1`).
    RootExportEarly,
}

impl TsemMode {
    /// The kernel command line's words for the mode.
    fn words(self) -> &'static str {
        match self {
            TsemMode::NoRootModeling => "tsem_mode=no_root_modeling",
            TsemMode::RootExportOnly => "tsem_mode=root_export_only",
            TsemMode::RootExportEarly => "tsem_mode=root_export_only tsem_early=1",
        }
    }
}

impl Kernel {
    /// Boots the guest with the scenario `tests/kernel/NAME.sh` and `disk` on
    /// `/root`; panics (with the console's tail) when the guest does not
    /// power off within [`BOOT_TIMEOUT`] or the scenario did not end.
    pub fn boot(&self, scenario: &str, disk: &Disk) -> Boot {
        self.boot_with(scenario, disk, TsemMode::NoRootModeling)
    }

    /// Like [`Kernel::boot`], on a kernel that exports every event of the
    /// whole host (`tsem_mode=root_export_only`) to `external_tma/0`.
    pub fn boot_root_export(&self, scenario: &str, disk: &Disk) -> Boot {
        self.boot_with(scenario, disk, TsemMode::RootExportOnly)
    }

    /// Like [`Kernel::boot_root_export`], with tsem-stream started by
    /// `/init` before anything else, through the shipped
    /// `contrib/initramfs-tools/scripts/init-top/tsem-stream`.
    pub fn boot_root_export_early(&self, scenario: &str, disk: &Disk) -> Boot {
        self.boot_with(scenario, disk, TsemMode::RootExportEarly)
    }

    fn boot_with(&self, scenario: &str, disk: &Disk, mode: TsemMode) -> Boot {
        assert!(
            scenario_dir().join(format!("{scenario}.sh")).is_file(),
            "no scenario tests/kernel/{scenario}.sh"
        );
        // A fixed folder per scenario, replaced at each boot and left behind
        // for a look after a failure (console.txt, out/, the disk images).
        let dir = self.work.join(scenario);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let root_image = dir.join("root.img");
        let out_image = dir.join("out.img");
        let console_path = dir.join("console.txt");
        let qemu_stderr_path = dir.join("qemu.stderr");
        disk.make_image(&dir.join("root"), &root_image);
        let out_file = fs::File::create(&out_image).expect("out.img");
        out_file.set_len(64 << 20).expect("size out.img");
        drop(out_file);

        let cpus = std::env::var("TSEM_KERNEL_CPUS").unwrap_or_else(|_| "1".to_owned());
        let _slot = Slot::take();
        let started = Instant::now();
        let mut qemu = Command::new(&self.qemu)
            .args(["-accel", "tcg", "-smp", &cpus, "-m", "1G"])
            .args(["-display", "none", "-vga", "none", "-nic", "none"])
            .args(["-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console_path.display()))
            .arg("-kernel")
            .arg(&self.bzimage)
            .arg("-initrd")
            .arg(&self.initramfs)
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio",
                root_image.display()
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", out_image.display()))
            .arg("-append")
            .arg(format!(
                "console=ttyS0 lsm=tsem {} panic=-1 quiet scenario={scenario}",
                mode.words()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&qemu_stderr_path).expect("qemu.stderr"))
            .spawn()
            .expect("start qemu-system-x86_64");
        let status = loop {
            if let Some(status) = qemu.try_wait().expect("wait for qemu") {
                break status;
            }
            if started.elapsed() > BOOT_TIMEOUT {
                let _ = qemu.kill();
                let _ = qemu.wait();
                let console = fs::read_to_string(&console_path).unwrap_or_default();
                panic!(
                    "scenario {scenario}: the guest did not power off within {} s (hung, e.g. a task \
                     waiting for a verdict); console tail:\n{}",
                    BOOT_TIMEOUT.as_secs(),
                    tail(&console, CONSOLE_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let elapsed = started.elapsed();
        drop(_slot);
        let console =
            String::from_utf8_lossy(&fs::read(&console_path).unwrap_or_default()).replace('\r', "");
        let qemu_stderr = fs::read_to_string(&qemu_stderr_path).unwrap_or_default();
        assert!(
            status.success(),
            "scenario {scenario}: qemu failed ({status}): {qemu_stderr}\nconsole tail:\n{}",
            tail(&console, CONSOLE_TAIL_LINES)
        );
        let (output, rc) = scenario_output(&console).unwrap_or_else(|| {
            panic!(
                "scenario {scenario}: no complete `=== SCENARIO BEGIN` .. `=== SCENARIO END rc=N` on the \
                 console; tail:\n{}",
                tail(&console, CONSOLE_TAIL_LINES)
            )
        });
        let out = dir.join("out");
        fs::create_dir_all(&out).expect("out dir");
        run_host(
            Command::new("tar")
                .arg("-xf")
                .arg(&out_image)
                .arg("-C")
                .arg(&out),
            "extracting the guest's /tmp/out",
        );
        eprintln!(
            "scenario {scenario}: boot took {:.1} s, scenario rc={rc}",
            elapsed.as_secs_f64()
        );
        Boot {
            scenario: scenario.to_owned(),
            output,
            rc,
            out,
        }
    }

    /// The binary under test, to run on the host (offline views of what the
    /// guest produced).
    pub fn tsem_stream(&self) -> Command {
        let mut c = Command::new(&self.tsem_stream);
        c.stdin(Stdio::null());
        c
    }

    /// Runs the binary under test on the host; panics unless it succeeds.
    pub fn tsem_stream_ok(&self, args: &[&std::ffi::OsStr]) -> String {
        let out = self
            .tsem_stream()
            .args(args)
            .output()
            .expect("run tsem-stream on the host");
        assert!(
            out.status.success(),
            "tsem-stream {:?} failed ({}): {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The text between the scenario markers and the scenario's exit status.
fn scenario_output(console: &str) -> Option<(String, i32)> {
    let begin = console.find("=== SCENARIO BEGIN")?;
    let body_start = begin + console[begin..].find('\n')? + 1;
    let end = body_start + console[body_start..].find("=== SCENARIO END rc=")?;
    let rc_text = console[end + "=== SCENARIO END rc=".len()..]
        .lines()
        .next()?
        .trim();
    Some((console[body_start..end].to_owned(), rc_text.parse().ok()?))
}

impl Boot {
    /// Every `RESULT key=value` line, by key (a key repeated keeps its last
    /// value).
    pub fn results(&self) -> BTreeMap<String, String> {
        self.result_lines().collect()
    }

    fn result_lines(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.output.lines().filter_map(|line| {
            let rest = line.strip_prefix("RESULT ")?;
            let (k, v) = rest.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
    }

    /// The value of `RESULT key=…`; panics with the console when missing.
    pub fn result(&self, key: &str) -> String {
        self.results().remove(key).unwrap_or_else(|| {
            panic!(
                "scenario {}: no `RESULT {key}=` on the console; scenario output:\n{}",
                self.scenario,
                tail(&self.output, CONSOLE_TAIL_LINES)
            )
        })
    }

    /// `RESULT key=N` as a number.
    pub fn number(&self, key: &str) -> u64 {
        let v = self.result(key);
        v.trim().parse().unwrap_or_else(|_| {
            panic!(
                "scenario {}: RESULT {key}={v} is not a number",
                self.scenario
            )
        })
    }

    /// A file the scenario left in `/tmp/out`.
    pub fn out_path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    /// A text file the scenario left in `/tmp/out`.
    pub fn out_text(&self, name: &str) -> String {
        let p = self.out_path(name);
        fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "scenario {}: {} ({e}); scenario output:\n{}",
                self.scenario,
                p.display(),
                tail(&self.output, CONSOLE_TAIL_LINES)
            )
        })
    }

    /// The lines of a file the scenario left in `/tmp/out`.
    pub fn out_lines(&self, name: &str) -> Vec<String> {
        self.out_text(name).lines().map(str::to_owned).collect()
    }

    /// A panic message context: the scenario and the tail of its output.
    pub fn context(&self) -> String {
        format!(
            "scenario {} (rc={}); output tail:\n{}",
            self.scenario,
            self.rc,
            tail(&self.output, CONSOLE_TAIL_LINES)
        )
    }
}
