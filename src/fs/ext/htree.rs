//! Hashed directory index (htree, the dir_index feature): block 0 of an
//! indexed directory is the root (`.` and `..` entries, the root info, a
//! count/limit header and `(hash, block)` entries); inner index nodes are
//! blocks with one empty entry spanning the block, then the same
//! count/limit header. With metadata_csum an 8-byte tail follows the
//! `limit` entry slots.
use crate::layout::{decode_table, Endian, Field, FieldValue};

use super::blockmap::{le16, le32};
use super::checksum::{crc32c_raw, Check};
use super::error::FsError;
use crate::bytes::u64_of;

/// `struct dx_root_info` (at byte 24 of the root block).
pub const ROOT_INFO: &[Field] = &[
    Field::new("reserved_zero", 0x18, 4, "0"),
    Field::new(
        "hash_version",
        0x1c,
        1,
        "0 legacy, 1 half_md4, 2 tea, 6 siphash (+3 unsigned)",
    ),
    Field::new("info_length", 0x1d, 1, "8"),
    Field::new("indirect_levels", 0x1e, 1, "index levels below the root"),
    Field::new("unused_flags", 0x1f, 1, "unused"),
];

/// `struct dx_countlimit`, then the first block (its hash is implied 0).
pub const COUNT_LIMIT: &[Field] = &[
    Field::new("limit", 0x0, 2, "entries that fit"),
    Field::new("count", 0x2, 2, "entries in use"),
    Field::new("block", 0x4, 4, "first child (hashes below the next entry)"),
];

/// Fields of the tables, found when compiling.
macro_rules! ri {
    ($name:literal) => {
        $crate::layout::field!(ROOT_INFO, $name)
    };
}
macro_rules! cl {
    ($name:literal) => {
        $crate::layout::field!(COUNT_LIMIT, $name)
    };
}

/// The deepest index the kernel builds without large_dir (3 with it).
pub const MAX_LEVELS: u8 = 3;

/// Where the count/limit header starts in a root and in an inner node.
pub const ROOT_COUNT_AT: usize = 0x20;
pub const NODE_COUNT_AT: usize = 0x8;

/// A decoded index block (root or inner node).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DxNode {
    /// The root info (root only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub info: Vec<FieldValue>,
    pub hash_version: u8,
    pub indirect_levels: u8,
    pub limit: u16,
    pub count: u16,
    /// `(hash, logical block)`; the first hash is 0.
    pub entries: Vec<(u32, u32)>,
    /// The tail's checksum (metadata_csum).
    pub checksum: Option<Check>,
}

/// Decodes an index block: the root when `root`, else an inner node.
/// `inode_seed` checks the tail when the filesystem has metadata_csum.
///
/// # Errors
/// `Corrupt` for a root info that is not 8 bytes, too many levels, or a
/// count over the limit or past the block.
pub fn decode(
    block: &[u8],
    base: u64,
    root: bool,
    inode_seed: Option<u32>,
) -> Result<DxNode, FsError> {
    let at = if root { ROOT_COUNT_AT } else { NODE_COUNT_AT };
    let structure = if root { "htree root" } else { "htree node" };
    let Some(room) = block
        .len()
        .checked_sub(at)
        .map(|r| r / 8)
        .filter(|&r| r >= 1)
    else {
        return Err(FsError::corrupt(
            structure,
            "limit",
            base,
            "block too small",
        ));
    };
    let (mut hash_version, mut levels, mut info) = (0, 0, Vec::new());
    if root {
        info = decode_table(ROOT_INFO, block, Endian::Little, base);
        let byte = |f: &Field| u8::try_from(f.le(block).unwrap_or(0)).unwrap_or(0);
        hash_version = byte(ri!("hash_version"));
        levels = byte(ri!("indirect_levels"));
        let info_length = byte(ri!("info_length"));
        if info_length != 8 {
            return Err(FsError::corrupt(
                structure,
                "info_length",
                base.saturating_add(0x1d),
                format!("{info_length}, expected 8"),
            ));
        }
        if levels > MAX_LEVELS {
            return Err(FsError::corrupt(
                structure,
                "indirect_levels",
                base.saturating_add(0x1e),
                format!("{levels}, expected at most {MAX_LEVELS}"),
            ));
        }
    }
    let header = block.get(at..).unwrap_or_default();
    let half = |f: &Field| u16::try_from(f.le(header).unwrap_or(0)).unwrap_or(0);
    let limit = half(cl!("limit"));
    let count = half(cl!("count"));
    if count == 0 || count > limit || usize::from(limit) > room {
        return Err(FsError::corrupt(
            structure,
            "count",
            base.saturating_add(u64_of(at)).saturating_add(2),
            format!("count {count}, limit {limit}: expected 1 <= count <= limit <= {room}"),
        ));
    }
    // count <= limit <= room: every slot is inside the block.
    let slots = block.get(at..).unwrap_or_default();
    let entries = slots
        .chunks_exact(8)
        .take(usize::from(count))
        .enumerate()
        .map(|(i, e)| {
            let hash = if i == 0 { 0 } else { le32(e, 0) };
            (hash, le32(e, 4))
        })
        .collect();
    // The tail sits after `limit` slots, when there is room for it.
    let checksum = inode_seed.and_then(|seed| {
        let tail = at.checked_add(usize::from(limit).checked_mul(8)?)?;
        let t = crate::bytes::slice(block, tail, 8)?;
        let used = at.checked_add(usize::from(count).checked_mul(8)?)?;
        let mut c = crc32c_raw(seed, block.get(..used)?);
        c = crc32c_raw(c, t.get(..4)?);
        c = crc32c_raw(c, &[0; 4]);
        Some(Check {
            stored: le32(t, 4),
            computed: c,
        })
    });
    Ok(DxNode {
        info,
        hash_version,
        indirect_levels: levels,
        limit,
        count,
        entries,
        checksum,
    })
}

/// Whether a directory block looks like an inner index node: one unused
/// entry spanning the whole block.
pub fn is_node(block: &[u8]) -> bool {
    block.len() >= 12
        && le32(block, 0) == 0
        && usize::from(le16(block, 4)) == block.len().min(65535)
        && block.get(6) == Some(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_block(count: u16, limit: u16) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0..4].copy_from_slice(&2u32.to_le_bytes());
        b[4..6].copy_from_slice(&12u16.to_le_bytes());
        b[6] = 1;
        b[12..16].copy_from_slice(&2u32.to_le_bytes());
        b[16..18].copy_from_slice(&1012u16.to_le_bytes());
        b[18] = 2;
        b[0x1c] = 1;
        b[0x1d] = 8;
        b[0x20..0x22].copy_from_slice(&limit.to_le_bytes());
        b[0x22..0x24].copy_from_slice(&count.to_le_bytes());
        b[0x24..0x28].copy_from_slice(&1u32.to_le_bytes());
        b[0x28..0x2c].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        b[0x2c..0x30].copy_from_slice(&2u32.to_le_bytes());
        b
    }

    #[test]
    fn root_entries_and_tail_checksum() {
        let mut b = root_block(2, 123);
        let seed = 7;
        let d = decode(&b, 0, true, Some(seed)).unwrap();
        assert_eq!(d.hash_version, 1);
        assert_eq!(d.entries, [(0, 1), (0x8000_0000, 2)]);
        let c = d.checksum.unwrap();
        assert!(!c.ok());
        let tail = 0x20 + 123 * 8;
        b[tail + 4..tail + 8].copy_from_slice(&c.computed.to_le_bytes());
        assert!(decode(&b, 0, true, Some(seed))
            .unwrap()
            .checksum
            .unwrap()
            .ok());
    }

    #[test]
    fn impossible_counts_are_errors() {
        let b = root_block(5, 2);
        let e = decode(&b, 0x400, true, None).unwrap_err().to_string();
        assert!(
            e.contains("at 0x422") && e.contains("count 5, limit 2"),
            "{e}"
        );
        let b = root_block(1, 2000);
        assert!(decode(&b, 0, true, None).is_err());
        let mut b = root_block(1, 2);
        b[0x1e] = 9;
        let e = decode(&b, 0, true, None).unwrap_err().to_string();
        assert!(e.contains("indirect_levels"), "{e}");
    }
}
