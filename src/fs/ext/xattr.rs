//! Extended attributes: in the inode (after `128 + i_extra_isize`: a
//! 4-byte magic, then entries, values counted from the first entry) and in
//! one block (`i_file_acl`: a 32-byte header, entries, values counted from
//! the block start). Entries end with four zero bytes; values may also
//! live in their own inode (ea_inode), which is named, not read.
use crate::bytes::u64_of;
use crate::layout::{decode_table, Endian, Field, FieldValue};

use super::blockmap::le32;
use super::checksum::{crc32c_raw, Check};
use super::error::FsError;

/// `h_magic` / the in-inode magic.
pub const MAGIC: u32 = 0xea02_0000;

/// `struct ext4_xattr_header` (the block header).
pub const BLOCK_HEADER: &[Field] = &[
    Field::new("h_magic", 0x0, 4, "0xEA020000"),
    Field::new("h_refcount", 0x4, 4, "inodes sharing the block"),
    Field::new("h_blocks", 0x8, 4, "blocks used (always 1)"),
    Field::new("h_hash", 0xc, 4, "hash of all attributes"),
    Field::new("h_checksum", 0x10, 4, "crc32c of the block"),
];

/// `struct ext4_xattr_entry` (the name follows).
pub const ENTRY: &[Field] = &[
    Field::new("e_name_len", 0x0, 1, "name length"),
    Field::new(
        "e_name_index",
        0x1,
        1,
        "name prefix (1 user., 7 system., …)",
    ),
    Field::new("e_value_offs", 0x2, 2, "value offset"),
    Field::new("e_value_inum", 0x4, 4, "inode holding the value (ea_inode)"),
    Field::new("e_value_size", 0x8, 4, "value size"),
    Field::new("e_hash", 0xc, 4, "hash of name and value"),
];

/// A field of [`ENTRY`], found when compiling.
macro_rules! xe {
    ($name:literal) => {
        $crate::layout::field!(ENTRY, $name)
    };
}

/// Name prefixes by index (e2fsprogs' `ea_names`).
const PREFIXES: &[(u8, &str)] = &[
    (1, "user."),
    (2, "system.posix_acl_access"),
    (3, "system.posix_acl_default"),
    (4, "trusted."),
    (6, "security."),
    (7, "system."),
    (8, "system.richacl"),
    (10, "gnu."),
];

/// One attribute.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Xattr {
    /// The full name, prefix included (raw bytes: names are not
    /// necessarily UTF-8). An unknown prefix index adds nothing, as in
    /// e2fsprogs.
    #[serde(skip)]
    pub name: Vec<u8>,
    /// `e_name_index`: which prefix the name has.
    pub name_index: u8,
    /// `e_name_len`: the name's length without the prefix.
    pub name_len: u8,
    /// `e_hash` as stored (0: not set).
    pub hash: u32,
    /// The value, unless it lives in another inode.
    #[serde(skip)]
    pub value: Vec<u8>,
    pub value_size: u32,
    /// The inode holding the value (ea_inode), not read here.
    pub value_inum: u32,
    /// The disk offset of the entry.
    pub offset: u64,
    /// True for attributes in the inode, false for the block.
    pub in_inode: bool,
}

impl Xattr {
    /// The name for display, escaped for terminals.
    pub fn display_name(&self) -> String {
        crate::escape::printable_bytes(&self.name)
    }
}

fn prefix(index: u8) -> Option<&'static str> {
    PREFIXES.iter().find(|(i, _)| *i == index).map(|(_, p)| *p)
}

/// The entry hash (e2fsprogs' `ext2fs_ext_attr_hash_entry` and its
/// signed-char twin, both accepted): the name, then the value as
/// little-endian words or, for a value in an attribute inode, that inode's
/// hash (its `i_atime`). Returns (unsigned, signed).
pub fn entry_hash(x: &Xattr, ea_inode_hash: Option<u32>) -> (u32, u32) {
    let suffix = x
        .name
        .get(x.name.len().saturating_sub(usize::from(x.name_len))..)
        .unwrap_or_default();
    let name = |signed: bool| {
        suffix.iter().fold(0u32, |h, &c| {
            let c = if signed {
                // C's signed char, sign-extended to 32 bits.
                u32::from_le_bytes(i32::from(i8::from_le_bytes([c])).to_le_bytes())
            } else {
                u32::from(c)
            };
            (h << 5) ^ (h >> 27) ^ c
        })
    };
    let value = |mut h: u32| {
        match ea_inode_hash {
            Some(v) => h = (h << 16) ^ (h >> 16) ^ v,
            None => {
                for w in x.value.chunks(4) {
                    let mut b = [0u8; 4];
                    for (d, s) in b.iter_mut().zip(w) {
                        *d = *s;
                    }
                    h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(b);
                }
            }
        }
        h
    };
    (value(name(false)), value(name(true)))
}

/// Decodes the entries in `area[entries_at..]`, values at `value_base +
/// e_value_offs` in `area`, `base` being the disk offset of `area`.
fn entries(
    area: &[u8],
    entries_at: usize,
    value_base: usize,
    base: u64,
    in_inode: bool,
    structure: &'static str,
) -> Result<Vec<Xattr>, FsError> {
    // First the end of the entry table (and its 4-byte terminator):
    // values may not overlap it.
    let mut table_end = entries_at;
    // Positions stay below area.len() + 16 + 255 + 3: sums saturate only
    // in theory, and a saturated position ends the walk.
    while table_end.saturating_add(16) <= area.len() && le32(area, table_end) != 0 {
        let name_len = area.get(table_end).copied().unwrap_or(0);
        table_end = table_end
            .saturating_add(16)
            .saturating_add(usize::from(name_len))
            .checked_next_multiple_of(4)
            .unwrap_or(usize::MAX);
    }
    let mut out = Vec::new();
    let mut pos = entries_at;
    // Every entry takes at least 16 bytes: the loop ends.
    while pos.saturating_add(4) <= area.len() && le32(area, pos) != 0 {
        let at = base.saturating_add(u64_of(pos));
        if pos.saturating_add(16) > area.len() {
            return Err(FsError::corrupt(
                structure,
                "e_name_len",
                at,
                "entry runs past the end of the area",
            ));
        }
        let e = crate::bytes::slice(area, pos, 16).unwrap_or_default();
        let u = |f: &Field| f.le(e).unwrap_or(0);
        let word = |f: &Field| u32::try_from(u(f)).unwrap_or(0);
        let name_len = usize::try_from(u(xe!("e_name_len"))).unwrap_or(0);
        let index = u8::try_from(u(xe!("e_name_index"))).unwrap_or(0);
        let value_offs = usize::try_from(u(xe!("e_value_offs"))).unwrap_or(0);
        let value_inum = word(xe!("e_value_inum"));
        let value_size = word(xe!("e_value_size"));
        let name_end = pos.saturating_add(16).saturating_add(name_len);
        let Some(suffix) = area.get(pos.saturating_add(16)..name_end) else {
            return Err(FsError::corrupt(
                structure,
                "e_name_len",
                at,
                format!("name of {name_len} bytes runs past the end of the area"),
            ));
        };
        let mut name = prefix(index).unwrap_or("").as_bytes().to_vec();
        name.extend_from_slice(suffix);
        let value = if value_inum != 0 {
            if value_offs != 0 {
                return Err(FsError::corrupt(
                    structure,
                    "e_value_offs",
                    at.saturating_add(2),
                    format!("{value_offs} for a value in inode {value_inum}, expected 0"),
                ));
            }
            Vec::new()
        } else {
            let start = value_base.saturating_add(value_offs);
            let table_stop = table_end.saturating_add(4);
            if value_size > 0 && start < table_stop {
                return Err(FsError::corrupt(
                    structure,
                    "e_value_offs",
                    at.saturating_add(2),
                    format!(
                        "value at {value_offs} overlaps the entry table, expected at least {}",
                        table_stop.saturating_sub(value_base)
                    ),
                ));
            }
            match area.get(start..start.saturating_add(crate::bytes::us(value_size))) {
                Some(v) => v.to_vec(),
                None => {
                    return Err(FsError::corrupt(
                        structure,
                        "e_value_offs",
                        at.saturating_add(2),
                        format!(
                            "value of {value_size} bytes at {value_offs} runs past the end of the area ({} bytes)",
                            area.len().saturating_sub(value_base)
                        ),
                    ))
                }
            }
        };
        out.push(Xattr {
            name,
            name_index: index,
            name_len: u8::try_from(name_len).unwrap_or(0),
            hash: word(xe!("e_hash")),
            value,
            value_size,
            value_inum,
            offset: at,
            in_inode,
        });
        pos = name_end.checked_next_multiple_of(4).unwrap_or(usize::MAX);
    }
    Ok(out)
}

/// The attributes in an inode's extra space (`area` from
/// `128 + i_extra_isize` to the inode's end, at disk offset `base`).
/// Without the magic there are none.
///
/// # Errors
/// `Corrupt` for an entry or value outside the area.
pub fn decode_ibody(area: &[u8], base: u64) -> Result<Vec<Xattr>, FsError> {
    if area.len() < 4 || le32(area, 0) != MAGIC {
        return Ok(Vec::new());
    }
    entries(
        area.get(4..).unwrap_or_default(),
        0,
        0,
        base.saturating_add(4),
        true,
        "in-inode extended attributes",
    )
}

/// A decoded attribute block.
#[derive(Clone, Debug)]
pub struct XattrBlock {
    pub header: Vec<FieldValue>,
    pub refcount: u32,
    pub attrs: Vec<Xattr>,
}

impl XattrBlock {
    /// Decodes the block `bytes` at disk offset `base`.
    ///
    /// # Errors
    /// `Corrupt` for a bad magic or an entry or value outside the block.
    pub fn decode(bytes: &[u8], base: u64) -> Result<XattrBlock, FsError> {
        let magic = if bytes.len() >= 32 { le32(bytes, 0) } else { 0 };
        if magic != MAGIC {
            return Err(FsError::corrupt(
                "extended attribute block",
                "h_magic",
                base,
                format!("{magic:#010x}, expected {MAGIC:#010x}"),
            ));
        }
        let blocks = le32(bytes, 8);
        if blocks != 1 {
            return Err(FsError::corrupt(
                "extended attribute block",
                "h_blocks",
                base.saturating_add(8),
                format!("{blocks}, expected 1"),
            ));
        }
        Ok(XattrBlock {
            header: decode_table(BLOCK_HEADER, bytes, Endian::Little, base),
            refcount: le32(bytes, 4),
            attrs: entries(bytes, 32, 0, base, false, "extended attribute block")?,
        })
    }

    /// The block's checksum (the kernel's `ext4_xattr_block_csum`): crc32c
    /// from the filesystem seed over the block number and the block with
    /// `h_checksum` as zeros.
    pub fn checksum(bytes: &[u8], block: u64, fs_seed: u32) -> Check {
        let mut c = crc32c_raw(fs_seed, &block.to_le_bytes());
        c = crc32c_raw(c, bytes.get(..0x10).unwrap_or_default());
        c = crc32c_raw(c, &[0; 4]);
        c = crc32c_raw(c, bytes.get(0x14..).unwrap_or_default());
        Check {
            stored: le32(bytes, 0x10),
            computed: c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u8, name: &[u8], offs: u16, size: u32) -> Vec<u8> {
        let mut e = vec![name.len() as u8, index];
        e.extend(offs.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        e.extend(size.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        e.extend(name);
        while e.len() % 4 != 0 {
            e.push(0);
        }
        e
    }

    #[test]
    fn in_inode_attributes_with_values_counted_from_the_first_entry() {
        let mut area = MAGIC.to_le_bytes().to_vec();
        area.extend(entry(7, b"data", 60, 5));
        area.extend(entry(1, b"colour", 68, 3));
        area.extend([0u8; 4]);
        area.resize(4 + 60, 0);
        area.extend(b"hello\0\0\0red");
        area.resize(96, 0);
        let x = decode_ibody(&area, 0x1080).unwrap();
        assert_eq!(x.len(), 2);
        assert_eq!(x[0].name, b"system.data");
        assert_eq!(x[0].value, b"hello");
        assert_eq!(x[0].offset, 0x1084);
        assert_eq!(x[1].name, b"user.colour");
        assert_eq!(x[1].value, b"red");
        assert!(decode_ibody(&[0u8; 96], 0).unwrap().is_empty());
    }

    #[test]
    fn entry_hash_as_e2fsprogs() {
        let mut area = MAGIC.to_le_bytes().to_vec();
        area.extend(entry(1, b"test", 60, 5));
        area.extend([0u8; 4]);
        area.resize(64, 0);
        area.extend(b"value");
        area.resize(96, 0);
        let x = &decode_ibody(&area, 0).unwrap()[0];
        // user.test = "value" (the corpus' f_ea_checks image stores a
        // damaged 0x624eef1d for it, which e2fsprogs rejects too).
        assert_eq!(entry_hash(x, None).0, 0x614d_ef1d);
        // High bytes make the two variants differ.
        let mut y = x.clone();
        y.name = b"user.\xe9".to_vec();
        y.name_len = 1;
        let (u, s) = entry_hash(&y, Some(7));
        assert_ne!(u, s);
    }

    #[test]
    fn values_overlapping_the_entries_are_errors() {
        let mut area = MAGIC.to_le_bytes().to_vec();
        area.extend(entry(1, b"one", 4, 3));
        area.extend([0u8; 4]);
        area.resize(96, 0);
        let e = decode_ibody(&area, 0).unwrap_err().to_string();
        assert!(
            e.contains("overlaps the entry table, expected at least 24"),
            "{e}"
        );
    }

    #[test]
    fn values_outside_the_area_are_errors() {
        let mut area = MAGIC.to_le_bytes().to_vec();
        area.extend(entry(1, b"x", 60, 1000));
        area.resize(96, 0);
        let e = decode_ibody(&area, 0x1080).unwrap_err().to_string();
        assert!(
            e.contains("at 0x1086") && e.contains("e_value_offs") && e.contains("1000 bytes"),
            "{e}"
        );
    }

    #[test]
    fn block_with_checksum() {
        let mut b = MAGIC.to_le_bytes().to_vec();
        b.extend(1u32.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        b.resize(32, 0);
        b.extend(entry(6, b"selinux", 1000, 4));
        b.resize(1000, 0);
        b.extend(b"ctx\0");
        b.resize(1024, 0);
        let e = XattrBlock::decode(&b, 0x2000).unwrap_err().to_string();
        assert!(e.contains("h_blocks: 2, expected 1"), "{e}");
        b[8] = 1;
        let x = XattrBlock::decode(&b, 0x2000).unwrap();
        assert_eq!(x.attrs[0].name, b"security.selinux");
        assert_eq!(x.attrs[0].value, b"ctx\0");
        let c = XattrBlock::checksum(&b, 8, 1).computed;
        b[0x10..0x14].copy_from_slice(&c.to_le_bytes());
        assert!(XattrBlock::checksum(&b, 8, 1).ok());
        assert!(!XattrBlock::checksum(&b, 9, 1).ok());
        let e = XattrBlock::decode(&[0u8; 1024], 0x2000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("h_magic") && e.contains("0xea020000"), "{e}");
    }
}
