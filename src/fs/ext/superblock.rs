//! The ext2/3/4 superblock: 1024 bytes at byte 1024 of the filesystem,
//! little-endian. One table ([`SUPERBLOCK`]) names every field of the
//! current layout with its offset; decoding, `info` and its JSON, and the
//! hex view's highlight all come from it.
use crate::fs::report::{Check, Report};
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind, Show};

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
    Field::new("s_log_block_size", 0x18, 4, "block size = 1024 << this").show(Show::Log1024),
    Field::new(
        "s_log_cluster_size",
        0x1c,
        4,
        "cluster size = 1024 << this (bigalloc)",
    ),
    Field::new("s_blocks_per_group", 0x20, 4, "blocks per group"),
    Field::new("s_clusters_per_group", 0x24, 4, "clusters per group"),
    Field::new("s_inodes_per_group", 0x28, 4, "inodes per group"),
    Field::new("s_mtime", 0x2c, 4, "last mount time").show(Show::Date),
    Field::new("s_wtime", 0x30, 4, "last write time").show(Show::Date),
    Field::new("s_mnt_count", 0x34, 2, "mounts since the last check"),
    Field::new("s_max_mnt_count", 0x36, 2, "mounts allowed before a check"),
    Field::new("s_magic", 0x38, 2, "0xEF53").show(Show::Hex),
    Field::new(
        "s_state",
        0x3a,
        2,
        "1 clean, 2 errors, 4 orphans being recovered",
    )
    .show(Show::Bits(&[(1, "clean"), (2, "errors"), (4, "orphans")])),
    Field::new(
        "s_errors",
        0x3c,
        2,
        "on errors: 1 continue, 2 remount ro, 3 panic",
    )
    .show(Show::Enum(&[
        (1, "continue"),
        (2, "remount read-only"),
        (3, "panic"),
    ])),
    Field::new("s_minor_rev_level", 0x3e, 2, "minor revision"),
    Field::new("s_lastcheck", 0x40, 4, "last check time").show(Show::Date),
    Field::new("s_checkinterval", 0x44, 4, "seconds between checks"),
    Field::new(
        "s_creator_os",
        0x48,
        4,
        "0 Linux, 1 Hurd, 2 Masix, 3 FreeBSD, 4 Lites",
    )
    .show(Show::Enum(&[
        (0, "Linux"),
        (1, "Hurd"),
        (2, "Masix"),
        (3, "FreeBSD"),
        (4, "Lites"),
    ])),
    Field::new("s_rev_level", 0x4c, 4, "0 original, 1 dynamic")
        .show(Show::Enum(&[(0, "original"), (1, "dynamic")])),
    Field::new("s_def_resuid", 0x50, 2, "uid that may use reserved blocks"),
    Field::new("s_def_resgid", 0x52, 2, "gid that may use reserved blocks"),
    Field::new("s_first_ino", 0x54, 4, "first non-reserved inode"),
    Field::new("s_inode_size", 0x58, 2, "inode size"),
    Field::new("s_block_group_nr", 0x5a, 2, "group of this superblock copy"),
    Field::new("s_feature_compat", 0x5c, 4, "compatible features").show(Show::With(compat_text)),
    Field::new("s_feature_incompat", 0x60, 4, "incompatible features")
        .show(Show::With(incompat_text)),
    Field::new(
        "s_feature_ro_compat",
        0x64,
        4,
        "read-only compatible features",
    )
    .show(Show::With(ro_compat_text)),
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
    Field::new("s_def_hash_version", 0xfc, 1, "default htree hash").show(Show::Enum(&[
        (0, "legacy"),
        (1, "half_md4"),
        (2, "tea"),
        (3, "legacy_unsigned"),
        (4, "half_md4_unsigned"),
        (5, "tea_unsigned"),
        (6, "siphash"),
    ])),
    Field::new(
        "s_jnl_backup_type",
        0xfd,
        1,
        "1: s_jnl_blocks holds the journal inode's blocks",
    ),
    Field::new("s_desc_size", 0xfe, 2, "group descriptor size (64bit)"),
    Field::new("s_default_mount_opts", 0x100, 4, "default mount options")
        .show(Show::With(mount_opts_text)),
    Field::new("s_first_meta_bg", 0x104, 4, "first meta block group"),
    Field::new("s_mkfs_time", 0x108, 4, "creation time").show(Show::Date),
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
    Field::new("s_checksum_type", 0x175, 1, "1: crc32c").show(Show::Enum(&[(1, "crc32c")])),
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
    Field::new("s_first_error_time", 0x198, 4, "first error: time").show(Show::Date),
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
    Field::new("s_last_error_time", 0x1cc, 4, "last error: time").show(Show::Date),
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
    )
    .show(Show::Hex),
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
    Field::new("s_checksum", 0x3fc, 4, "crc32c of the superblock").show(Show::Hex),
];

bitflags::bitflags! {
    /// `s_feature_compat`: features an older kernel may ignore. Names
    /// (lower-cased) are e2fsprogs'.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Compat: u32 {
        const DIR_PREALLOC = 0x1;
        const IMAGIC_INODES = 0x2;
        const HAS_JOURNAL = 0x4;
        const EXT_ATTR = 0x8;
        const RESIZE_INODE = 0x10;
        const DIR_INDEX = 0x20;
        const LAZY_BG = 0x40;
        const SNAPSHOT_BITMAP = 0x100;
        const SPARSE_SUPER2 = 0x200;
        const FAST_COMMIT = 0x400;
        const STABLE_INODES = 0x800;
        const ORPHAN_FILE = 0x1000;
    }
}

bitflags::bitflags! {
    /// `s_feature_incompat`: features a kernel must know to mount at all.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Incompat: u32 {
        const COMPRESSION = 0x1;
        const FILETYPE = 0x2;
        const NEEDS_RECOVERY = 0x4;
        const JOURNAL_DEV = 0x8;
        const META_BG = 0x10;
        const EXTENT = 0x40;
        /// e2fsprogs' `64bit`.
        const BIT64 = 0x80;
        const MMP = 0x100;
        const FLEX_BG = 0x200;
        const EA_INODE = 0x400;
        const DIRDATA = 0x1000;
        const METADATA_CSUM_SEED = 0x2000;
        const LARGE_DIR = 0x4000;
        const INLINE_DATA = 0x8000;
        const ENCRYPT = 0x10000;
        const CASEFOLD = 0x20000;
    }
}

bitflags::bitflags! {
    /// `s_feature_ro_compat`: features a kernel must know to write.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RoCompat: u32 {
        const SPARSE_SUPER = 0x1;
        const LARGE_FILE = 0x2;
        const HUGE_FILE = 0x8;
        /// The kernel's GDT_CSUM: crc16 descriptor checksums.
        const UNINIT_BG = 0x10;
        const DIR_NLINK = 0x20;
        const EXTRA_ISIZE = 0x40;
        const SNAPSHOT = 0x80;
        const QUOTA = 0x100;
        const BIGALLOC = 0x200;
        const METADATA_CSUM = 0x400;
        const REPLICA = 0x800;
        /// e2fsprogs' `read-only`.
        const READ_ONLY = 0x1000;
        const PROJECT = 0x2000;
        const SHARED_BLOCKS = 0x4000;
        const VERITY = 0x8000;
        const ORPHAN_PRESENT = 0x10000;
    }
}

/// e2fsprogs' name of a flag: the constant's name in lower case, but
/// for the two that are not identifiers.
fn e2fs_name(constant: &str) -> String {
    match constant {
        "BIT64" => "64bit".to_owned(),
        "READ_ONLY" => "read-only".to_owned(),
        n => n.to_ascii_lowercase(),
    }
}

/// The names of the set bits of one feature word, in bit order; unknown
/// bits as `FEATURE_<letter><bit>`, as e2fsprogs prints them (shown,
/// never refused).
fn names_of<F: bitflags::Flags<Bits = u32>>(value: u32, letter: char) -> Vec<String> {
    (0..32)
        .map(|bit| 1u32 << bit)
        .filter(|mask| value & mask != 0)
        .map(|mask| {
            F::FLAGS
                .iter()
                .find(|f| f.value().bits() == mask)
                .map_or_else(
                    || format!("FEATURE_{letter}{}", mask.trailing_zeros()),
                    |f| e2fs_name(f.name()),
                )
        })
        .collect()
}

/// Feature names in dumpe2fs's order (compat, incompat, ro_compat, each
/// by bit).
pub fn feature_names(compat: Compat, incompat: Incompat, ro_compat: RoCompat) -> Vec<String> {
    let mut out = names_of::<Compat>(compat.bits(), 'C');
    out.extend(names_of::<Incompat>(incompat.bits(), 'I'));
    out.extend(names_of::<RoCompat>(ro_compat.bits(), 'R'));
    out
}

fn word(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// `s_default_mount_opts` in dumpe2fs's words ("user_xattr acl"; an
/// unknown bit as `MNTOPT_N`).
pub fn mount_opt_names(opts: u64) -> Vec<String> {
    const MNTOPTS: &[(u64, &str)] = &[
        (0x1, "debug"),
        (0x2, "bsdgroups"),
        (0x4, "user_xattr"),
        (0x8, "acl"),
        (0x10, "uid16"),
        (0x100, "nobarrier"),
        (0x200, "block_validity"),
        (0x400, "discard"),
        (0x800, "nodelalloc"),
    ];
    let mut names: Vec<String> = Vec::new();
    match opts & 0x60 {
        0x20 => names.push("journal_data".into()),
        0x40 => names.push("journal_data_ordered".into()),
        0x60 => names.push("journal_data_writeback".into()),
        _ => {}
    }
    for bit in (0..32u32)
        .map(|i| 1u64 << i)
        .filter(|b| b & 0x60 == 0 && opts & b != 0)
    {
        names.push(MNTOPTS.iter().find(|(m, _)| *m == bit).map_or_else(
            || format!("MNTOPT_{}", bit.trailing_zeros()),
            |(_, n)| (*n).to_owned(),
        ));
    }
    names
}

fn mount_opts_text(v: u64) -> String {
    let names = mount_opt_names(v);
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(" ")
    }
}

fn compat_text(v: u64) -> String {
    names_of::<Compat>(word(v), 'C').join(" ")
}

fn incompat_text(v: u64) -> String {
    names_of::<Incompat>(word(v), 'I').join(" ")
}

fn ro_compat_text(v: u64) -> String {
    names_of::<RoCompat>(word(v), 'R').join(" ")
}

/// A field of [`SUPERBLOCK`], found when compiling.
macro_rules! sb {
    ($name:literal) => {
        $crate::layout::field!($crate::fs::ext::superblock::SUPERBLOCK, $name)
    };
}
pub(crate) use sb;

/// The time fields with a high byte (the 8 bits that carry them past
/// 2038).
const TIMES: &[(&Field, &Field)] = &[
    (sb!("s_mtime"), sb!("s_mtime_hi")),
    (sb!("s_wtime"), sb!("s_wtime_hi")),
    (sb!("s_mkfs_time"), sb!("s_mkfs_time_hi")),
    (sb!("s_lastcheck"), sb!("s_lastcheck_hi")),
    (sb!("s_first_error_time"), sb!("s_first_error_time_hi")),
    (sb!("s_last_error_time"), sb!("s_last_error_time_hi")),
];

/// The decoded superblock: its bytes (every field is read from them
/// through [`SUPERBLOCK`]), plus the facts derived from them.
#[derive(Clone, Debug)]
pub struct Superblock {
    /// The 1024 on-disk bytes and their offset on the volume.
    raw: Vec<u8>,
    base: u64,
    pub block_size: u64,
    pub blocks_count: u64,
    pub inodes_count: u32,
    pub first_data_block: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub rev_level: u32,
    pub feature_compat: Compat,
    pub feature_incompat: Incompat,
    pub feature_ro_compat: RoCompat,
    pub desc_size: u16,
    pub first_meta_bg: u32,
    /// `s_uuid` as bytes.
    pub uuid: [u8; 16],
    /// `s_hash_seed` as bytes (the htree hashes' key).
    pub hash_seed: [u8; 16],
    /// The seed every metadata checksum starts from (the kernel's
    /// `s_csum_seed`), whether or not the filesystem has metadata_csum.
    pub csum_seed: u32,
    /// `s_clusters_per_group` (blocks per group without bigalloc).
    pub clusters_per_group: u32,
    /// The superblock's crc32c as stored and computed (None without
    /// metadata_csum).
    pub checksum: Option<Check>,
}

impl Superblock {
    /// A field's value (0 when the bytes are too short: never, for a
    /// field of [`SUPERBLOCK`]). Name fields with [`sb!`].
    pub fn get(&self, field: &'static Field) -> u64 {
        field.le(&self.raw).unwrap_or(0)
    }

    /// A field's raw bytes (a UUID, a list of blocks).
    pub fn field_bytes(&self, field: &'static Field) -> &[u8] {
        field.bytes(&self.raw)
    }

    /// A text field's text, up to the first NUL, unescaped (printers
    /// escape).
    pub fn text(&self, field: &'static Field) -> String {
        let raw = field.bytes(&self.raw);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)).into_owned()
    }

    /// A text field's bytes up to the first NUL (a label, raw).
    pub fn text_bytes(&self, field: &'static Field) -> Vec<u8> {
        let raw = field.bytes(&self.raw);
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        raw.get(..end).unwrap_or(raw).to_vec()
    }

    /// A UUID field as text (`<none>` is the caller's to say for zeros).
    pub fn uuid_of(&self, field: &'static Field) -> String {
        crate::layout::uuid_text(field.bytes(&self.raw))
    }

    /// Every field with its offset (for the UI's pane).
    pub fn fields(&self) -> Vec<FieldValue> {
        decode_table(SUPERBLOCK, &self.raw, Endian::Little, self.base)
    }

    /// Whether the checksum matches (None without metadata_csum).
    pub fn checksum_ok(&self) -> Option<bool> {
        self.checksum.map(|c| c.ok())
    }

    /// The superblock as a report: every field raw and shown (times with
    /// their high bytes, feature names, the checksum as stored and
    /// computed).
    pub fn report(&self) -> Report {
        let mut r = crate::layout::report(
            "superblock",
            "superblock".to_owned(),
            SUPERBLOCK,
            &self.raw,
            Endian::Little,
            self.base,
        );
        for (lo, hi) in TIMES {
            let t = self.get(lo) | self.get(hi) << 32;
            if let Some(f) = r.fields.iter_mut().find(|f| f.name == lo.name) {
                f.shown = crate::fs::time::ctime(t);
            }
        }
        if let (Some(c), Some(f)) = (
            self.checksum,
            r.fields
                .iter_mut()
                .find(|f| f.name == sb!("s_checksum").name),
        ) {
            f.check = Some(c);
            f.shown = c.text(32);
            if !c.ok() {
                r.problems.push(format!(
                    "superblock checksum {:#010x} does not match the computed {:#010x}",
                    c.stored, c.computed
                ));
            }
        }
        r
    }

    pub fn has_incompat(&self, f: Incompat) -> bool {
        self.feature_incompat.contains(f)
    }

    pub fn has_ro_compat(&self, f: RoCompat) -> bool {
        self.feature_ro_compat.contains(f)
    }

    pub fn has_compat(&self, f: Compat) -> bool {
        self.feature_compat.contains(f)
    }

    /// Number of block groups (none on an external journal device).
    pub fn group_count(&self) -> u64 {
        if self.has_incompat(Incompat::JOURNAL_DEV) {
            return 0;
        }
        (self
            .blocks_count
            .saturating_sub(u64::from(self.first_data_block)))
        .div_ceil(u64::from(self.blocks_per_group.max(1)))
    }

    /// The inodes the groups hold (groups × inodes per group).
    /// e2fsprogs opens no filesystem where this is not `s_inodes_count`
    /// ("The ext2 superblock is corrupt"): the group count is then a
    /// claim nothing confirms.
    pub fn inodes_in_groups(&self) -> u64 {
        self.group_count()
            .saturating_mul(u64::from(self.inodes_per_group))
    }

    /// How far the kernel reads any file (`s_maxbytes`, ext4_max_size):
    /// a read at or past it returns nothing, whatever `i_size` claims.
    /// An extent's 32-bit logical start bounds it at 2^32 - 1 blocks;
    /// without huge_file, `i_blocks` (512-byte sectors in 32 bits) bounds
    /// it lower.
    pub fn max_bytes(&self) -> u64 {
        let bits = self.block_size.trailing_zeros();
        let extents = u64::from(u32::MAX).checked_shl(bits).unwrap_or(u64::MAX);
        if self.has_ro_compat(RoCompat::HUGE_FILE) {
            return extents.min(i64::MAX.unsigned_abs());
        }
        let sectors = (u64::from(u32::MAX) >> bits.saturating_sub(9))
            .checked_shl(bits)
            .unwrap_or(u64::MAX);
        extents.min(sectors)
    }

    /// 64-bit block numbers and descriptors.
    pub fn is_64bit(&self) -> bool {
        self.has_incompat(Incompat::BIT64)
    }

    /// metadata_csum.
    pub fn has_metadata_csum(&self) -> bool {
        self.has_ro_compat(RoCompat::METADATA_CSUM)
    }

    /// The filetype feature: directory entries carry a type byte (else
    /// the name length is 16 bits).
    pub fn has_filetype(&self) -> bool {
        self.has_incompat(Incompat::FILETYPE)
    }

    /// The absolute offset of a superblock field, for error messages.
    pub fn offset_of(field: &'static Field) -> u64 {
        OFFSET.saturating_add(u64::try_from(field.offset).unwrap_or(0))
    }

    /// Decodes the 1024 superblock bytes (`base` is their offset on the
    /// disk, kept in every field).
    ///
    /// # Errors
    /// `NotExt` without the magic; `Corrupt` for values no filesystem can
    /// have (block size, group geometry), naming the field.
    pub fn decode(bytes: &[u8], base: u64) -> Result<Superblock, FsError> {
        let Some(bytes) = bytes.get(..SIZE) else {
            return Err(FsError::NotExt {
                detail: format!(
                    "the disk is too small for a superblock ({} bytes at {base:#x})",
                    bytes.len()
                ),
            });
        };
        let get = |f: &'static Field| f.le(bytes).unwrap_or(0);
        let word = |f: &'static Field| u32::try_from(get(f)).unwrap_or(u32::MAX);
        let magic = get(sb!("s_magic"));
        if magic != u64::from(MAGIC) {
            return Err(FsError::NotExt {
                detail: format!(
                    "magic {magic:#06x} at {:#x}, expected 0xef53",
                    base.saturating_add(0x38)
                ),
            });
        }
        let bad = |field: &'static Field, detail: String| {
            FsError::corrupt(
                "superblock",
                field.name,
                base.saturating_add(u64::try_from(field.offset).unwrap_or(0)),
                detail,
            )
        };
        let log = get(sb!("s_log_block_size"));
        if log > 6 {
            return Err(bad(
                sb!("s_log_block_size"),
                format!("{log}: block size would be 1024 << {log}, at most 64 KiB exists"),
            ));
        }
        let block_size = 1024u64 << log;
        let incompat = Incompat::from_bits_retain(word(sb!("s_feature_incompat")));
        let ro_compat = RoCompat::from_bits_retain(word(sb!("s_feature_ro_compat")));
        let compat = Compat::from_bits_retain(word(sb!("s_feature_compat")));
        let blocks_count = get(sb!("s_blocks_count_lo"))
            | if incompat.contains(Incompat::BIT64) {
                get(sb!("s_blocks_count_hi")) << 32
            } else {
                0
            };
        if blocks_count
            .checked_mul(block_size)
            .is_none_or(|b| i64::try_from(b).is_err())
        {
            return Err(bad(
                sb!("s_blocks_count_lo"),
                format!("{blocks_count} blocks of {block_size} bytes is more than any disk"),
            ));
        }
        let blocks_per_group = word(sb!("s_blocks_per_group"));
        // e2fsprogs' limits (ext2fs_open2, which dumpe2fs refuses to go
        // past): at least 8 blocks per group, at most what the 16-bit free
        // counts of a descriptor can describe (65528 clusters).
        // ext2fs_open2's rules for clusters: without bigalloc a cluster is
        // a block; with it, a group's blocks are exactly its clusters
        // times the blocks of a cluster. A superblock breaking them (a
        // fuzzer's claimed 1 TiB clusters, 2^31 blocks a group) would
        // make every per-group count and bitmap meaningless.
        let log_cluster = get(sb!("s_log_cluster_size"));
        if !ro_compat.contains(RoCompat::BIGALLOC) && log_cluster != log {
            return Err(bad(
                sb!("s_log_cluster_size"),
                format!("{log_cluster}: without bigalloc it must equal s_log_block_size ({log})"),
            ));
        }
        let ratio_bits = log_cluster
            .checked_sub(log)
            .filter(|&b| b < 32)
            .and_then(|b| u32::try_from(b).ok());
        let clusters_per_group = word(sb!("s_clusters_per_group"));
        let Some(ratio_bits) = ratio_bits.filter(|&b| {
            u64::from(clusters_per_group).checked_shl(b) == Some(u64::from(blocks_per_group))
        }) else {
            return Err(bad(
                sb!("s_clusters_per_group"),
                format!(
                    "{clusters_per_group} clusters a group (s_log_cluster_size {log_cluster}) do not make its {blocks_per_group} blocks (s_log_block_size {log})"
                ),
            ));
        };
        let cluster_ratio = 1u64 << ratio_bits;
        let max_per_group = MAX_CLUSTERS_PER_GROUP.saturating_mul(cluster_ratio);
        if u64::from(blocks_per_group) < MIN_BLOCKS_PER_GROUP
            || u64::from(blocks_per_group) > max_per_group
        {
            return Err(bad(
                sb!("s_blocks_per_group"),
                format!(
                    "{blocks_per_group}: expected {MIN_BLOCKS_PER_GROUP} to {max_per_group} blocks per group"
                ),
            ));
        }
        let first_data_block = get(sb!("s_first_data_block"));
        if !incompat.contains(Incompat::JOURNAL_DEV) && first_data_block >= blocks_count {
            return Err(bad(
                sb!("s_first_data_block"),
                format!("{first_data_block}: expected below the block count {blocks_count}"),
            ));
        }
        let groups = blocks_count
            .saturating_sub(first_data_block)
            .div_ceil(u64::from(blocks_per_group));
        if groups > u64::from(u32::MAX) {
            return Err(bad(
                sb!("s_blocks_count_lo"),
                format!("{blocks_count} blocks make {groups} groups, more than 2^32"),
            ));
        }
        let inodes_per_group = word(sb!("s_inodes_per_group"));
        // An external journal device has no inodes.
        if inodes_per_group == 0 && !incompat.contains(Incompat::JOURNAL_DEV) {
            return Err(bad(sb!("s_inodes_per_group"), "0".into()));
        }
        let rev_level = word(sb!("s_rev_level"));
        let inode_size = if rev_level == 0 {
            128
        } else {
            u16::try_from(get(sb!("s_inode_size"))).unwrap_or(0)
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || u64::from(inode_size) > block_size {
            return Err(bad(
                sb!("s_inode_size"),
                format!("{inode_size}: expected a power of two from 128 to the block size"),
            ));
        }
        let checksum = ro_compat.contains(RoCompat::METADATA_CSUM).then(|| Check {
            stored: word(sb!("s_checksum")),
            computed: super::checksum::crc32c_raw(!0, bytes.get(..0x3fc).unwrap_or(bytes)),
        });
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(sb!("s_uuid").bytes(bytes));
        let mut hash_seed = [0u8; 16];
        hash_seed.copy_from_slice(sb!("s_hash_seed").bytes(bytes));
        let stored_seed = incompat
            .contains(Incompat::METADATA_CSUM_SEED)
            .then(|| word(sb!("s_checksum_seed")));
        let csum_seed = super::checksum::fs_seed(&uuid, stored_seed);
        let desc_size = if incompat.contains(Incompat::BIT64) {
            u16::try_from(get(sb!("s_desc_size"))).unwrap_or(0)
        } else {
            32
        };
        Ok(Superblock {
            block_size,
            blocks_count,
            inodes_count: word(sb!("s_inodes_count")),
            first_data_block: word(sb!("s_first_data_block")),
            blocks_per_group,
            inodes_per_group,
            inode_size,
            rev_level,
            feature_compat: compat,
            feature_incompat: incompat,
            feature_ro_compat: ro_compat,
            desc_size,
            first_meta_bg: word(sb!("s_first_meta_bg")),
            uuid,
            hash_seed,
            csum_seed,
            clusters_per_group: word(sb!("s_clusters_per_group")),
            checksum,
            raw: bytes.to_vec(),
            base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_names_as_e2fsprogs_prints_them() {
        let names = feature_names(
            Compat::HAS_JOURNAL | Compat::from_bits_retain(0x8000),
            Incompat::BIT64 | Incompat::FILETYPE,
            RoCompat::READ_ONLY | RoCompat::METADATA_CSUM,
        );
        assert_eq!(
            names,
            [
                "has_journal",
                "FEATURE_C15",
                "filetype",
                "64bit",
                "metadata_csum",
                "read-only"
            ]
        );
    }
}
