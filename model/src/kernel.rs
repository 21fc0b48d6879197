//! Profile K: the kernel's mapping (spec §3.4, §3.5, §4, §5.1; conformance README reading rules).
//!
//! The CELL of an event is the SHA-256 of the parameters that the v3 kernel's
//! `map.c` feeds into its hash, in that order, with every defect of that code
//! reproduced (the conformance README's "Reading rules" win where they differ
//! from spec §3.4). The description is taken as the content of the kernel's
//! event structure, i.e. what `fs.c` printed.
//!
//! Sub-encodings (spec §3.5), one function each:
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

/// COE (spec §4, Profile K): the eight ids in order, then capeff.
pub(crate) fn coe(coe: &Fields<'_>) -> Result<Digest, MapError> {
    let mut p = Preimage::new();
    for key in ["uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid"] {
        p.u32(coe.u32(key)?);
    }
    p.u64(coe.u64("capeff")?);
    Ok(p.finish())
}

/// The CELL digest of an event under Profile K (spec §3.4, "Profile K CELL preimage").
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
        E::FileIoctlCompat => {
            return Err(MapError::Unmappable(
                "file_ioctl_compat is not an event of the v3 kernel: Profile K has no mapping for it".into(),
            ));
        }
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
        // the TASK_ID (spec §5.2), from the executable's FILE.
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
        E::TaskGetpgid | E::TaskGetsid | E::TaskGetioprio | E::TaskSetscheduler | E::TaskGetscheduler => {
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
            p.u32(r.u32("resource")?).u64(r.u64("current")?).u64(r.u64("max")?);
        }
        E::TaskPrctl => task_prctl(&mut p, &b)?,
        E::FileOpen | E::FileReceive => {
            file(&mut p, &b.obj("file")?, pseudonyms, PseudonymScope::RealFilesystems)?;
        }
        E::MmapFile => {
            if let Some(f) = b.opt_obj("file")? {
                file(&mut p, &f, pseudonyms, PseudonymScope::AnyFilesystem)?;
            }
            p.u32(b.u32("prot")?).u32(b.u32("flags")?);
        }
        E::FileIoctl | E::FileLock | E::FileFcntl => {
            file(&mut p, &b.obj("file")?, pseudonyms, PseudonymScope::RealFilesystems)?;
            p.u32(b.u32("cmd")?);
        }
        E::KernelReadFile => {
            file(&mut p, &b.obj("file")?, pseudonyms, PseudonymScope::AnyFilesystem)?;
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
            p.lstr(text(&b, "kmod_name")?);
        }
        E::KernelLoadData => {
            p.u32(b.u32("id")?).u32(b.u32("contents")?);
        }
        E::SbMount => {
            if let Some(dev_name) = opt_text(&b, "dev_name")? {
                p.lstr(dev_name);
            }
            path(&mut p, &b.obj("path")?)?;
            if let Some(fstype) = opt_text(&b, "type")? {
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
        // v3 fs.c prints the hashed `ipc.value` under these names (spec §3.4;
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
            dentry(&mut p, &b.obj("dentry")?, Creation::Required(view.type_name))?;
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
            p.lstr(text(&b, "old_name")?);
        }
        E::InodeMknod => {
            inode(&mut p, &b.obj("dir")?)?;
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            p.u16(b.u16("mode")?);
            // The kernel's dev_t: MKDEV(major, minor) = major << 20 | minor
            // (spec §3.4 row 69, README reading rules).
            let dev = b.obj("dev")?;
            p.u32(dev.u32("major")?.wrapping_shl(20) | dev.u32("minor")?);
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
            // A dentry structure printed under the key `path` (spec §3.4 row 72).
            dentry(&mut p, &b.obj("path")?, Creation::AsPrinted)?;
        }
        E::InodeSetxattr => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            p.lstr(text(&b, "name")?);
            p.raw(&xattr_value(&b)?);
            p.u32(b.u32("flags")?);
        }
        E::InodeGetxattr | E::InodeRemovexattr => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
            p.lstr(text(&b, "name")?);
        }
        E::InodeListxattr | E::InodeKillpriv => {
            dentry(&mut p, &b.obj("dentry")?, Creation::AsPrinted)?;
        }
        // v3 defect (spec §3.4 note 4): an inverted error test ends the
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
        // Handled before the body is read.
        E::MsgQueueMsgsnd | E::TunDevCreate | E::TunDevAttach | E::TunDevOpen | E::FileIoctlCompat => {
            return Ok(generic_cell(view));
        }
    }
    Ok(p.finish())
}

/// The TASK_ID the kernel gives a task at exec (spec §5.2):
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
            format_args!("{:?}: a TASK_ID is derived from bprm_committed_creds", view.type_name),
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

/// A text field as hashed: the printed bytes. Unlike Profile Q (whose parser
/// reads an empty string as `"`, see [`Fields::text`]), an empty value is
/// hashed as nothing; e.g. the abstract AF_UNIX address that the kernel
/// prints as `""` (the Profile K reference does the same).
fn text<'a>(f: &Fields<'a>, key: &str) -> Result<&'a [u8], MapError> {
    opt_text(f, key)?.ok_or_else(|| MapError::Missing(format!("{}.{key}", f.at)))
}

/// An optional text field, with the rule of [`text`].
fn opt_text<'a>(f: &Fields<'a>, key: &str) -> Result<Option<&'a [u8]>, MapError> {
    Ok(f.opt_str(key)?.map(str::as_bytes))
}

fn no_exec_file() -> MapError {
    MapError::Unmappable(
        "bprm_committed_creds without the executable's file{}: the v3 kernel maps this event only to derive a \
         TASK_ID from that FILE and never exports it"
            .into(),
    )
}

/// A TASK_ID hashed as the kernel's `sizeof(target)` array: HASH_MAX_DIGESTSIZE
/// = 64 bytes, the 32-byte TASK_ID then 32 bytes that are zero in the
/// zero-allocated event (spec §3.4 note 1; task_setpgid/setnice/setioprio).
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
    let arg2 = if option == PR_GET_PDEATHSIG { 0 } else { b.u64("arg2")? };
    p.u32(option).u64(arg2).u64(b.u64("arg4")?).u64(b.u64("arg5")?);
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
/// s_uuid[16]` (spec §3.5): the kernel hashes `i_mode` as a 4-byte value
/// (Profile Q: 2 bytes), and a tmpfs inode's s_uuid as 16 zero bytes.
fn inode(p: &mut Preimage, inode: &Fields<'_>) -> Result<InodeFacts, MapError> {
    let mode = inode.u32("mode")?;
    let s_magic = inode.u32("s_magic")?;
    let s_id = text(inode, "s_id")?;
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

/// `PATH_K` (spec §3.5) = `[u32 major ‖ u32 minor] ‖` (created ?
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
    let pathname = text(path, "pathname")?;
    let created = match (path.opt_str("owner")?, path.opt_str("instance")?) {
        (None, None) => false,
        (Some(_), None) => return Err(MapError::Missing(format!("{}.instance (owner is printed)", path.at))),
        (None, Some(_)) => return Err(MapError::Missing(format!("{}.owner (instance is printed)", path.at))),
        (Some(_), Some(_)) => true,
    };
    if created {
        let instance = path.u64("instance")?;
        let owner = path.digest::<32>("owner")?;
        let slash = pathname
            .iter()
            .rposition(|&c| c == b'/')
            .ok_or_else(|| MapError::invalid(path.at, "pathname", "a created file's pathname has no '/'"))?;
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

/// The pseudo filesystems of event.c (spec §5.8), by superblock magic:
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
            PseudonymScope::RealFilesystems => eligible && !PSEUDO_FILESYSTEM_MAGICS.contains(&inode.s_magic),
        }
    }
}

/// `FILE_K` = `u32 flags ‖ INODE_K ‖ PATH_K ‖ digest[32]` (spec §3.5).
///
/// For an external namespace the kernel exports the real digest and the TMA
/// applies the pseudonyms, where event.c would have consulted them (`scope`).
fn file(p: &mut Preimage, f: &Fields<'_>, pseudonyms: &Pseudonyms, scope: PseudonymScope) -> Result<(), MapError> {
    p.u32(f.u32("flags")?);
    let inode_facts = inode(p, &f.obj("inode")?)?;
    let path_facts = path(p, &f.obj("path")?)?;
    let digest = f.digest::<32>("digest")?;
    let pseudonym = scope.admits(&inode_facts, &path_facts) && pseudonyms.covers(path_facts.pathname);
    p.raw(if pseudonym { &ZERO_DIGEST } else { &digest });
    Ok(())
}

/// Whether a dentry must be in the created form.
#[derive(Clone, Copy)]
enum Creation<'a> {
    /// Hash what is printed: the created form when `owner`/`instance` are there.
    AsPrinted,
    /// The new dentry of inode_create/inode_mkdir (named event): v3 event.c
    /// `get_inode_create` always marks it created in the current namespace, so
    /// map.c hashes it in the created form and fs.c prints `owner`/`instance`;
    /// a description without them cannot come from that kernel.
    Required(&'a str),
}

/// `DENTRY_K` = `[INODE_K if inode{} is printed] ‖ PATH_K` (spec §3.5).
fn dentry(p: &mut Preimage, d: &Fields<'_>, creation: Creation<'_>) -> Result<(), MapError> {
    let path_fields = d.obj("path")?;
    if let Creation::Required(event) = creation {
        if path_fields.opt_str("owner")?.is_none() || path_fields.opt_str("instance")?.is_none() {
            return Err(MapError::Unmappable(format!(
                "{event}: the new dentry has no owner/instance; the v3 kernel always hashes it as a file \
                 created in the namespace (dir prefix, instance, owner)"
            )));
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
    p.lstr(text(sb, "fstype")?).u64(sb.u64("s_flags")?);
    Ok(())
}

/// `SOCK_K` = `u32 family ‖ u32 type ‖ u32 protocol ‖ owner[64]` (spec §3.5):
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

/// `SOCK_K ‖ address` of socket_connect/bind/accept (spec §3.4 rows 24-26):
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
            let path = text(&addr.obj("af_unix")?, "address")?;
            if path.len() > 108 {
                return Err(MapError::invalid("af_unix", "address", "longer than 108 bytes"));
            }
            p.raw(path);
        }
        _ => {
            p.raw(&addr.obj("af_other")?.digest::<32>("address")?);
        }
    }
    Ok(())
}

/// `SOCK_K ‖ [address]` of socket_sendmsg/recvmsg (spec §3.4 rows 29-30): an
/// `addr{}` is printed only for AF_INET (`u16 port ‖ u32 addr`) and AF_INET6
/// (`u16 port ‖ addr[16]`). v3 fs.c prints the AF_INET address under the
/// misspelled key `addrress` (spec §3.4 note 2); `address` is accepted too.
fn message_address(p: &mut Preimage, b: &Fields<'_>) -> Result<(), MapError> {
    let family = sock(p, &b.obj("sock")?)?;
    let Some(addr) = b.opt_obj("addr")? else {
        return Ok(());
    };
    match family {
        AF_INET => {
            let a = addr.obj("af_inet")?;
            let key = if a.opt_str("addrress")?.is_some() { "addrress" } else { "address" };
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
/// (spec §3.5).
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

/// `CREDS_K` = `u32 uid` only: v3 defect (spec §3.5), the error test after
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

/// `netlink_send` (README reading rules; spec §3.4 row 62 differs): map.c
/// hashes the socket through the `socket` member of the CELL union while
/// event.c filled the `netlink` member, 8 bytes earlier, so the 76 bytes hashed
/// as "SOCK_K" are `u32 sock.protocol ‖ u32 kern (0) ‖ owner[0:4] ‖
/// owner[8:32] ‖ 0^32 ‖ u32 uid ‖ u32 gid`. Then `uid, gid, portid,
/// dst_group, flags`, and `flags` once more instead of `nsid` when `nsid_set`
/// (spec §3.4 note 3).
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
