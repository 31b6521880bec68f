//! Descriptor blocks: after the header, one tag per logged block, each
//! naming the filesystem block the next log block is a copy of. A tag is
//! `journal_block_tag_t` (or `journal_block_tag3_t` with checksum v3),
//! followed by the journal UUID unless it has `SAME_UUID`; the last has
//! `LAST_TAG`. Tags are read as the kernel reads them (`count_tags` and
//! the replay loop): while a whole tag fits before the checksum tail.
use crate::layout::Field;

use super::{be16, be32, header, Geometry};

/// `journal_block_tag3_t` (checksum v3).
pub const TAG3: &[Field] = &[
    Field::new("t_blocknr", 0x0, 4, "filesystem block (low 32 bits)"),
    Field::new(
        "t_flags",
        0x4,
        4,
        "1 escaped, 2 same UUID, 4 deleted, 8 last tag",
    ),
    Field::new(
        "t_blocknr_high",
        0x8,
        4,
        "filesystem block (high 32 bits, 64bit)",
    ),
    Field::new("t_checksum", 0xc, 4, "crc32c(uuid + sequence + block)"),
];

/// `journal_block_tag_t` (no checksum or v2; 8 bytes without 64bit,
/// plus 2 with v2).
pub const TAG: &[Field] = &[
    Field::new("t_blocknr", 0x0, 4, "filesystem block (low 32 bits)"),
    Field::new(
        "t_checksum",
        0x4,
        2,
        "low 16 bits of crc32c(uuid + sequence + block) (v2)",
    ),
    Field::new(
        "t_flags",
        0x6,
        2,
        "1 escaped, 2 same UUID, 4 deleted, 8 last tag",
    ),
    Field::new(
        "t_blocknr_high",
        0x8,
        4,
        "filesystem block (high 32 bits, 64bit)",
    ),
];

/// Tag flags.
pub const FLAG_ESCAPE: u16 = 1;
pub const FLAG_SAME_UUID: u16 = 2;
pub const FLAG_DELETED: u16 = 4;
pub const FLAG_LAST_TAG: u16 = 8;

/// One tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tag {
    /// The filesystem block the logged block is a copy of.
    pub block: u64,
    pub flags: u16,
    /// The stored tag checksum (v2: 16 bits, v3: 32), when the journal
    /// has them.
    pub checksum: Option<u32>,
    /// Offset of the tag in its descriptor block.
    pub at: usize,
}

impl Tag {
    /// The logged block had the journal magic in its first bytes, which
    /// the log replaced with zeros: replay puts the magic back.
    pub fn escaped(&self) -> bool {
        self.flags & FLAG_ESCAPE != 0
    }
}

/// The tags of a descriptor block, in order.
pub fn tags(geo: &Geometry, block: &[u8]) -> Vec<Tag> {
    let tag_bytes = geo.tag_bytes();
    let size = block.len().saturating_sub(geo.tail_bytes());
    let mut out = Vec::new();
    let mut at = header::SIZE;
    while at.checked_add(tag_bytes).is_some_and(|end| end <= size) {
        // The kernel copies 12 bytes (`journal_block_tag_t`) whatever the
        // tag size; its flags are the 16 bits at offset 6 either way.
        let flags = be16(block, at.saturating_add(6)).unwrap_or(0);
        let low = u64::from(be32(block, at).unwrap_or(0));
        let high = if geo.is_64bit() {
            u64::from(be32(block, at.saturating_add(8)).unwrap_or(0))
        } else {
            0
        };
        let checksum = if geo.csum_v3() {
            be32(block, at.saturating_add(12))
        } else if geo.csum_v2or3() {
            be16(block, at.saturating_add(4)).map(u32::from)
        } else {
            None
        };
        out.push(Tag {
            block: low | high.checked_shl(32).unwrap_or(0),
            flags,
            checksum,
            at,
        });
        at = at.saturating_add(tag_bytes);
        if flags & FLAG_SAME_UUID == 0 {
            at = at.saturating_add(16);
        }
        if flags & FLAG_LAST_TAG != 0 {
            break;
        }
    }
    out
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
mod tests {
    use super::*;
    use crate::fs::ext::jbd2::feature;

    fn geo(incompat: u32) -> Geometry {
        let mut sb = vec![0u8; 1024];
        sb[..4].copy_from_slice(&super::super::MAGIC.to_be_bytes());
        sb[4..8].copy_from_slice(&4u32.to_be_bytes());
        sb[0x28..0x2c].copy_from_slice(&incompat.to_be_bytes());
        Geometry::decode(&sb).unwrap()
    }

    #[test]
    fn reads_64bit_v3_tags_with_and_without_uuid() {
        let g = geo(feature::INCOMPAT_64BIT | feature::INCOMPAT_CSUM_V3);
        let mut b = vec![0u8; 1024];
        // Tag 1: block 0x1_0000_0005, no SAME_UUID (a UUID follows).
        b[12..16].copy_from_slice(&5u32.to_be_bytes());
        b[20..24].copy_from_slice(&1u32.to_be_bytes());
        b[24..28].copy_from_slice(&0xabcdu32.to_be_bytes());
        // Tag 2 after the UUID: block 9, escaped, same UUID, last.
        let t2 = 12 + 16 + 16;
        b[t2..t2 + 4].copy_from_slice(&9u32.to_be_bytes());
        b[t2 + 4..t2 + 8].copy_from_slice(
            &u32::from(FLAG_ESCAPE | FLAG_SAME_UUID | FLAG_LAST_TAG).to_be_bytes(),
        );
        let t = tags(&g, &b);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].block, t[0].checksum, t[0].at),
            (0x1_0000_0005, Some(0xabcd), 12)
        );
        assert_eq!((t[1].block, t[1].escaped(), t[1].at), (9, true, t2));
    }

    #[test]
    fn stops_where_a_tag_no_longer_fits() {
        // 32-bit tags without checksums (8 bytes), all with SAME_UUID and
        // none last: a 64-byte block holds (64 - 12) / 8 = 6.
        let g = geo(0);
        let mut b = vec![0u8; 64];
        for i in 0..6 {
            let at = 12 + i * 8;
            b[at + 6..at + 8].copy_from_slice(&FLAG_SAME_UUID.to_be_bytes());
        }
        assert_eq!(tags(&g, &b).len(), 6);
        // Without 64bit the word after a tag's flags is the next tag, not
        // a high half.
        b[12 + 8..12 + 12].fill(0xff);
        let t = tags(&g, &b);
        assert_eq!((t[0].block, t[1].block), (0, 0xffff_ffff));
    }
}
