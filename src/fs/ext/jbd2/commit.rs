//! Commit blocks (`struct commit_header`): the end of a transaction, its
//! time, and its checksum (v1: the transaction's crc32 in `h_chksum[0]`
//! with type 1 and size 4; v2/v3: crc32c of the commit block itself).
use crate::layout::Field;

use super::{be32, be64};

/// `struct commit_header`.
pub const COMMIT: &[Field] = &[
    Field::new("h_magic", 0x0, 4, "0xC03B3998"),
    Field::new("h_blocktype", 0x4, 4, "2: commit block"),
    Field::new("h_sequence", 0x8, 4, "the transaction committed"),
    Field::new("h_chksum_type", 0xc, 1, "1 crc32 (checksum v1), 0 none"),
    Field::new("h_chksum_size", 0xd, 1, "4 with checksum v1"),
    Field::new(
        "h_chksum",
        0x10,
        4,
        "v1: crc32 of the transaction; v2/v3: crc32c of this block",
    ),
    Field::new("h_commit_sec", 0x30, 8, "commit time, seconds since 1970"),
    Field::new("h_commit_nsec", 0x38, 4, "commit time, nanoseconds"),
];

/// `JBD2_CRC32_CHKSUM` and its size.
pub const CRC32_CHKSUM: u8 = 1;
pub const CRC32_CHKSUM_SIZE: u8 = 4;

/// A decoded commit block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Commit {
    pub chksum_type: u8,
    pub chksum_size: u8,
    /// `h_chksum[0]`.
    pub chksum: u32,
    pub sec: u64,
    pub nsec: u32,
}

impl Commit {
    pub fn decode(block: &[u8]) -> Option<Commit> {
        Some(Commit {
            chksum_type: *block.get(0xc)?,
            chksum_size: *block.get(0xd)?,
            chksum: be32(block, 0x10)?,
            sec: be64(block, 0x30)?,
            nsec: be32(block, 0x38)?,
        })
    }

    /// The v1 test of `do_one_pass`: the stored crc32 matches the one
    /// computed over the transaction, or the block says it has none.
    pub fn v1_matches(&self, computed: u32) -> bool {
        (self.chksum == computed
            && self.chksum_type == CRC32_CHKSUM
            && self.chksum_size == CRC32_CHKSUM_SIZE)
            || (self.chksum_type == 0 && self.chksum_size == 0 && self.chksum == 0)
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

    #[test]
    fn decodes_time_and_v1_fields() {
        let mut b = vec![0u8; 1024];
        b[0xc] = 1;
        b[0xd] = 4;
        b[0x10..0x14].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        b[0x30..0x38].copy_from_slice(&1_700_000_000u64.to_be_bytes());
        b[0x38..0x3c].copy_from_slice(&5u32.to_be_bytes());
        let c = Commit::decode(&b).unwrap();
        assert_eq!((c.sec, c.nsec), (1_700_000_000, 5));
        assert!(c.v1_matches(0xdead_beef) && !c.v1_matches(1));
        b[0xc..0x14].fill(0);
        assert!(
            Commit::decode(&b).unwrap().v1_matches(1),
            "no checksum at all"
        );
    }
}
