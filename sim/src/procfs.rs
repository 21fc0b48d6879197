//! What the v4 simulator learns about its callers from `/proc` (kernel-interface.md K6).
//!
//! A FUSE request names the calling *thread* (its TID, in the simulator's
//! pid namespace). The v4 kernel's rules are about namespaces, which a task
//! inherits from the task that forked it, and about the exact thread that
//! forked a namespace's creator: `/proc` gives the thread group and the
//! parent *process* of a thread, which is what [`task`] reads.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A thread's process and parent process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The thread group (process) id.
    pub tgid: u32,
    /// The parent process (for a thread: its process's parent).
    pub ppid: u32,
}

/// `/proc/<tid>/status` of a thread (also works for a TID that is not a
/// process id: `/proc` resolves every TID, it only lists processes). Only
/// `status` and `comm` are read: unlike `cmdline` or `maps`, they take no
/// lock of the task's memory, which a task blocked in a FUSE request from a
/// page fault may hold.
pub fn task(tid: u32) -> Option<Task> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    parse_status(&text)
}

/// The `Tgid:` and `PPid:` fields of a `status` file.
pub fn parse_status(text: &str) -> Option<Task> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    Some(Task {
        tgid: field("Tgid:")?,
        ppid: field("PPid:")?,
    })
}

/// A thread's name (`comm`), for the report; `?` when it is gone.
pub fn comm(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// A process followed through a pidfd: it tells when the process has ended
/// and is never mistaken for a later process that reuses its pid.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    fd: OwnedFd,
}

impl Process {
    /// Follows process `pid` (a thread group id).
    pub fn open(pid: u32) -> io::Result<Process> {
        let raw = i32::try_from(pid).map_err(|_| io::Error::from(Errno::ESRCH))?;
        // SAFETY: a plain system call with integer arguments.
        let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from(Errno::EBADF))?;
        // SAFETY: the kernel just returned this descriptor; nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Process { pid, fd })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits at most `timeout` for the process to end (a pidfd is readable
    /// once every thread of the process has exited); true when it has.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => n > 0,
            // Interrupted: not known to have ended; the callers ask again.
            Err(_) => false,
        }
    }

    /// True once the process has ended (zombies included).
    pub fn has_exited(&self) -> bool {
        self.wait_exit(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_parsed() {
        let text = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4310\nNgid:\t0\n\
                    Pid:\t4311\nPPid:\t4300\nTracerPid:\t0\n";
        assert_eq!(
            parse_status(text),
            Some(Task {
                tgid: 4310,
                ppid: 4300
            })
        );
        assert_eq!(parse_status("Name:\tx\nTgid:\t1\n"), None);
    }

    #[test]
    fn this_thread_and_a_child_are_seen_through_proc() {
        let me = std::process::id();
        let t = task(me).expect("own status");
        assert_eq!(t.tgid, me);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let p = Process::open(child.id()).expect("pidfd");
        assert_eq!(task(child.id()).map(|t| t.ppid), Some(me));
        assert_eq!(comm(child.id()), "sleep");
        assert!(!p.has_exited());
        child.kill().expect("kill");
        assert!(p.wait_exit(Duration::from_secs(5)));
        let _ = child.wait();
    }
}
