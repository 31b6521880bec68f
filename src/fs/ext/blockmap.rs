//! Where a file's bytes are: the one list of runs both block-map kinds
//! ([`super::extent`] trees and [`super::indirect`] maps) turn into, and
//! what a walk found wrong on the way.
//!
//! A walk never trusts a pointer: every block number is checked against
//! the filesystem, every map block is visited at most once (a block seen
//! twice is a cycle), and a bad part of the map is skipped and reported
//! while the rest is still mapped, so a damaged file shows what is left.
use super::error::FsError;

/// A run of a file: logical block, physical block, length; uninitialized
/// extents read as zeros. `meta` runs are the map's own blocks (indirect
/// blocks, extent tree nodes), listed where the walk meets them, as
/// `debugfs blocks` does; they hold no file data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub logical: u64,
    pub physical: u64,
    pub len: u64,
    pub uninit: bool,
    pub meta: bool,
    /// For `meta` runs: the level of the map block, as debugfs names it
    /// (`ETB<level>` for extent tree blocks, the level of the node that
    /// points to them with the root as 0; 1, 2, 3 for the single, double
    /// and triple indirect blocks).
    pub level: u8,
}

/// The walk of one file's map.
#[derive(Debug, Default)]
pub struct BlockMap {
    /// The runs found, in map order.
    pub runs: Vec<Run>,
    /// Parts of the map that could not be followed (pointers outside the
    /// filesystem, cycles, bad node headers): skipped, so the file reads
    /// as zeros there.
    pub skipped: Vec<FsError>,
    /// How many of `skipped` were map blocks (indirect blocks, extent tree
    /// nodes) rather than data blocks.
    pub skipped_map_blocks: usize,
    /// Damage that did not stop the walk: map blocks whose checksum does
    /// not match (metadata_csum), extents out of logical order (listed,
    /// but the kernel's binary search would miss them).
    pub warnings: Vec<FsError>,
    /// Problems past [`MAX_PROBLEMS`] (of `skipped` and `warnings`),
    /// counted but not kept.
    pub more_problems: u64,
    /// The walk stopped at [`MAX_RUNS`] runs (noted in `skipped`).
    pub truncated: bool,
}

/// Runs one map keeps at most (32 bytes each): a file of 2^20 one-block
/// extents is listed whole; a damaged map that repeats blocks, or a
/// triple-indirect map of millions of scattered pointers, stops here with
/// a "truncated" note instead of growing without end.
pub const MAX_RUNS: usize = 1 << 21;
/// Problems kept per map; the rest are counted in `more_problems`.
pub const MAX_PROBLEMS: usize = 256;

impl BlockMap {
    /// True when the whole map was read and every checksum matched.
    pub fn is_clean(&self) -> bool {
        self.skipped.is_empty() && self.warnings.is_empty()
    }

    /// Records a part of the map that was skipped.
    pub(super) fn skip(&mut self, e: FsError) {
        if self.skipped.len() < MAX_PROBLEMS {
            self.skipped.push(e);
        } else {
            self.more_problems = self.more_problems.saturating_add(1);
        }
    }

    /// Records damage that did not stop the walk.
    pub(super) fn warn(&mut self, e: FsError) {
        if self.warnings.len() < MAX_PROBLEMS {
            self.warnings.push(e);
        } else {
            self.more_problems = self.more_problems.saturating_add(1);
        }
    }

    /// Whether the map has room for another run; the first time it has
    /// not, the truncation is noted (at `at`, the entry that did not fit).
    pub(super) fn room(&mut self, ino: u64, at: u64) -> bool {
        if self.runs.len() < MAX_RUNS {
            return true;
        }
        if !self.truncated {
            self.truncated = true;
            self.skipped.push(FsError::corrupt(
                "block map",
                "runs",
                at,
                format!(
                    "inode {ino}: block map truncated at {MAX_RUNS} runs; the rest of the file is not mapped (reads as zeros)"
                ),
            ));
        }
        false
    }
}

/// What a walk needs to know about the filesystem.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub block_size: u64,
    /// Blocks below this are not data blocks (the boot block on 1 KiB
    /// filesystems).
    pub first_data_block: u64,
    pub blocks_count: u64,
    /// The inode's checksum seed, when the filesystem has metadata_csum.
    pub csum_seed: Option<u32>,
}

impl Geometry {
    /// Whether `[block, block + len)` lies inside the filesystem.
    pub fn contains(&self, block: u64, len: u64) -> bool {
        block >= self.first_data_block
            && block
                .checked_add(len)
                .is_some_and(|end| end <= self.blocks_count)
    }
}

/// Reads a filesystem block (the caller's I/O).
pub type ReadBlock<'a> = dyn FnMut(u64) -> Result<Vec<u8>, FsError> + 'a;

/// The little-endian u16 at `at`; 0 past the end of `b` (callers bound
/// their walks by the buffer first; a zero ends every list it could be in).
pub(super) fn le16(b: &[u8], at: usize) -> u16 {
    crate::bytes::le16(b, at).unwrap_or(0)
}

/// The little-endian u32 at `at`; 0 past the end of `b` (see [`le16`]).
pub(super) fn le32(b: &[u8], at: usize) -> u32 {
    crate::bytes::le32(b, at).unwrap_or(0)
}
