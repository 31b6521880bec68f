//! The AG inode header (`struct xfs_agi`): the third sector of each
//! allocation group. It roots the inode B+tree (every inode chunk) and
//! the free-inode B+tree, and heads the unlinked-inode lists. Field names
//! follow `xfs_db`.
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind};

use super::agf::MAX_LEVELS;
use super::be::u32_at;
use super::crc::{self, Check};
use super::superblock::Superblock;
use crate::fs::FsError;

/// `agi_magicnum`: "XAGI".
pub const MAGIC: u32 = 0x5841_4749;
const CRC_OFF: usize = 0x138;

pub const AGI: &[Field] = &[
    Field::new("agi_magicnum", 0x0, 4, "magic: XAGI"),
    Field::new("agi_versionnum", 0x4, 4, "header version (1)"),
    Field::new("agi_seqno", 0x8, 4, "AG number"),
    Field::new("agi_length", 0xc, 4, "blocks in this AG"),
    Field::new("agi_count", 0x10, 4, "inodes allocated"),
    Field::new("agi_root", 0x14, 4, "root of the inode tree"),
    Field::new("agi_level", 0x18, 4, "levels of the inode tree"),
    Field::new("agi_freecount", 0x1c, 4, "inodes free"),
    Field::new("agi_newino", 0x20, 4, "inode most recently allocated"),
    Field::new("agi_dirino", 0x24, 4, "unused (last directory chunk)"),
    Field::of(
        Kind::Bytes,
        "agi_unlinked",
        0x28,
        256,
        "64 heads of unlinked-inode lists",
    ),
    Field::of(Kind::Uuid, "agi_uuid", 0x128, 16, "filesystem UUID (v5)"),
    Field::new(
        "agi_crc",
        0x138,
        4,
        "CRC-32C of the sector (v5, little-endian)",
    ),
    Field::new("agi_pad32", 0x13c, 4, "padding"),
    Field::new("agi_lsn", 0x140, 8, "last write sequence (v5)"),
    Field::new(
        "agi_free_root",
        0x148,
        4,
        "root of the free-inode tree (finobt)",
    ),
    Field::new("agi_free_level", 0x14c, 4, "levels of the free-inode tree"),
    Field::new("agi_ino_blocks", 0x150, 4, "inode tree blocks (inobtcount)"),
    Field::new(
        "agi_fino_blocks",
        0x154,
        4,
        "free-inode tree blocks (inobtcount)",
    ),
];

/// A decoded AGI.
#[derive(Clone, Debug)]
pub struct Agi {
    pub agno: u32,
    /// Disk offset of the sector.
    pub offset: u64,
    pub fields: Vec<FieldValue>,
    pub count: u32,
    pub root: u32,
    pub level: u32,
    pub freecount: u32,
    pub free_root: u32,
    pub free_level: u32,
    pub crc: Option<Check>,
    pub problems: Vec<String>,
}

impl Agi {
    /// Decodes AG `agno`'s AGI from its sector at disk offset `offset`.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic.
    pub fn decode(sb: &Superblock, agno: u32, sector: &[u8], offset: u64) -> Result<Agi, FsError> {
        let r = |o| u32_at(sector, o).unwrap_or(0);
        if r(0) != MAGIC {
            return Err(FsError::corrupt(
                "AGI",
                "agi_magicnum",
                offset,
                format!("AG {agno}: {:#010x}, expected {MAGIC:#010x} (XAGI)", r(0)),
            ));
        }
        let mut agi = Agi {
            agno,
            offset,
            fields: decode_table(AGI, sector, Endian::Big, offset),
            count: r(0x10),
            root: r(0x14),
            level: r(0x18),
            freecount: r(0x1c),
            free_root: if sb.has_finobt() { r(0x148) } else { 0 },
            free_level: if sb.has_finobt() { r(0x14c) } else { 0 },
            crc: None,
            problems: Vec::new(),
        };
        let mut bad = |field: &str, detail: String| {
            agi.problems.push(format!("AG {agno}: {field}: {detail}"))
        };
        if r(0x4) != 1 {
            bad("agi_versionnum", format!("{}: expected 1", r(0x4)));
        }
        if r(0x8) != agno {
            bad("agi_seqno", format!("{} is not the AG number", r(0x8)));
        }
        let length = sb.ag_length(agno);
        if r(0xc) != length {
            bad(
                "agi_length",
                format!("{} blocks, the superblock says {length}", r(0xc)),
            );
        }
        let mut trees = vec![("agi_level", "agi_root", r(0x18), r(0x14))];
        if sb.has_finobt() {
            trees.push(("agi_free_level", "agi_free_root", r(0x14c), r(0x148)));
        }
        for (lname, rname, level, root) in trees {
            if !(1..=MAX_LEVELS).contains(&level) {
                bad(lname, format!("{level} levels: expected 1 to {MAX_LEVELS}"));
            }
            if root == 0 || root >= length {
                bad(
                    rname,
                    format!("block {root} is outside the AG ({length} blocks)"),
                );
            }
        }
        if r(0x1c) > r(0x10) {
            bad(
                "agi_freecount",
                format!("{} free of {} inodes", r(0x1c), r(0x10)),
            );
        }
        if sb.is_v5() {
            agi.crc = crc::check(sector, CRC_OFF);
            if let Some(c) = agi.crc.filter(|c| !c.ok()) {
                agi.problems.push(format!(
                    "AG {agno}: AGI CRC {:#010x} does not match the computed {:#010x}",
                    c.stored, c.computed
                ));
            }
            if sector.get(0x128..0x138) != Some(&sb.meta_uuid[..]) {
                agi.problems
                    .push(format!("AG {agno}: AGI UUID is not the filesystem's"));
            }
        }
        Ok(agi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_magic_is_an_error_and_levels_are_checked() {
        let sb = Superblock::decode(&crate::fs::xfs::superblock::sample()).unwrap();
        let e = Agi::decode(&sb, 1, &[0u8; 512], 0x400).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("corrupt AGI at 0x400: agi_magicnum"),
            "{e}"
        );
        let mut s = vec![0u8; 512];
        s[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        s[0x18..0x1c].copy_from_slice(&0u32.to_be_bytes());
        let agi = Agi::decode(&sb, 0, &s, 0).unwrap();
        assert!(
            agi.problems
                .iter()
                .any(|p| p.contains("agi_level: 0 levels")),
            "{:?}",
            agi.problems
        );
    }
}
