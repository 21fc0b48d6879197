//! Profile Q: the mapping of Quixote v1.8 (mapping.md M4, M7, M11).

use tsem_ingest::{EventType, EventView};

use crate::digest::{Digest, Preimage, ZERO_DIGEST};
use crate::fields::{Fields, MapError};
use crate::profile::{generic_cell, Profile, Pseudonyms};

/// `TMPFS_MAGIC`: the s_uuid of a tmpfs inode is hashed as zeros.
pub(crate) const TMPFS_MAGIC: u32 = 0x0102_1994;

/// COE (mapping.md M7, Profile Q): `fsuid` is hashed twice and `fsgid` never
/// (Quixote's COE.c defect, kept for compatibility with Quixote models).
pub(crate) fn coe(coe: &Fields<'_>) -> Result<Digest, MapError> {
    let mut p = Preimage::new();
    for key in ["uid", "euid", "suid", "gid", "egid", "sgid", "fsuid"] {
        p.u32(coe.u32(key)?);
    }
    let fsuid = coe.u32("fsuid")?;
    coe.u32("fsgid")?;
    p.u32(fsuid).u64(coe.u64("capeff")?);
    Ok(p.finish())
}

/// The CELL digest of an event (mapping.md M4.3, M4.4).
pub(crate) fn cell(view: &EventView<'_>, pseudonyms: &Pseudonyms) -> Result<Digest, MapError> {
    let Some(t) = view.event_type else {
        return Ok(generic_cell(view));
    };
    let body = || -> Result<Fields<'_>, MapError> {
        view.cell
            .map(|o| Fields::new(o, view.type_name, Profile::Quixote))
            .ok_or_else(|| MapError::Missing(format!("{}{{}}", view.type_name)))
    };
    let mut p = Preimage::new();
    match t {
        EventType::FileOpen => {
            file(&mut p, &body()?.obj("file")?, pseudonyms)?;
        }
        EventType::MmapFile => {
            let b = body()?;
            if let Some(f) = b.opt_obj("file")? {
                file(&mut p, &f, pseudonyms)?;
            }
            p.u32(b.u32("prot")?).u32(b.u32("flags")?);
        }
        EventType::SocketCreate => {
            let b = body()?;
            for key in ["family", "type", "protocol", "kern"] {
                p.u32(b.u32(key)?);
            }
        }
        EventType::SocketConnect | EventType::SocketBind | EventType::SocketAccept => {
            socket_address(&mut p, &body()?, t == EventType::SocketAccept)?;
        }
        EventType::TaskKill => {
            let b = body()?;
            let target = b.digest::<32>("target")?;
            p.u32(b.u32("cross_ns")?).u32(b.u32("sig")?).raw(&target);
        }
        _ => return Ok(generic_cell(view)),
    }
    Ok(p.finish())
}

/// FILE_Q (mapping.md M4.1), with pseudonym substitution of the digest (M11).
fn file(p: &mut Preimage, f: &Fields<'_>, pseudonyms: &Pseudonyms) -> Result<(), MapError> {
    let inode = f.obj("inode")?;
    let path = f.obj("path")?;
    let flags = f.u32("flags")?;
    let s_magic = inode.u32("s_magic")?;
    let s_id = inode.text("s_id")?;
    if s_id.len() > 31 {
        return Err(MapError::invalid("inode", "s_id", "longer than 31 bytes"));
    }
    let mut s_id_buf = [0u8; 32];
    s_id_buf[..s_id.len()].copy_from_slice(s_id);
    let mut s_uuid = inode.digest::<16>("s_uuid")?;
    if s_magic == TMPFS_MAGIC {
        s_uuid = [0; 16];
    }
    p.u32(flags)
        .u32(inode.u32("uid")?)
        .u32(inode.u32("gid")?)
        .u16(inode.u16("mode")?)
        .u32(s_magic)
        .raw(&s_id_buf)
        .raw(&s_uuid);
    // `path.type` is absent in v4 kernels' output; Quixote v1.7 (the release for
    // those kernels) hashed no type term, so neither do we.
    if let Some(kind) = path.opt_text("type")? {
        p.lstr(kind);
    }
    let pathname = path.text("pathname")?;
    created_or_plain(p, &path, pathname)?;
    let digest = f.digest::<32>("digest")?;
    p.raw(if pseudonyms.covers(pathname) {
        &ZERO_DIGEST
    } else {
        &digest
    });
    Ok(())
}

/// Hashes a pathname, or for a file created inside the namespace (`instance`
/// > 0) its directory prefix, the instance and the owner TASK_ID.
pub(crate) fn created_or_plain(
    p: &mut Preimage,
    path: &Fields<'_>,
    pathname: &[u8],
) -> Result<(), MapError> {
    let instance = path.opt_u64("instance")?.unwrap_or(0);
    if instance == 0 {
        p.lstr(pathname);
        return Ok(());
    }
    let owner = path.digest::<32>("owner")?;
    let slash = pathname.iter().rposition(|&b| b == b'/').ok_or_else(|| {
        MapError::invalid("path", "pathname", "a created file's pathname has no '/'")
    })?;
    p.lstr(&pathname[..=slash]).u64(instance).raw(&owner);
    Ok(())
}

/// SOCK_Q plus the address of socket_connect/bind/accept (mapping.md M4.4.4, M4.4.5).
/// The port is the event's (the kernel's layout), where Quixote reads none.
fn socket_address(p: &mut Preimage, b: &Fields<'_>, accept: bool) -> Result<(), MapError> {
    let sock = b.obj("sock")?;
    let family = sock.u32("family")?;
    p.u32(family)
        .u32(sock.u32("type")?)
        .u32(sock.u32("protocol")?)
        .raw(&sock.digest::<32>("owner")?);
    let addr = b.obj("addr")?;
    match family {
        2 => {
            let a = addr.obj("af_inet")?;
            p.u16(a.u16("port")?).u32(a.u32("address")?);
        }
        10 => {
            let a = addr.obj("af_inet6")?;
            p.u16(a.u16("port")?).raw(&a.digest::<16>("address")?);
            if !accept {
                p.u32(a.u32("flow")?).u32(a.u32("scope")?);
            }
        }
        1 => {
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
            let a = addr.obj("af_other")?.digest::<32>("address")?;
            // Quixote hashes sizeof(pointer) = 8 bytes for connect/bind.
            p.raw(if accept { &a[..] } else { &a[..8] });
        }
    }
    Ok(())
}
