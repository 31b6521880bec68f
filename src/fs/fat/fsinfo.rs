//! FAT32's FSInfo sector: a hint of the free cluster count and where to
//! look for the next free cluster. Only a hint: the FAT itself is the
//! truth, and `fsck.fat` compares the two.
use crate::layout::{Endian, Field, Kind};

macro_rules! fields {
    ($($id:ident = $name:literal, $off:literal, $size:literal, $kind:ident, $doc:literal;)*) => {
        $(pub const $id: Field = Field::of(Kind::$kind, $name, $off, $size, $doc);)*
    };
}

fields! {
    FSI_LEAD_SIG = "FSI_LeadSig", 0x0, 4, Uint, "0x41615252 (\"RRaA\")";
    FSI_STRUC_SIG = "FSI_StrucSig", 0x1e4, 4, Uint, "0x61417272 (\"rrAa\")";
    FSI_FREE_COUNT = "FSI_Free_Count", 0x1e8, 4, Uint, "free clusters (0xFFFFFFFF: unknown)";
    FSI_NXT_FREE = "FSI_Nxt_Free", 0x1ec, 4, Uint, "where to start looking for a free cluster";
    FSI_TRAIL_SIG = "FSI_TrailSig", 0x1fc, 4, Uint, "0xAA550000";
}

/// Every field of the FSInfo sector.
pub const FSINFO: &[Field] = &[
    FSI_LEAD_SIG,
    FSI_STRUC_SIG,
    FSI_FREE_COUNT,
    FSI_NXT_FREE,
    FSI_TRAIL_SIG,
];

/// The decoded FSInfo sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsInfo {
    /// The three signatures are right.
    pub valid: bool,
    /// None when the sector says "unknown".
    pub free_count: Option<u32>,
    pub next_free: Option<u32>,
}

impl FsInfo {
    /// Decodes the 512 bytes of the sector.
    pub fn decode(bytes: &[u8]) -> FsInfo {
        let get = |f: Field| f.read(bytes, Endian::Little).unwrap_or(0);
        let known = |v: u64| u32::try_from(v).ok().filter(|&v| v != u32::MAX);
        FsInfo {
            valid: get(FSI_LEAD_SIG) == 0x4161_5252
                && get(FSI_STRUC_SIG) == 0x6141_7272
                && get(FSI_TRAIL_SIG) == 0xaa55_0000,
            free_count: known(get(FSI_FREE_COUNT)),
            next_free: known(get(FSI_NXT_FREE)),
        }
    }
}
