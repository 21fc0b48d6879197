//! Profile K: the kernel's mapping (spec §3.4, §3.5, §4, §5.1; conformance README reading rules).

use tsem_ingest::EventView;

use crate::digest::Digest;
use crate::fields::{Fields, MapError};
use crate::profile::Pseudonyms;

/// COE (spec §4, Profile K): the eight ids in order, then capeff.
pub(crate) fn coe(coe: &Fields<'_>) -> Result<Digest, MapError> {
    let mut p = crate::digest::Preimage::new();
    for key in ["uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid"] {
        p.u32(coe.u32(key)?);
    }
    p.u64(coe.u64("capeff")?);
    Ok(p.finish())
}

/// The CELL digest of an event under Profile K.
pub(crate) fn cell(view: &EventView<'_>, _pseudonyms: &Pseudonyms) -> Result<Digest, MapError> {
    Ok(crate::profile::generic_cell(view))
}
