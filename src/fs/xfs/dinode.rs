//! XFS inodes (`struct xfs_dinode`): a core of 100 bytes (v1/v2) or 176
//! (v3, with CRC, creation time, its own number and the filesystem UUID),
//! then the literal area, split at `di_forkoff * 8` into the data fork and
//! the attribute fork. A fork is a device number, local bytes (short-form
//! directories and attributes, symlink targets), an extent list, or the
//! root of a block map B+tree.
//!
//! An inode number is `AG | block in AG | inode in block`, the widths
//! given by the superblock's `sb_agblklog` and `sb_inopblog`; both parts
//! are checked before the inode is read.
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind};

use super::be::{u16_at, u32_at, u64_at, u8_at, us};
use super::crc::{self, Check};
use super::superblock::Superblock;
use super::Xfs;
use crate::fs::node::{FileType, Timestamp};
use crate::fs::FsError;

/// `di_magic`: "IN".
pub const MAGIC: u16 = 0x494e;
/// Core sizes: v1/v2, and v3.
pub const CORE_V2: usize = 100;
pub const CORE_V3: usize = 176;
const CRC_OFF: usize = 100;

pub const DINODE: &[Field] = &[
    Field::new("di_magic", 0x0, 2, "magic: IN"),
    Field::new("di_mode", 0x2, 2, "type and permissions"),
    Field::new("di_version", 0x4, 1, "inode version (1, 2, 3)"),
    Field::new(
        "di_format",
        0x5,
        1,
        "data fork: 0 dev, 1 local, 2 extents, 3 btree",
    ),
    Field::new("di_onlink", 0x6, 2, "link count (v1)"),
    Field::new("di_uid", 0x8, 4, "owner"),
    Field::new("di_gid", 0xc, 4, "group"),
    Field::new("di_nlink", 0x10, 4, "link count"),
    Field::new("di_projid_lo", 0x14, 2, "project id (low)"),
    Field::new("di_projid_hi", 0x16, 2, "project id (high)"),
    Field::new(
        "di_big_nextents",
        0x18,
        8,
        "data fork extents (nrext64); v2: padding, flush counter",
    ),
    Field::new("di_atime", 0x20, 8, "access time"),
    Field::new("di_mtime", 0x28, 8, "modification time"),
    Field::new("di_ctime", 0x30, 8, "change time"),
    Field::new("di_size", 0x38, 8, "size in bytes"),
    Field::new(
        "di_nblocks",
        0x40,
        8,
        "blocks used (data, map and attribute blocks)",
    ),
    Field::new("di_extsize", 0x48, 4, "extent size hint"),
    Field::new(
        "di_nextents",
        0x4c,
        4,
        "data fork extents (nrext64: attribute fork extents)",
    ),
    Field::new("di_anextents", 0x50, 2, "attribute fork extents"),
    Field::new("di_forkoff", 0x52, 1, "attribute fork offset / 8"),
    Field::new(
        "di_aformat",
        0x53,
        1,
        "attribute fork: 1 local, 2 extents, 3 btree",
    ),
    Field::new("di_dmevmask", 0x54, 4, "DMAPI event mask"),
    Field::new("di_dmstate", 0x58, 2, "DMAPI state"),
    Field::new("di_flags", 0x5a, 2, "flags"),
    Field::new("di_gen", 0x5c, 4, "generation"),
    Field::new(
        "di_next_unlinked",
        0x60,
        4,
        "next inode on the unlinked list",
    ),
    Field::new(
        "di_crc",
        0x64,
        4,
        "CRC-32C of the inode (v3, little-endian)",
    ),
    Field::new("di_changecount", 0x68, 8, "attribute changes"),
    Field::new("di_lsn", 0x70, 8, "last write sequence"),
    Field::new("di_flags2", 0x78, 8, "more flags"),
    Field::new("di_cowextsize", 0x80, 4, "copy-on-write extent size hint"),
    Field::of(Kind::Bytes, "di_pad2", 0x84, 12, "padding"),
    Field::new("di_crtime", 0x90, 8, "creation time"),
    Field::new("di_ino", 0x98, 8, "this inode's number"),
    Field::of(Kind::Uuid, "di_uuid", 0xa0, 16, "filesystem UUID"),
];

/// `di_flags`, by bit.
pub const FLAGS: &[(u32, &str)] = &[
    (0x1, "realtime"),
    (0x2, "prealloc"),
    (0x4, "newrtbm"),
    (0x8, "immutable"),
    (0x10, "append"),
    (0x20, "sync"),
    (0x40, "noatime"),
    (0x80, "nodump"),
    (0x100, "rtinherit"),
    (0x200, "projinherit"),
    (0x400, "nosymlinks"),
    (0x800, "extsize"),
    (0x1000, "extszinherit"),
    (0x2000, "nodefrag"),
    (0x4000, "filestream"),
];
/// `di_flags2`, by bit.
pub const FLAGS2: &[(u32, &str)] = &[
    (0x1, "dax"),
    (0x2, "reflink"),
    (0x4, "cowextsize"),
    (0x8, "bigtime"),
    (0x10, "nrext64"),
];
pub const FLAG_REALTIME: u16 = 0x1;
const FLAG2_BIGTIME: u64 = 0x8;
const FLAG2_NREXT64: u64 = 0x10;

/// A fork's format (`di_format`, `di_aformat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Dev,
    Local,
    Extents,
    Btree,
    Other(u8),
}

impl Format {
    fn of(v: u8) -> Format {
        match v {
            0 => Format::Dev,
            1 => Format::Local,
            2 => Format::Extents,
            3 => Format::Btree,
            o => Format::Other(o),
        }
    }

    /// As xfs_db names it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Dev => "dev",
            Format::Local => "local",
            Format::Extents => "extents",
            Format::Btree => "btree",
            Format::Other(_) => "unknown",
        }
    }
}

/// Which fork.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fork {
    Data,
    Attr,
}

/// A fork's bytes, the disk offset where they start, and its format.
pub type ForkBytes<'a> = (&'a [u8], u64, Format);

/// A decoded inode.
#[derive(Clone, Debug)]
pub struct Dinode {
    pub ino: u64,
    /// Disk offset of the inode.
    pub offset: u64,
    pub raw: Vec<u8>,
    pub fields: Vec<FieldValue>,
    pub mode: u16,
    pub version: u8,
    pub format: Format,
    pub aformat: Format,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub nblocks: u64,
    pub nextents: u64,
    pub anextents: u64,
    pub forkoff: u8,
    pub flags: u16,
    pub flags2: u64,
    pub gen: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub crc: Option<Check>,
    /// What is wrong but does not stop decoding.
    pub problems: Vec<String>,
}

/// The legacy (seconds, nanoseconds) or bigtime (nanoseconds since
/// 1901-12-13T20:45:52Z) encoding.
fn timestamp(raw: u64, bigtime: bool) -> Timestamp {
    if bigtime {
        let secs = raw / 1_000_000_000;
        let nsec = u32::try_from(raw % 1_000_000_000).unwrap_or(0);
        Timestamp {
            secs: i64::try_from(secs)
                .unwrap_or(i64::MAX)
                .saturating_sub(1 << 31),
            nsec,
        }
    } else {
        let secs = i32::from_be_bytes(u32::try_from(raw >> 32).unwrap_or(0).to_be_bytes());
        Timestamp {
            secs: i64::from(secs),
            nsec: u32::try_from(raw & 0xffff_ffff).unwrap_or(0),
        }
    }
}

impl Dinode {
    /// Decodes inode `ino` from its bytes at disk offset `offset`.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic or version: nothing else of it can be
    /// trusted then.
    pub fn decode(sb: &Superblock, ino: u64, raw: &[u8], offset: u64) -> Result<Dinode, FsError> {
        let magic = u16_at(raw, 0).unwrap_or(0);
        if magic != MAGIC {
            return Err(FsError::corrupt(
                "inode",
                "di_magic",
                offset,
                format!("inode {ino}: {magic:#06x}, expected {MAGIC:#06x} (IN)"),
            ));
        }
        let version = u8_at(raw, 4).unwrap_or(0);
        let want = if sb.is_v5() { 3..=3 } else { 1..=2 };
        if !want.contains(&version) {
            return Err(FsError::corrupt(
                "inode",
                "di_version",
                offset.saturating_add(4),
                format!(
                    "inode {ino}: version {version}, expected {} on a v{} filesystem",
                    if sb.is_v5() { "3" } else { "1 or 2" },
                    if sb.is_v5() { 5 } else { 4 }
                ),
            ));
        }
        let core = if version == 3 { CORE_V3 } else { CORE_V2 };
        let visible = raw.get(..core).unwrap_or(raw);
        let r16 = |o| u16_at(raw, o).unwrap_or(0);
        let r32 = |o| u32_at(raw, o).unwrap_or(0);
        let r64 = |o| u64_at(raw, o).unwrap_or(0);
        let flags2 = if version == 3 { r64(0x78) } else { 0 };
        let bigtime = flags2 & FLAG2_BIGTIME != 0;
        let nrext64 = flags2 & FLAG2_NREXT64 != 0;
        let (nextents, anextents) = if nrext64 {
            (r64(0x18), u64::from(r32(0x4c)))
        } else {
            (u64::from(r32(0x4c)), u64::from(r16(0x50)))
        };
        let mut d = Dinode {
            ino,
            offset,
            raw: raw.to_vec(),
            fields: decode_table(DINODE, visible, Endian::Big, offset),
            mode: r16(0x2),
            version,
            format: Format::of(u8_at(raw, 5).unwrap_or(0)),
            aformat: Format::of(u8_at(raw, 0x53).unwrap_or(0)),
            uid: r32(0x8),
            gid: r32(0xc),
            nlink: if version == 1 {
                u32::from(r16(0x6))
            } else {
                r32(0x10)
            },
            size: r64(0x38),
            nblocks: r64(0x40),
            nextents,
            anextents,
            forkoff: u8_at(raw, 0x52).unwrap_or(0),
            flags: r16(0x5a),
            flags2,
            gen: r32(0x5c),
            atime: timestamp(r64(0x20), bigtime),
            mtime: timestamp(r64(0x28), bigtime),
            ctime: timestamp(r64(0x30), bigtime),
            crtime: (version == 3).then(|| timestamp(r64(0x90), bigtime)),
            crc: None,
            problems: Vec::new(),
        };
        if version == 3 {
            d.crc = crc::check(raw, CRC_OFF);
            if let Some(c) = d.crc.filter(|c| !c.ok()) {
                d.problems.push(format!(
                    "inode {ino} at {offset:#x}: CRC {:#010x} does not match the computed {:#010x}",
                    c.stored, c.computed
                ));
            }
            if r64(0x98) != ino {
                d.problems.push(format!(
                    "inode {ino} at {offset:#x}: di_ino says {}",
                    r64(0x98)
                ));
            }
            if raw.get(0xa0..0xb0) != Some(&sb.meta_uuid[..]) {
                d.problems.push(format!(
                    "inode {ino} at {offset:#x}: di_uuid is not the filesystem's"
                ));
            }
        }
        if d.size > i64::MAX.unsigned_abs() {
            d.problems.push(format!(
                "inode {ino}: di_size {} is past the largest file",
                d.size
            ));
        }
        Ok(d)
    }

    /// The core's size: the literal area starts here.
    pub fn core_size(&self) -> usize {
        if self.version == 3 {
            CORE_V3
        } else {
            CORE_V2
        }
    }

    /// What the inode is.
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode.into())
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    pub fn is_realtime(&self) -> bool {
        self.flags & FLAG_REALTIME != 0
    }

    /// A fork's bytes (the data fork runs to the attribute fork, or to the
    /// end of the inode without one), the disk offset where they start,
    /// and the fork's format. `None` for an attribute fork the inode does
    /// not have.
    ///
    /// # Errors
    /// `Corrupt` naming `di_forkoff` when it points past the inode.
    pub fn fork(&self, which: Fork) -> Result<Option<ForkBytes<'_>>, FsError> {
        let core = self.core_size();
        let literal = self.raw.len().saturating_sub(core);
        let boff = usize::from(self.forkoff).saturating_mul(8);
        if boff > literal || (self.forkoff != 0 && boff == 0) {
            return Err(FsError::corrupt(
                "inode",
                "di_forkoff",
                self.offset.saturating_add(0x52),
                format!(
                    "inode {}: the attribute fork at byte {boff} of the literal area is past its {literal} bytes",
                    self.ino
                ),
            ));
        }
        let (start, len, format) = match which {
            Fork::Data => (
                core,
                if self.forkoff == 0 { literal } else { boff },
                self.format,
            ),
            Fork::Attr => {
                if self.forkoff == 0 {
                    return Ok(None);
                }
                (
                    core.saturating_add(boff),
                    literal.saturating_sub(boff),
                    self.aformat,
                )
            }
        };
        let bytes = self
            .raw
            .get(start..start.saturating_add(len))
            .unwrap_or_default();
        let at = self.offset.saturating_add(super::be::u64_of(start));
        Ok(Some((bytes, at, format)))
    }

    /// The device number of a device node: (major, minor), as Linux
    /// decodes XFS's 32-bit `xfs_dev_t` (14-bit major, 18-bit minor).
    pub fn rdev(&self) -> Option<(u32, u32)> {
        if !matches!(
            self.file_type(),
            FileType::CharDevice | FileType::BlockDevice
        ) {
            return None;
        }
        let dev = u32_at(&self.raw, self.core_size())?;
        Some(((dev >> 18) & 0x3fff, dev & 0x3_ffff))
    }

    /// The flags by name (both words).
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (mask, name) in FLAGS {
            if u32::from(self.flags) & mask != 0 {
                out.push(*name);
            }
        }
        for (mask, name) in FLAGS2 {
            if self.flags2 & u64::from(*mask) != 0 {
                out.push(*name);
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
        let ts = |t: Timestamp| format!("{}.{:09}", t.secs, t.nsec);
        match name {
            "di_mode" => format!("{:o}", self.mode),
            "di_format" => self.format.name().to_owned(),
            "di_aformat" if self.forkoff != 0 => self.aformat.name().to_owned(),
            "di_flags" => super::superblock::names(self.flags.into(), FLAGS).join(", "),
            "di_flags2" => super::superblock::names(
                u32::try_from(self.flags2 & 0xffff_ffff).unwrap_or(0),
                FLAGS2,
            )
            .join(", "),
            "di_atime" => ts(self.atime),
            "di_mtime" => ts(self.mtime),
            "di_ctime" => ts(self.ctime),
            "di_crtime" => self.crtime.map(ts).unwrap_or_default(),
            "di_crc" => match self.crc {
                Some(c) if c.ok() => "ok".to_owned(),
                Some(c) => format!("BAD (computed {:#010x})", c.computed),
                None => String::new(),
            },
            _ => String::new(),
        }
    }
}

impl Xfs {
    /// The disk offset of inode `ino`, its AG and AG block checked.
    ///
    /// # Errors
    /// `Corrupt` for an inode number the filesystem cannot have.
    pub fn inode_offset(&self, ino: u64) -> Result<u64, FsError> {
        let sb = self.superblock();
        let inopblog = u32::from(sb.inopblog);
        let agino_bits = u32::from(sb.agblklog).saturating_add(inopblog);
        let agno = ino.checked_shr(agino_bits).unwrap_or(0);
        let agino = ino
            & 1u64
                .checked_shl(agino_bits)
                .map_or(u64::MAX, |m| m.saturating_sub(1));
        let agbno = agino.checked_shr(inopblog).unwrap_or(0);
        let index = agino
            & 1u64
                .checked_shl(inopblog)
                .map_or(0, |m| m.saturating_sub(1));
        let bad = |detail: String| FsError::corrupt("inode number", "ino", 0, detail);
        let agno = u32::try_from(agno)
            .ok()
            .filter(|&a| a < sb.agcount)
            .ok_or_else(|| {
                bad(format!(
                    "inode {ino} would be in AG {agno}, the filesystem has {}",
                    sb.agcount
                ))
            })?;
        let agbno = u32::try_from(agbno)
            .ok()
            .filter(|&b| b < sb.ag_length(agno))
            .ok_or_else(|| {
                bad(format!(
                    "inode {ino} would be in block {agbno} of AG {agno}, which has {} blocks",
                    sb.ag_length(agno)
                ))
            })?;
        self.agb_offset(agno, agbno)?
            .checked_add(index.saturating_mul(sb.inodesize.into()))
            .ok_or_else(|| bad(format!("inode {ino}: offset overflows")))
    }

    /// Reads and decodes inode `ino`.
    ///
    /// # Errors
    /// An inode number the filesystem cannot have; read errors; a wrong
    /// magic or version.
    pub fn inode(&self, ino: u64) -> Result<Dinode, FsError> {
        let at = self.inode_offset(ino)?;
        let raw = self.read_bytes(at, us(self.superblock().inodesize), "inode")?;
        Dinode::decode(self.superblock(), ino, &raw, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_both_encodings() {
        let legacy = (1_700_000_000u64 << 32) | 5;
        assert_eq!(
            timestamp(legacy, false),
            Timestamp {
                secs: 1_700_000_000,
                nsec: 5
            }
        );
        let before_1970 = (0xffff_fff0u64 << 32) | 1;
        assert_eq!(timestamp(before_1970, false).secs, -16);
        // bigtime: the Unix epoch is 2^31 seconds after the bigtime epoch.
        let t = ((1u64 << 31) + 10) * 1_000_000_000 + 7;
        assert_eq!(timestamp(t, true), Timestamp { secs: 10, nsec: 7 });
    }
}
