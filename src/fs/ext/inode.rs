//! Inodes: 128 bytes plus `i_extra_isize` more in large inodes,
//! little-endian, found through their group's inode table.
use crate::layout::{decode_table, Endian, Field, FieldValue, Kind};

/// Every field of the on-disk inode (kernel names).
pub const INODE: &[Field] = &[
    Field::new("i_mode", 0x0, 2, "type and permissions"),
    Field::new("i_uid", 0x2, 2, "owner (low)"),
    Field::new("i_size_lo", 0x4, 4, "size (low)"),
    Field::new("i_atime", 0x8, 4, "access time"),
    Field::new("i_ctime", 0xc, 4, "change time"),
    Field::new("i_mtime", 0x10, 4, "modification time"),
    Field::new("i_dtime", 0x14, 4, "deletion time"),
    Field::new("i_gid", 0x18, 2, "group (low)"),
    Field::new("i_links_count", 0x1a, 2, "hard links"),
    Field::new("i_blocks_lo", 0x1c, 4, "blocks (low)"),
    Field::new("i_flags", 0x20, 4, "flags"),
    Field::new("i_version", 0x24, 4, "version (osd1)"),
    Field::of(
        Kind::Bytes,
        "i_block",
        0x28,
        60,
        "block map, extent tree root or inline data",
    ),
    Field::new("i_generation", 0x64, 4, "generation (NFS)"),
    Field::new("i_file_acl_lo", 0x68, 4, "extended attribute block (low)"),
    Field::new("i_size_high", 0x6c, 4, "size (high)"),
    Field::new("i_obso_faddr", 0x70, 4, "obsolete fragment address"),
    Field::new("i_blocks_high", 0x74, 2, "blocks (high)"),
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

/// Inode flags that change how the block map is read.
pub const EXTENTS_FL: u32 = 0x80000;
pub const INLINE_DATA_FL: u32 = 0x1000_0000;
pub const INDEX_FL: u32 = 0x1000;

/// A decoded inode. The full field list is decoded on demand
/// ([`Inode::fields`]): a walk over thousands of inodes needs only the few
/// facts kept here.
#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u64,
    /// The on-disk bytes (128 + i_extra_isize at most) and their offset.
    raw: Vec<u8>,
    base: u64,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    pub blocks: u64,
    pub block: [u8; 60],
    pub mtime: i64,
}

impl Inode {
    /// Decodes inode `ino` from its bytes at disk offset `base`; fields
    /// past 128 + i_extra_isize do not exist in this inode.
    pub fn decode(ino: u64, bytes: &[u8], base: u64) -> Inode {
        let extra = bytes
            .get(0x80..0x82)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let end = if bytes.len() > 128 {
            (128 + extra).min(bytes.len())
        } else {
            bytes.len().min(128)
        };
        let raw = bytes[..end].to_vec();
        let le = |at: usize, n: usize| -> u64 {
            raw.get(at..at + n).map_or(0, |b| {
                b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x))
            })
        };
        let field = |name: &str| {
            INODE
                .iter()
                .find(|f| f.name == name)
                .map_or(0, |f| le(f.offset, f.size))
        };
        let get = field;
        let mut block = [0u8; 60];
        if let Some(b) = bytes.get(0x28..0x64) {
            block.copy_from_slice(b);
        }
        let extra_time = get("i_mtime_extra");
        // The two low bits of *_extra extend the signed 32-bit seconds.
        let mtime = i64::from(get("i_mtime") as u32 as i32) + (((extra_time & 3) as i64) << 32);
        Inode {
            ino,
            mode: get("i_mode") as u16,
            uid: (get("i_uid") | get("i_uid_high") << 16) as u32,
            gid: (get("i_gid") | get("i_gid_high") << 16) as u32,
            size: get("i_size_lo") | get("i_size_high") << 32,
            links: get("i_links_count") as u16,
            flags: get("i_flags") as u32,
            blocks: get("i_blocks_lo") | get("i_blocks_high") << 32,
            block,
            mtime,
            raw,
            base,
        }
    }

    /// Every field with its disk offset, for `stat` and the hex view.
    pub fn fields(&self) -> Vec<FieldValue> {
        decode_table(INODE, &self.raw, Endian::Little, self.base)
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
}
