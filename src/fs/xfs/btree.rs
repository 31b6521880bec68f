//! XFS B+tree blocks (`struct xfs_btree_block`) and a bounded walk of the
//! per-AG trees.
//!
//! Every XFS B+tree block starts with the same header: magic, level,
//! record count, then the sibling pointers, 4 bytes each in the short form
//! (AG trees: free space, inodes, reverse map, refcount) or 8 in the long
//! form (file block maps); v5 adds the block's own address, LSN, UUID,
//! owner and a CRC. Leaves hold records; nodes hold `maxrecs` keys, then
//! the pointers, both arrays sized for a full block.
//!
//! The walk trusts nothing: levels must go down by one at each step from
//! the root the header names (so no path can loop), each block is read at
//! most once (a pointer to a block already seen, a cycle or a shared
//! subtree, is reported and not followed), every pointer must lie inside
//! the AG, and record counts must fit the block. Damage is reported and
//! the rest of the tree is still walked.
use std::collections::HashSet;
use std::ops::ControlFlow;

use super::agf::MAX_LEVELS;
use super::be::{bytes_at, u16_at, u32_at, u64_at, u64_of, us};
use super::crc::{self, Check};
use super::Xfs;
use crate::fs::FsError;

/// Short form (AG trees, 4-byte pointers) or long form (file maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Short,
    Long,
}

impl Form {
    /// The header's size.
    pub fn header_len(self, v5: bool) -> usize {
        match (self, v5) {
            (Form::Short, false) => 16,
            (Form::Short, true) => 56,
            (Form::Long, false) => 24,
            (Form::Long, true) => 72,
        }
    }

    fn crc_off(self) -> usize {
        match self {
            Form::Short => 52,
            Form::Long => 64,
        }
    }

    fn ptr_len(self) -> usize {
        match self {
            Form::Short => 4,
            Form::Long => 8,
        }
    }
}

/// One kind of B+tree: how its blocks are recognised and laid out.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// How a person calls it (`free-space B+tree (by block)`).
    pub name: &'static str,
    /// Magic of v4 blocks (0: the tree exists only on v5).
    pub magic_v4: u32,
    pub magic_v5: u32,
    pub form: Form,
    /// Bytes per leaf record.
    pub rec_len: usize,
    /// Bytes per node key (both keys, for the overlapping rmap tree).
    pub key_len: usize,
    /// The sort key of a leaf record, to check the order.
    pub rec_key: fn(&[u8]) -> u128,
}

fn be_key(n: usize) -> impl Fn(&[u8]) -> u128 {
    move |r: &[u8]| {
        r.iter()
            .take(n)
            .fold(0u128, |acc, &b| acc.wrapping_shl(8) | u128::from(b))
    }
}

fn key_first4(r: &[u8]) -> u128 {
    be_key(4)(r)
}
fn key_cnt(r: &[u8]) -> u128 {
    // by length, then by start block
    let start = u128::from(u32_at(r, 0).unwrap_or(0));
    let len = u128::from(u32_at(r, 4).unwrap_or(0));
    len.wrapping_shl(32) | start
}
fn key_rmap(r: &[u8]) -> u128 {
    // start block, owner, offset (lengths are not part of the key)
    let start = u128::from(u32_at(r, 0).unwrap_or(0));
    let owner = u128::from(u64_at(r, 8).unwrap_or(0));
    start.wrapping_shl(64) | owner
}

pub const BNOBT: Spec = Spec {
    name: "free-space B+tree (by block)",
    magic_v4: 0x4142_5442,
    magic_v5: 0x4142_3342,
    form: Form::Short,
    rec_len: 8,
    key_len: 8,
    rec_key: key_first4,
};
pub const CNTBT: Spec = Spec {
    name: "free-space B+tree (by length)",
    magic_v4: 0x4142_5443,
    magic_v5: 0x4142_3343,
    form: Form::Short,
    rec_len: 8,
    key_len: 8,
    rec_key: key_cnt,
};
pub const INOBT: Spec = Spec {
    name: "inode B+tree",
    magic_v4: 0x4941_4254,
    magic_v5: 0x4941_4233,
    form: Form::Short,
    rec_len: 16,
    key_len: 4,
    rec_key: key_first4,
};
pub const FINOBT: Spec = Spec {
    name: "free-inode B+tree",
    magic_v4: 0x4649_4254,
    magic_v5: 0x4649_4233,
    form: Form::Short,
    rec_len: 16,
    key_len: 4,
    rec_key: key_first4,
};
pub const RMAPBT: Spec = Spec {
    name: "reverse-map B+tree",
    magic_v4: 0,
    magic_v5: 0x524d_4233,
    form: Form::Short,
    rec_len: 24,
    key_len: 40,
    rec_key: key_rmap,
};
pub const REFCOUNTBT: Spec = Spec {
    name: "refcount B+tree",
    magic_v4: 0,
    magic_v5: 0x5233_4643,
    form: Form::Short,
    rec_len: 12,
    key_len: 4,
    rec_key: key_first4,
};
/// The file block map (long form; walked by `bmbt`).
pub const BMBT: Spec = Spec {
    name: "block map B+tree",
    magic_v4: 0x424d_4150,
    magic_v5: 0x424d_4133,
    form: Form::Long,
    rec_len: 16,
    key_len: 8,
    rec_key: key_first4,
};

/// A decoded block header.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub level: u16,
    pub numrecs: u16,
    pub left: u64,
    pub right: u64,
    /// v5: the block's own address (512-byte units) and owner.
    pub blkno: Option<u64>,
    pub owner: Option<u64>,
    pub crc: Option<Check>,
    pub len: usize,
}

impl Spec {
    /// Records a leaf, or keys/pointers a node, of `block_len` bytes can
    /// hold.
    pub fn maxrecs(&self, block_len: usize, v5: bool, leaf: bool) -> usize {
        let room = block_len.saturating_sub(self.form.header_len(v5));
        let per = if leaf {
            self.rec_len
        } else {
            self.key_len.saturating_add(self.form.ptr_len())
        };
        room.checked_div(per).unwrap_or(0)
    }

    /// Decodes and checks the header of `block` (at disk offset `at`):
    /// magic, record count; the CRC is checked, kept, and not refused.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic or a record count past the block.
    pub fn header(&self, v5: bool, block: &[u8], at: u64) -> Result<Header, FsError> {
        let magic = u32_at(block, 0).unwrap_or(0);
        let want = if v5 { self.magic_v5 } else { self.magic_v4 };
        if magic != want || want == 0 {
            return Err(FsError::corrupt(
                self.name,
                "bb_magic",
                at,
                format!("{magic:#010x}, expected {want:#010x}"),
            ));
        }
        let level = u16_at(block, 4).unwrap_or(0);
        let numrecs = u16_at(block, 6).unwrap_or(0);
        let max = self.maxrecs(block.len(), v5, level == 0);
        if us(numrecs) > max {
            return Err(FsError::corrupt(
                self.name,
                "bb_numrecs",
                at.saturating_add(6),
                format!("{numrecs} records, a block holds at most {max}"),
            ));
        }
        let (left, right) = match self.form {
            Form::Short => (
                u64::from(u32_at(block, 8).unwrap_or(0)),
                u64::from(u32_at(block, 12).unwrap_or(0)),
            ),
            Form::Long => (
                u64_at(block, 8).unwrap_or(0),
                u64_at(block, 16).unwrap_or(0),
            ),
        };
        let (blkno, owner, crc) = if v5 {
            let (b, o) = match self.form {
                Form::Short => (u64_at(block, 16), u32_at(block, 48).map(u64::from)),
                Form::Long => (u64_at(block, 24), u64_at(block, 56)),
            };
            (b, o, crc::check(block, self.form.crc_off()))
        } else {
            (None, None, None)
        };
        Ok(Header {
            level,
            numrecs,
            left,
            right,
            blkno,
            owner,
            crc,
            len: self.form.header_len(v5),
        })
    }

    /// Record `i` of a leaf.
    pub fn record<'a>(&self, block: &'a [u8], hdr: &Header, i: usize) -> Option<&'a [u8]> {
        let at = hdr.len.checked_add(i.checked_mul(self.rec_len)?)?;
        bytes_at(block, at, self.rec_len)
    }

    /// Key `i` of a node.
    pub fn key<'a>(&self, block: &'a [u8], hdr: &Header, i: usize) -> Option<&'a [u8]> {
        let at = hdr.len.checked_add(i.checked_mul(self.key_len)?)?;
        bytes_at(block, at, self.key_len)
    }

    /// Pointer `i` of a node of `block_len` bytes (after `maxrecs` keys).
    pub fn ptr(&self, block: &[u8], hdr: &Header, v5: bool, i: usize) -> Option<u64> {
        let keys = self
            .maxrecs(block.len(), v5, false)
            .checked_mul(self.key_len)?;
        let at = hdr
            .len
            .checked_add(keys)?
            .checked_add(i.checked_mul(self.form.ptr_len())?)?;
        match self.form {
            Form::Short => u32_at(block, at).map(u64::from),
            Form::Long => u64_at(block, at),
        }
    }
}

/// What a walk of one AG tree found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    pub blocks: u64,
    pub records: u64,
    /// Damage met, each naming the tree, block and offset.
    pub problems: Vec<String>,
}

impl Xfs {
    /// Walks AG `agno`'s tree `spec` from `root` (an AG block, `levels`
    /// levels as the AG header says), calling `each` with every leaf
    /// record in key order until it breaks.
    ///
    /// # Errors
    /// Only an unusable root (levels out of range); damage below the root
    /// goes to [`Walk::problems`].
    pub fn walk_ag_tree(
        &self,
        agno: u32,
        spec: &Spec,
        root: u32,
        levels: u32,
        each: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<Walk, FsError> {
        let sb = self.superblock();
        let v5 = sb.is_v5();
        let ag_len = sb.ag_length(agno);
        if !(1..=MAX_LEVELS).contains(&levels) {
            return Err(FsError::corrupt(
                spec.name,
                "levels",
                self.ag_offset(agno).unwrap_or(0),
                format!("AG {agno}: {levels} levels, expected 1 to {MAX_LEVELS}"),
            ));
        }
        let mut walk = Walk::default();
        let mut seen: HashSet<u32> = HashSet::new();
        // (block, the level it must have, where the pointer to it lies)
        let mut stack: Vec<(u32, u32, u64)> = vec![(root, levels.saturating_sub(1), 0)];
        let mut last_key: Option<u128> = None;
        let mut out_of_order = false;
        while let Some((bno, level, from)) = stack.pop() {
            if bno == 0 || bno >= ag_len {
                walk.problems.push(format!(
                    "{} of AG {agno}: pointer at {from:#x} names block {bno}, outside the AG ({ag_len} blocks)",
                    spec.name
                ));
                continue;
            }
            if !seen.insert(bno) {
                walk.problems.push(format!(
                    "{} of AG {agno}: block {bno} is reached twice (a cycle or a shared subtree; pointer at {from:#x}); not followed again",
                    spec.name
                ));
                continue;
            }
            let at = self.agb_offset(agno, bno)?;
            let block = match self.read_block_at(at, spec.name) {
                Ok(b) => b,
                Err(e) => {
                    walk.problems
                        .push(format!("{} of AG {agno}: {e}", spec.name));
                    continue;
                }
            };
            walk.blocks = walk.blocks.saturating_add(1);
            let hdr = match spec.header(v5, &block, at) {
                Ok(h) => h,
                Err(e) => {
                    walk.problems.push(format!("AG {agno}: {e}"));
                    continue;
                }
            };
            if u32::from(hdr.level) != level {
                walk.problems.push(format!(
                    "{} of AG {agno}: block {bno} (at {at:#x}) has level {}, expected {level}; not followed",
                    spec.name, hdr.level
                ));
                continue;
            }
            self.check_v5_block(spec, &hdr, at, u64::from(agno), &block, &mut walk.problems);
            let n = us(hdr.numrecs);
            if level == 0 {
                for i in 0..n {
                    let Some(rec) = spec.record(&block, &hdr, i) else {
                        break;
                    };
                    let key = (spec.rec_key)(rec);
                    if last_key.is_some_and(|k| key < k) && !out_of_order {
                        out_of_order = true;
                        walk.problems.push(format!(
                            "{} of AG {agno}: records out of order in block {bno} (at {at:#x})",
                            spec.name
                        ));
                    }
                    last_key = Some(key);
                    walk.records = walk.records.saturating_add(1);
                    if each(rec).is_break() {
                        return Ok(walk);
                    }
                }
            } else {
                let keys = spec
                    .maxrecs(block.len(), v5, false)
                    .saturating_mul(spec.key_len);
                for i in (0..n).rev() {
                    let Some(child) = spec.ptr(&block, &hdr, v5, i) else {
                        continue;
                    };
                    let ptr_at = at
                        .saturating_add(u64_of(hdr.len))
                        .saturating_add(u64_of(keys))
                        .saturating_add(u64_of(i.saturating_mul(4)));
                    stack.push((
                        u32::try_from(child).unwrap_or(u32::MAX),
                        level.saturating_sub(1),
                        ptr_at,
                    ));
                }
            }
        }
        Ok(walk)
    }

    /// The v5 self-description of a B+tree block: CRC, own address, owner
    /// and UUID; each mismatch is reported.
    pub(crate) fn check_v5_block(
        &self,
        spec: &Spec,
        hdr: &Header,
        at: u64,
        owner: u64,
        block: &[u8],
        problems: &mut Vec<String>,
    ) {
        if let Some(c) = hdr.crc.filter(|c| !c.ok()) {
            problems.push(format!(
                "{} block at {at:#x}: CRC {:#010x} does not match the computed {:#010x}",
                spec.name, c.stored, c.computed
            ));
        }
        if let Some(b) = hdr.blkno.filter(|&b| b != at / 512) {
            problems.push(format!(
                "{} block at {at:#x}: bb_blkno says sector {b}, it lies at sector {}",
                spec.name,
                at / 512
            ));
        }
        if let Some(o) = hdr.owner.filter(|&o| o != owner) {
            problems.push(format!(
                "{} block at {at:#x}: bb_owner is {o}, expected {owner}",
                spec.name
            ));
        }
        if hdr.crc.is_some() {
            let uuid_at = match spec.form {
                Form::Short => 32,
                Form::Long => 40,
            };
            if bytes_at(block, uuid_at, 16) != Some(&self.superblock().meta_uuid[..]) {
                problems.push(format!(
                    "{} block at {at:#x}: bb_uuid is not the filesystem's",
                    spec.name
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes_match_the_kernel() {
        // xfs_allocbt_maxrecs(4096 - 56, leaf) = 505; node = 505 as well.
        assert_eq!(BNOBT.maxrecs(4096, true, true), 505);
        assert_eq!(BNOBT.maxrecs(4096, true, false), 336);
        // v4 inobt leaf in a 4K block: (4096-16)/16.
        assert_eq!(INOBT.maxrecs(4096, false, true), 255);
        // bmbt v5 node: (4096-72)/16.
        assert_eq!(BMBT.maxrecs(4096, true, false), 251);
    }

    #[test]
    fn headers_refuse_a_wrong_magic_and_too_many_records() {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&BNOBT.magic_v4.to_be_bytes());
        b[6..8].copy_from_slice(&100u16.to_be_bytes());
        let e = BNOBT.header(false, &b, 0x2000).unwrap_err().to_string();
        assert_eq!(
            e,
            "corrupt free-space B+tree (by block) at 0x2006: bb_numrecs: 100 records, a block holds at most 62"
        );
        let e = CNTBT.header(false, &b, 0x2000).unwrap_err().to_string();
        assert!(
            e.contains("bb_magic: 0x41425442, expected 0x41425443"),
            "{e}"
        );
        assert!(RMAPBT.header(false, &b, 0).is_err());
    }
}
