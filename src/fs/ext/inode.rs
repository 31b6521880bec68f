//! Inodes: 128 bytes plus `i_extra_isize` more in large inodes (the rest
//! of `s_inode_size` holds in-inode extended attributes), little-endian,
//! found through their group's inode table.
use crate::bytes::u64_of;
use crate::fs::report::Report;
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind, Show};

use super::checksum::{crc32c_raw, Check};
use super::error::FsError;

/// Every field of the on-disk inode (kernel names). Fields past 128 exist
/// only when `i_extra_isize` covers them.
pub const INODE: &[Field] = &[
    Field::new("i_mode", 0x0, 2, "type and permissions").show(Show::With(mode_text)),
    Field::new("i_uid", 0x2, 2, "owner (low)"),
    Field::new("i_size_lo", 0x4, 4, "size (low)"),
    Field::new("i_atime", 0x8, 4, "access time"),
    Field::new("i_ctime", 0xc, 4, "change time"),
    Field::new("i_mtime", 0x10, 4, "modification time"),
    Field::new("i_dtime", 0x14, 4, "deletion time (or next orphan)").show(Show::Date),
    Field::new("i_gid", 0x18, 2, "group (low)"),
    Field::new("i_links_count", 0x1a, 2, "hard links"),
    Field::new("i_blocks_lo", 0x1c, 4, "512-byte sectors (low)"),
    Field::new("i_flags", 0x20, 4, "flags").show(Show::Bits(FLAGS)),
    Field::new("i_version", 0x24, 4, "version (osd1)"),
    Field::of(
        Kind::Bytes,
        "i_block",
        0x28,
        60,
        "block map, extent tree root, inline data or symlink target",
    ),
    Field::new("i_generation", 0x64, 4, "generation (NFS)"),
    Field::new("i_file_acl_lo", 0x68, 4, "extended attribute block (low)"),
    Field::new("i_size_high", 0x6c, 4, "size (high)"),
    Field::new("i_obso_faddr", 0x70, 4, "obsolete fragment address"),
    Field::new("i_blocks_high", 0x74, 2, "sectors (high)"),
    Field::new(
        "i_file_acl_high",
        0x76,
        2,
        "extended attribute block (high)",
    ),
    Field::new("i_uid_high", 0x78, 2, "owner (high)"),
    Field::new("i_gid_high", 0x7a, 2, "group (high)"),
    Field::new("i_checksum_lo", 0x7c, 2, "crc32c (low)"),
    Field::new("i_reserved", 0x7e, 2, "reserved"),
    Field::new("i_extra_isize", 0x80, 2, "bytes used past 128"),
    Field::new("i_checksum_hi", 0x82, 2, "crc32c (high)"),
    Field::new(
        "i_ctime_extra",
        0x84,
        4,
        "change time: nanoseconds << 2 | epoch",
    ),
    Field::new(
        "i_mtime_extra",
        0x88,
        4,
        "modification time: nanoseconds << 2 | epoch",
    ),
    Field::new(
        "i_atime_extra",
        0x8c,
        4,
        "access time: nanoseconds << 2 | epoch",
    ),
    Field::new("i_crtime", 0x90, 4, "creation time"),
    Field::new(
        "i_crtime_extra",
        0x94,
        4,
        "creation time: nanoseconds << 2 | epoch",
    ),
    Field::new("i_version_hi", 0x98, 4, "version (high)"),
    Field::new("i_projid", 0x9c, 4, "project id"),
];

/// A field of [`INODE`], found when compiling.
macro_rules! field {
    ($name:literal) => {
        $crate::layout::field!($crate::fs::ext::inode::INODE, $name)
    };
}

/// `i_mode` in words: the type and the permission bits (`regular 0644`).
fn mode_text(mode: u64) -> String {
    let m = u32::try_from(mode).unwrap_or(0);
    format!(
        "{} {:04o}",
        crate::fs::FileType::from_mode(m).name(),
        m & 0o7777
    )
}

/// Inode flags that change how the block map is read.
pub const EXTENTS_FL: u32 = 0x80000;
pub const INLINE_DATA_FL: u32 = 0x1000_0000;
pub const INDEX_FL: u32 = 0x1000;
pub const ENCRYPT_FL: u32 = 0x800;
pub const EA_INODE_FL: u32 = 0x20_0000;

/// Flag names (the kernel's `EXT4_*_FL`, lower case).
pub const FLAGS: &[(u64, &str)] = &[
    (0x1, "secrm"),
    (0x2, "unrm"),
    (0x4, "compr"),
    (0x8, "sync"),
    (0x10, "immutable"),
    (0x20, "append"),
    (0x40, "nodump"),
    (0x80, "noatime"),
    (0x100, "dirty"),
    (0x200, "comprblk"),
    (0x400, "nocompr"),
    (0x800, "encrypt"),
    (0x1000, "index"),
    (0x2000, "imagic"),
    (0x4000, "journal_data"),
    (0x8000, "notail"),
    (0x1_0000, "dirsync"),
    (0x2_0000, "topdir"),
    (0x4_0000, "huge_file"),
    (0x8_0000, "extents"),
    (0x10_0000, "verity"),
    (0x20_0000, "ea_inode"),
    (0x40_0000, "eofblocks"),
    (0x100_0000, "snapfile"),
    (0x200_0000, "dax"),
    (0x400_0000, "snapfile_deleted"),
    (0x800_0000, "snapfile_shrunk"),
    (0x1000_0000, "inline_data"),
    (0x2000_0000, "projinherit"),
    (0x4000_0000, "casefold"),
    (0x8000_0000, "reserved"),
];

/// An inode timestamp: the 32-bit seconds, and in large inodes the
/// `_extra` word (two epoch bits extending the seconds past 2038, and
/// nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Timestamp {
    /// Seconds since 1970 (signed, extended by the epoch bits).
    pub secs: i64,
    pub nsec: u32,
    /// The on-disk words.
    pub raw: u32,
    pub extra: Option<u32>,
}

impl Timestamp {
    fn new(raw: u32, extra: Option<u32>) -> Timestamp {
        let e = extra.unwrap_or(0);
        Timestamp {
            // The kernel's ext4_decode_extra_time.
            secs: i64::from(i32::from_le_bytes(raw.to_le_bytes()))
                .saturating_add(i64::from(e & 3) << 32),
            nsec: e >> 2,
            raw,
            extra,
        }
    }
}

/// A decoded inode.
#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    /// The on-disk bytes (`s_inode_size` of them) and their disk offset.
    raw: Raw,
    pub base: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    /// `i_blocks` as stored (512-byte sectors, or filesystem blocks with
    /// the huge_file flag).
    pub blocks: u64,
    pub block: [u8; 60],
    pub generation: u32,
    pub file_acl: u64,
    /// `i_extra_isize`, 0 in 128-byte inodes (or when it is invalid; see
    /// `problems`).
    pub extra_isize: u16,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub mtime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub dtime: u32,
    /// `i_version` (and `i_version_hi` when present).
    pub version: u32,
    pub version_hi: Option<u32>,
    pub projid: Option<u32>,
    /// The checksum (metadata_csum only; set by the filesystem, which
    /// knows the seed).
    pub checksum: Option<Check>,
    /// Non-fatal problems found decoding (a bad extra size, a checksum
    /// that does not match).
    pub problems: Vec<FsError>,
}

/// Inode sizes kept inside [`Raw`] itself (256, the default, and 128).
const INLINE: usize = 256;

/// An inode's on-disk bytes: inside the inode up to [`INLINE`] bytes (a
/// walk decodes every inode; no allocation each), else on the heap.
#[derive(Debug)]
struct Raw {
    inline: [u8; INLINE],
    len: usize,
    /// The bytes when they do not fit inline (else empty: no allocation).
    heap: Vec<u8>,
}

impl Raw {
    fn new(from: &[u8]) -> Raw {
        let mut inline = [0u8; INLINE];
        match inline.get_mut(..from.len()) {
            Some(b) => {
                b.copy_from_slice(from);
                Raw {
                    inline,
                    len: from.len(),
                    heap: Vec::new(),
                }
            }
            None => Raw {
                inline,
                len: 0,
                heap: from.to_vec(),
            },
        }
    }
}

impl std::ops::Deref for Raw {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or(&self.inline)
        } else {
            &self.heap
        }
    }
}

fn le(raw: &[u8], at: usize, n: usize) -> Option<u64> {
    raw.get(at..at.checked_add(n)?)
        .map(|b| b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

impl Inode {
    /// Decodes inode `ino` from its `bytes` (the whole on-disk inode,
    /// `s_inode_size` long) at disk offset `base`.
    ///
    /// # Errors
    /// `Corrupt` when fewer than 128 bytes are given.
    pub fn decode(ino: u64, bytes: &[u8], base: u64) -> Result<Inode, FsError> {
        if bytes.len() < 128 {
            return Err(FsError::corrupt(
                "inode",
                "size",
                base,
                format!("inode {ino}: {} bytes, expected at least 128", bytes.len()),
            ));
        }
        let mut problems = Vec::new();
        let mut extra_isize = if bytes.len() > 128 {
            lo16(le(bytes, 0x80, 2).unwrap_or(0))
        } else {
            0
        };
        if bytes.len() > 128
            && (usize::from(extra_isize).saturating_add(128) > bytes.len() || extra_isize % 4 != 0)
        {
            problems.push(FsError::corrupt(
                "inode",
                "i_extra_isize",
                base.saturating_add(0x80),
                format!(
                    "inode {ino}: {extra_isize}, expected a multiple of 4 of at most {}",
                    bytes.len().saturating_sub(128)
                ),
            ));
            extra_isize = 0;
        }
        let end = usize::from(extra_isize).saturating_add(128);
        let visible = bytes.get(..end).unwrap_or(bytes);
        // Fields found in the table at compile time (`field!`): a walk
        // decodes every inode it meets, and looking each name up at run
        // time was a quarter of `ls -R`.
        let get = |f: &Field| le(visible, f.offset, f.size);
        let g = |f: &Field| get(f).unwrap_or(0);
        let mut block = [0u8; 60];
        if let Some(b) = bytes.get(0x28..0x64) {
            block.copy_from_slice(b);
        }
        let extra = |f: &Field| get(f).map(lo32);
        Ok(Inode {
            ino,
            mode: lo16(g(field!("i_mode"))),
            uid: lo32(g(field!("i_uid")) | g(field!("i_uid_high")) << 16),
            gid: lo32(g(field!("i_gid")) | g(field!("i_gid_high")) << 16),
            size: g(field!("i_size_lo")) | g(field!("i_size_high")) << 32,
            links: lo16(g(field!("i_links_count"))),
            flags: lo32(g(field!("i_flags"))),
            blocks: g(field!("i_blocks_lo")) | g(field!("i_blocks_high")) << 32,
            block,
            generation: lo32(g(field!("i_generation"))),
            file_acl: g(field!("i_file_acl_lo")) | g(field!("i_file_acl_high")) << 32,
            extra_isize,
            atime: Timestamp::new(lo32(g(field!("i_atime"))), extra(field!("i_atime_extra"))),
            ctime: Timestamp::new(lo32(g(field!("i_ctime"))), extra(field!("i_ctime_extra"))),
            mtime: Timestamp::new(lo32(g(field!("i_mtime"))), extra(field!("i_mtime_extra"))),
            crtime: get(field!("i_crtime"))
                .map(|t| Timestamp::new(lo32(t), extra(field!("i_crtime_extra")))),
            dtime: lo32(g(field!("i_dtime"))),
            version: lo32(g(field!("i_version"))),
            version_hi: extra(field!("i_version_hi")),
            projid: extra(field!("i_projid")),
            checksum: None,
            problems,
            raw: Raw::new(bytes),
            base,
        })
    }

    /// The on-disk bytes (the whole `s_inode_size`).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Every field with its disk offset, for `stat` and the hex view.
    pub fn fields(&self) -> Vec<FieldValue> {
        let end = usize::from(self.extra_isize).saturating_add(128);
        let visible = self.raw.get(..end).unwrap_or(&self.raw);
        decode_table(INODE, visible, Endian::Little, self.base)
    }

    /// The stored checksum and the one computed with the filesystem seed
    /// `fs_seed` (the kernel's `ext4_inode_csum`): crc32c over the whole
    /// on-disk inode with the checksum fields as zeros, seeded with the
    /// inode number and generation. In 128-byte inodes only the low 16
    /// bits are stored and compared.
    pub fn compute_checksum(&self, fs_seed: u32) -> Check {
        // The inode number's low 32 bits, as the kernel's __u32 takes it.
        let seed = super::checksum::inode_seed(fs_seed, lo32(self.ino), self.generation);
        let raw = &self.raw;
        let part = |r: std::ops::Range<usize>| raw.get(r).unwrap_or_default();
        let mut c = crc32c_raw(seed, part(0..0x7c));
        c = crc32c_raw(c, &[0, 0]);
        c = crc32c_raw(c, part(0x7e..128));
        let has_hi = raw.len() > 128 && self.extra_isize >= 4;
        if raw.len() > 128 {
            c = crc32c_raw(c, part(128..0x82));
            let rest = if has_hi {
                c = crc32c_raw(c, &[0, 0]);
                0x84
            } else {
                0x82
            };
            c = crc32c_raw(c, raw.get(rest..).unwrap_or_default());
        }
        let lo = lo32(le(raw, 0x7c, 2).unwrap_or(0));
        if has_hi {
            let hi = lo32(le(raw, 0x82, 2).unwrap_or(0));
            Check {
                stored: lo | hi << 16,
                computed: c,
            }
        } else {
            Check {
                stored: lo,
                computed: c & 0xffff,
            }
        }
    }

    /// Names of the set flags.
    pub fn flag_names(&self) -> Vec<&'static str> {
        self.flags_set().collect()
    }

    /// The names of the flags set, as [`Inode::flag_names`] lists them.
    pub fn flags_set(&self) -> impl Iterator<Item = &'static str> + '_ {
        FLAGS
            .iter()
            .filter(|(b, _)| u64::from(self.flags) & b != 0)
            .map(|(_, n)| *n)
    }

    /// The inode as a report: every field it has (up to `128 +
    /// i_extra_isize`), raw and shown (type and permissions, dates with
    /// their epoch bits and nanoseconds, flag names), the checksum as
    /// stored and computed, and its problems. It spans the whole
    /// on-disk inode (`s_inode_size`).
    pub fn report(&self) -> Report {
        let end = (128 + usize::from(self.extra_isize)).min(self.raw.len());
        let mut r = crate::layout::report(
            "inode",
            format!("inode {}", self.ino),
            INODE,
            self.raw.get(..end).unwrap_or(&self.raw),
            Endian::Little,
            self.base,
        );
        r.len = u64::try_from(self.raw.len()).unwrap_or(u64::MAX);
        let times = [
            (field!("i_atime").name, Some(self.atime)),
            (field!("i_ctime").name, Some(self.ctime)),
            (field!("i_mtime").name, Some(self.mtime)),
            (field!("i_crtime").name, self.crtime),
        ];
        for f in &mut r.fields {
            if let Some((_, Some(t))) = times.iter().find(|(n, _)| *n == f.name) {
                f.shown = format!("{} (+{} ns)", crate::fs::time::asctime(t.secs), t.nsec);
            }
            if f.name == field!("i_checksum_lo").name {
                if let Some(c) = self.checksum {
                    f.check = Some(c);
                    f.shown = c.text(if self.extra_isize >= 4 { 32 } else { 16 });
                }
            }
        }
        r.problems = self.problems.iter().map(ToString::to_string).collect();
        r
    }

    pub fn is_dir(&self) -> bool {
        self.mode & 0xf000 == 0x4000
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & 0xf000 == 0xa000
    }

    pub fn is_reg(&self) -> bool {
        self.mode & 0xf000 == 0x8000
    }

    /// Block or character device.
    pub fn is_device(&self) -> bool {
        matches!(self.mode & 0xf000, 0x2000 | 0x6000)
    }

    pub fn has_inline_data(&self) -> bool {
        self.flags & INLINE_DATA_FL != 0
    }

    /// The letter `ls -l` shows for the type.
    pub fn type_char(&self) -> char {
        match self.mode & 0xf000 {
            0x4000 => 'd',
            0xa000 => 'l',
            0x2000 => 'c',
            0x6000 => 'b',
            0x1000 => 'p',
            0xc000 => 's',
            _ => '-',
        }
    }

    /// The type as debugfs names it.
    pub fn type_name(&self) -> &'static str {
        crate::fs::node::FileType::from_mode(u32::from(self.mode)).name()
    }

    /// The in-inode extended attribute area: the bytes after
    /// `128 + i_extra_isize` (starting with the 4-byte magic), and their
    /// disk offset. Empty for 128-byte inodes.
    pub fn xattr_area(&self) -> (&[u8], u64) {
        let start = usize::from(self.extra_isize).saturating_add(128);
        match self.raw.get(start..) {
            Some(a) if self.raw.len() > 128 => (a, self.base.saturating_add(u64_of(start))),
            _ => (&[], self.base),
        }
    }
}

/// The low 32 bits of a field value (fields of 4 bytes or less fit whole;
/// wider values are cut as the C code's `__u32` would).
pub(super) fn lo32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(0)
}

/// The low 16 bits of a field value (see [`lo32`]).
fn lo16(v: u64) -> u16 {
    u16::try_from(v & 0xffff).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 256];
        b[0..2].copy_from_slice(&0o100644u16.to_le_bytes());
        b[4..8].copy_from_slice(&5u32.to_le_bytes());
        b[0x10..0x14].copy_from_slice(&0x8000_0000u32.to_le_bytes()); // mtime < 0
        b[0x1a..0x1c].copy_from_slice(&1u16.to_le_bytes());
        b[0x64..0x68].copy_from_slice(&77u32.to_le_bytes());
        b[0x80..0x82].copy_from_slice(&32u16.to_le_bytes());
        // mtime extra: epoch 1, 999_999_999 ns.
        b[0x88..0x8c].copy_from_slice(&((999_999_999u32 << 2) | 1).to_le_bytes());
        b[0x9c..0xa0].copy_from_slice(&42u32.to_le_bytes());
        b
    }

    #[test]
    fn decodes_times_with_epoch_bits_and_large_fields() {
        let i = Inode::decode(12, &sample(), 0x1000).unwrap();
        assert_eq!(i.mode, 0o100644);
        assert_eq!(i.size, 5);
        assert_eq!(i.generation, 77);
        assert_eq!(i.extra_isize, 32);
        assert_eq!(i.projid, Some(42));
        // -2^31 + 2^32: the epoch bit carries the time past 2038.
        assert_eq!(i.mtime.secs, (1i64 << 31));
        assert_eq!(i.mtime.nsec, 999_999_999);
        assert!(i.problems.is_empty());
        let f = i.fields();
        assert_eq!(f.last().unwrap().name, "i_projid");
        assert_eq!(f.last().unwrap().offset, 0x1000 + 0x9c);
    }

    #[test]
    fn small_extra_isize_hides_later_fields_and_bad_one_is_a_problem() {
        let mut b = sample();
        b[0x80..0x82].copy_from_slice(&4u16.to_le_bytes());
        let i = Inode::decode(12, &b, 0).unwrap();
        assert_eq!(i.projid, None);
        assert_eq!(i.crtime, None);
        assert_eq!(i.mtime.nsec, 0);
        b[0x80..0x82].copy_from_slice(&200u16.to_le_bytes());
        let i = Inode::decode(12, &b, 0).unwrap();
        assert_eq!(i.extra_isize, 0);
        assert!(i.problems[0].to_string().contains("i_extra_isize"));
        assert!(Inode::decode(12, &b[..100], 0x80).is_err());
    }

    #[test]
    fn checksum_round_trip() {
        let mut b = sample();
        let i = Inode::decode(12, &b, 0).unwrap();
        let c = i.compute_checksum(0x1234_5678).computed;
        b[0x7c..0x7e].copy_from_slice(&(c as u16).to_le_bytes());
        b[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
        let i = Inode::decode(12, &b, 0).unwrap();
        assert!(i.compute_checksum(0x1234_5678).ok());
        b[0x40] ^= 1;
        let i = Inode::decode(12, &b, 0).unwrap();
        assert!(!i.compute_checksum(0x1234_5678).ok());
    }
}
