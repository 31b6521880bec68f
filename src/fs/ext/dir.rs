//! Directory blocks: a chain of entries (inode, record length, name
//! length, file type, name), the last one spanning to the end of the
//! block; with metadata_csum, a 12-byte tail entry holding the block's
//! crc32c. Reading every block of a directory linearly lists htree
//! directories too: their index blocks ([`super::htree`]) look like empty
//! entries, and their leaves are ordinary entry blocks.
use crate::layout::Field;

use super::checksum::{crc32c_raw, Check};
use super::error::FsError;
use crate::bytes::u64_of;

/// `struct ext4_dir_entry_2` (the name follows).
pub const ENTRY: &[Field] = &[
    Field::new("inode", 0x0, 4, "inode number (0: unused)"),
    Field::new("rec_len", 0x4, 2, "bytes to the next entry"),
    Field::new("name_len", 0x6, 1, "name length"),
    Field::new(
        "file_type",
        0x7,
        1,
        "1 file, 2 dir, 3 chr, 4 blk, 5 fifo, 6 sock, 7 symlink",
    ),
];

/// A field of [`ENTRY`], found when compiling.
macro_rules! de {
    ($name:literal) => {
        $crate::layout::field!(ENTRY, $name)
    };
}

/// The tail entry's size and its marker in `file_type`.
pub const TAIL_SIZE: usize = 12;
const TAIL_MARKER: u8 = 0xde;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub inode: u32,
    /// The name's raw bytes (may be any bytes but `/` and NUL).
    #[serde(skip)]
    pub name: Vec<u8>,
    pub file_type: u8,
    /// The disk offset of the entry (0 for the synthetic `.` and `..` of
    /// inline directories).
    pub offset: u64,
}

impl Entry {
    /// The name for display, escaped for terminals (bytes that are not
    /// UTF-8 as `\xNN`).
    pub fn display_name(&self) -> String {
        crate::escape::printable_bytes(&self.name)
    }

    pub fn is_dot_or_dotdot(&self) -> bool {
        self.name == b"." || self.name == b".."
    }
}

/// The kernel's `ext4_rec_len_from_disk`: 64 KiB blocks store lengths of
/// 65536 and more in the two low bits.
fn rec_len(raw: u16, block_len: usize) -> usize {
    if block_len < 65536 {
        return usize::from(raw);
    }
    match raw {
        0 | 65535 => block_len,
        r => usize::from(r & 65532) | (usize::from(r & 3) << 16),
    }
}

/// What one directory block holds.
#[derive(Debug, Default)]
pub struct DirBlock {
    pub entries: Vec<Entry>,
    /// The checksum tail's stored crc32c, when the block ends with one.
    pub tail: Option<u32>,
    /// A damaged entry: it and the rest of the block are not listed.
    pub error: Option<FsError>,
}

/// Decodes the entries of one directory block (or of an inline
/// directory's area) at disk offset `base`. A damaged entry ends the
/// block; the entries before it are kept.
pub fn decode_block(block: &[u8], base: u64) -> DirBlock {
    let mut out = DirBlock::default();
    let mut pos = 0usize;
    while let Some(e) = block.get(pos..).filter(|e| e.len() >= 8) {
        let u = |f: &Field| f.le(e).unwrap_or(0);
        let inode = u32::try_from(u(de!("inode"))).unwrap_or(0);
        let len = rec_len(u16::try_from(u(de!("rec_len"))).unwrap_or(0), block.len());
        let name_len = usize::from(u8::try_from(u(de!("name_len"))).unwrap_or(0));
        let file_type = u8::try_from(u(de!("file_type"))).unwrap_or(0);
        // `e` is `block[pos..]`: the entry fits when it fits in `e`.
        let at = base.saturating_add(u64_of(pos));
        if len < 8 || len % 4 != 0 || len > e.len() || name_len.saturating_add(8) > len {
            out.error = Some(FsError::corrupt(
                "directory entry",
                "rec_len",
                at,
                format!(
                    "rec_len {len} with name_len {name_len} at byte {pos} of a {}-byte block; expected a multiple of 4, at least 8 + name_len, within the block",
                    block.len()
                ),
            ));
            break;
        }
        let is_tail = inode == 0
            && len == TAIL_SIZE
            && name_len == 0
            && file_type == TAIL_MARKER
            && e.len() == TAIL_SIZE;
        if is_tail {
            out.tail = crate::bytes::le32(e, 8);
        } else if inode != 0 && name_len > 0 {
            // inode 0: an unused slot or an htree index node.
            out.entries.push(Entry {
                inode,
                name: crate::bytes::slice(e, 8, name_len)
                    .unwrap_or_default()
                    .to_vec(),
                file_type,
                offset: at,
            });
        }
        // len <= e.len() <= block.len() - pos: no overflow.
        pos = pos.saturating_add(len);
    }
    out
}

/// The checksum of a leaf block with a tail (the kernel's
/// `ext4_dirblock_csum`): crc32c from the inode's seed over the block up
/// to the tail.
pub fn leaf_checksum(block: &[u8], inode_seed: u32) -> Option<Check> {
    let tail = block.len().checked_sub(TAIL_SIZE)?;
    Some(Check {
        stored: crate::bytes::le32(block, tail.checked_add(8)?)?,
        computed: crc32c_raw(inode_seed, block.get(..tail)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(inode: u32, rec: u16, name: &[u8], ft: u8) -> Vec<u8> {
        let mut e = inode.to_le_bytes().to_vec();
        e.extend(rec.to_le_bytes());
        e.push(name.len() as u8);
        e.push(ft);
        e.extend(name);
        e.resize(usize::from(rec), 0);
        e
    }

    #[test]
    fn entries_and_checksum_tail() {
        let mut b = entry(2, 12, b".", 2);
        b.extend(entry(1, 12, b"..", 2));
        b.extend(entry(0, 16, b"", 0)); // a free slot
        b.extend(entry(13, 1024 - 40 - 12, "é x".as_bytes(), 1));
        b.extend(entry(0, 12, b"", 0xde));
        let seed = 42;
        let c = crc32c_raw(seed, &b[..1012]);
        b[1020..1024].copy_from_slice(&c.to_le_bytes());
        let d = decode_block(&b, 0x8000);
        assert!(d.error.is_none());
        let names: Vec<&[u8]> = d.entries.iter().map(|e| &e.name[..]).collect();
        assert_eq!(names, [&b"."[..], b"..", "é x".as_bytes()]);
        assert_eq!(d.entries[2].offset, 0x8000 + 40);
        assert_eq!(d.tail, Some(c));
        assert!(leaf_checksum(&b, seed).unwrap().ok());
    }

    #[test]
    fn a_bad_record_length_keeps_the_entries_before_it() {
        let mut b = entry(2, 12, b".", 2);
        b.extend(entry(5, 6, b"", 1)); // rec_len 6 < 8
        b.resize(1024, 0);
        let d = decode_block(&b, 0x8000);
        assert_eq!(d.entries.len(), 1);
        assert_eq!(
            d.error.unwrap().to_string(),
            "corrupt directory entry at 0x800c: rec_len: rec_len 6 with name_len 0 at byte 12 of a 1024-byte block; expected a multiple of 4, at least 8 + name_len, within the block"
        );
        // A zero-length record would loop forever; it ends the block.
        let d = decode_block(&[0u8; 1024], 0);
        assert!(d.entries.is_empty() && d.error.is_some());
    }

    #[test]
    fn big_blocks_encode_long_records_in_the_low_bits() {
        assert_eq!(rec_len(0, 65536), 65536);
        assert_eq!(rec_len(65535, 65536), 65536);
        assert_eq!(rec_len(12, 65536), 12);
        assert_eq!(rec_len(0, 4096), 0);
    }
}
