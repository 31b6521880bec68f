//! Revoke blocks (`jbd2_journal_revoke_header_t`): filesystem blocks
//! whose earlier copies in the log must not be replayed (they were freed
//! and may hold data now). `r_count` is the bytes used, header included;
//! records are 4 bytes, or 8 with the 64bit feature.
use crate::layout::Field;

use super::{be32, be64, Geometry};

/// `jbd2_journal_revoke_header_t`.
pub const REVOKE: &[Field] = &[
    Field::new("h_magic", 0x0, 4, "0xC03B3998"),
    Field::new("h_blocktype", 0x4, 4, "5: revoke block"),
    Field::new("h_sequence", 0x8, 4, "the transaction revoking"),
    Field::new(
        "r_count",
        0xc,
        4,
        "bytes used in this block, header included",
    ),
];

/// Bytes of the header; records follow.
pub const HEADER_SIZE: usize = 16;

/// The records of a revoke block.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Revokes {
    pub r_count: u32,
    pub blocks: Vec<u64>,
    /// `r_count` is larger than the block (less its checksum tail): the
    /// kernel's `scan_revoke_records` fails recovery with `EINVAL`.
    pub count_past_block: bool,
}

/// Decodes the records as the kernel does (with a count past the block,
/// as many as the block holds, the way `debugfs logdump` shows them).
pub fn decode(geo: &Geometry, block: &[u8]) -> Revokes {
    let r_count = be32(block, 0xc).unwrap_or(0);
    let limit = block.len().saturating_sub(geo.tail_bytes());
    let count = usize::try_from(r_count).unwrap_or(usize::MAX);
    let count_past_block = count > limit;
    let max = count.min(limit);
    let len = if geo.is_64bit() { 8 } else { 4 };
    let mut blocks = Vec::new();
    let mut at = HEADER_SIZE;
    while at.checked_add(len).is_some_and(|end| end <= max) {
        let b = if len == 8 {
            be64(block, at)
        } else {
            be32(block, at).map(u64::from)
        };
        if let Some(b) = b {
            blocks.push(b);
        }
        at = at.saturating_add(len);
    }
    Revokes {
        r_count,
        blocks,
        count_past_block,
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        let mut sb = vec![0u8; 1024];
        sb[..4].copy_from_slice(&super::super::MAGIC.to_be_bytes());
        sb[4..8].copy_from_slice(&4u32.to_be_bytes());
        Geometry::decode(&sb).unwrap()
    }

    #[test]
    fn records_up_to_r_count_and_a_count_past_the_block() {
        let mut b = vec![0u8; 64];
        b[0xc..0x10].copy_from_slice(&24u32.to_be_bytes());
        b[16..20].copy_from_slice(&7u32.to_be_bytes());
        b[20..24].copy_from_slice(&9u32.to_be_bytes());
        b[24..28].copy_from_slice(&11u32.to_be_bytes());
        let r = decode(&geo(), &b);
        assert_eq!((r.blocks.clone(), r.count_past_block), (vec![7, 9], false));
        b[0xc..0x10].copy_from_slice(&5000u32.to_be_bytes());
        let r = decode(&geo(), &b);
        assert!(r.count_past_block);
        assert_eq!(r.blocks.len(), 12, "the whole block, no further");
    }
}
