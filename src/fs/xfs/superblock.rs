//! The XFS superblock (`struct xfs_dsb`): the first sector of every
//! allocation group, big-endian, the primary copy in AG 0. One table
//! ([`SUPERBLOCK`]) names every field of the v5 layout with its offset; the
//! v4 superblock is the same up to `sb_bad_features2`.
//!
//! Decoding checks the geometry everything else is computed from (block,
//! sector and inode sizes, the AG count and size against the block count)
//! and refuses what would make addresses meaningless, naming the field and
//! its offset; a bad CRC or a filesystem larger than the disk is reported,
//! not refused.
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind};

use super::be::{u16_at, u32_at, u64_at, u8_at};
use super::crc::{self, Check};
use crate::fs::FsError;

/// `sb_magicnum`: "XFSB".
pub const MAGIC: u32 = 0x5846_5342;
/// The superblock's size on disk (it sits in a sector of `sb_sectsize`).
pub const SIZE: usize = 264;
/// Where `sb_crc` lies.
pub const CRC_OFF: usize = 0xe0;

use Kind::{Text, Uuid};

/// Every field, in on-disk order (names as in the kernel's `xfs_dsb`).
pub const SUPERBLOCK: &[Field] = &[
    Field::new("sb_magicnum", 0x0, 4, "magic: XFSB"),
    Field::new("sb_blocksize", 0x4, 4, "block size in bytes"),
    Field::new("sb_dblocks", 0x8, 8, "blocks of the data device"),
    Field::new("sb_rblocks", 0x10, 8, "blocks of the realtime device"),
    Field::new("sb_rextents", 0x18, 8, "realtime extents"),
    Field::of(Uuid, "sb_uuid", 0x20, 16, "filesystem UUID"),
    Field::new("sb_logstart", 0x30, 8, "first block of the internal log"),
    Field::new("sb_rootino", 0x38, 8, "root directory inode"),
    Field::new("sb_rbmino", 0x40, 8, "realtime bitmap inode"),
    Field::new("sb_rsumino", 0x48, 8, "realtime summary inode"),
    Field::new("sb_rextsize", 0x50, 4, "realtime extent size in blocks"),
    Field::new("sb_agblocks", 0x54, 4, "blocks per allocation group"),
    Field::new("sb_agcount", 0x58, 4, "allocation groups"),
    Field::new("sb_rbmblocks", 0x5c, 4, "realtime bitmap blocks"),
    Field::new("sb_logblocks", 0x60, 4, "log blocks"),
    Field::new(
        "sb_versionnum",
        0x64,
        2,
        "version (low 4 bits) and feature bits",
    ),
    Field::new("sb_sectsize", 0x66, 2, "sector size in bytes"),
    Field::new("sb_inodesize", 0x68, 2, "inode size in bytes"),
    Field::new("sb_inopblock", 0x6a, 2, "inodes per block"),
    Field::of(Text, "sb_fname", 0x6c, 12, "label"),
    Field::new("sb_blocklog", 0x78, 1, "log2 of the block size"),
    Field::new("sb_sectlog", 0x79, 1, "log2 of the sector size"),
    Field::new("sb_inodelog", 0x7a, 1, "log2 of the inode size"),
    Field::new("sb_inopblog", 0x7b, 1, "log2 of inodes per block"),
    Field::new("sb_agblklog", 0x7c, 1, "log2 of blocks per AG, rounded up"),
    Field::new("sb_rextslog", 0x7d, 1, "log2 of realtime extents"),
    Field::new("sb_inprogress", 0x7e, 1, "mkfs in progress"),
    Field::new(
        "sb_imax_pct",
        0x7f,
        1,
        "most space inodes may take, percent",
    ),
    Field::new("sb_icount", 0x80, 8, "inodes allocated"),
    Field::new("sb_ifree", 0x88, 8, "inodes free"),
    Field::new("sb_fdblocks", 0x90, 8, "data blocks free"),
    Field::new("sb_frextents", 0x98, 8, "realtime extents free"),
    Field::new("sb_uquotino", 0xa0, 8, "user quota inode"),
    Field::new("sb_gquotino", 0xa8, 8, "group quota inode"),
    Field::new("sb_qflags", 0xb0, 2, "quota flags"),
    Field::new("sb_flags", 0xb2, 1, "flags: 1 read-only"),
    Field::new("sb_shared_vn", 0xb3, 1, "shared version"),
    Field::new("sb_inoalignmt", 0xb4, 4, "inode chunk alignment in blocks"),
    Field::new("sb_unit", 0xb8, 4, "stripe unit in blocks"),
    Field::new("sb_width", 0xbc, 4, "stripe width in blocks"),
    Field::new(
        "sb_dirblklog",
        0xc0,
        1,
        "log2 of directory block / block size",
    ),
    Field::new("sb_logsectlog", 0xc1, 1, "log2 of the log sector size"),
    Field::new("sb_logsectsize", 0xc2, 2, "log sector size"),
    Field::new("sb_logsunit", 0xc4, 4, "log stripe unit in bytes"),
    Field::new("sb_features2", 0xc8, 4, "more feature bits"),
    Field::new(
        "sb_bad_features2",
        0xcc,
        4,
        "copy of features2 (old padding bug)",
    ),
    Field::new("sb_features_compat", 0xd0, 4, "v5 compatible features"),
    Field::new(
        "sb_features_ro_compat",
        0xd4,
        4,
        "v5 read-only compatible features",
    ),
    Field::new("sb_features_incompat", 0xd8, 4, "v5 incompatible features"),
    Field::new(
        "sb_features_log_incompat",
        0xdc,
        4,
        "v5 log incompatible features",
    ),
    Field::new("sb_crc", 0xe0, 4, "CRC-32C of the sector (little-endian)"),
    Field::new("sb_spino_align", 0xe4, 4, "sparse inode chunk alignment"),
    Field::new("sb_pquotino", 0xe8, 8, "project quota inode"),
    Field::new("sb_lsn", 0xf0, 8, "last write sequence"),
    Field::of(
        Uuid,
        "sb_meta_uuid",
        0xf8,
        16,
        "metadata UUID (meta_uuid feature)",
    ),
];

/// `sb_versionnum` bits above the version number.
pub const VERSION_BITS: &[(u32, &str)] = &[
    (0x10, "ATTR"),
    (0x20, "NLINK"),
    (0x40, "QUOTA"),
    (0x80, "ALIGN"),
    (0x100, "DALIGN"),
    (0x200, "SHARED"),
    (0x400, "LOGV2"),
    (0x800, "SECTOR"),
    (0x1000, "EXTFLG"),
    (0x2000, "DIRV2"),
    (0x4000, "BORG"),
    (0x8000, "MOREBITS"),
];
/// `sb_features2`.
pub const FEATURES2: &[(u32, &str)] = &[
    (0x1, "RESERVED1"),
    (0x2, "LAZYSBCOUNT"),
    (0x4, "RESERVED4"),
    (0x8, "ATTR2"),
    (0x10, "PARENT"),
    (0x80, "PROJID32BIT"),
    (0x100, "CRC"),
    (0x200, "FTYPE"),
];
/// `sb_features_ro_compat`.
pub const RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "finobt"),
    (0x2, "rmapbt"),
    (0x4, "reflink"),
    (0x8, "inobtcount"),
];
/// `sb_features_incompat`.
pub const INCOMPAT: &[(u32, &str)] = &[
    (0x1, "ftype"),
    (0x2, "sparse"),
    (0x4, "meta_uuid"),
    (0x8, "bigtime"),
    (0x10, "needsrepair"),
    (0x20, "nrext64"),
];
/// `sb_features_log_incompat`.
pub const LOG_INCOMPAT: &[(u32, &str)] = &[(0x1, "log_xattrs")];

pub const RO_FINOBT: u32 = 0x1;
pub const RO_RMAPBT: u32 = 0x2;
pub const RO_REFLINK: u32 = 0x4;
pub const INCOMPAT_FTYPE: u32 = 0x1;
pub const INCOMPAT_SPINODES: u32 = 0x2;
pub const INCOMPAT_META_UUID: u32 = 0x4;
pub const INCOMPAT_NREXT64: u32 = 0x20;
const FEATURES2_FTYPE: u32 = 0x200;
const VERSION_MOREBITS: u16 = 0x8000;

/// The names of the bits set in `value`; a bit the table lacks is shown
/// as `bit N` (decoded and flagged, never refused).
pub fn names(value: u32, table: &[(u32, &str)]) -> Vec<String> {
    (0..32)
        .filter_map(|bit| {
            let mask = 1u32.checked_shl(bit)?;
            (value & mask != 0).then(|| match table.iter().find(|(m, _)| *m == mask) {
                Some((_, n)) => (*n).to_owned(),
                None => format!("bit {bit}"),
            })
        })
        .collect()
}

/// The decoded superblock: every field, and the geometry derived from it
/// (already checked to be self-consistent).
#[derive(Clone, Debug)]
pub struct Superblock {
    pub fields: Vec<FieldValue>,
    pub blocksize: u32,
    pub dblocks: u64,
    pub rblocks: u64,
    pub uuid: [u8; 16],
    pub meta_uuid: [u8; 16],
    pub logstart: u64,
    pub rootino: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub versionnum: u16,
    pub sectsize: u16,
    pub inodesize: u16,
    pub fname: [u8; 12],
    pub blocklog: u8,
    pub sectlog: u8,
    pub inodelog: u8,
    pub inopblog: u8,
    pub agblklog: u8,
    pub dirblklog: u8,
    pub features2: u32,
    pub ro_compat: u32,
    pub incompat: u32,
    /// The sector's CRC (v5 only).
    pub crc: Option<Check>,
    /// What is wrong but does not stop decoding.
    pub problems: Vec<String>,
}

fn corrupt(field: &'static str, detail: String) -> FsError {
    let offset = SUPERBLOCK
        .iter()
        .find(|f| f.name == field)
        .and_then(|f| u64::try_from(f.offset).ok())
        .unwrap_or(0);
    FsError::corrupt("XFS superblock", field, offset, detail)
}

/// `ceil(log2(n))` for n >= 1.
fn log2_ceil(n: u32) -> u32 {
    match n {
        0 | 1 => 0,
        n => 32u32.saturating_sub((n.saturating_sub(1)).leading_zeros()),
    }
}

impl Superblock {
    /// Decodes the superblock from the first sector of the volume (at
    /// least [`SIZE`] bytes; a v5 CRC covers the whole `sb_sectsize`).
    ///
    /// # Errors
    /// `Corrupt` naming the field for a wrong magic or a geometry that
    /// cannot be right.
    pub fn decode(sector: &[u8]) -> Result<Superblock, FsError> {
        let r8 = |o| u8_at(sector, o).unwrap_or(0);
        let r16 = |o| u16_at(sector, o).unwrap_or(0);
        let r32 = |o| u32_at(sector, o).unwrap_or(0);
        let r64 = |o| u64_at(sector, o).unwrap_or(0);
        let magic = r32(0);
        if magic != MAGIC || sector.len() < SIZE {
            return Err(corrupt(
                "sb_magicnum",
                format!("{magic:#010x}, expected {MAGIC:#010x} (XFSB)"),
            ));
        }
        let uuid_at = |o: usize| -> [u8; 16] {
            sector
                .get(o..o.saturating_add(16))
                .and_then(|s| s.try_into().ok())
                .unwrap_or([0; 16])
        };
        let versionnum = r16(0x64);
        let v5 = versionnum & 0xf == 5;
        let mut fname = [0u8; 12];
        if let Some(s) = sector.get(0x6c..0x78) {
            fname.copy_from_slice(s);
        }
        let mut sb = Superblock {
            fields: decode_table(SUPERBLOCK, sector, Endian::Big, 0),
            blocksize: r32(0x4),
            dblocks: r64(0x8),
            rblocks: r64(0x10),
            uuid: uuid_at(0x20),
            meta_uuid: uuid_at(0xf8),
            logstart: r64(0x30),
            rootino: r64(0x38),
            agblocks: r32(0x54),
            agcount: r32(0x58),
            versionnum,
            sectsize: r16(0x66),
            inodesize: r16(0x68),
            fname,
            blocklog: r8(0x78),
            sectlog: r8(0x79),
            inodelog: r8(0x7a),
            inopblog: r8(0x7b),
            agblklog: r8(0x7c),
            dirblklog: r8(0xc0),
            features2: r32(0xc8),
            ro_compat: if v5 { r32(0xd4) } else { 0 },
            incompat: if v5 { r32(0xd8) } else { 0 },
            crc: None,
            problems: Vec::new(),
        };
        if !sb.has_meta_uuid() {
            sb.meta_uuid = sb.uuid;
        }
        sb.check_geometry()?;
        if v5 {
            let len = usize::from(sb.sectsize).min(sector.len());
            sb.crc = sector.get(..len).and_then(|s| crc::check(s, CRC_OFF));
            if let Some(c) = sb.crc.filter(|c| !c.ok()) {
                sb.problems.push(format!(
                    "superblock CRC {:#010x} does not match the computed {:#010x}",
                    c.stored, c.computed
                ));
            }
        }
        Ok(sb)
    }

    /// The checks the kernel's `xfs_validate_sb_common` makes on the
    /// geometry: each failure names its field.
    fn check_geometry(&self) -> Result<(), FsError> {
        let version = self.versionnum & 0xf;
        if !(1..=5).contains(&version) {
            return Err(corrupt(
                "sb_versionnum",
                format!("version {version}: expected 1 to 5"),
            ));
        }
        if !(9..=16).contains(&self.blocklog)
            || Some(self.blocksize) != 1u32.checked_shl(self.blocklog.into())
        {
            return Err(corrupt(
                "sb_blocksize",
                format!(
                    "{} with sb_blocklog {}: expected a power of two from 512 to 65536",
                    self.blocksize, self.blocklog
                ),
            ));
        }
        if !(9..=15).contains(&self.sectlog)
            || Some(u32::from(self.sectsize)) != 1u32.checked_shl(self.sectlog.into())
            || u32::from(self.sectsize) > self.blocksize
        {
            return Err(corrupt(
                "sb_sectsize",
                format!(
                    "{} with sb_sectlog {}: expected a power of two from 512 to 32768, at most the block size",
                    self.sectsize, self.sectlog
                ),
            ));
        }
        if !(8..=11).contains(&self.inodelog)
            || Some(u32::from(self.inodesize)) != 1u32.checked_shl(self.inodelog.into())
            || u32::from(self.inodesize) > self.blocksize
            || Some(self.inopblog) != self.blocklog.checked_sub(self.inodelog)
        {
            return Err(corrupt(
                "sb_inodesize",
                format!(
                    "{} (sb_inodelog {}, sb_inopblog {}): expected a power of two from 256 to 2048, at most the block size",
                    self.inodesize, self.inodelog, self.inopblog
                ),
            ));
        }
        if self.agcount == 0 {
            return Err(corrupt("sb_agcount", "0 allocation groups".to_owned()));
        }
        if self.agblocks < 64 {
            return Err(corrupt(
                "sb_agblocks",
                format!(
                    "{}: an allocation group has at least 64 blocks",
                    self.agblocks
                ),
            ));
        }
        if u32::from(self.agblklog) != log2_ceil(self.agblocks) {
            return Err(corrupt(
                "sb_agblklog",
                format!(
                    "{}: sb_agblocks {} needs {}",
                    self.agblklog,
                    self.agblocks,
                    log2_ceil(self.agblocks)
                ),
            ));
        }
        if u32::from(self.agblklog).saturating_add(self.inopblog.into()) > 32 {
            return Err(corrupt(
                "sb_agblklog",
                "AG inode numbers would not fit in 32 bits".to_owned(),
            ));
        }
        let full = u64::from(self.agcount).saturating_mul(self.agblocks.into());
        let but_last =
            u64::from(self.agcount.saturating_sub(1)).saturating_mul(self.agblocks.into());
        if self.dblocks > full || self.dblocks <= but_last {
            return Err(corrupt(
                "sb_dblocks",
                format!(
                    "{} blocks do not make {} allocation groups of {} blocks",
                    self.dblocks, self.agcount, self.agblocks
                ),
            ));
        }
        if u32::from(self.blocklog).saturating_add(self.dirblklog.into()) > 16 {
            return Err(corrupt(
                "sb_dirblklog",
                format!("{}: directory blocks would exceed 64 KiB", self.dirblklog),
            ));
        }
        Ok(())
    }

    /// A v5 (CRC) filesystem.
    pub fn is_v5(&self) -> bool {
        self.versionnum & 0xf == 5
    }

    /// Directory entries record the file type.
    pub fn has_ftype(&self) -> bool {
        if self.is_v5() {
            self.incompat & INCOMPAT_FTYPE != 0
        } else {
            self.versionnum & VERSION_MOREBITS != 0 && self.features2 & FEATURES2_FTYPE != 0
        }
    }

    pub fn has_meta_uuid(&self) -> bool {
        self.incompat & INCOMPAT_META_UUID != 0
    }

    pub fn has_finobt(&self) -> bool {
        self.ro_compat & RO_FINOBT != 0
    }

    pub fn has_rmapbt(&self) -> bool {
        self.ro_compat & RO_RMAPBT != 0
    }

    pub fn has_reflink(&self) -> bool {
        self.ro_compat & RO_REFLINK != 0
    }

    pub fn has_sparse_inodes(&self) -> bool {
        self.incompat & INCOMPAT_SPINODES != 0
    }

    /// Bytes per directory block.
    pub fn dir_block_size(&self) -> u64 {
        1u64 << u32::from(self.blocklog)
            .saturating_add(self.dirblklog.into())
            .min(16)
    }

    /// Blocks of AG `agno` (the last one may be shorter).
    pub fn ag_length(&self, agno: u32) -> u32 {
        if agno.saturating_add(1) == self.agcount {
            let before = u64::from(agno).saturating_mul(self.agblocks.into());
            u32::try_from(self.dblocks.saturating_sub(before)).unwrap_or(self.agblocks)
        } else {
            self.agblocks
        }
    }

    /// Every feature by name: the version bits, features2 and the v5
    /// feature words, as xfs_info would describe them.
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = names(u32::from(self.versionnum) & 0xfff0, VERSION_BITS);
        out.extend(names(self.features2, FEATURES2));
        if self.is_v5() {
            for (field, table) in [
                ("sb_features_compat", &[][..]),
                ("sb_features_ro_compat", RO_COMPAT),
                ("sb_features_incompat", INCOMPAT),
                ("sb_features_log_incompat", LOG_INCOMPAT),
            ] {
                out.extend(names(u32::try_from(self.value(field)).unwrap_or(0), table));
            }
        }
        out
    }

    /// A field's value by name (0 when absent).
    pub fn value(&self, name: &str) -> u64 {
        crate::layout::value_of(&self.fields, name).unwrap_or(0)
    }

    /// What a field means, in words, where the raw value does not say it.
    pub fn shown(&self, name: &str) -> String {
        let v = self.value(name);
        let word = |v: u64| u32::try_from(v).unwrap_or(0);
        match name {
            "sb_magicnum" => "XFSB".to_owned(),
            "sb_versionnum" => {
                let mut n = vec![format!("v{}", v & 0xf)];
                n.extend(names(word(v) & 0xfff0, VERSION_BITS));
                n.join(", ")
            }
            "sb_features2" | "sb_bad_features2" => names(word(v), FEATURES2).join(", "),
            "sb_features_ro_compat" => names(word(v), RO_COMPAT).join(", "),
            "sb_features_incompat" => names(word(v), INCOMPAT).join(", "),
            "sb_features_log_incompat" => names(word(v), LOG_INCOMPAT).join(", "),
            "sb_features_compat" => names(word(v), &[]).join(", "),
            "sb_blocksize" | "sb_sectsize" | "sb_inodesize" | "sb_logsectsize" => {
                format!("{v} bytes")
            }
            "sb_crc" => match self.crc {
                Some(c) if c.ok() => "ok".to_owned(),
                Some(c) => format!("BAD (computed {:#010x})", c.computed),
                None => String::new(),
            },
            _ => String::new(),
        }
    }
}

/// A minimal valid v5 superblock sector for unit tests: 4 AGs of 4096 4K
/// blocks, CRC correct.
#[cfg(test)]
pub(crate) fn sample() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&4096u32.to_be_bytes());
    b[8..16].copy_from_slice(&16384u64.to_be_bytes());
    b[0x38..0x40].copy_from_slice(&128u64.to_be_bytes());
    b[0x54..0x58].copy_from_slice(&4096u32.to_be_bytes());
    b[0x58..0x5c].copy_from_slice(&4u32.to_be_bytes());
    b[0x64..0x66].copy_from_slice(&0xb4a5u16.to_be_bytes());
    b[0x66..0x68].copy_from_slice(&512u16.to_be_bytes());
    b[0x68..0x6a].copy_from_slice(&512u16.to_be_bytes());
    b[0x6a..0x6c].copy_from_slice(&8u16.to_be_bytes());
    b[0x78] = 12;
    b[0x79] = 9;
    b[0x7a] = 9;
    b[0x7b] = 3;
    b[0x7c] = 12;
    b[0xd8..0xdc].copy_from_slice(&0xbu32.to_be_bytes());
    let mut z = b.clone();
    z[CRC_OFF..CRC_OFF + 4].fill(0);
    let c = crc32c::crc32c(&z);
    b[CRC_OFF..CRC_OFF + 4].copy_from_slice(&c.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_checks_the_crc() {
        let sb = Superblock::decode(&sample()).unwrap();
        assert!(sb.is_v5() && sb.has_ftype() && sb.has_sparse_inodes());
        assert!(sb.crc.unwrap().ok(), "{:?}", sb.problems);
        assert_eq!(sb.value("sb_agcount"), 4);
        assert_eq!(sb.shown("sb_features_incompat"), "ftype, sparse, bigtime");
        assert_eq!(sb.ag_length(3), 4096);
        let mut bad = sample();
        bad[0x100] ^= 1;
        let sb = Superblock::decode(&bad).unwrap();
        assert!(!sb.crc.unwrap().ok());
        assert_eq!(sb.problems.len(), 1);
    }

    #[test]
    fn impossible_geometry_names_the_field() {
        let mut b = sample();
        b[0x58..0x5c].copy_from_slice(&0u32.to_be_bytes());
        let e = Superblock::decode(&b).unwrap_err().to_string();
        assert_eq!(
            e,
            "corrupt XFS superblock at 0x58: sb_agcount: 0 allocation groups"
        );
        b[0x58..0x5c].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = Superblock::decode(&b).unwrap_err().to_string();
        assert!(e.contains("sb_dblocks"), "{e}");
        let mut b = sample();
        b[4] = 0x7f;
        assert!(Superblock::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("sb_blocksize"));
        assert!(Superblock::decode(&b[..100]).is_err());
    }

    #[test]
    fn unknown_bits_are_shown_not_refused() {
        assert_eq!(names(0x5, RO_COMPAT), ["finobt", "reflink"]);
        assert_eq!(names(0x8000_0001, INCOMPAT), ["ftype", "bit 31"]);
    }
}
