//! Profile K: the kernel's mapping (mapping.md M5, M6, M7, M8).
//!
//! The CELL of an event is the SHA-256 of the parameters that the v3 kernel's
//! `map.c` feeds into its hash, in that order, with every defect of that code
//! reproduced (the conformance README's "Reading rules" win where they differ
//! from mapping.md M5). The description is taken as the content of the kernel's
//! event structure, i.e. what `fs.c` printed.
//!
//! Sub-encodings (mapping.md M6.1), one function each:
//!
//! | encoding   | function     |
//! |------------|--------------|
//! | `INODE_K`  | [`inode`]    |
//! | `PATH_K`   | [`path`]     |
//! | `FILE_K`   | [`file`]     |
//! | `DENTRY_K` | [`dentry`]   |
//! | `SOCK_K`   | [`sock`]     |
//! | `IPC_K`    | [`ipc`]      |
//! | `CREDS_K`  | [`creds`]    |

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use tsem_ingest::{EventType, EventView};

use crate::digest::{Digest, Preimage, ZERO_DIGEST};
use crate::fields::{decode_hex_chunks, Fields, MapError};
use crate::profile::{generic_cell, Profile, Pseudonyms};
use crate::quixote::TMPFS_MAGIC;

/// COE (mapping.md M7, Profile K): the eight ids in order, then capeff.
pub(crate) fn coe(coe: &Fields<'_>) -> Result<Digest, MapError> {
    let mut p = Preimage::new();
    for key in [
        "uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid",
    ] {
        p.u32(coe.u32(key)?);
    }
    p.u64(coe.u64("capeff")?);
    Ok(p.finish())
}

/// The CELL digest of an event under Profile K (mapping.md M5, "Profile K CELL preimage").
///
/// Event names outside the table, and the four table events without a case in
/// v3 `map.c` (`msg_queue_msgsnd`, `tun_dev_create`, `tun_dev_attach`,
/// `tun_dev_open`), get the generic CELL `H(name ‖ Z)`. Events the v3 kernel
/// cannot have produced are refused.
pub(crate) fn cell(view: &EventView<'_>, pseudonyms: &Pseudonyms) -> Result<Digest, MapError> {
    use EventType as E;
    let Some(t) = view.event_type else {
        return Ok(generic_cell(view));
    };
    match t {
        E::MsgQueueMsgsnd | E::TunDevCreate | E::TunDevAttach | E::TunDevOpen => {
            return Ok(generic_cell(view));
        }
        E::FileIoctlCompat => return Err(not_a_v3_event()),
        _ => {}
    }
    let b = match view.cell {
        Some(o) => Fields::new(o, view.type_name, Profile::Kernel),
        None if t == E::BprmCommittedCreds => return Err(no_exec_file()),
        None => return Err(MapError::Missing(format!("{}{{}}", view.type_name))),
    };
    let mut p = Preimage::new();
    match t {
        // v3 never models or exports this event: map.c maps it only to derive
        // the TASK_ID (mapping.md M9), from the executable's FILE.
        E::BprmCommittedCreds => {
            let f = b.opt_obj("file")?.ok_or_else(no_exec_file)?;
            file(&mut p, &f, pseudonyms, PseudonymScope::Off)?;
        }
        E::TaskKill => {
            p.raw(&b.digest::<32>("target")?)
                .u32(b.u32("sig")?)
                .u32(b.u32("cross_ns")?);
        }
        E::TaskSetpgid => {
            task_id_array(&mut p, &b, "task")?;
            task_id_array(&mut p, &b, "source")?;
        }
        E::TaskSetnice => {
            task_id_array(&mut p, &b, "task")?;
            p.u32(b.u32("nice")?);
        }
        E::TaskSetioprio => {
            task_id_array(&mut p, &b, "task")?;
            p.u32(b.u32("ioprio")?);
        }
        E::TaskGetpgid
        | E::TaskGetsid
        | E::TaskGetioprio
        | E::TaskSetscheduler
        | E::TaskGetscheduler => {
            p.raw(&b.digest::<32>("task")?);
        }
        E::TaskPrlimit => {
            creds(&mut p, &b.obj("cred")?)?;
            creds(&mut p, &b.obj("tcred")?)?;
            p.u32(b.u32("flags")?);
        }
        E::TaskSetrlimit => {
            p.raw(&b.digest::<32>("task")?);
            let r = b.obj("new_rlim")?;
            p.u32(r.u32("resource")?)
                .u64(r.u64("current")?)
                .u64(r.u64("max")?);
        }
        E::TaskPrctl => task_prctl(&mut p, &b)?,
        E::FileOpen | E::FileReceive => {
            file(
                &mut p,
                &b.obj("file")?,
                pseudonyms,
                PseudonymScope::RealFilesystems,
            )?;
        }
        E::MmapFile => {
            if let Some(f) = b.opt_obj("file")? {
                file(&mut p, &f, pseudonyms, PseudonymScope::AnyFilesystem)?;
            }
            p.u32(b.u32("prot")?).u32(b.u32("flags")?);
        }
        E::FileIoctl | E::FileLock | E::FileFcntl => {
            file(
                &mut p,
                &b.obj("file")?,
                pseudonyms,
                PseudonymScope::RealFilesystems,
            )?;
            p.u32(b.u32("cmd")?);
        }
        E::KernelReadFile => {
            file(
                &mut p,
                &b.obj("file")?,
                pseudonyms,
                PseudonymScope::AnyFilesystem,
            )?;
            p.u32(b.u32("id")?).u32(b.u32("contents")?);
        }
        E::UnixStreamConnect | E::UnixMaySend => {
            sock(&mut p, &b.obj("sock")?)?;
            sock(&mut p, &b.obj("other")?)?;
        }
        E::SocketSocketpair => {
            sock(&mut p, &b.obj("socka")?)?;
            sock(&mut p, &b.obj("sockb")?)?;
        }
        E::SocketCreate => {
            for key in ["family", "type", "protocol", "kern"] {
                p.u32(b.u32(key)?);
            }
        }
        E::SocketConnect | E::SocketBind => socket_address(&mut p, &b, false)?,
        E::SocketAccept => socket_address(&mut p, &b, true)?,
        E::SocketSendmsg | E::SocketRecvmsg => message_address(&mut p, &b)?,
        E::SocketListen => {
            sock(&mut p, &b.obj("sock")?)?;
            p.u32(b.u32("backlog")?);
        }
        E::SocketGetsockname | E::SocketGetpeername | E::TunDevAttachQueue => {
            // tun_dev_attach_queue: the v3 hook has no socket (`no_params`), so a
            // real v3 kernel hashes an all-zero one; we hash the described socket
            // (README reading rules).
            sock(&mut p, &b.obj("sock")?)?;
        }
        E::SocketSetsockopt => {
            sock(&mut p, &b.obj("sock")?)?;
            p.u32(b.u32("level")?).u32(b.u32("optname")?);
        }
        E::SocketShutdown => {
            sock(&mut p, &b.obj("sock")?)?;
            p.u32(b.u32("how")?);
        }
        E::PtraceTraceme => {
            p.raw(&b.digest::<32>("source")?);
        }
        E::KernelModuleRequest => {
            p.lstr(b.text("kmod_name")?);
        }
        E::KernelLoadData => {
            p.u32(b.u32("id")?).u32(b.u32("contents")?);
        }
        E::SbMount => {
            if let Some(dev_name) = b.opt_text("dev_name")? {
                p.lstr(dev_name);
            }
            path(&mut p, &b.obj("path")?)?;
            if let Some(fstype) = b.opt_text("type")? {
                p.lstr(fstype);
            }
            p.u64(b.u64("flags")?);
        }
        E::SbUmount => {
            dentry(&mut p, &b.obj("mnt")?, Creation::AsPrinted)?;
            p.u32(b.u32("flags")?);
        }
        E::SbRemount => superblock(&mut p, &b.obj("sb")?)?,
        E::SbPivotroot => {
            path(&mut p, &b.obj("old_path")?)?;
            path(&mut p, &b.obj("new_path")?)?;
        }
        E::MoveMount => {
            path(&mut p, &b.obj("from_path")?)?;
            path(&mut p, &b.obj("to_path")?)?;
        }
        E::SbStatfs | E::QuotaOn => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
        }
        E::Quotactl => {
            p.u32(b.u32("cmds")?).u32(b.u32("type")?).u32(b.u32("id")?);
            superblock(&mut p, &b.obj("sb")?)?;
        }
        // v3 fs.c prints the hashed `ipc.value` under these names (mapping.md M5;
        // README: `perm_flag` is printed under them by mistake).
        E::ShmAssociate | E::ShmShmat => ipc_value(&mut p, &b, "shmflg")?,
        E::SemAssociate => ipc_value(&mut p, &b, "semflg")?,
        E::MsgQueueAssociate => ipc_value(&mut p, &b, "msqflg")?,
        E::ShmShmctl | E::SemSemctl | E::MsgQueueMsgctl => ipc_value(&mut p, &b, "cmd")?,
        E::SemSemop => {
            ipc(&mut p, &b.obj("perm")?)?;
            p.u32(b.u32("nsops")?).u32(b.u32("alter")?);
        }
        E::MsgQueueMsgrcv => {
            ipc(&mut p, &b.obj("perm")?)?;
            p.raw(&b.digest::<32>("target")?)
                .u64(b.u64("type")?)
                .u32(b.u32("mode")?);
        }
        E::IpcPermission => {
            ipc(&mut p, &b.obj("ipcp")?)?;
            p.u16(b.u16("flag")?);
        }
        E::Syslog => {
            p.u32(b.u32("type")?);
        }
        E::Settime => {
            if let Some(ts) = b.opt_obj("ts")? {
                p.u64(ts.u64("seconds")?).u64(ts.u64("nsecs")?);
            }
            if let Some(tz) = b.opt_obj("tz")? {
                p.u32(tz.u32("minuteswest")?).u32(tz.u32("dsttime")?);
            }
        }
        E::KeyAlloc => {
            creds(&mut p, &b.obj("cred")?)?;
            p.u64(b.u64("flags")?);
        }
        E::KeyPermission => key_permission(&mut p, &b)?,
        E::NetlinkSend => netlink_send(&mut p, &b)?,
        E::InodeCreate | E::InodeMkdir => {
            inode(&mut p, &b.obj("dir")?)?;
            dentry(&mut p, &b.obj("dentry")?, Creation::Required)?;
            p.u16(b.u16("mode")?);
        }
        E::InodeLink => {
            dentry(&mut p, &b.obj("old_dentry")?, Creation::AsPrinted)?;
            inode(&mut p, &b.obj("dir")?)?;
            dentry(&mut p, &b.obj("new_dentry")?, Creation::AsPrinted)?;
        }
        E::InodeUnlink | E::InodeRmdir => {
            inode(&mut p, &b.obj("dir")?)?;
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
        }
        E::InodeSymlink => {
            inode(&mut p, &b.obj("dir")?)?;
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            p.lstr(b.text("old_name")?);
        }
        E::InodeMknod => {
            inode(&mut p, &b.obj("dir")?)?;
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            p.u16(b.u16("mode")?);
            // The kernel's dev_t: MKDEV(major, minor) = major << 20 | minor
            // (mapping.md M5 row 69, README reading rules).
            let dev = b.obj("dev")?;
            p.u32((dev.u32("major")? << 20) | dev.u32("minor")?);
        }
        E::InodeRename => {
            inode(&mut p, &b.obj("old_dir")?)?;
            dentry(&mut p, &b.obj("old_dentry")?, Creation::AsPrinted)?;
            inode(&mut p, &b.obj("new_dir")?)?;
            dentry(&mut p, &b.obj("new_dentry")?, Creation::AsPrinted)?;
        }
        E::InodeSetattr => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            // event.c already kept only the fields whose ATTR_* bit is set
            // before fs.c printed them: not re-applied here (README).
            let a = b.obj("attr")?;
            p.u32(a.u32("valid")?)
                .u32(a.u32("mode")?)
                .u32(a.u32("uid")?)
                .u32(a.u32("gid")?)
                .u64(a.u64("size")?);
        }
        E::InodeGetattr => {
            // A dentry structure printed under the key `path` (mapping.md M5 row 72).
            dentry(&mut p, &b.obj("path")?, Creation::AsPrinted)?;
        }
        E::InodeSetxattr => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            p.lstr(b.text("name")?);
            p.raw(&xattr_value(&b)?);
            p.u32(b.u32("flags")?);
        }
        E::InodeGetxattr | E::InodeRemovexattr => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            p.lstr(b.text("name")?);
        }
        E::InodeListxattr | E::InodeKillpriv => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
        }
        // v3 defect (mapping.md M5 note 4): an inverted error test ends the
        // preimage after the first field.
        E::Bpf => {
            p.u32(b.u32("cmd")?);
        }
        E::BpfMap => {
            p.u32(b.obj("map")?.u32("map_type")?);
        }
        E::BpfProg => {
            p.u32(b.obj("prog")?.u32("type")?);
        }
        E::PtraceAccessCheck => {
            p.raw(&b.digest::<32>("child")?).u32(b.u32("mode")?);
        }
        E::Capable => {
            p.u32(b.u32("cap")?).u32(b.u32("opts")?);
        }
        E::Capget => {
            p.raw(&b.digest::<32>("target")?);
            capability_sets(&mut p, &b)?;
        }
        E::Capset => capability_sets(&mut p, &b)?,
        // Answered above, before the body is read; listed to keep the match exhaustive.
        E::MsgQueueMsgsnd | E::TunDevCreate | E::TunDevAttach | E::TunDevOpen => {
            return Ok(generic_cell(view));
        }
        E::FileIoctlCompat => return Err(not_a_v3_event()),
    }
    Ok(p.finish())
}

/// The TASK_ID the kernel gives a task at exec (mapping.md M9):
/// `H("bprm_committed_creds" ‖ p_task_id ‖ 0^32 ‖ COE ‖ CELL_K(file))`, i.e.
/// the Profile K coefficient of a `bprm_committed_creds` description that
/// carries the executable's `file{}`, with the all-zero "null id" in place of
/// the task's own TASK_ID.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn task_id_of_exec(view: &EventView<'_>) -> Result<Digest, MapError> {
    if view.event_type != Some(EventType::BprmCommittedCreds) {
        return Err(MapError::invalid(
            "event",
            "type",
            format_args!(
                "{:?}: a TASK_ID is derived from bprm_committed_creds",
                view.type_name
            ),
        ));
    }
    let coe = coe(&Fields::new(view.coe, "COE", Profile::Kernel))?;
    let cell = cell(view, &Pseudonyms::new())?;
    let p_task_id = view
        .p_task_id()
        .ok_or_else(|| MapError::Missing("event.p_task_id".into()))?;
    let mut p = Preimage::new();
    p.raw(view.type_name.as_bytes());
    decode_hex_chunks(p_task_id.as_bytes(), "event.p_task_id", |b| {
        p.raw(b);
    })?;
    p.raw(&[0; 32]).raw(&coe.0).raw(&cell.0);
    Ok(p.finish())
}

/// file_ioctl_compat: added to Quixote in 2025, absent from the v3 kernel
/// (mapping.md M5 row 17), so map.c has no layout for it.
fn not_a_v3_event() -> MapError {
    MapError::Unmappable("not an event of the v3 kernel: Profile K has no mapping for it".into())
}

fn no_exec_file() -> MapError {
    MapError::Unmappable(
        "no executable file{}: the v3 kernel maps this event only to derive a TASK_ID from the \
         executable's FILE, and never exports it"
            .into(),
    )
}

/// A TASK_ID hashed as the kernel's `sizeof(target)` array: HASH_MAX_DIGESTSIZE
/// = 64 bytes, the 32-byte TASK_ID then 32 bytes that are zero in the
/// zero-allocated event (mapping.md M5 note 1; task_setpgid/setnice/setioprio).
fn task_id_array(p: &mut Preimage, b: &Fields<'_>, key: &str) -> Result<(), MapError> {
    p.raw(&b.digest::<32>(key)?).raw(&[0; 32]);
    Ok(())
}

/// `task_prctl`: `u32 option ‖ u64 arg2 ‖ u64 arg4 ‖ u64 arg5`. map.c never
/// hashes `arg3`, and hashes `arg2` as 0 for option 2 (PR_GET_PDEATHSIG, whose
/// arg2 is a user pointer). event.c's own normalisation (arg2 zeroed for
/// PR_SET_NAME/PR_GET_NAME) happened before fs.c printed, so it is not
/// re-applied (README reading rules).
fn task_prctl(p: &mut Preimage, b: &Fields<'_>) -> Result<(), MapError> {
    const PR_GET_PDEATHSIG: u32 = 2;
    let option = b.u32("option")?;
    let arg2 = if option == PR_GET_PDEATHSIG {
        0
    } else {
        b.u64("arg2")?
    };
    p.u32(option)
        .u64(arg2)
        .u64(b.u64("arg4")?)
        .u64(b.u64("arg5")?);
    Ok(())
}

/// `u64 effective ‖ u64 inheritable ‖ u64 permitted` (capget, capset).
fn capability_sets(p: &mut Preimage, b: &Fields<'_>) -> Result<(), MapError> {
    p.u64(b.u64("effective")?)
        .u64(b.u64("inheritable")?)
        .u64(b.u64("permitted")?);
    Ok(())
}

/// What is known about a hashed inode, for the pseudonym rule.
struct InodeFacts {
    mode: u32,
    s_magic: u32,
}

/// `INODE_K` = `u32 uid ‖ u32 gid ‖ u32 mode ‖ u32 s_magic ‖ s_id[32] ‖
/// s_uuid[16]` (mapping.md M6.1): the kernel hashes `i_mode` as a 4-byte value
/// (Profile Q: 2 bytes), and a tmpfs inode's s_uuid as 16 zero bytes.
fn inode(p: &mut Preimage, inode: &Fields<'_>) -> Result<InodeFacts, MapError> {
    let mode = inode.u32("mode")?;
    let s_magic = inode.u32("s_magic")?;
    let s_id = inode.text("s_id")?;
    if s_id.len() > 31 {
        return Err(MapError::invalid(inode.at, "s_id", "longer than 31 bytes"));
    }
    let mut s_id_buf = [0u8; 32];
    s_id_buf[..s_id.len()].copy_from_slice(s_id);
    let mut s_uuid = inode.digest::<16>("s_uuid")?;
    if s_magic == TMPFS_MAGIC {
        s_uuid = [0; 16];
    }
    p.u32(inode.u32("uid")?)
        .u32(inode.u32("gid")?)
        .u32(mode)
        .u32(s_magic)
        .raw(&s_id_buf)
        .raw(&s_uuid);
    Ok(InodeFacts { mode, s_magic })
}

/// What is known about a hashed path, for the pseudonym rule.
struct PathFacts<'a> {
    pathname: &'a [u8],
    created: bool,
}

/// `PATH_K` (mapping.md M6.1) = `[u32 major ‖ u32 minor] ‖` (created ?
/// `LSTR(dirprefix) ‖ u64 instance ‖ owner[32]` : `LSTR(pathname)`).
///
/// The device is hashed when `dev{}` is printed and is not 0:0 (a path without
/// a device); `path.type` is never hashed (v3 has no path type). A path
/// printed with `owner` + `instance` is a file created in the namespace and is
/// hashed in the created form (spec "Decisions", Profile K created files).
fn path<'a>(p: &mut Preimage, path: &Fields<'a>) -> Result<PathFacts<'a>, MapError> {
    if let Some(dev) = path.opt_obj("dev")? {
        let (major, minor) = (dev.u32("major")?, dev.u32("minor")?);
        if (major, minor) != (0, 0) {
            p.u32(major).u32(minor);
        }
    }
    let pathname = path.text("pathname")?;
    let created = match (path.opt_str("owner")?, path.opt_str("instance")?) {
        (None, None) => false,
        (Some(_), None) => {
            return Err(MapError::Missing(format!(
                "{}.instance (owner is printed)",
                path.at
            )))
        }
        (None, Some(_)) => {
            return Err(MapError::Missing(format!(
                "{}.owner (instance is printed)",
                path.at
            )))
        }
        (Some(_), Some(_)) => true,
    };
    if created {
        let instance = path.u64("instance")?;
        let owner = path.digest::<32>("owner")?;
        let slash = pathname.iter().rposition(|&c| c == b'/').ok_or_else(|| {
            MapError::invalid(path.at, "pathname", "a created file's pathname has no '/'")
        })?;
        p.lstr(&pathname[..=slash]).u64(instance).raw(&owner);
    } else {
        p.lstr(pathname);
    }
    Ok(PathFacts { pathname, created })
}

/// Which FILE events have their digest replaced by `Z` for a pseudonym
/// (README reading rules, after event.c `add_file_digest`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum PseudonymScope {
    /// Never (the TASK_ID derivation of bprm_committed_creds).
    Off,
    /// Regular files not created in the namespace, on any filesystem
    /// (mmap_file, kernel_read_file).
    AnyFilesystem,
    /// Regular files not created in the namespace and not on a pseudo
    /// filesystem (file_open, file_ioctl, file_lock, file_fcntl, file_receive).
    RealFilesystems,
}

/// The pseudo filesystems of event.c (mapping.md M11), by superblock magic:
/// proc, sysfs, debugfs, tmpfs (devtmpfs shares it), devpts, binfmt_misc,
/// securityfs, selinuxfs, smackfs, cgroup, cgroup2, nsfs, efivarfs.
const PSEUDO_FILESYSTEM_MAGICS: [u32; 13] = [
    0x9fa0,      // PROC_SUPER_MAGIC
    0x6265_6572, // SYSFS_MAGIC
    0x6462_6720, // DEBUGFS_MAGIC
    TMPFS_MAGIC,
    0x1cd1,      // DEVPTS_SUPER_MAGIC
    0x4249_4e4d, // BINFMTFS_MAGIC
    0x7363_6673, // SECURITYFS_MAGIC
    0xf97c_ff8c, // SELINUX_MAGIC
    0x4341_5d53, // SMACK_MAGIC
    0x0027_e0eb, // CGROUP_SUPER_MAGIC
    0x6367_7270, // CGROUP2_SUPER_MAGIC
    0x6e73_6673, // NSFS_MAGIC
    0xde5e_81e4, // EFIVARFS_MAGIC
];

impl PseudonymScope {
    fn admits(self, inode: &InodeFacts, path: &PathFacts<'_>) -> bool {
        const S_IFMT: u32 = 0o170_000;
        const S_IFREG: u32 = 0o100_000;
        let eligible = inode.mode & S_IFMT == S_IFREG && !path.created;
        match self {
            PseudonymScope::Off => false,
            PseudonymScope::AnyFilesystem => eligible,
            PseudonymScope::RealFilesystems => {
                eligible && !PSEUDO_FILESYSTEM_MAGICS.contains(&inode.s_magic)
            }
        }
    }
}

/// `FILE_K` = `u32 flags ‖ INODE_K ‖ PATH_K ‖ digest[32]` (mapping.md M6.1).
///
/// For an external namespace the kernel exports the real digest and the TMA
/// applies the pseudonyms, where event.c would have consulted them (`scope`).
fn file(
    p: &mut Preimage,
    f: &Fields<'_>,
    pseudonyms: &Pseudonyms,
    scope: PseudonymScope,
) -> Result<(), MapError> {
    p.u32(f.u32("flags")?);
    let inode_facts = inode(p, &f.obj("inode")?)?;
    let path_facts = path(p, &f.obj("path")?)?;
    let digest = f.digest::<32>("digest")?;
    let pseudonym =
        scope.admits(&inode_facts, &path_facts) && pseudonyms.covers(path_facts.pathname);
    p.raw(if pseudonym { &ZERO_DIGEST } else { &digest });
    Ok(())
}

/// Whether a dentry must be in the created form.
#[derive(Clone, Copy)]
enum Creation {
    /// Hash what is printed: the created form when `owner`/`instance` are there.
    AsPrinted,
    /// The new dentry of inode_create/inode_mkdir: v3 event.c
    /// `get_inode_create` always marks it created in the current namespace, so
    /// map.c hashes it in the created form and fs.c prints `owner`/`instance`;
    /// a description without them cannot come from that kernel.
    Required,
}

/// `DENTRY_K` = `[INODE_K if inode{} is printed] ‖ PATH_K` (mapping.md M6.1).
fn dentry(p: &mut Preimage, d: &Fields<'_>, creation: Creation) -> Result<(), MapError> {
    let path_fields = d.obj("path")?;
    if let Creation::Required = creation {
        if path_fields.opt_str("owner")?.is_none() || path_fields.opt_str("instance")?.is_none() {
            return Err(MapError::Unmappable(
                "the new dentry has no owner/instance, but the v3 kernel always hashes it as a file created in \
                 the namespace (dir prefix, instance, owner)"
                    .into(),
            ));
        }
    }
    if let Some(i) = d.opt_obj("inode")? {
        inode(p, &i)?;
    }
    path(p, &path_fields)?;
    Ok(())
}

/// `DENTRY_K ‖ LSTR(fstype) ‖ u64 s_flags` of an `sb{}` (sb_remount, quotactl).
fn superblock(p: &mut Preimage, sb: &Fields<'_>) -> Result<(), MapError> {
    dentry(p, &sb.obj("dentry")?, Creation::AsPrinted)?;
    p.lstr(sb.text("fstype")?).u64(sb.u64("s_flags")?);
    Ok(())
}

/// `SOCK_K` = `u32 family ‖ u32 type ‖ u32 protocol ‖ owner[64]` (mapping.md M6.1):
/// the owner array is `sizeof` HASH_MAX_DIGESTSIZE = 64 bytes, the 32-byte
/// TASK_ID then 32 zero bytes. Returns the family.
fn sock(p: &mut Preimage, s: &Fields<'_>) -> Result<u32, MapError> {
    let family = s.u32("family")?;
    p.u32(family)
        .u32(s.u32("type")?)
        .u32(s.u32("protocol")?)
        .raw(&s.digest::<32>("owner")?)
        .raw(&[0; 32]);
    Ok(family)
}

const AF_UNIX: u32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// `SOCK_K ‖ address` of socket_connect/bind/accept (mapping.md M5 rows 24-26):
/// inet `u16 port ‖ u32 addr`; inet6 `u16 port ‖ addr[16]` then, except for
/// accept, `u32 flow ‖ u32 scope`; unix the path bytes (no length); any other
/// family the 32-byte address mapping.
fn socket_address(p: &mut Preimage, b: &Fields<'_>, accept: bool) -> Result<(), MapError> {
    let family = sock(p, &b.obj("sock")?)?;
    let addr = b.obj("addr")?;
    match family {
        AF_INET => {
            let a = addr.obj("af_inet")?;
            p.u16(a.u16("port")?).u32(a.u32("address")?);
        }
        AF_INET6 => {
            let a = addr.obj("af_inet6")?;
            p.u16(a.u16("port")?).raw(&a.digest::<16>("address")?);
            if !accept {
                p.u32(a.u32("flow")?).u32(a.u32("scope")?);
            }
        }
        AF_UNIX => {
            let path = addr.obj("af_unix")?.text("address")?;
            if path.len() > 108 {
                return Err(MapError::invalid(
                    "af_unix",
                    "address",
                    "longer than 108 bytes",
                ));
            }
            p.raw(path);
        }
        _ => {
            p.raw(&addr.obj("af_other")?.digest::<32>("address")?);
        }
    }
    Ok(())
}

/// `SOCK_K ‖ [address]` of socket_sendmsg/recvmsg (mapping.md M5 rows 29-30): an
/// `addr{}` is printed only for AF_INET (`u16 port ‖ u32 addr`) and AF_INET6
/// (`u16 port ‖ addr[16]`). v3 fs.c prints the AF_INET address under the
/// misspelled key `addrress` (mapping.md M5 note 2); `address` is accepted too.
fn message_address(p: &mut Preimage, b: &Fields<'_>) -> Result<(), MapError> {
    let family = sock(p, &b.obj("sock")?)?;
    let Some(addr) = b.opt_obj("addr")? else {
        return Ok(());
    };
    match family {
        AF_INET => {
            let a = addr.obj("af_inet")?;
            let key = if a.opt_str("addrress")?.is_some() {
                "addrress"
            } else {
                "address"
            };
            p.u16(a.u16("port")?).u32(a.u32(key)?);
        }
        AF_INET6 => {
            let a = addr.obj("af_inet6")?;
            p.u16(a.u16("port")?).raw(&a.digest::<16>("address")?);
        }
        // map.c hashes no address for other families.
        _ => {}
    }
    Ok(())
}

/// `IPC_K` = `u32 uid ‖ u32 gid ‖ u32 cuid ‖ u32 cgid ‖ u16 mode ‖ owner[32]`
/// (mapping.md M6.1).
fn ipc(p: &mut Preimage, perm: &Fields<'_>) -> Result<(), MapError> {
    for key in ["uid", "gid", "cuid", "cgid"] {
        p.u32(perm.u32(key)?);
    }
    p.u16(perm.u16("mode")?).raw(&perm.digest::<32>("owner")?);
    Ok(())
}

/// `IPC_K(perm) ‖ u32 value`, the value printed under `key`.
fn ipc_value(p: &mut Preimage, b: &Fields<'_>, key: &str) -> Result<(), MapError> {
    ipc(p, &b.obj("perm")?)?;
    p.u32(b.u32(key)?);
    Ok(())
}

/// `CREDS_K` = `u32 uid` only: v3 defect (mapping.md M6.1), the error test after
/// the first field is inverted, so euid…securebits are never hashed (and need
/// not be printed).
fn creds(p: &mut Preimage, cred: &Fields<'_>) -> Result<(), MapError> {
    p.u32(cred.u32("uid")?);
    Ok(())
}

/// `key_permission`: `u32 possessed ‖ u16 uid ‖ u16 gid ‖ u64 flags ‖
/// CREDS_K ‖ u32 perm`; map.c hashes the key's uid/gid with a 2-byte size, so
/// the printed 32-bit ids are truncated to their low 16 bits (README).
fn key_permission(p: &mut Preimage, b: &Fields<'_>) -> Result<(), MapError> {
    let k = b.obj("key_ref")?;
    p.u32(k.u32("possessed")?)
        .u16(k.u32("uid")? as u16)
        .u16(k.u32("gid")? as u16)
        .u64(k.u64("flags")?);
    creds(p, &b.obj("cred")?)?;
    p.u32(b.u32("perm")?);
    Ok(())
}

/// `netlink_send` (README reading rules; mapping.md M5 row 62 differs): map.c
/// hashes the socket through the `socket` member of the CELL union while
/// event.c filled the `netlink` member, 8 bytes earlier, so the 76 bytes hashed
/// as "SOCK_K" are `u32 sock.protocol ‖ u32 kern (0) ‖ owner[0:4] ‖
/// owner[8:32] ‖ 0^32 ‖ u32 uid ‖ u32 gid`. Then `uid, gid, portid,
/// dst_group, flags`, and `flags` once more instead of `nsid` when `nsid_set`
/// (mapping.md M5 note 3).
fn netlink_send(p: &mut Preimage, b: &Fields<'_>) -> Result<(), MapError> {
    let s = b.obj("sock")?;
    let owner = s.digest::<32>("owner")?;
    let (uid, gid) = (b.u32("uid")?, b.u32("gid")?);
    p.u32(s.u32("protocol")?)
        .u32(0)
        .raw(&owner[..4])
        .raw(&owner[8..])
        .raw(&[0; 32])
        .u32(uid)
        .u32(gid);
    let flags = b.u32("flags")?;
    p.u32(uid)
        .u32(gid)
        .u32(b.u32("portid")?)
        .u32(b.u32("dst_group")?)
        .u32(flags);
    if b.u32("nsid_set")? != 0 {
        p.u32(flags);
    }
    Ok(())
}

/// The raw xattr value of inode_setxattr: fs.c prints `base64_encode` of it
/// (standard alphabet, `=` padding; unpadded text is accepted too).
fn xattr_value(b: &Fields<'_>) -> Result<Vec<u8>, MapError> {
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let text = b
        .opt_str("value")?
        .ok_or_else(|| MapError::Missing(format!("{}.value", b.at)))?;
    BASE64
        .decode(text)
        .map_err(|e| MapError::invalid(b.at, "value", format_args!("not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::pseudonym_of;
    use crate::profile::Mapper;
    use tsem_ingest::{Parser, Record};

    /// mapping.md M14.1 common inputs.
    const TA: &str = "647110c3e238dca7ec813f0998fa58cd91c2a60d8e19f5bbe048f9566f1cb189";
    const COE0: &str = r#"{"uid": "0", "euid": "0", "suid": "0", "gid": "0", "egid": "0", "sgid": "0", "fsuid": "0", "fsgid": "0", "capeff": "0x1ffffffffff"}"#;
    const OWN: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    /// The FILE of the sample file_open (mapping.md M14.1 V5/V19).
    const BASH_FILE: &str = r#"{"flags": "32800", "inode": {"uid": "0", "gid": "0", "mode": "0100755", "s_magic": "0xef53", "s_id": "sda3", "s_uuid": "e896110b42b24dbca89c7caa36961685"}, "path": {"dev": {"major": "8", "minor": "3"}, "type": "root", "pathname": "/usr/bin/bash"}, "digest": "59474588a312b6b6e73e5a42a59bf71e62b55416b6c9d5e4a6e1c630c2a9ecd4"}"#;
    const ETC_INODE: &str = r#"{"uid": "0", "gid": "0", "mode": "040755", "s_magic": "0xef53", "s_id": "sda3", "s_uuid": "e896110b42b24dbca89c7caa36961685"}"#;

    /// A test line `{"event": HDR(type), "COE": coe, "<type>": body}`.
    fn line_with_coe(kind: &str, coe: &str, body: &str) -> String {
        format!(
            r#"{{"event": {{"context": "3", "number": "5", "process": "bash", "type": "{kind}", "ttd": "10", "p_ttd": "9", "task_id": "{TA}", "p_task_id": "{TA}", "ts": "1000"}}, "COE": {coe}, "{kind}": {body}}}"#
        )
    }

    fn line(kind: &str, body: &str) -> String {
        line_with_coe(kind, COE0, body)
    }

    fn with_view<R>(line: &str, f: impl FnOnce(&EventView<'_>) -> R) -> R {
        Parser::default()
            .parse(line.as_bytes(), |r| match r {
                Record::Event(view) => f(&view),
                other => panic!("not an event: {other:?}"),
            })
            .expect("test line parses")
    }

    fn cell_with(kind: &str, body: &str, pseudonyms: &Pseudonyms) -> Result<Digest, MapError> {
        with_view(&line(kind, body), |v| cell(v, pseudonyms))
    }

    fn cell_of(kind: &str, body: &str) -> Result<Digest, MapError> {
        cell_with(kind, body, &Pseudonyms::new())
    }

    fn ok(kind: &str, body: &str) -> Digest {
        cell_of(kind, body).unwrap_or_else(|e| panic!("{kind} {body}: {e}"))
    }

    fn hex(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        decode_hex_chunks(text.as_bytes(), "test", |b| out.extend_from_slice(b)).expect("test hex");
        out
    }

    /// `INODE_K` of [`ETC_INODE`].
    fn etc_inode_k() -> Vec<u8> {
        let mut v = Vec::new();
        for x in [0u32, 0, 0o40755, 0xef53] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let mut s_id = [0u8; 32];
        s_id[..4].copy_from_slice(b"sda3");
        v.extend_from_slice(&s_id);
        v.extend_from_slice(&hex("e896110b42b24dbca89c7caa36961685"));
        v
    }

    fn lstr(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    fn sock_json(family: u32) -> String {
        format!(r#"{{"family": "{family}", "type": "1", "protocol": "6", "owner": "{OWN}"}}"#)
    }

    /// `SOCK_K` of [`sock_json`].
    fn sock_k(family: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [family, 1, 6] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&[0x22; 32]);
        v.extend_from_slice(&[0; 32]);
        v
    }

    #[test]
    fn v3_coe_hashes_fsgid() {
        let coe_json = r#"{"uid": "1000", "euid": "1000", "suid": "1000", "gid": "100", "egid": "100", "sgid": "100", "fsuid": "1000", "fsgid": "100", "capeff": "0x0"}"#;
        let l = line_with_coe("capable", coe_json, r#"{"cap": "8", "opts": "0"}"#);
        let d = with_view(&l, |v| coe(&Fields::new(v.coe, "COE", Profile::Kernel))).unwrap();
        assert_eq!(
            d.to_hex(),
            "e9a5310b5ffba7b383e54b54fe45bdc59987fa8b80b617147c231da1b9453c92"
        );
    }

    #[test]
    fn v19_sample_file_open_cell_and_coefficient() {
        let l = line("file_open", &format!(r#"{{"file": {BASH_FILE}}}"#));
        let (cell_k, coefficient) = with_view(&l, |v| {
            (
                cell(v, &Pseudonyms::new()).unwrap(),
                Mapper::new(Profile::Kernel, Pseudonyms::new())
                    .coefficient(v)
                    .unwrap(),
            )
        });
        assert_eq!(
            cell_k.to_hex(),
            "98ac8cfb3be03f7aea7b122853c158143de44bd4b41ca22a51e5c41418b5d3c7"
        );
        assert_eq!(
            coefficient.to_hex(),
            "3baa0256cda49de6103660c7d7a8ba971748e6802b522bd0fd0f18e3a3db7a4d"
        );
    }

    #[test]
    fn v20_task_id_of_an_exec() {
        let l = line(
            "bprm_committed_creds",
            &format!(r#"{{"file": {BASH_FILE}}}"#),
        );
        let task_id = with_view(&l, task_id_of_exec).unwrap();
        assert_eq!(
            task_id.to_hex(),
            "3e232d0e40595d6b600cadde645e3b687cce6788e43d9febac02678afc8f6c9a"
        );
        let other = line("file_open", &format!(r#"{{"file": {BASH_FILE}}}"#));
        assert!(with_view(&other, task_id_of_exec).is_err());
    }

    #[test]
    fn events_the_v3_kernel_never_exports_are_refused() {
        for (kind, body) in [
            ("bprm_committed_creds", "{}"),
            (
                "file_ioctl_compat",
                &format!(r#"{{"file": {BASH_FILE}, "cmd": "21505"}}"#),
            ),
        ] {
            assert!(
                matches!(cell_of(kind, body), Err(MapError::Unmappable(_))),
                "{kind}"
            );
        }
    }

    #[test]
    fn events_without_a_v3_mapping_are_generic() {
        // Spec Appendix A generic CELLs.
        assert_eq!(
            ok("msg_queue_msgsnd", r#"{"perm": {}, "msqflg": "2048"}"#).to_hex(),
            "da27cb82d977118fe28b9e1cfc621a0f2402770285ea05782c77a53b762231eb"
        );
        assert_eq!(
            ok("tun_dev_create", "{}").to_hex(),
            "1896baeec5cf761400b6a9d94933580791521c1bf97c1ccad64ae496c4bb6182"
        );
    }

    #[test]
    fn created_files_use_the_dir_prefix_instance_and_owner() {
        let created = format!(
            r#"{{"dir": {ETC_INODE}, "dentry": {{"path": {{"dev": {{"major": "8", "minor": "3"}}, "owner": "{OWN}", "instance": "3", "pathname": "/etc/new.conf"}}}}, "mode": "0100644"}}"#
        );
        let mut pre = etc_inode_k();
        pre.extend_from_slice(&8u32.to_le_bytes());
        pre.extend_from_slice(&3u32.to_le_bytes());
        pre.extend_from_slice(&lstr(b"/etc/"));
        pre.extend_from_slice(&3u64.to_le_bytes());
        pre.extend_from_slice(&[0x22; 32]);
        pre.extend_from_slice(&0o100644u16.to_le_bytes());
        assert_eq!(ok("inode_create", &created), Digest::of(&[&pre]));

        let plain = format!(
            r#"{{"dir": {ETC_INODE}, "dentry": {{"path": {{"dev": {{"major": "8", "minor": "3"}}, "pathname": "/etc/new.conf"}}}}, "mode": "0100644"}}"#
        );
        for kind in ["inode_create", "inode_mkdir"] {
            assert!(
                matches!(cell_of(kind, &plain), Err(MapError::Unmappable(_))),
                "{kind}"
            );
        }
        let half = plain.replace(r#""pathname""#, r#""instance": "3", "pathname""#);
        assert!(matches!(
            cell_of("inode_unlink", &half),
            Err(MapError::Missing(_))
        ));
    }

    #[test]
    fn paths_hash_the_device_unless_it_is_0_0_and_never_the_type() {
        let body = |dev: &str, kind: &str| {
            format!(
                r#"{{"old_path": {{{dev}{kind}"pathname": "/a"}}, "new_path": {{"pathname": "/b"}}}}"#
            )
        };
        let no_dev = ok("sb_pivotroot", &body("", ""));
        assert_eq!(
            no_dev,
            ok(
                "sb_pivotroot",
                &body(r#""dev": {"major": "0", "minor": "0"}, "#, "")
            )
        );
        assert_eq!(no_dev, ok("sb_pivotroot", &body("", r#""type": "root", "#)));
        let with_dev = ok(
            "sb_pivotroot",
            &body(r#""dev": {"major": "0", "minor": "2"}, "#, ""),
        );
        let mut pre = 0u32.to_le_bytes().to_vec();
        pre.extend_from_slice(&2u32.to_le_bytes());
        pre.extend_from_slice(&lstr(b"/a"));
        pre.extend_from_slice(&lstr(b"/b"));
        assert_eq!(with_dev, Digest::of(&[&pre]));
    }

    #[test]
    fn v3_defects_are_reproduced() {
        // CREDS_K hashes only uid.
        let cred = |euid: &str| {
            format!(
                r#"{{"cred": {{"uid": "5", "euid": "{euid}", "suid": "0", "gid": "0", "egid": "0", "sgid": "0", "fsuid": "0", "fsgid": "0", "capeff": "0x0", "securebits": "0"}}, "flags": "2"}}"#
            )
        };
        let mut pre = 5u32.to_le_bytes().to_vec();
        pre.extend_from_slice(&2u64.to_le_bytes());
        assert_eq!(ok("key_alloc", &cred("0")), Digest::of(&[&pre]));
        assert_eq!(ok("key_alloc", &cred("7")), Digest::of(&[&pre]));
        assert_eq!(
            ok("key_alloc", r#"{"cred": {"uid": "5"}, "flags": "2"}"#),
            Digest::of(&[&pre])
        );

        // bpf family: only the first field.
        let cmd = 6u32.to_le_bytes();
        assert_eq!(
            ok("bpf", r#"{"cmd": "6", "attr": {"size": "72"}}"#),
            Digest::of(&[&cmd])
        );
        assert_eq!(
            ok("bpf_map", r#"{"map": {"map_type": "6"}, "fmode": "3"}"#),
            Digest::of(&[&cmd])
        );
        assert_eq!(
            ok("bpf_prog", r#"{"prog": {"type": "6", "attach_type": "1"}}"#),
            Digest::of(&[&cmd])
        );

        // key_permission: key uid/gid truncated to 16 bits.
        let key = |uid: &str| {
            format!(
                r#"{{"key_ref": {{"possessed": "1", "uid": "{uid}", "gid": "0", "flags": "0"}}, "cred": {{"uid": "0"}}, "perm": "8"}}"#
            )
        };
        assert_eq!(
            ok("key_permission", &key("65541")),
            ok("key_permission", &key("5"))
        );
        assert_ne!(
            ok("key_permission", &key("6")),
            ok("key_permission", &key("5"))
        );

        // 64-byte task arrays.
        let t = "1111111111111111111111111111111111111111111111111111111111111111";
        let mut pre = vec![0x11; 32];
        pre.extend_from_slice(&[0; 32]);
        pre.extend_from_slice(&(-20i32 as u32).to_le_bytes());
        assert_eq!(
            ok(
                "task_setnice",
                &format!(r#"{{"task": "{t}", "nice": "-20"}}"#)
            ),
            Digest::of(&[&pre])
        );
    }

    #[test]
    fn netlink_send_hashes_the_socket_through_the_wrong_union_member() {
        let body = |nsid_set: &str| {
            format!(
                r#"{{"sock": {{"family": "16", "type": "3", "protocol": "9", "owner": "{TA}"}}, "uid": "1", "gid": "2", "portid": "3", "dst_group": "4", "flags": "5", "nsid_set": "{nsid_set}", "nsid": "-1"}}"#
            )
        };
        let owner = hex(TA);
        let mut pre = Vec::new();
        pre.extend_from_slice(&9u32.to_le_bytes());
        pre.extend_from_slice(&0u32.to_le_bytes());
        pre.extend_from_slice(&owner[..4]);
        pre.extend_from_slice(&owner[8..]);
        pre.extend_from_slice(&[0; 32]);
        for x in [1u32, 2, 1, 2, 3, 4, 5] {
            pre.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(ok("netlink_send", &body("0")), Digest::of(&[&pre]));
        pre.extend_from_slice(&5u32.to_le_bytes());
        assert_eq!(ok("netlink_send", &body("1")), Digest::of(&[&pre]));
    }

    #[test]
    fn inode_mknod_hashes_the_kernel_dev_t() {
        let body = format!(
            r#"{{"dir": {ETC_INODE}, "dentry": {{"path": {{"pathname": "/dev/null"}}}}, "mode": "020666", "dev": {{"major": "1", "minor": "3"}}}}"#
        );
        let mut pre = etc_inode_k();
        pre.extend_from_slice(&lstr(b"/dev/null"));
        pre.extend_from_slice(&0o20666u16.to_le_bytes());
        pre.extend_from_slice(&(1u32 << 20 | 3).to_le_bytes());
        assert_eq!(ok("inode_mknod", &body), Digest::of(&[&pre]));
    }

    #[test]
    fn inode_setxattr_hashes_the_base64_decoded_value() {
        let body = |value: &str| {
            format!(
                r#"{{"dentry": {{"path": {{"pathname": "/f"}}}}, "name": "user.x", "value": "{value}", "flags": "1"}}"#
            )
        };
        let mut pre = lstr(b"/f");
        pre.extend_from_slice(&lstr(b"user.x"));
        pre.extend_from_slice(b"ABCD");
        pre.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(ok("inode_setxattr", &body("QUJDRA==")), Digest::of(&[&pre]));
        assert_eq!(ok("inode_setxattr", &body("QUJDRA")), Digest::of(&[&pre]));
        assert!(matches!(
            cell_of("inode_setxattr", &body("Q!")),
            Err(MapError::Invalid { .. })
        ));
    }

    #[test]
    fn task_prctl_skips_arg3_and_the_pdeathsig_pointer() {
        let body = |option: &str, arg2: &str, arg3: &str| {
            format!(
                r#"{{"option": "{option}", "arg2": "{arg2}", "arg3": "{arg3}", "arg4": "4", "arg5": "5"}}"#
            )
        };
        assert_eq!(
            ok("task_prctl", &body("24", "1", "0")),
            ok("task_prctl", &body("24", "1", "9"))
        );
        assert_ne!(
            ok("task_prctl", &body("24", "1", "0")),
            ok("task_prctl", &body("24", "2", "0"))
        );
        assert_eq!(
            ok("task_prctl", &body("2", "1", "0")),
            ok("task_prctl", &body("2", "140737488348000", "0"))
        );
        let mut pre = 2u32.to_le_bytes().to_vec();
        for x in [0u64, 4, 5] {
            pre.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(ok("task_prctl", &body("2", "1", "0")), Digest::of(&[&pre]));
    }

    #[test]
    fn socket_addresses() {
        // sendmsg: v3's misspelled `addrress` and `address` are the same field.
        let msg = |key: &str| {
            format!(
                r#"{{"sock": {}, "addr": {{"af_inet": {{"port": "20480", "{key}": "16777343"}}}}}}"#,
                sock_json(2)
            )
        };
        let mut pre = sock_k(2);
        pre.extend_from_slice(&[0x00, 0x50, 0x7f, 0, 0, 1]);
        assert_eq!(ok("socket_sendmsg", &msg("addrress")), Digest::of(&[&pre]));
        assert_eq!(ok("socket_recvmsg", &msg("address")), Digest::of(&[&pre]));

        // An abstract AF_UNIX address prints as "" and hashes as nothing.
        let unix = format!(
            r#"{{"sock": {}, "addr": {{"af_unix": {{"address": ""}}}}}}"#,
            sock_json(1)
        );
        assert_eq!(ok("socket_connect", &unix), Digest::of(&[&sock_k(1)]));

        // Other families: the whole 32-byte mapping.
        let other = format!(
            r#"{{"sock": {}, "addr": {{"af_other": {{"address": "{TA}"}}}}}}"#,
            sock_json(40)
        );
        let mut pre = sock_k(40);
        pre.extend_from_slice(&hex(TA));
        assert_eq!(ok("socket_bind", &other), Digest::of(&[&pre]));
    }

    #[test]
    fn pseudonyms_follow_add_file_digest() {
        let file = |mode: &str, magic: &str, created: &str| {
            format!(
                r#"{{"flags": "0", "inode": {{"uid": "0", "gid": "0", "mode": "{mode}", "s_magic": "{magic}", "s_id": "x", "s_uuid": "00000000000000000000000000000000"}}, "path": {{{created}"pathname": "/tmp/f"}}, "digest": "{OWN}"}}"#
            )
        };
        let mut pseudonyms = Pseudonyms::new();
        pseudonyms.insert(pseudonym_of(b"/tmp/f"));
        let changed = |kind: &str, body: &str| {
            cell_with(kind, body, &pseudonyms).unwrap() != cell_of(kind, body).unwrap()
        };
        let created = format!(r#""owner": "{OWN}", "instance": "1", "#);
        let ext4 = file("0100644", "0xef53", "");
        let tmpfs = file("0100644", "0x1021994", "");
        assert!(changed("file_open", &format!(r#"{{"file": {ext4}}}"#)));
        assert!(changed(
            "file_lock",
            &format!(r#"{{"file": {ext4}, "cmd": "1"}}"#)
        ));
        assert!(!changed("file_open", &format!(r#"{{"file": {tmpfs}}}"#)));
        assert!(!changed(
            "file_open",
            &format!(r#"{{"file": {}}}"#, file("040755", "0xef53", ""))
        ));
        assert!(!changed(
            "file_open",
            &format!(r#"{{"file": {}}}"#, file("0100644", "0xef53", &created))
        ));
        assert!(changed(
            "mmap_file",
            &format!(r#"{{"file": {tmpfs}, "prot": "1", "flags": "2"}}"#)
        ));
        assert!(changed(
            "kernel_read_file",
            &format!(r#"{{"file": {tmpfs}, "id": "1", "contents": "1"}}"#)
        ));
    }

    #[test]
    fn missing_hashed_fields_are_errors() {
        assert!(matches!(
            cell_of("capable", r#"{"cap": "8"}"#),
            Err(MapError::Missing(_))
        ));
        assert!(matches!(
            cell_of("capable", r#"{"cap": "8x", "opts": "0"}"#),
            Err(MapError::Invalid { .. })
        ));
        let l = line("syslog", "{}").replace(r#", "syslog": {}"#, "");
        assert!(with_view(&l, |v| cell(v, &Pseudonyms::new())).is_err());
    }
}
