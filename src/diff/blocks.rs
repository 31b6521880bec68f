//! The first step of a layer diff: which filesystem blocks the overlays
//! changed. The overlays' own allocation says where they *may* have
//! written; comparing those blocks as of the two layers says where they
//! did. A cluster rewritten with the same bytes (copy-up), or the unchanged
//! neighbours of a changed block in one cluster, drop out here.
use std::sync::Arc;

use crate::block::buffer::AlignedBuf;
use crate::block::chain::Chain;
use crate::block::{BlockError, BlockSource, Status};
use crate::fs::ext::Ext4;
use crate::volume::{Geometry, VolumeSource};

use super::{DiffError, Progress};
use crate::bytes::{u64_of, us};

/// A set of filesystem blocks, as sorted, disjoint, non-adjacent runs
/// `(start, len)`. Its size follows the number of runs, not the disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockSet {
    runs: Vec<(u64, u64)>,
}

impl BlockSet {
    /// Adds `[start, start + len)`; runs must come in ascending order
    /// (overlap with the last run is merged).
    pub fn push(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.runs.last_mut() {
            let end = last.0.saturating_add(last.1);
            if start <= end {
                last.1 = last.1.max(start.saturating_add(len).saturating_sub(last.0));
                return;
            }
        }
        self.runs.push((start, len));
    }

    /// Builds a set from runs in any order.
    pub fn from_runs(mut runs: Vec<(u64, u64)>) -> BlockSet {
        runs.sort_unstable();
        let mut set = BlockSet::default();
        for (s, l) in runs {
            set.push(s, l);
        }
        set
    }

    /// Whether any block of `[start, start + len)` is in the set.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        let i = self
            .runs
            .partition_point(|&(s, l)| s.saturating_add(l) <= start);
        self.runs.get(i).is_some_and(|&(s, _)| s < end)
    }

    pub fn contains(&self, block: u64) -> bool {
        self.overlaps(block, 1)
    }

    /// The set without `[start, start + len)`.
    pub fn remove(&mut self, start: u64, len: u64) {
        if !self.overlaps(start, len) {
            return;
        }
        let end = start.saturating_add(len);
        let mut out = Vec::with_capacity(self.runs.len().saturating_add(1));
        for &(s, l) in &self.runs {
            let e = s.saturating_add(l);
            if e <= start || s >= end {
                out.push((s, l));
                continue;
            }
            if s < start {
                out.push((s, start.saturating_sub(s)));
            }
            if e > end {
                out.push((end, e.saturating_sub(end)));
            }
        }
        self.runs = out;
    }

    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Number of blocks.
    pub fn count(&self) -> u64 {
        self.runs.iter().fold(0, |t, r| t.saturating_add(r.1))
    }

    /// Every block, in order.
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|&(s, l)| s..s.saturating_add(l))
    }
}

/// The byte ranges of the filesystem `[base, base + len)` of the disk that
/// layers `from + 1 ..= to` of `chain` hold (data or zero), relative to
/// `base`, sorted and merged. Costs what the layers' metadata costs.
///
/// # Errors
/// The layers' metadata errors.
pub fn held_ranges(
    chain: &Chain,
    from: usize,
    to: usize,
    base: u64,
    len: u64,
) -> Result<Vec<(u64, u64)>, BlockError> {
    held_volume_ranges(chain, from, to, &Arc::new(Geometry::window(base, len)))
}

/// [`held_ranges`] for a volume anywhere on the disk (a partition, or a
/// logical volume in segments): the ranges are volume offsets.
///
/// # Errors
/// The layers' metadata errors.
pub fn held_volume_ranges(
    chain: &Chain,
    from: usize,
    to: usize,
    volume: &Arc<Geometry>,
) -> Result<Vec<(u64, u64)>, BlockError> {
    let mut ranges = Vec::new();
    for layer in chain
        .layers
        .iter()
        .take(to.saturating_add(1))
        .skip(from.saturating_add(1))
    {
        // The volume as this layer alone holds it.
        let src = VolumeSource::new(
            Arc::clone(&layer.source),
            Arc::clone(volume),
            layer.source.name().to_owned(),
        );
        let end = volume.len();
        let mut at = 0;
        while at < end {
            let extents = src.block_status(at, end.saturating_sub(at))?;
            let before = at;
            for e in extents {
                if e.status != Status::Unallocated {
                    let s = e.offset.max(at);
                    let stop = e.end().min(end);
                    if stop > s {
                        ranges.push((s, stop.saturating_sub(s)));
                    }
                }
                at = at.max(e.end());
            }
            if at <= before {
                return Err(BlockError::Internal {
                    what: format!(
                        "{}: block status made no progress at {at:#x}",
                        layer.source.name()
                    ),
                });
            }
        }
    }
    Ok(crate::block::merge_ranges(ranges))
}

/// What comparing the held ranges found.
#[derive(Debug, Default)]
pub struct Changed {
    /// Blocks whose bytes differ between the two views.
    pub blocks: BlockSet,
    /// Blocks the overlays hold with the same bytes as below (copy-up).
    pub same: u64,
    /// Bytes held by the overlays inside the filesystem.
    pub held_bytes: u64,
}

/// Bytes read and compared at a time (at least one block): small enough
/// that both buffers stay in the CPU cache and cost few page faults (a
/// small overlay's diff is mostly this copy).
const CHUNK_BYTES: u64 = 1 << 16;

/// Compares the blocks of `held` (filesystem byte ranges) as seen by `old`
/// and `new`. A block past the end of the old disk reads as zeros there.
///
/// # Errors
/// Read errors; `Cancelled`.
pub fn changed_blocks(
    old: &Ext4,
    new: &Ext4,
    held: &[(u64, u64)],
    progress: &dyn Progress,
) -> Result<Changed, DiffError> {
    let sb = new.superblock();
    let bs = sb.block_size;
    let total = held.iter().fold(0u64, |t, r| t.saturating_add(r.1));
    let mut out = Changed {
        held_bytes: total,
        ..Changed::default()
    };
    // The block size is 1 KiB to 64 KiB (the superblock's check).
    let chunk_blocks = CHUNK_BYTES.checked_div(bs).unwrap_or(1).max(1);
    let chunk = us(chunk_blocks.saturating_mul(bs));
    // Page-aligned: the kernel copies into an unaligned buffer ~3x slower
    // (most of a small overlay's diff is these two reads).
    let mut a = AlignedBuf::new(chunk);
    let mut b = AlignedBuf::new(chunk);
    let mut done = 0u64;
    let mut last_block = None::<u64>;
    for &(start, len) in held {
        let first = start
            .checked_div(bs)
            .unwrap_or(0)
            .max(last_block.map_or(0, |l| l.saturating_add(1)));
        let end = start
            .saturating_add(len)
            .div_ceil(bs)
            .min(sb.blocks_count)
            .min(new.disk().len().checked_div(bs).unwrap_or(0));
        let mut blk = first;
        while blk < end {
            let n = end.saturating_sub(blk).min(chunk_blocks);
            let bytes = us(n.saturating_mul(bs)).min(chunk);
            let at = blk.saturating_mul(bs);
            let (Some(a), Some(b)) = (a.get_mut(..bytes), b.get_mut(..bytes)) else {
                break;
            };
            // Straight from the disk: each block is compared once, so
            // caching it (or reading ahead of it) would only copy it more.
            new.disk().read_direct(at, b)?;
            // Where the old side's layers hold nothing (an overlay's new
            // clusters over a hole of the base), its blocks are compared
            // with zeros without reading them.
            let a: Option<&[u8]> = if reads_zeros(old, at, u64_of(bytes)) {
                None
            } else {
                read_or_zero(old, at, a)?;
                Some(a)
            };
            let bsz = us(bs).max(1);
            let mut olds = a.map(|a| a.chunks(bsz));
            for (i, y) in (0u64..).zip(b.chunks(bsz)) {
                let same = match olds.as_mut() {
                    Some(o) => o.next() == Some(y),
                    None => is_zero(y),
                };
                if same {
                    out.same = out.same.saturating_add(1);
                } else {
                    out.blocks.push(blk.saturating_add(i), 1);
                }
            }
            blk = blk.saturating_add(n);
            done = done.saturating_add(n.saturating_mul(bs));
            if !progress.step("comparing changed clusters", done.min(total), total) {
                return Err(DiffError::Cancelled);
            }
        }
        last_block = Some(end.saturating_sub(1)).filter(|_| end > 0);
    }
    Ok(out)
}

/// A page of zeros, compared with (a buffer of zeros as long as a chunk
/// was pages faulted in for each diff).
static ZERO_PAGE: [u8; 4096] = [0; 4096];

/// Whether `bytes` are all zeros.
fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(ZERO_PAGE.len())
        .all(|c| ZERO_PAGE.get(..c.len()) == Some(c))
}

/// `held` (sorted byte ranges) with the blocks either view replays from
/// its journal: a live snapshot's changes are in its journal, not at their
/// places, so the layers' clusters alone do not say where the two replayed
/// views differ.
pub fn with_replayed(held: Vec<(u64, u64)>, old: &Ext4, new: &Ext4) -> Vec<(u64, u64)> {
    let bs = new.superblock().block_size;
    let mut all = held;
    for fs in [old, new] {
        if let Some(r) = fs.replayed() {
            all.extend(r.blocks().map(|b| (b.saturating_mul(bs), bs)));
        }
    }
    crate::block::merge_ranges(all)
}

/// Whether `fs`'s disk reads as zeros over all of `len` bytes at `at`, as
/// its block status says (what lies past its end reads as zeros too), so
/// they need not be read. Asked only of a local disk: over a remote one the
/// question costs the round trip the read would.
fn reads_zeros(fs: &Ext4, at: u64, len: u64) -> bool {
    let disk = fs.disk();
    let n = len.min(disk.len().saturating_sub(at));
    if n == 0 {
        return true;
    }
    !disk.remote() && matches!(crate::block::zero_run(disk, at, n), (true, m) if m >= n)
}

/// Reads `buf` at `at` from `fs`'s disk; what lies past its end reads as
/// zeros (an overlay may be larger than its backing file).
pub(super) fn read_or_zero(fs: &Ext4, at: u64, buf: &mut [u8]) -> Result<(), BlockError> {
    let len = fs.disk().len();
    let n = buf.len().min(us(len.saturating_sub(at)));
    let (inside, past) = buf.split_at_mut(n);
    past.fill(0);
    if inside.is_empty() {
        return Ok(());
    }
    fs.disk().read_direct(at, inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sets_merge_find_and_remove() {
        let mut s = BlockSet::from_runs(vec![(10, 5), (0, 2), (2, 3), (30, 1)]);
        assert_eq!(s.runs(), &[(0, 5), (10, 5), (30, 1)]);
        assert!(s.contains(4) && !s.contains(5) && s.contains(14) && !s.contains(15));
        assert!(s.overlaps(5, 6) && !s.overlaps(5, 5) && !s.overlaps(31, 100));
        s.remove(12, 1);
        assert_eq!(s.runs(), &[(0, 5), (10, 2), (13, 2), (30, 1)]);
        s.remove(0, 100);
        assert!(s.is_empty());
        assert_eq!(BlockSet::from_runs(vec![(1, 1), (2, 1)]).count(), 2);
    }
}
