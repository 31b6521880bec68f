//! The header every block the log writes for itself starts with
//! (`journal_header_t`): magic, block type, transaction sequence.
use crate::layout::Field;

use super::{be32, MAGIC};

/// `journal_header_t`.
pub const HEADER: &[Field] = &[
    Field::new("h_magic", 0x0, 4, "0xC03B3998"),
    Field::new(
        "h_blocktype",
        0x4,
        4,
        "1 descriptor, 2 commit, 3/4 superblock, 5 revoke",
    ),
    Field::new(
        "h_sequence",
        0x8,
        4,
        "the transaction this block belongs to",
    ),
];

/// Bytes of the header.
pub const SIZE: usize = 12;

/// A decoded block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub blocktype: u32,
    pub sequence: u32,
}

impl Header {
    /// The header of a log block; `None` without the magic (the end of
    /// the log, for recovery).
    pub fn decode(block: &[u8]) -> Option<Header> {
        (be32(block, 0)? == MAGIC).then_some(())?;
        Some(Header {
            blocktype: be32(block, 4)?,
            sequence: be32(block, 8)?,
        })
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
    fn decodes_or_says_no_magic() {
        let mut b = vec![0u8; 64];
        assert_eq!(Header::decode(&b), None);
        b[..12].copy_from_slice(&[0xc0, 0x3b, 0x39, 0x98, 0, 0, 0, 2, 0, 0, 1, 0]);
        assert_eq!(
            Header::decode(&b),
            Some(Header {
                blocktype: 2,
                sequence: 256
            })
        );
        assert_eq!(Header::decode(&b[..8]), None);
    }
}
