//! The AG free space header (`struct xfs_agf`): the second sector of each
//! allocation group. It roots the free-space B+trees (by block number and
//! by length), the reverse-map and refcount B+trees, and the free list.
//! Field names follow `xfs_db` (`agf_bnoroot` is `agf_roots[0]`).
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind};

use super::be::u32_at;
use super::crc::{self, Check};
use super::superblock::Superblock;
use crate::fs::FsError;

/// `agf_magicnum`: "XAGF".
pub const MAGIC: u32 = 0x5841_4746;
const CRC_OFF: usize = 0xd8;
/// The most levels an AG B+tree may have (the kernel's bound for AG
/// trees with the smallest blocks is far below this; a larger claim is
/// damage, and walking it would only read garbage).
pub const MAX_LEVELS: u32 = 9;

pub const AGF: &[Field] = &[
    Field::new("agf_magicnum", 0x0, 4, "magic: XAGF"),
    Field::new("agf_versionnum", 0x4, 4, "header version (1)"),
    Field::new("agf_seqno", 0x8, 4, "AG number"),
    Field::new("agf_length", 0xc, 4, "blocks in this AG"),
    Field::new(
        "agf_bnoroot",
        0x10,
        4,
        "root of the free-space tree by block",
    ),
    Field::new(
        "agf_cntroot",
        0x14,
        4,
        "root of the free-space tree by length",
    ),
    Field::new("agf_rmaproot", 0x18, 4, "root of the reverse-map tree"),
    Field::new("agf_bnolevel", 0x1c, 4, "levels of the by-block tree"),
    Field::new("agf_cntlevel", 0x20, 4, "levels of the by-length tree"),
    Field::new("agf_rmaplevel", 0x24, 4, "levels of the reverse-map tree"),
    Field::new("agf_flfirst", 0x28, 4, "first free list slot in use"),
    Field::new("agf_fllast", 0x2c, 4, "last free list slot in use"),
    Field::new("agf_flcount", 0x30, 4, "blocks on the free list"),
    Field::new("agf_freeblks", 0x34, 4, "free blocks"),
    Field::new("agf_longest", 0x38, 4, "longest free extent"),
    Field::new(
        "agf_btreeblks",
        0x3c,
        4,
        "blocks held by the free-space trees",
    ),
    Field::of(Kind::Uuid, "agf_uuid", 0x40, 16, "filesystem UUID (v5)"),
    Field::new("agf_rmapblocks", 0x50, 4, "reverse-map tree blocks"),
    Field::new("agf_refcntblocks", 0x54, 4, "refcount tree blocks"),
    Field::new("agf_refcntroot", 0x58, 4, "root of the refcount tree"),
    Field::new("agf_refcntlevel", 0x5c, 4, "levels of the refcount tree"),
    Field::new("agf_lsn", 0xd0, 8, "last write sequence (v5)"),
    Field::new(
        "agf_crc",
        0xd8,
        4,
        "CRC-32C of the sector (v5, little-endian)",
    ),
];

/// A decoded AGF.
#[derive(Clone, Debug)]
pub struct Agf {
    pub agno: u32,
    /// Disk offset of the sector.
    pub offset: u64,
    pub fields: Vec<FieldValue>,
    pub versionnum: u32,
    pub seqno: u32,
    pub length: u32,
    pub bnoroot: u32,
    pub cntroot: u32,
    pub rmaproot: u32,
    pub bnolevel: u32,
    pub cntlevel: u32,
    pub rmaplevel: u32,
    pub refcntroot: u32,
    pub refcntlevel: u32,
    pub flfirst: u32,
    pub fllast: u32,
    pub flcount: u32,
    pub freeblks: u32,
    pub longest: u32,
    pub crc: Option<Check>,
    pub problems: Vec<String>,
}

impl Agf {
    /// Decodes AG `agno`'s AGF from its sector at disk offset `offset`.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic (the sector is not an AGF at all).
    pub fn decode(sb: &Superblock, agno: u32, sector: &[u8], offset: u64) -> Result<Agf, FsError> {
        let r = |o| u32_at(sector, o).unwrap_or(0);
        if r(0) != MAGIC {
            return Err(FsError::corrupt(
                "AGF",
                "agf_magicnum",
                offset,
                format!("AG {agno}: {:#010x}, expected {MAGIC:#010x} (XAGF)", r(0)),
            ));
        }
        let mut agf = Agf {
            agno,
            offset,
            fields: decode_table(AGF, sector, Endian::Big, offset),
            versionnum: r(0x4),
            seqno: r(0x8),
            length: r(0xc),
            bnoroot: r(0x10),
            cntroot: r(0x14),
            rmaproot: r(0x18),
            bnolevel: r(0x1c),
            cntlevel: r(0x20),
            rmaplevel: r(0x24),
            refcntroot: r(0x58),
            refcntlevel: r(0x5c),
            flfirst: r(0x28),
            fllast: r(0x2c),
            flcount: r(0x30),
            freeblks: r(0x34),
            longest: r(0x38),
            crc: None,
            problems: Vec::new(),
        };
        if sb.is_v5() {
            agf.crc = crc::check(sector, CRC_OFF);
            if let Some(c) = agf.crc.filter(|c| !c.ok()) {
                agf.problems.push(format!(
                    "AG {agno}: AGF CRC {:#010x} does not match the computed {:#010x}",
                    c.stored, c.computed
                ));
            }
            if sector.get(0x40..0x50) != Some(&sb.meta_uuid[..]) {
                agf.problems
                    .push(format!("AG {agno}: AGF UUID is not the filesystem's"));
            }
        }
        agf.check(sb);
        Ok(agf)
    }

    /// Values the rest of the AG depends on, each named when wrong.
    fn check(&mut self, sb: &Superblock) {
        let agno = self.agno;
        let mut bad = |field: &str, detail: String| {
            self.problems.push(format!("AG {agno}: {field}: {detail}"));
        };
        if self.versionnum != 1 {
            bad("agf_versionnum", format!("{}: expected 1", self.versionnum));
        }
        if self.seqno != agno {
            bad("agf_seqno", format!("{} is not the AG number", self.seqno));
        }
        let expected = sb.ag_length(agno);
        if self.length != expected {
            bad(
                "agf_length",
                format!("{} blocks, the superblock says {expected}", self.length),
            );
        }
        for (name, level) in [
            ("agf_bnolevel", self.bnolevel),
            ("agf_cntlevel", self.cntlevel),
        ] {
            if !(1..=MAX_LEVELS).contains(&level) {
                bad(name, format!("{level} levels: expected 1 to {MAX_LEVELS}"));
            }
        }
        for (name, root) in [("agf_bnoroot", self.bnoroot), ("agf_cntroot", self.cntroot)] {
            if root == 0 || root >= expected {
                bad(
                    name,
                    format!("block {root} is outside the AG ({expected} blocks)"),
                );
            }
        }
        if self.freeblks > expected || self.longest > self.freeblks.max(1) {
            bad(
                "agf_freeblks",
                format!(
                    "{} free, longest {}, in an AG of {expected} blocks",
                    self.freeblks, self.longest
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_magic_is_an_error_naming_the_offset() {
        let sb = Superblock::decode(&crate::fs::xfs::superblock::sample()).unwrap();
        let e = Agf::decode(&sb, 2, &[0u8; 512], 0x1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt AGF at 0x1000: agf_magicnum: AG 2: 0x00000000, expected 0x58414746 (XAGF)"
        );
    }

    #[test]
    fn levels_past_the_bound_and_roots_past_the_ag_are_named() {
        let sb = Superblock::decode(&crate::fs::xfs::superblock::sample()).unwrap();
        let mut s = vec![0u8; 512];
        s[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        s[4..8].copy_from_slice(&1u32.to_be_bytes());
        s[0xc..0x10].copy_from_slice(&4096u32.to_be_bytes());
        s[0x10..0x14].copy_from_slice(&1u32.to_be_bytes());
        s[0x14..0x18].copy_from_slice(&9999u32.to_be_bytes());
        s[0x1c..0x20].copy_from_slice(&100u32.to_be_bytes());
        s[0x20..0x24].copy_from_slice(&1u32.to_be_bytes());
        let agf = Agf::decode(&sb, 0, &s, 512).unwrap();
        let all = agf.problems.join("\n");
        assert!(all.contains("agf_bnolevel: 100 levels"), "{all}");
        assert!(
            all.contains("agf_cntroot: block 9999 is outside the AG"),
            "{all}"
        );
        assert!(all.contains("AGF CRC"), "{all}");
    }
}
