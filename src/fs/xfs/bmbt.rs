//! File block maps: the extent records of a fork (`struct xfs_bmbt_rec`,
//! 16 bytes: unwritten flag, file offset, block, length), held in the
//! inode (extents format) or in the leaves of a long-form B+tree whose root
//! (`struct xfs_bmdr_block`) sits in the inode (btree format).
//!
//! [`Xfs::walk_fork`] streams a fork's extents in file order from a given
//! file block, pruning subtrees that end before it, so reading one block
//! of a huge file costs a root-to-leaf path, not the whole map. It checks
//! what it meets: levels going down one at a time, each map block visited
//! once, records in order and not overlapping, every extent inside its AG.
use std::collections::HashSet;
use std::ops::ControlFlow;

use super::agf::MAX_LEVELS;
use super::be::{u16_at, u64_at, u64_of, us};
use super::btree::{Header, BMBT};
use super::dinode::{Dinode, Fork, Format};
use super::Xfs;
use crate::fs::FsError;

/// One extent of a fork, in filesystem blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub startoff: u64,
    /// First filesystem block (`AG << agblklog | AG block`; for realtime
    /// files, a block of the realtime device).
    pub startblock: u64,
    pub blockcount: u64,
    /// Allocated but unwritten: reads as zeros.
    pub unwritten: bool,
    /// Disk offset of the record (for hex marks and error messages).
    pub at: u64,
}

impl Extent {
    /// Decodes a 16-byte record found at disk offset `at`.
    pub fn decode(rec: &[u8], at: u64) -> Extent {
        let l0 = u64_at(rec, 0).unwrap_or(0);
        let l1 = u64_at(rec, 8).unwrap_or(0);
        Extent {
            unwritten: l0 >> 63 != 0,
            startoff: (l0 >> 9) & ((1 << 54) - 1),
            startblock: ((l0 & 0x1ff) << 43) | (l1 >> 21),
            blockcount: l1 & ((1 << 21) - 1),
            at,
        }
    }

    /// The file block after the extent.
    pub fn end(&self) -> u64 {
        self.startoff.saturating_add(self.blockcount)
    }
}

/// What a fork walk yields: extents in file order, and the map's own
/// blocks (B+tree nodes and leaves below the root in the inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    Extent(Extent),
    /// A map block at `level` (0 = leaf), at disk offset `at`.
    Node {
        level: u16,
        at: u64,
    },
}

/// The bmbt root in an inode fork: level, record count, and where its keys
/// and pointers are (the pointer array starts after room for as many keys
/// as the fork could hold).
struct Root {
    level: u16,
    numrecs: usize,
    maxrecs: usize,
}

const ROOT_HDR: usize = 4;

impl Xfs {
    /// Calls `each` with the extents of `inode`'s fork `which` that end
    /// after file block `from`, in file order, and with the map blocks it
    /// reads, until `each` breaks. Damage that leaves the rest readable
    /// goes to `problems`.
    ///
    /// # Errors
    /// A fork that is not extents or btree format; `di_forkoff` past the
    /// inode; a root with impossible levels or counts.
    pub fn walk_fork(
        &self,
        inode: &Dinode,
        which: Fork,
        from: u64,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(Mapping) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let Some((fork, fork_at, format)) = inode.fork(which)? else {
            return Ok(());
        };
        let mut state = Order {
            ino: inode.ino,
            last_end: None,
        };
        let nextents = match which {
            Fork::Data => inode.nextents,
            Fork::Attr => inode.anextents,
        };
        match format {
            Format::Extents => {
                let room = fork.len() / 16;
                let n = us(nextents);
                if n > room {
                    problems.push(FsError::corrupt(
                        "inode",
                        if which == Fork::Data { "di_nextents" } else { "di_anextents" },
                        inode.offset,
                        format!(
                            "inode {}: {nextents} extents do not fit the fork's {} bytes; reading {room}",
                            inode.ino,
                            fork.len()
                        ),
                    ));
                }
                for i in 0..n.min(room) {
                    let off = i.saturating_mul(16);
                    let Some(rec) = fork.get(off..off.saturating_add(16)) else {
                        break;
                    };
                    let e = Extent::decode(rec, fork_at.saturating_add(u64_of(off)));
                    if e.end() <= from {
                        continue;
                    }
                    if self.emit(inode, e, &mut state, problems, each).is_break() {
                        break;
                    }
                }
                Ok(())
            }
            Format::Btree => {
                self.walk_btree(inode, fork, fork_at, from, &mut state, problems, each)
            }
            f => Err(FsError::corrupt(
                "inode",
                if which == Fork::Data {
                    "di_format"
                } else {
                    "di_aformat"
                },
                inode.offset,
                format!("inode {}: a {} fork has no block map", inode.ino, f.name()),
            )),
        }
    }

    /// Checks an extent (order, bounds) and hands it on; a bad one is
    /// reported and skipped.
    fn emit(
        &self,
        inode: &Dinode,
        e: Extent,
        state: &mut Order,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(Mapping) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let bad = |detail: String| FsError::corrupt("extent record", "br_startoff", e.at, detail);
        if e.blockcount == 0 {
            problems.push(bad(format!("inode {}: an extent of 0 blocks", state.ino)));
            return ControlFlow::Continue(());
        }
        if let Some(end) = state.last_end.filter(|&end| e.startoff < end) {
            problems.push(bad(format!(
                "inode {}: extent at file block {} overlaps the previous one (ending at {end}); skipped",
                state.ino, e.startoff
            )));
            return ControlFlow::Continue(());
        }
        if !inode.is_realtime() {
            let sb = self.superblock();
            match self.split_fsb(e.startblock) {
                Ok((agno, agbno)) => {
                    if u64::from(agbno).saturating_add(e.blockcount) > u64::from(sb.ag_length(agno))
                    {
                        problems.push(bad(format!(
                            "inode {}: extent of {} blocks at AG {agno} block {agbno} runs past the AG ({} blocks); skipped",
                            state.ino,
                            e.blockcount,
                            sb.ag_length(agno)
                        )));
                        return ControlFlow::Continue(());
                    }
                }
                Err(err) => {
                    problems.push(bad(format!("inode {}: {err}; skipped", state.ino)));
                    return ControlFlow::Continue(());
                }
            }
        }
        state.last_end = Some(e.end());
        each(Mapping::Extent(e))
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_btree(
        &self,
        inode: &Dinode,
        fork: &[u8],
        fork_at: u64,
        from: u64,
        state: &mut Order,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(Mapping) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let sb = self.superblock();
        let v5 = sb.is_v5();
        let root = Root {
            level: u16_at(fork, 0).unwrap_or(0),
            numrecs: us(u16_at(fork, 2).unwrap_or(0)),
            maxrecs: fork.len().saturating_sub(ROOT_HDR) / 16,
        };
        if root.level == 0 || u32::from(root.level) > MAX_LEVELS {
            return Err(FsError::corrupt(
                "block map B+tree root",
                "bb_level",
                fork_at,
                format!(
                    "inode {}: {} levels, expected 1 to {MAX_LEVELS}",
                    inode.ino, root.level
                ),
            ));
        }
        if root.numrecs == 0 || root.numrecs > root.maxrecs {
            return Err(FsError::corrupt(
                "block map B+tree root",
                "bb_numrecs",
                fork_at.saturating_add(2),
                format!(
                    "inode {}: {} records, the root in the inode holds 1 to {}",
                    inode.ino, root.numrecs, root.maxrecs
                ),
            ));
        }
        let mut seen: HashSet<u64> = HashSet::new();
        // (block, level it must have, where the pointer lies), visited
        // depth first in key order.
        let mut stack: Vec<(u64, u16, u64)> = Vec::new();
        let ptrs = ROOT_HDR.saturating_add(root.maxrecs.saturating_mul(8));
        push_children(
            &mut stack,
            root.numrecs,
            root.level,
            from,
            |i| u64_at(fork, ROOT_HDR.saturating_add(i.saturating_mul(8))),
            |i| {
                let off = ptrs.saturating_add(i.saturating_mul(8));
                (u64_at(fork, off), fork_at.saturating_add(u64_of(off)))
            },
        );
        while let Some((fsb, level, from_at)) = stack.pop() {
            if !seen.insert(fsb) {
                problems.push(FsError::corrupt(
                    "block map B+tree",
                    "pointer",
                    from_at,
                    format!(
                        "inode {}: block {fsb} is reached twice (a cycle or a shared subtree); not followed again",
                        inode.ino
                    ),
                ));
                continue;
            }
            let at = match self.fsb_offset(fsb) {
                Ok(a) => a,
                Err(e) => {
                    problems.push(FsError::corrupt(
                        "block map B+tree",
                        "pointer",
                        from_at,
                        format!("inode {}: {e}", inode.ino),
                    ));
                    continue;
                }
            };
            let block = match self.read_block_at(at, "block map B+tree") {
                Ok(b) => b,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let hdr: Header = match BMBT.header(v5, &block, at) {
                Ok(h) => h,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if hdr.level != level {
                problems.push(FsError::corrupt(
                    "block map B+tree",
                    "bb_level",
                    at.saturating_add(4),
                    format!(
                        "inode {}: level {}, expected {level}; not followed",
                        inode.ino, hdr.level
                    ),
                ));
                continue;
            }
            let mut found = Vec::new();
            self.check_v5_block(&BMBT, &hdr, at, inode.ino, &block, &mut found);
            problems.extend(
                found
                    .into_iter()
                    .map(|p| FsError::corrupt("block map B+tree", "header", at, p)),
            );
            if each(Mapping::Node { level, at }).is_break() {
                return Ok(());
            }
            let n = us(hdr.numrecs);
            if level == 0 {
                for i in 0..n {
                    let Some(rec) = BMBT.record(&block, &hdr, i) else {
                        break;
                    };
                    let off = hdr.len.saturating_add(i.saturating_mul(16));
                    let e = Extent::decode(rec, at.saturating_add(u64_of(off)));
                    if e.end() <= from {
                        continue;
                    }
                    if self.emit(inode, e, state, problems, each).is_break() {
                        return Ok(());
                    }
                }
            } else {
                let keys = BMBT.maxrecs(block.len(), v5, false).saturating_mul(8);
                push_children(
                    &mut stack,
                    n,
                    level,
                    from,
                    |i| BMBT.key(&block, &hdr, i).and_then(|k| u64_at(k, 0)),
                    |i| {
                        let off = hdr
                            .len
                            .saturating_add(keys)
                            .saturating_add(i.saturating_mul(8));
                        (
                            BMBT.ptr(&block, &hdr, v5, i),
                            at.saturating_add(u64_of(off)),
                        )
                    },
                );
            }
        }
        Ok(())
    }
}

/// The walk's order check: the end of the last extent handed on.
struct Order {
    ino: u64,
    last_end: Option<u64>,
}

/// Pushes a node's children onto the depth-first stack (last first, so
/// they pop in key order), leaving out those whose range ends at or before
/// file block `from` (child `i` covers keys `[key i, key i+1)`).
fn push_children(
    stack: &mut Vec<(u64, u16, u64)>,
    n: usize,
    level: u16,
    from: u64,
    key: impl Fn(usize) -> Option<u64>,
    ptr: impl Fn(usize) -> (Option<u64>, u64),
) {
    for i in (0..n).rev() {
        let next = i.checked_add(1).filter(|&j| j < n).and_then(&key);
        if next.is_some_and(|k| k <= from) {
            continue;
        }
        if let (Some(p), at) = ptr(i) {
            stack.push((p, level.saturating_sub(1), at));
        }
    }
}

impl Xfs {
    /// Reads `count` blocks of a fork from file block `first` (a directory
    /// or attribute block, a symlink or remote value): they may lie in
    /// several extents. Returns the bytes and the disk offset of the first
    /// block.
    ///
    /// # Errors
    /// `Corrupt` naming `structure` for a hole or an unwritten extent in
    /// the range (metadata has neither); map and read errors.
    pub fn read_fork_blocks(
        &self,
        inode: &Dinode,
        which: Fork,
        first: u64,
        count: u64,
        structure: &'static str,
        problems: &mut Vec<FsError>,
    ) -> Result<(Vec<u8>, u64), FsError> {
        too_long(inode, count, self.block_bytes(), structure)?;
        // The extents the range lies in (at most `count` of them), then
        // their blocks.
        let end = first.saturating_add(count);
        let mut extents = Vec::new();
        self.walk_fork(inode, which, first, problems, &mut |m| {
            let Mapping::Extent(e) = m else {
                return ControlFlow::Continue(());
            };
            if e.startoff >= end {
                return ControlFlow::Break(());
            }
            extents.push(e);
            ControlFlow::Continue(())
        })?;
        self.read_mapped_blocks(inode, &extents, first, count, structure)
    }

    /// [`Xfs::read_fork_blocks`] from a fork's extents already walked
    /// (`extents` in file order, as [`Xfs::walk_fork`] gives them): a
    /// directory's blocks read one after another without walking its
    /// map again for each (a btree-form map re-read its leaf records per
    /// block).
    ///
    /// # Errors
    /// As [`Xfs::read_fork_blocks`], but for the map's.
    pub fn read_mapped_blocks(
        &self,
        inode: &Dinode,
        extents: &[Extent],
        first: u64,
        count: u64,
        structure: &'static str,
    ) -> Result<(Vec<u8>, u64), FsError> {
        let bs = self.block_bytes();
        too_long(inode, count, bs, structure)?;
        let mut out = vec![0u8; us(count.saturating_mul(bs))];
        let mut covered = 0u64;
        let mut first_at = None;
        let end = first.saturating_add(count);
        let from_index = extents.partition_point(|e| e.end() <= first);
        for e in extents.get(from_index..).unwrap_or_default() {
            if e.startoff >= end {
                break;
            }
            let from = e.startoff.max(first);
            let to = e.end().min(end);
            if from != first.saturating_add(covered) || e.unwritten {
                break;
            }
            let phys = e.startblock.saturating_add(from.saturating_sub(e.startoff));
            let at = self.fsb_offset(phys)?;
            if first_at.is_none() {
                first_at = Some(at);
            }
            let n = to.saturating_sub(from).saturating_mul(bs);
            let bytes = self.read_bytes(at, us(n), structure)?;
            let dst = us(covered.saturating_mul(bs));
            if let Some(d) = out.get_mut(dst..dst.saturating_add(bytes.len())) {
                d.copy_from_slice(&bytes);
            }
            covered = covered.saturating_add(to.saturating_sub(from));
            if covered >= count {
                break;
            }
        }
        match first_at {
            Some(at) if covered >= count => Ok((out, at)),
            _ => Err(FsError::corrupt(
                structure,
                "block map",
                inode.offset,
                format!(
                    "inode {}: file blocks {first}..{end} are not all mapped to written extents",
                    inode.ino
                ),
            )),
        }
    }
}

/// A structure of `count` blocks of `bs` bytes is refused past 128 KiB
/// (XFS's largest directory block is 64 KiB).
fn too_long(inode: &Dinode, count: u64, bs: u64, structure: &'static str) -> Result<(), FsError> {
    if count.saturating_mul(bs) > 1 << 17 {
        return Err(FsError::corrupt(
            structure,
            "length",
            inode.offset,
            format!(
                "inode {}: {count} blocks asked for one structure",
                inode.ino
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_like_xfs_db() {
        // [startoff 5, startblock 49, blockcount 4046, unwritten]
        let l0: u64 = (1 << 63) | (5 << 9); // startblock 49 has no high bits
        let l1: u64 = ((49 & ((1 << 43) - 1)) << 21) | 4046;
        let mut rec = l0.to_be_bytes().to_vec();
        rec.extend(l1.to_be_bytes());
        let e = Extent::decode(&rec, 0x10);
        assert_eq!(
            e,
            Extent {
                startoff: 5,
                startblock: 49,
                blockcount: 4046,
                unwritten: true,
                at: 0x10
            }
        );
        assert_eq!(e.end(), 4051);
    }

    #[test]
    fn children_before_the_start_are_pruned() {
        let keys = [0u64, 10, 20, 30];
        let mut stack = Vec::new();
        push_children(
            &mut stack,
            4,
            2,
            15,
            |i| keys.get(i).copied(),
            |i| (Some(100 + i as u64), 0),
        );
        // child 0 covers [0, 10): pruned; the rest pop in key order.
        let popped: Vec<u64> = stack.iter().rev().map(|s| s.0).collect();
        assert_eq!(popped, [101, 102, 103]);
        assert!(stack.iter().all(|s| s.1 == 1));
    }
}
