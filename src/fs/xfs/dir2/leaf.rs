//! Directory leaf blocks: the hash index of leaf and node directories, at
//! directory offset 32 GiB. A single leaf (`LEAF1`, with a table of the
//! data blocks' best free space at its end) or, in node directories, many
//! (`LEAFN`) under da btree nodes. Each entry maps a name hash to the
//! entry's address in the data space (in 8-byte units); stale entries have
//! address 0.
use super::super::be::{u16_at, u32_at, us};
use super::super::da::BlkInfo;
use crate::fs::FsError;

pub const LEAF1_MAGIC: u16 = 0xd2f1;
pub const LEAF1_MAGIC3: u16 = 0x3df1;
pub const LEAFN_MAGIC: u16 = 0xd2ff;
pub const LEAFN_MAGIC3: u16 = 0x3dff;

/// A decoded leaf block.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub info: BlkInfo,
    /// (hash, address) pairs in hash order, stale ones included.
    pub entries: Vec<(u32, u32)>,
}

/// True for a leaf magic (either kind, this version).
pub fn is_leaf(magic: u16, v5: bool) -> bool {
    if v5 {
        magic == LEAF1_MAGIC3 || magic == LEAFN_MAGIC3
    } else {
        magic == LEAF1_MAGIC || magic == LEAFN_MAGIC
    }
}

impl Leaf {
    /// Decodes a leaf block at disk offset `at`.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic or a count past the block.
    pub fn decode(block: &[u8], v5: bool, at: u64) -> Result<Leaf, FsError> {
        let info = BlkInfo::decode(block, v5);
        if !is_leaf(info.magic, v5) {
            return Err(FsError::corrupt(
                "directory leaf block",
                "magic",
                at.saturating_add(8),
                format!(
                    "{:#06x}, expected a {} leaf magic",
                    info.magic,
                    if v5 { "v5" } else { "v4" }
                ),
            ));
        }
        let hdr = BlkInfo::len(v5);
        let count = us(u16_at(block, hdr).unwrap_or(0));
        let start = if v5 { 64 } else { 16 };
        let room = block.len().saturating_sub(start) / 8;
        if count > room {
            return Err(FsError::corrupt(
                "directory leaf block",
                "count",
                at.saturating_add(super::super::be::u64_of(hdr)),
                format!("{count} entries, the block holds at most {room}"),
            ));
        }
        let entries = (0..count)
            .filter_map(|i| {
                let off = start.checked_add(i.checked_mul(8)?)?;
                Some((u32_at(block, off)?, u32_at(block, off.checked_add(4)?)?))
            })
            .collect();
        Ok(Leaf { info, entries })
    }

    /// The addresses of the live entries whose hash is `hash`, and whether
    /// the run of that hash may go on in the next leaf.
    pub fn matches(&self, hash: u32) -> (Vec<u32>, bool) {
        let i = self.entries.partition_point(|&(h, _)| h < hash);
        let found: Vec<u32> = self
            .entries
            .iter()
            .skip(i)
            .take_while(|&&(h, _)| h == hash)
            .filter(|&&(_, a)| a != 0)
            .map(|&(_, a)| a)
            .collect();
        let to_end = self.entries.last().is_none_or(|&(h, _)| h == hash);
        (found, to_end)
    }
}
