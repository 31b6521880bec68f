//! The jbd2 journal, read-only: its blocks decoded (descriptor, commit and
//! revoke blocks, checksums v1/v2/v3, 32- and 64-bit tags, the fast-commit
//! area), the log walked from its start, and recovery computed as the
//! kernel does it (`fs/jbd2/recovery.c`: PASS_SCAN finds the last valid
//! commit, PASS_REVOKE gathers revokes, PASS_REPLAY says which block of
//! the log lands where), without writing anything.
//!
//! The journal superblock itself is decoded in [`super::journal`] (the
//! lines of `dumpe2fs`); [`Geometry`] is what the walk needs from it.
//!
//! Modules, one per on-disk structure or step: [`header`] (the common
//! block header), [`descriptor`] (tags), [`commit`], [`revoke`],
//! [`checksum`], [`fast_commit`], [`log`] (journal block -> volume
//! offset, for an inode's map or a journal device), [`walk`] (the log as
//! `debugfs logdump` reads it), [`recovery`] (the kernel's three passes
//! over that walk), [`replay`] (the replayed view as a
//! [`crate::block::BlockSource`]), [`orphan`] (what the kernel deletes
//! after recovery), [`classify`] (what a filesystem block is).
//!
//! Not here: writing, and the ext4 side of fast-commit replay (its tags
//! are decoded and listed, see [`fast_commit`]).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]

pub mod checksum;
pub mod classify;
pub mod commit;
pub mod descriptor;
pub mod fast_commit;
pub mod header;
pub mod log;
pub mod mount;
pub mod orphan;
pub mod recovery;
pub mod replay;
pub mod revoke;
pub mod walk;

pub use recovery::{Outcome, Recovery};
pub use replay::{ReplayInfo, ReplayedSource};

/// `JBD2_MAGIC_NUMBER`: the first four bytes of every journal block the
/// log writes for itself.
pub const MAGIC: u32 = 0xc03b_3998;

/// `h_blocktype` values.
pub mod blocktype {
    pub const DESCRIPTOR: u32 = 1;
    pub const COMMIT: u32 = 2;
    pub const SUPERBLOCK_V1: u32 = 3;
    pub const SUPERBLOCK_V2: u32 = 4;
    pub const REVOKE: u32 = 5;
    pub const FAST_COMMIT: u32 = 6;

    /// The name `debugfs logdump` gives a block type.
    pub fn name(t: u32) -> &'static str {
        match t {
            DESCRIPTOR => "descriptor block",
            COMMIT => "commit block",
            SUPERBLOCK_V1 => "V1 superblock",
            SUPERBLOCK_V2 => "V2 superblock",
            REVOKE => "revoke table",
            _ => "unrecognised type",
        }
    }
}

/// Journal feature bits (`s_feature_compat`, `s_feature_incompat`).
pub mod feature {
    /// compat: checksum v1 (crc32 of each transaction in its commit block).
    pub const COMPAT_CHECKSUM: u32 = 0x1;
    pub const INCOMPAT_REVOKE: u32 = 0x1;
    pub const INCOMPAT_64BIT: u32 = 0x2;
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
}

/// `JBD2_DEFAULT_FAST_COMMIT_BLOCKS`: the fast-commit area when the
/// superblock gives no size.
pub const DEFAULT_FAST_COMMIT_BLOCKS: u64 = 256;
/// `JBD2_MIN_JOURNAL_BLOCKS`.
pub const MIN_JOURNAL_BLOCKS: u64 = 1024;

pub(crate) use crate::bytes::{be16, be32, be64};

/// Transaction IDs compare modulo 2^32 (`tid_gt`, `tid_geq`): the log
/// keeps working when the sequence wraps.
pub fn tid_gt(x: u32, y: u32) -> bool {
    i32::from_ne_bytes(x.wrapping_sub(y).to_ne_bytes()) > 0
}

/// `tid_geq`.
pub fn tid_geq(x: u32, y: u32) -> bool {
    i32::from_ne_bytes(x.wrapping_sub(y).to_ne_bytes()) >= 0
}

/// What the log walk and recovery need from the journal superblock.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Geometry {
    /// `s_blocksize`.
    pub block_size: u64,
    /// `s_maxlen`: blocks in the journal, its superblock included.
    pub maxlen: u64,
    /// `s_first`: the first block of the log.
    pub first: u64,
    /// `s_sequence`: the first transaction expected in the log.
    pub sequence: u32,
    /// `s_start`: the log's first block, 0 when the journal is clean.
    pub start: u64,
    /// `h_blocktype`: 3 (v1 superblock, no features) or 4.
    pub version: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    /// `s_num_fc_blks` (0: the default, 256).
    pub num_fc_blks: u64,
    /// `s_checksum_type`.
    pub checksum_type: u8,
    /// `s_errno`.
    pub errno: i32,
}

impl Geometry {
    /// Decodes the journal superblock's first 1024 bytes; `None` without
    /// the magic or a superblock block type.
    pub fn decode(b: &[u8]) -> Option<Geometry> {
        if be32(b, 0)? != MAGIC {
            return None;
        }
        let version = be32(b, 4)?;
        if version != blocktype::SUPERBLOCK_V1 && version != blocktype::SUPERBLOCK_V2 {
            return None;
        }
        let v2 = version == blocktype::SUPERBLOCK_V2;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(b.get(0x30..0x40)?);
        Some(Geometry {
            block_size: u64::from(be32(b, 0xc)?),
            maxlen: u64::from(be32(b, 0x10)?),
            first: u64::from(be32(b, 0x14)?),
            sequence: be32(b, 0x18)?,
            start: u64::from(be32(b, 0x1c)?),
            version,
            // A v1 superblock has no features (JBD2_HAS_*_FEATURE).
            compat: if v2 { be32(b, 0x24)? } else { 0 },
            incompat: if v2 { be32(b, 0x28)? } else { 0 },
            ro_compat: if v2 { be32(b, 0x2c)? } else { 0 },
            uuid,
            num_fc_blks: u64::from(be32(b, 0x54)?),
            checksum_type: *b.get(0x50)?,
            errno: i32::from_be_bytes(b.get(0x20..0x24)?.try_into().ok()?),
        })
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.incompat & bit != 0
    }

    /// Checksums v2 or v3: descriptor and revoke blocks end in a
    /// checksum tail, commit blocks and tags carry crc32c.
    pub fn csum_v2or3(&self) -> bool {
        self.has_incompat(feature::INCOMPAT_CSUM_V2) || self.has_incompat(feature::INCOMPAT_CSUM_V3)
    }

    pub fn csum_v3(&self) -> bool {
        self.has_incompat(feature::INCOMPAT_CSUM_V3)
    }

    /// Checksum v1: a crc32 of each transaction in its commit block.
    pub fn csum_v1(&self) -> bool {
        self.compat & feature::COMPAT_CHECKSUM != 0
    }

    pub fn is_64bit(&self) -> bool {
        self.has_incompat(feature::INCOMPAT_64BIT)
    }

    pub fn fast_commit(&self) -> bool {
        self.has_incompat(feature::INCOMPAT_FAST_COMMIT)
    }

    /// Bytes of one descriptor tag (`journal_tag_bytes`), without the
    /// UUID that follows a tag lacking `SAME_UUID`.
    pub fn tag_bytes(&self) -> usize {
        if self.csum_v3() {
            return 16;
        }
        let mut sz = 12usize;
        if self.has_incompat(feature::INCOMPAT_CSUM_V2) {
            sz = 14;
        }
        if self.is_64bit() {
            sz
        } else {
            sz.saturating_sub(4)
        }
    }

    /// Bytes at the end of descriptor and revoke blocks taken by the
    /// checksum tail.
    pub fn tail_bytes(&self) -> usize {
        if self.csum_v2or3() {
            4
        } else {
            0
        }
    }

    /// Blocks of the fast-commit area (`jbd2_journal_get_num_fc_blks`).
    pub fn fc_blocks(&self) -> u64 {
        if self.num_fc_blks == 0 {
            DEFAULT_FAST_COMMIT_BLOCKS
        } else {
            self.num_fc_blks
        }
    }

    /// `j_last`: one past the last block of the log proper. With fast
    /// commits the area's blocks come off the end (when the journal is
    /// big enough to keep the minimum, as `load_superblock` checks).
    pub fn last(&self) -> u64 {
        if self.fast_commit() {
            match self.maxlen.checked_sub(self.fc_blocks()) {
                Some(l) if l >= MIN_JOURNAL_BLOCKS => l,
                _ => self.maxlen,
            }
        } else {
            self.maxlen
        }
    }

    /// The fast-commit area: first and last block (inclusive), as the
    /// kernel sets `j_fc_first` and `j_fc_last`.
    pub fn fc_area(&self) -> Option<(u64, u64)> {
        if !self.fast_commit() {
            return None;
        }
        let last = self.last();
        (last < self.maxlen).then(|| (last.saturating_add(1), self.maxlen))
    }

    /// Where the log wraps: recovery's `wrap()` macro goes back to
    /// `s_first` at `j_fc_last` with fast commits (kernel 6.1 and
    /// e2fsprogs 1.47 do so), at `j_last` otherwise.
    pub fn wrap_at(&self) -> u64 {
        if self.fast_commit() {
            self.maxlen
        } else {
            self.last()
        }
    }

    /// The log block after `n`, wrapping back to `s_first`.
    pub fn next(&self, n: u64) -> u64 {
        let n = n.saturating_add(1);
        let wrap = self.wrap_at();
        if n >= wrap {
            n.saturating_sub(wrap.saturating_sub(self.first))
        } else {
            n
        }
    }

    /// The seed of v2/v3 checksums: crc32c of the journal UUID
    /// (`j_csum_seed`).
    pub fn csum_seed(&self) -> u32 {
        super::checksum::crc32c_raw(!0, &self.uuid)
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
    fn tids_compare_across_the_wrap() {
        assert!(tid_gt(1, 0) && !tid_gt(0, 0) && tid_geq(0, 0));
        assert!(tid_gt(2, u32::MAX), "2 comes after 0xffffffff");
        assert!(!tid_geq(u32::MAX, 2));
    }

    #[test]
    fn tag_sizes_follow_the_features() {
        let mut g = Geometry {
            block_size: 4096,
            maxlen: 4096,
            first: 1,
            sequence: 1,
            start: 0,
            version: 4,
            compat: 0,
            incompat: 0,
            ro_compat: 0,
            uuid: [0; 16],
            num_fc_blks: 0,
            checksum_type: 0,
            errno: 0,
        };
        assert_eq!(g.tag_bytes(), 8);
        g.incompat = feature::INCOMPAT_64BIT;
        assert_eq!(g.tag_bytes(), 12);
        g.incompat = feature::INCOMPAT_CSUM_V2;
        assert_eq!(g.tag_bytes(), 10);
        g.incompat = feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_64BIT;
        assert_eq!(g.tag_bytes(), 14);
        g.incompat = feature::INCOMPAT_CSUM_V3;
        assert_eq!((g.tag_bytes(), g.tail_bytes()), (16, 4));
        // Wrap: back to s_first at the end.
        g.incompat = 0;
        assert_eq!((g.next(10), g.next(4095)), (11, 1));
        // Fast commits take the last 256 blocks off the log.
        g.incompat = feature::INCOMPAT_FAST_COMMIT;
        assert_eq!((g.last(), g.fc_area()), (3840, Some((3841, 4096))));
    }
}
