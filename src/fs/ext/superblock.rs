//! The ext2/3/4 superblock: 1024 bytes at byte 1024 of the filesystem,
//! little-endian. One table ([`SUPERBLOCK`]) names every field of the
//! current layout with its offset; decoding, `info` and its JSON, and the
//! hex view's highlight all come from it.
use crate::layout::{decode_table, value_of, Endian, Field, FieldValue, Kind};

use super::error::FsError;

/// Where the primary superblock starts, and its size.
pub const OFFSET: u64 = 1024;
pub const SIZE: usize = 1024;
/// `s_magic`.
pub const MAGIC: u16 = 0xef53;
/// Fewest blocks per group e2fsprogs accepts.
pub const MIN_BLOCKS_PER_GROUP: u64 = 8;
/// Most clusters per group: the 16-bit free-block count of a descriptor
/// minus 8 (e2fsprogs' `EXT2_MAX_CLUSTERS_PER_GROUP`).
pub const MAX_CLUSTERS_PER_GROUP: u64 = (1 << 16) - 8;

use Kind::{Bytes, Text, Uuid};

/// Every field, in on-disk order (names as in the kernel's `ext4_super_block`).
pub const SUPERBLOCK: &[Field] = &[
    Field::new("s_inodes_count", 0x0, 4, "inodes"),
    Field::new("s_blocks_count_lo", 0x4, 4, "blocks (low 32 bits)"),
    Field::new("s_r_blocks_count_lo", 0x8, 4, "reserved blocks (low)"),
    Field::new("s_free_blocks_count_lo", 0xc, 4, "free blocks (low)"),
    Field::new("s_free_inodes_count", 0x10, 4, "free inodes"),
    Field::new("s_first_data_block", 0x14, 4, "first data block"),
    Field::new("s_log_block_size", 0x18, 4, "block size = 1024 << this"),
    Field::new(
        "s_log_cluster_size",
        0x1c,
        4,
        "cluster size = 1024 << this (bigalloc)",
    ),
    Field::new("s_blocks_per_group", 0x20, 4, "blocks per group"),
    Field::new("s_clusters_per_group", 0x24, 4, "clusters per group"),
    Field::new("s_inodes_per_group", 0x28, 4, "inodes per group"),
    Field::new("s_mtime", 0x2c, 4, "last mount time"),
    Field::new("s_wtime", 0x30, 4, "last write time"),
    Field::new("s_mnt_count", 0x34, 2, "mounts since the last check"),
    Field::new("s_max_mnt_count", 0x36, 2, "mounts allowed before a check"),
    Field::new("s_magic", 0x38, 2, "0xEF53"),
    Field::new(
        "s_state",
        0x3a,
        2,
        "1 clean, 2 errors, 4 orphans being recovered",
    ),
    Field::new(
        "s_errors",
        0x3c,
        2,
        "on errors: 1 continue, 2 remount ro, 3 panic",
    ),
    Field::new("s_minor_rev_level", 0x3e, 2, "minor revision"),
    Field::new("s_lastcheck", 0x40, 4, "last check time"),
    Field::new("s_checkinterval", 0x44, 4, "seconds between checks"),
    Field::new(
        "s_creator_os",
        0x48,
        4,
        "0 Linux, 1 Hurd, 2 Masix, 3 FreeBSD, 4 Lites",
    ),
    Field::new("s_rev_level", 0x4c, 4, "0 original, 1 dynamic"),
    Field::new("s_def_resuid", 0x50, 2, "uid that may use reserved blocks"),
    Field::new("s_def_resgid", 0x52, 2, "gid that may use reserved blocks"),
    Field::new("s_first_ino", 0x54, 4, "first non-reserved inode"),
    Field::new("s_inode_size", 0x58, 2, "inode size"),
    Field::new("s_block_group_nr", 0x5a, 2, "group of this superblock copy"),
    Field::new("s_feature_compat", 0x5c, 4, "compatible features"),
    Field::new("s_feature_incompat", 0x60, 4, "incompatible features"),
    Field::new(
        "s_feature_ro_compat",
        0x64,
        4,
        "read-only compatible features",
    ),
    Field::of(Uuid, "s_uuid", 0x68, 16, "filesystem UUID"),
    Field::of(Text, "s_volume_name", 0x78, 16, "label"),
    Field::of(
        Text,
        "s_last_mounted",
        0x88,
        64,
        "directory last mounted on",
    ),
    Field::new("s_algorithm_usage_bitmap", 0xc8, 4, "compression (unused)"),
    Field::new(
        "s_prealloc_blocks",
        0xcc,
        1,
        "blocks to preallocate for files",
    ),
    Field::new(
        "s_prealloc_dir_blocks",
        0xcd,
        1,
        "blocks to preallocate for directories",
    ),
    Field::new(
        "s_reserved_gdt_blocks",
        0xce,
        2,
        "blocks reserved for growing the descriptor table",
    ),
    Field::of(Uuid, "s_journal_uuid", 0xd0, 16, "journal superblock UUID"),
    Field::new("s_journal_inum", 0xe0, 4, "journal inode"),
    Field::new("s_journal_dev", 0xe4, 4, "journal device"),
    Field::new("s_last_orphan", 0xe8, 4, "head of the orphan inode list"),
    Field::of(Uuid, "s_hash_seed", 0xec, 16, "htree hash seed"),
    Field::new("s_def_hash_version", 0xfc, 1, "default htree hash"),
    Field::new(
        "s_jnl_backup_type",
        0xfd,
        1,
        "1: s_jnl_blocks holds the journal inode's blocks",
    ),
    Field::new("s_desc_size", 0xfe, 2, "group descriptor size (64bit)"),
    Field::new("s_default_mount_opts", 0x100, 4, "default mount options"),
    Field::new("s_first_meta_bg", 0x104, 4, "first meta block group"),
    Field::new("s_mkfs_time", 0x108, 4, "creation time"),
    Field::of(
        Bytes,
        "s_jnl_blocks",
        0x10c,
        68,
        "backup of the journal inode's block map",
    ),
    Field::new("s_blocks_count_hi", 0x150, 4, "blocks (high 32 bits)"),
    Field::new("s_r_blocks_count_hi", 0x154, 4, "reserved blocks (high)"),
    Field::new("s_free_blocks_count_hi", 0x158, 4, "free blocks (high)"),
    Field::new(
        "s_min_extra_isize",
        0x15c,
        2,
        "extra inode bytes every inode has",
    ),
    Field::new(
        "s_want_extra_isize",
        0x15e,
        2,
        "extra inode bytes new inodes get",
    ),
    Field::new(
        "s_flags",
        0x160,
        4,
        "1 signed hash, 2 unsigned hash, 4 test",
    ),
    Field::new("s_raid_stride", 0x164, 2, "RAID stride"),
    Field::new("s_mmp_interval", 0x166, 2, "MMP check interval"),
    Field::new("s_mmp_block", 0x168, 8, "MMP block"),
    Field::new("s_raid_stripe_width", 0x170, 4, "RAID stripe width"),
    Field::new(
        "s_log_groups_per_flex",
        0x174,
        1,
        "flex_bg size = 1 << this",
    ),
    Field::new("s_checksum_type", 0x175, 1, "1: crc32c"),
    Field::new("s_encryption_level", 0x176, 1, "encryption level"),
    Field::new("s_reserved_pad", 0x177, 1, "padding"),
    Field::new(
        "s_kbytes_written",
        0x178,
        8,
        "KiB written over the filesystem's life",
    ),
    Field::new("s_snapshot_inum", 0x180, 4, "active snapshot inode"),
    Field::new("s_snapshot_id", 0x184, 4, "active snapshot id"),
    Field::new(
        "s_snapshot_r_blocks_count",
        0x188,
        8,
        "blocks reserved for the snapshot",
    ),
    Field::new("s_snapshot_list", 0x190, 4, "head of the snapshot list"),
    Field::new("s_error_count", 0x194, 4, "errors seen"),
    Field::new("s_first_error_time", 0x198, 4, "first error: time"),
    Field::new("s_first_error_ino", 0x19c, 4, "first error: inode"),
    Field::new("s_first_error_block", 0x1a0, 8, "first error: block"),
    Field::of(
        Text,
        "s_first_error_func",
        0x1a8,
        32,
        "first error: function",
    ),
    Field::new("s_first_error_line", 0x1c8, 4, "first error: line"),
    Field::new("s_last_error_time", 0x1cc, 4, "last error: time"),
    Field::new("s_last_error_ino", 0x1d0, 4, "last error: inode"),
    Field::new("s_last_error_line", 0x1d4, 4, "last error: line"),
    Field::new("s_last_error_block", 0x1d8, 8, "last error: block"),
    Field::of(Text, "s_last_error_func", 0x1e0, 32, "last error: function"),
    Field::of(
        Text,
        "s_mount_opts",
        0x200,
        64,
        "default mount options (text)",
    ),
    Field::new("s_usr_quota_inum", 0x240, 4, "user quota inode"),
    Field::new("s_grp_quota_inum", 0x244, 4, "group quota inode"),
    Field::new("s_overhead_clusters", 0x248, 4, "overhead clusters"),
    Field::new("s_backup_bgs_0", 0x24c, 4, "sparse_super2 backup group 1"),
    Field::new("s_backup_bgs_1", 0x250, 4, "sparse_super2 backup group 2"),
    Field::of(Bytes, "s_encrypt_algos", 0x254, 4, "encryption algorithms"),
    Field::of(Uuid, "s_encrypt_pw_salt", 0x258, 16, "encryption salt"),
    Field::new("s_lpf_ino", 0x268, 4, "lost+found inode"),
    Field::new("s_prj_quota_inum", 0x26c, 4, "project quota inode"),
    Field::new(
        "s_checksum_seed",
        0x270,
        4,
        "crc32c(uuid), when metadata_csum_seed",
    ),
    Field::new("s_wtime_hi", 0x274, 1, "write time (high byte)"),
    Field::new("s_mtime_hi", 0x275, 1, "mount time (high byte)"),
    Field::new("s_mkfs_time_hi", 0x276, 1, "creation time (high byte)"),
    Field::new("s_lastcheck_hi", 0x277, 1, "check time (high byte)"),
    Field::new(
        "s_first_error_time_hi",
        0x278,
        1,
        "first error time (high byte)",
    ),
    Field::new(
        "s_last_error_time_hi",
        0x279,
        1,
        "last error time (high byte)",
    ),
    Field::new("s_first_error_errcode", 0x27a, 1, "first error: code"),
    Field::new("s_last_error_errcode", 0x27b, 1, "last error: code"),
    Field::new(
        "s_encoding",
        0x27c,
        2,
        "filename charset encoding (casefold)",
    ),
    Field::new(
        "s_encoding_flags",
        0x27e,
        2,
        "filename charset encoding flags",
    ),
    Field::new("s_orphan_file_inum", 0x280, 4, "orphan file inode"),
    Field::new("s_checksum", 0x3fc, 4, "crc32c of the superblock"),
];

/// Feature names in dumpe2fs's order (compat, incompat, ro_compat, each by
/// bit).
pub const COMPAT: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x100, "snapshot_bitmap"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
pub const INCOMPAT: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
pub const RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x80, "snapshot"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

/// Names of the set bits, unknown bits as `FEATURE_<C|I|R><bit>` the way
/// e2fsprogs prints them. Unknown bits are shown, never refused.
pub fn feature_names(compat: u32, incompat: u32, ro_compat: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (value, table, letter) in [
        (compat, COMPAT, 'C'),
        (incompat, INCOMPAT, 'I'),
        (ro_compat, RO_COMPAT, 'R'),
    ] {
        for bit in 0..32 {
            let mask = 1u32 << bit;
            if value & mask != 0 {
                match table.iter().find(|(m, _)| *m == mask) {
                    Some((_, n)) => out.push((*n).to_owned()),
                    None => out.push(format!("FEATURE_{letter}{bit}")),
                }
            }
        }
    }
    out
}

/// The decoded superblock: every field, plus the facts derived from them.
#[derive(Clone, Debug)]
pub struct Superblock {
    pub fields: Vec<FieldValue>,
    pub block_size: u64,
    pub blocks_count: u64,
    pub inodes_count: u32,
    pub first_data_block: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub rev_level: u32,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub desc_size: u16,
    pub first_meta_bg: u32,
    /// `s_uuid` as bytes.
    pub uuid: [u8; 16],
    /// The seed every metadata checksum starts from (the kernel's
    /// `s_csum_seed`), whether or not the filesystem has metadata_csum.
    pub csum_seed: u32,
    /// `s_clusters_per_group` (blocks per group without bigalloc).
    pub clusters_per_group: u32,
    /// The stored crc32c and whether it matches (None without
    /// metadata_csum).
    pub checksum_ok: Option<bool>,
}

impl Superblock {
    /// A field's value by name (0 when absent).
    pub fn get(&self, name: &str) -> u64 {
        value_of(&self.fields, name).unwrap_or(0)
    }

    /// A text field by name.
    pub fn text(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.text.clone())
            .unwrap_or_default()
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }

    /// Number of block groups (none on an external journal device).
    pub fn group_count(&self) -> u64 {
        if self.has_incompat(0x8) {
            return 0;
        }
        (self
            .blocks_count
            .saturating_sub(u64::from(self.first_data_block)))
        .div_ceil(u64::from(self.blocks_per_group.max(1)))
    }

    /// 64-bit block numbers and descriptors.
    pub fn is_64bit(&self) -> bool {
        self.has_incompat(0x80)
    }

    /// metadata_csum.
    pub fn has_metadata_csum(&self) -> bool {
        self.has_ro_compat(0x400)
    }

    /// The filetype feature: directory entries carry a type byte (else
    /// the name length is 16 bits).
    pub fn has_filetype(&self) -> bool {
        self.has_incompat(0x2)
    }

    /// The absolute offset of a superblock field, for error messages.
    pub fn offset_of(field: &str) -> u64 {
        OFFSET
            + SUPERBLOCK
                .iter()
                .find(|f| f.name == field)
                .map_or(0, |f| f.offset as u64)
    }

    /// Decodes the 1024 superblock bytes (`base` is their offset on the
    /// disk, kept in every field).
    ///
    /// # Errors
    /// `NotExt` without the magic; `Corrupt` for values no filesystem can
    /// have (block size, group geometry), naming the field.
    pub fn decode(bytes: &[u8], base: u64) -> Result<Superblock, FsError> {
        if bytes.len() < SIZE {
            return Err(FsError::NotExt {
                detail: format!(
                    "the disk is too small for a superblock ({} bytes at {base:#x})",
                    bytes.len()
                ),
            });
        }
        let fields = decode_table(SUPERBLOCK, bytes, Endian::Little, base);
        let get = |n: &str| value_of(&fields, n).unwrap_or(0);
        let magic = get("s_magic");
        if magic != u64::from(MAGIC) {
            return Err(FsError::NotExt {
                detail: format!("magic {magic:#06x} at {:#x}, expected 0xef53", base + 0x38),
            });
        }
        let bad = |field: &'static str, detail: String| {
            let at = SUPERBLOCK
                .iter()
                .find(|f| f.name == field)
                .map_or(0, |f| f.offset as u64);
            FsError::corrupt("superblock", field, base + at, detail)
        };
        let log = get("s_log_block_size");
        if log > 6 {
            return Err(bad(
                "s_log_block_size",
                format!("{log}: block size would be 1024 << {log}, at most 64 KiB exists"),
            ));
        }
        let block_size = 1024u64 << log;
        let incompat = get("s_feature_incompat") as u32;
        let blocks_count = get("s_blocks_count_lo")
            | if incompat & 0x80 != 0 {
                get("s_blocks_count_hi") << 32
            } else {
                0
            };
        if blocks_count
            .checked_mul(block_size)
            .is_none_or(|b| b > i64::MAX as u64)
        {
            return Err(bad(
                "s_blocks_count_lo",
                format!("{blocks_count} blocks of {block_size} bytes is more than any disk"),
            ));
        }
        let blocks_per_group = get("s_blocks_per_group") as u32;
        let ro_compat = get("s_feature_ro_compat") as u32;
        // e2fsprogs' limits (ext2fs_open2, which dumpe2fs refuses to go
        // past): at least 8 blocks per group, at most what the 16-bit free
        // counts of a descriptor can describe (65528 clusters).
        let cluster_ratio = if ro_compat & 0x200 != 0 {
            1u64 << get("s_log_cluster_size").saturating_sub(log).min(19)
        } else {
            1
        };
        let max_per_group = MAX_CLUSTERS_PER_GROUP * cluster_ratio;
        if u64::from(blocks_per_group) < MIN_BLOCKS_PER_GROUP
            || u64::from(blocks_per_group) > max_per_group
        {
            return Err(bad(
                "s_blocks_per_group",
                format!(
                    "{blocks_per_group}: expected {MIN_BLOCKS_PER_GROUP} to {max_per_group} blocks per group"
                ),
            ));
        }
        let first_data_block = get("s_first_data_block");
        if incompat & 0x8 == 0 && first_data_block >= blocks_count {
            return Err(bad(
                "s_first_data_block",
                format!("{first_data_block}: expected below the block count {blocks_count}"),
            ));
        }
        let groups = blocks_count
            .saturating_sub(first_data_block)
            .div_ceil(u64::from(blocks_per_group));
        if groups > u64::from(u32::MAX) {
            return Err(bad(
                "s_blocks_count_lo",
                format!("{blocks_count} blocks make {groups} groups, more than 2^32"),
            ));
        }
        let inodes_per_group = get("s_inodes_per_group") as u32;
        // An external journal device has no inodes.
        if inodes_per_group == 0 && incompat & 0x8 == 0 {
            return Err(bad("s_inodes_per_group", "0".into()));
        }
        let rev_level = get("s_rev_level") as u32;
        let inode_size = if rev_level == 0 {
            128
        } else {
            get("s_inode_size") as u16
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || u64::from(inode_size) > block_size {
            return Err(bad(
                "s_inode_size",
                format!("{inode_size}: expected a power of two from 128 to the block size"),
            ));
        }
        let checksum_ok = (ro_compat & 0x400 != 0).then(|| {
            let stored = get("s_checksum") as u32;
            super::checksum::crc32c_raw(!0, &bytes[..0x3fc]) == stored
        });
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[0x68..0x78]);
        let stored_seed = (incompat & 0x2000 != 0).then(|| get("s_checksum_seed") as u32);
        let csum_seed = super::checksum::fs_seed(&uuid, stored_seed);
        let desc_size = if incompat & 0x80 != 0 {
            get("s_desc_size") as u16
        } else {
            32
        };
        Ok(Superblock {
            block_size,
            blocks_count,
            inodes_count: get("s_inodes_count") as u32,
            first_data_block: get("s_first_data_block") as u32,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            rev_level,
            feature_compat: get("s_feature_compat") as u32,
            feature_incompat: incompat,
            feature_ro_compat: ro_compat,
            desc_size,
            first_meta_bg: get("s_first_meta_bg") as u32,
            uuid,
            csum_seed,
            clusters_per_group: get("s_clusters_per_group") as u32,
            checksum_ok,
            fields,
        })
    }
}
