//! Block group descriptors: 32 bytes, or `s_desc_size` (64) with the 64bit
//! feature; found after the superblock, or per meta group with meta_bg.
use super::superblock::{sb, Compat, Incompat, RoCompat};
use crate::fs::report::Report;
use crate::layout::{decode_table, Endian, Field, FieldValue, Show};

use super::checksum::{crc16, crc32c_raw, Check};
use super::superblock::Superblock;

/// Every field (the second half exists only in 64-byte descriptors).
pub const GROUP_DESC: &[Field] = &[
    Field::new("bg_block_bitmap_lo", 0x0, 4, "block bitmap block"),
    Field::new("bg_inode_bitmap_lo", 0x4, 4, "inode bitmap block"),
    Field::new("bg_inode_table_lo", 0x8, 4, "first inode table block"),
    Field::new("bg_free_blocks_count_lo", 0xc, 2, "free blocks"),
    Field::new("bg_free_inodes_count_lo", 0xe, 2, "free inodes"),
    Field::new("bg_used_dirs_count_lo", 0x10, 2, "directories"),
    Field::new(
        "bg_flags",
        0x12,
        2,
        "1 INODE_UNINIT, 2 BLOCK_UNINIT, 4 ITABLE_ZEROED",
    )
    .show(Show::Bits(&[
        (1, "INODE_UNINIT"),
        (2, "BLOCK_UNINIT"),
        (4, "ITABLE_ZEROED"),
    ])),
    Field::new("bg_exclude_bitmap_lo", 0x14, 4, "snapshot exclusion bitmap"),
    Field::new(
        "bg_block_bitmap_csum_lo",
        0x18,
        2,
        "block bitmap crc32c (low)",
    ),
    Field::new(
        "bg_inode_bitmap_csum_lo",
        0x1a,
        2,
        "inode bitmap crc32c (low)",
    ),
    Field::new(
        "bg_itable_unused_lo",
        0x1c,
        2,
        "unused inodes at the end of the table",
    ),
    Field::new("bg_checksum", 0x1e, 2, "descriptor checksum").show(Show::Hex),
    Field::new("bg_block_bitmap_hi", 0x20, 4, "block bitmap block (high)"),
    Field::new("bg_inode_bitmap_hi", 0x24, 4, "inode bitmap block (high)"),
    Field::new("bg_inode_table_hi", 0x28, 4, "inode table block (high)"),
    Field::new("bg_free_blocks_count_hi", 0x2c, 2, "free blocks (high)"),
    Field::new("bg_free_inodes_count_hi", 0x2e, 2, "free inodes (high)"),
    Field::new("bg_used_dirs_count_hi", 0x30, 2, "directories (high)"),
    Field::new("bg_itable_unused_hi", 0x32, 2, "unused inodes (high)"),
    Field::new("bg_exclude_bitmap_hi", 0x34, 4, "exclusion bitmap (high)"),
    Field::new(
        "bg_block_bitmap_csum_hi",
        0x38,
        2,
        "block bitmap crc32c (high)",
    ),
    Field::new(
        "bg_inode_bitmap_csum_hi",
        0x3a,
        2,
        "inode bitmap crc32c (high)",
    ),
    Field::new("bg_reserved", 0x3c, 4, "padding"),
];

bitflags::bitflags! {
    /// `bg_flags` (names as dumpe2fs prints them).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct BgFlags: u16 {
        const INODE_UNINIT = 1;
        const BLOCK_UNINIT = 2;
        const ITABLE_ZEROED = 4;
    }
}

/// A field of [`GROUP_DESC`], found when compiling.
macro_rules! gd {
    ($name:literal) => {
        $crate::layout::field!($crate::fs::ext::group_desc::GROUP_DESC, $name)
    };
}
pub(crate) use gd;

/// One decoded descriptor.
#[derive(Clone, Debug)]
pub struct GroupDesc {
    pub group: u64,
    /// The on-disk bytes (`s_desc_size` of them) and their offset.
    raw: Vec<u8>,
    pub base: u64,
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub used_dirs: u64,
    pub itable_unused: u64,
    /// `bg_flags` as stored (see [`GroupDesc::flags_apply`]).
    pub flags: BgFlags,
    /// `bg_checksum` as stored.
    pub checksum: u16,
    /// The checksum as stored and as computed (None when the filesystem
    /// has neither metadata_csum nor uninit_bg).
    pub check: Option<Check>,
    /// The bitmaps' stored crc32c (metadata_csum): the low 16 bits, and
    /// the high ones when the descriptor is large enough to hold them.
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
    /// Whether the descriptor holds the bitmap checksums' high halves.
    pub bitmap_csum_hi: bool,
    /// Whether `flags` mean anything: only with descriptor checksums
    /// (metadata_csum or uninit_bg); the kernel ignores them otherwise.
    pub flags_apply: bool,
}

impl GroupDesc {
    /// Decodes descriptor `group` from its `bytes` (desc_size long) at disk
    /// offset `base`.
    pub fn decode(sb: &Superblock, group: u64, bytes: &[u8], base: u64) -> GroupDesc {
        let get = |f: &'static Field| f.le(bytes).unwrap_or(0);
        let wide = sb.is_64bit() && bytes.len() >= 64;
        // A `_lo` field and its `_hi` half, `shift` bits up.
        let join = |lo: &'static Field, hi: &'static Field, shift: u32| {
            get(lo) | if wide { get(hi) << shift } else { 0 }
        };
        let checksum = u16::try_from(get(gd!("bg_checksum"))).unwrap_or(0);
        let expected = expected_checksum(sb, group, bytes);
        let word = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        GroupDesc {
            group,
            block_bitmap: join(gd!("bg_block_bitmap_lo"), gd!("bg_block_bitmap_hi"), 32),
            inode_bitmap: join(gd!("bg_inode_bitmap_lo"), gd!("bg_inode_bitmap_hi"), 32),
            inode_table: join(gd!("bg_inode_table_lo"), gd!("bg_inode_table_hi"), 32),
            free_blocks: join(
                gd!("bg_free_blocks_count_lo"),
                gd!("bg_free_blocks_count_hi"),
                16,
            ),
            free_inodes: join(
                gd!("bg_free_inodes_count_lo"),
                gd!("bg_free_inodes_count_hi"),
                16,
            ),
            used_dirs: join(
                gd!("bg_used_dirs_count_lo"),
                gd!("bg_used_dirs_count_hi"),
                16,
            ),
            itable_unused: join(gd!("bg_itable_unused_lo"), gd!("bg_itable_unused_hi"), 16),
            flags: BgFlags::from_bits_retain(u16::try_from(get(gd!("bg_flags"))).unwrap_or(0)),
            checksum,
            check: expected.map(|c| Check {
                stored: u32::from(checksum),
                computed: u32::from(c),
            }),
            // The high halves need the field whole in the descriptor.
            block_bitmap_csum: word(
                get(gd!("bg_block_bitmap_csum_lo")) | get(gd!("bg_block_bitmap_csum_hi")) << 16,
            ),
            inode_bitmap_csum: word(
                get(gd!("bg_inode_bitmap_csum_lo")) | get(gd!("bg_inode_bitmap_csum_hi")) << 16,
            ),
            bitmap_csum_hi: bytes.len() >= 0x3c,
            flags_apply: sb.has_metadata_csum() || sb.has_ro_compat(RoCompat::UNINIT_BG),
            raw: bytes.to_vec(),
            base,
        }
    }

    /// Whether the stored checksum matches (`check`'s verdict).
    pub fn checksum_ok(&self) -> Option<bool> {
        self.check.map(|c| c.ok())
    }

    /// Every field with its offset (for the UI's pane).
    pub fn fields(&self) -> Vec<FieldValue> {
        decode_table(GROUP_DESC, &self.raw, Endian::Little, self.base)
    }

    /// The descriptor as a report: every field raw and shown, the
    /// checksum as stored and computed.
    pub fn report(&self) -> Report {
        let mut r = crate::layout::report(
            "group descriptor",
            format!("group {}", self.group),
            GROUP_DESC,
            &self.raw,
            Endian::Little,
            self.base,
        );
        if let (Some(c), Some(f)) = (
            self.check,
            r.fields
                .iter_mut()
                .find(|f| f.name == gd!("bg_checksum").name),
        ) {
            f.check = Some(c);
            f.shown = c.text(16);
            if !c.ok() {
                r.problems.push(format!(
                    "group {}: descriptor checksum {:#06x} does not match the computed {:#06x}",
                    self.group, c.stored, c.computed
                ));
            }
        }
        r
    }

    /// The names of the flags in effect (none without descriptor
    /// checksums, as dumpe2fs shows them).
    pub fn flag_names(&self) -> Vec<&'static str> {
        if !self.flags_apply {
            return Vec::new();
        }
        self.flags.iter_names().map(|(n, _)| n).collect()
    }
}

/// The checksum a descriptor should carry, per e2fsprogs'
/// `ext2fs_group_desc_csum`.
pub fn expected_checksum(sb: &Superblock, group: u64, bytes: &[u8]) -> Option<u16> {
    let uuid = sb.uuid;
    // The checksum takes the group number's low 32 bits (a u32 in C).
    let group_le = u32::try_from(group & 0xffff_ffff)
        .unwrap_or(0)
        .to_le_bytes();
    let size = bytes.len();
    let (before, after) = (
        bytes.get(..0x1e.min(size)).unwrap_or_default(),
        bytes.get(0x20..).unwrap_or_default(),
    );
    if sb.has_metadata_csum() {
        let seed = if sb.has_incompat(Incompat::METADATA_CSUM_SEED) {
            u32::try_from(sb.get(sb!("s_checksum_seed"))).unwrap_or(0)
        } else {
            crc32c_raw(!0, &uuid)
        };
        let mut c = crc32c_raw(seed, &group_le);
        c = crc32c_raw(c, before);
        c = crc32c_raw(c, &[0, 0]);
        c = crc32c_raw(c, after);
        Some(u16::try_from(c & 0xffff).unwrap_or(0))
    } else if sb.has_ro_compat(RoCompat::UNINIT_BG) {
        let mut c = crc16(!0, &uuid);
        c = crc16(c, &group_le);
        c = crc16(c, before);
        if sb.is_64bit() {
            c = crc16(c, after);
        }
        Some(c)
    } else {
        None
    }
}

/// Where a group keeps its copy of the superblock and descriptors
/// (e2fsprogs' `ext2fs_super_and_bgd_loc2`, as dumpe2fs prints it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// The superblock (primary in group 0, else a backup).
    pub superblock: Option<u64>,
    /// The descriptor table copy (`first`, `last`) before meta_bg.
    pub descriptors: Option<(u64, u64)>,
    /// The blocks reserved for growing that table.
    pub reserved_gdt: Option<(u64, u64)>,
    /// The one descriptor block a meta_bg group holds.
    pub meta_descriptor: Option<u64>,
}

/// The placement of group `group`'s superblock and descriptor copies.
pub fn placement(sb: &Superblock, group: u64) -> Placement {
    let first = u64::from(sb.first_data_block)
        .saturating_add(group.saturating_mul(u64::from(sb.blocks_per_group)));
    let group_block = if first == 0 && sb.block_size == 1024 {
        1
    } else {
        first
    };
    let per_block = sb
        .block_size
        .checked_div(u64::from(sb.desc_size.max(32)))
        .unwrap_or(0)
        .max(1);
    let desc_blocks = sb.group_count().div_ceil(per_block);
    let meta_bg = sb.has_incompat(Incompat::META_BG);
    let old_desc_blocks = if meta_bg {
        u64::from(sb.first_meta_bg)
    } else {
        desc_blocks
    };
    let has = has_super(sb, group);
    let mut p = Placement {
        superblock: has.then_some(group_block),
        ..Placement::default()
    };
    if !meta_bg || group.checked_div(per_block).unwrap_or(0) < u64::from(sb.first_meta_bg) {
        if has && old_desc_blocks > 0 {
            let start = group_block.saturating_add(1);
            p.descriptors = Some((
                start,
                start.saturating_add(old_desc_blocks.saturating_sub(1)),
            ));
            let reserved = sb.get(sb!("s_reserved_gdt_blocks"));
            if reserved > 0 {
                let r = start.saturating_add(old_desc_blocks);
                p.reserved_gdt = Some((r, r.saturating_add(reserved.saturating_sub(1))));
            }
        }
    } else {
        let at = group.checked_rem(per_block).unwrap_or(0);
        if at == 0 || at == 1 || at == per_block.saturating_sub(1) {
            p.meta_descriptor = Some(group_block.saturating_add(u64::from(has)));
        }
    }
    p
}

/// Whether `group` keeps a superblock backup (and so a descriptor table
/// copy): every group without sparse_super; else 0, 1 and powers of 3, 5,
/// 7; with sparse_super2, 0 and the two named groups.
pub fn has_super(sb: &Superblock, group: u64) -> bool {
    if group == 0 {
        return true;
    }
    if sb.has_compat(Compat::SPARSE_SUPER2) {
        return group == sb.get(sb!("s_backup_bgs_0")) || group == sb.get(sb!("s_backup_bgs_1"));
    }
    if !sb.has_ro_compat(RoCompat::SPARSE_SUPER) {
        return true;
    }
    if group <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut p = base;
        while p < group {
            p = p.saturating_mul(base);
        }
        p == group
    })
}

/// The block holding descriptor block `i` of the primary table
/// (e2fsprogs' `ext2fs_descriptor_block_loc2`).
pub fn desc_block(sb: &Superblock, i: u64) -> u64 {
    let first = u64::from(sb.first_data_block);
    if !sb.has_incompat(Incompat::META_BG) || i < u64::from(sb.first_meta_bg) {
        // bigalloc on 1 KiB blocks sets s_first_data_block to 0, but the
        // superblock still fills block 1 (as in e2fsprogs).
        let group_block = if first == 0 && sb.block_size == 1024 {
            1
        } else {
            first
        };
        return group_block.saturating_add(1).saturating_add(i);
    }
    let per_block = sb
        .block_size
        .checked_div(u64::from(sb.desc_size.max(32)))
        .unwrap_or(0);
    let group = per_block.saturating_mul(i);
    first
        .saturating_add(group.saturating_mul(u64::from(sb.blocks_per_group)))
        .saturating_add(u64::from(has_super(sb, group)))
}
