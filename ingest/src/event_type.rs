//! The TSEM security event names (mapping.md M5) and their table index.

/// A TSEM security event type known to the Quixote v1.8 name table.
///
/// The discriminant is the row number of mapping.md M5 (1-based), which is also
/// the index of the name in Quixote's `tsem_event.h` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum EventType {
    BprmCommittedCreds = 1,
    TaskKill,
    TaskSetpgid,
    TaskGetpgid,
    TaskGetsid,
    TaskSetnice,
    TaskSetioprio,
    TaskGetioprio,
    TaskPrlimit,
    TaskSetrlimit,
    TaskSetscheduler,
    TaskGetscheduler,
    TaskPrctl,
    FileOpen,
    MmapFile,
    FileIoctl,
    FileIoctlCompat,
    FileLock,
    FileFcntl,
    FileReceive,
    UnixStreamConnect,
    UnixMaySend,
    SocketCreate,
    SocketConnect,
    SocketBind,
    SocketAccept,
    SocketListen,
    SocketSocketpair,
    SocketSendmsg,
    SocketRecvmsg,
    SocketGetsockname,
    SocketGetpeername,
    SocketSetsockopt,
    SocketShutdown,
    PtraceTraceme,
    KernelModuleRequest,
    KernelLoadData,
    KernelReadFile,
    SbMount,
    SbUmount,
    SbRemount,
    SbPivotroot,
    SbStatfs,
    MoveMount,
    ShmAssociate,
    ShmShmctl,
    ShmShmat,
    SemAssociate,
    SemSemctl,
    SemSemop,
    Syslog,
    Settime,
    Quotactl,
    QuotaOn,
    MsgQueueAssociate,
    MsgQueueMsgctl,
    MsgQueueMsgsnd,
    MsgQueueMsgrcv,
    IpcPermission,
    KeyAlloc,
    KeyPermission,
    NetlinkSend,
    InodeCreate,
    InodeLink,
    InodeUnlink,
    InodeSymlink,
    InodeMkdir,
    InodeRmdir,
    InodeMknod,
    InodeRename,
    InodeSetattr,
    InodeGetattr,
    InodeSetxattr,
    InodeGetxattr,
    InodeListxattr,
    InodeRemovexattr,
    InodeKillpriv,
    TunDevCreate,
    TunDevAttachQueue,
    TunDevAttach,
    TunDevOpen,
    Bpf,
    BpfMap,
    BpfProg,
    PtraceAccessCheck,
    Capable,
    Capget,
    Capset,
}

/// Event names in table order; `NAMES[t as usize - 1]` is the name of `t`.
pub const NAMES: [&str; 88] = [
    "bprm_committed_creds",
    "task_kill",
    "task_setpgid",
    "task_getpgid",
    "task_getsid",
    "task_setnice",
    "task_setioprio",
    "task_getioprio",
    "task_prlimit",
    "task_setrlimit",
    "task_setscheduler",
    "task_getscheduler",
    "task_prctl",
    "file_open",
    "mmap_file",
    "file_ioctl",
    "file_ioctl_compat",
    "file_lock",
    "file_fcntl",
    "file_receive",
    "unix_stream_connect",
    "unix_may_send",
    "socket_create",
    "socket_connect",
    "socket_bind",
    "socket_accept",
    "socket_listen",
    "socket_socketpair",
    "socket_sendmsg",
    "socket_recvmsg",
    "socket_getsockname",
    "socket_getpeername",
    "socket_setsockopt",
    "socket_shutdown",
    "ptrace_traceme",
    "kernel_module_request",
    "kernel_load_data",
    "kernel_read_file",
    "sb_mount",
    "sb_umount",
    "sb_remount",
    "sb_pivotroot",
    "sb_statfs",
    "move_mount",
    "shm_associate",
    "shm_shmctl",
    "shm_shmat",
    "sem_associate",
    "sem_semctl",
    "sem_semop",
    "syslog",
    "settime",
    "quotactl",
    "quota_on",
    "msg_queue_associate",
    "msg_queue_msgctl",
    "msg_queue_msgsnd",
    "msg_queue_msgrcv",
    "ipc_permission",
    "key_alloc",
    "key_permission",
    "netlink_send",
    "inode_create",
    "inode_link",
    "inode_unlink",
    "inode_symlink",
    "inode_mkdir",
    "inode_rmdir",
    "inode_mknod",
    "inode_rename",
    "inode_setattr",
    "inode_getattr",
    "inode_setxattr",
    "inode_getxattr",
    "inode_listxattr",
    "inode_removexattr",
    "inode_killpriv",
    "tun_dev_create",
    "tun_dev_attach_queue",
    "tun_dev_attach",
    "tun_dev_open",
    "bpf",
    "bpf_map",
    "bpf_prog",
    "ptrace_access_check",
    "capable",
    "capget",
    "capset",
];

impl EventType {
    /// Every known event type, in table order.
    pub fn all() -> impl Iterator<Item = EventType> {
        (1..=NAMES.len() as u8).map(|i| Self::from_index(i).expect("index in range"))
    }

    /// The event type with table row `index` (1-based), if any.
    pub fn from_index(index: u8) -> Option<EventType> {
        if (1..=NAMES.len() as u8).contains(&index) {
            // SAFETY: `EventType` is `repr(u8)` with contiguous discriminants 1..=88.
            Some(unsafe { std::mem::transmute::<u8, EventType>(index) })
        } else {
            None
        }
    }

    /// Looks an event name up in the table; `None` for names Quixote does not know.
    pub fn from_name(name: &str) -> Option<EventType> {
        // 88 names: a linear scan over lengths first is fast enough and keeps the
        // table the single source of truth.
        NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| Self::from_index(i as u8 + 1))
    }

    /// The event name as the kernel prints it.
    pub fn name(self) -> &'static str {
        NAMES[self as usize - 1]
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_table() {
        assert_eq!(EventType::all().count(), 88);
        for t in EventType::all() {
            assert_eq!(EventType::from_name(t.name()), Some(t));
        }
        assert_eq!(EventType::from_name("file_truncate"), None);
        assert_eq!(EventType::Capset.name(), "capset");
        assert_eq!(EventType::FileOpen as u8, 14);
    }
}
