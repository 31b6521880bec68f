//! What the server last said about the disk: the extents of one
//! NBD_CMD_BLOCK_STATUS reply, for every negotiated metadata context, kept
//! so that the reads that follow need no round trip of their own.
//!
//! One reply answers both `base:allocation` (where reads may skip holes)
//! and `qemu:allocation-depth` (which server layer serves a read, for the
//! hit map), so both are replaced together. Memory is bounded by what one
//! reply may carry (the client caps a block status chunk).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use crate::block::{Extent, Status};

use super::proto::{STATE_HOLE, STATE_ZERO};

/// A run of the disk at one allocation depth of the server's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthRun {
    pub offset: u64,
    pub len: u64,
    /// qemu's value: 0 unallocated, 1 the top layer, 2 its backing file, …
    pub depth: u32,
}

/// The extents of the last block status reply.
#[derive(Debug, Default)]
pub struct Known {
    alloc: Vec<Extent>,
    depth: Vec<DepthRun>,
}

/// Turns `base:allocation` descriptors starting at `offset` into extents.
pub fn alloc_extents(offset: u64, descriptors: &[(u64, u32)]) -> Vec<Extent> {
    let mut pos = offset;
    descriptors
        .iter()
        .map(|&(n, flags)| {
            let status = match (flags & STATE_HOLE != 0, flags & STATE_ZERO != 0) {
                (true, _) => Status::Unallocated,
                (false, true) => Status::Zero,
                (false, false) => Status::Data,
            };
            let e = Extent {
                offset: pos,
                len: n,
                status,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            };
            pos = pos.saturating_add(n);
            e
        })
        .collect()
}

/// Turns `qemu:allocation-depth` descriptors starting at `offset` into runs.
pub fn depth_runs(offset: u64, descriptors: &[(u64, u32)]) -> Vec<DepthRun> {
    let mut pos = offset;
    descriptors
        .iter()
        .map(|&(len, depth)| {
            let r = DepthRun {
                offset: pos,
                len,
                depth,
            };
            pos = pos.saturating_add(len);
            r
        })
        .collect()
}

/// The run of a sorted, contiguous list holding `offset`, by binary search.
fn find<T: Copy>(list: &[T], offset: u64, span: impl Fn(&T) -> (u64, u64)) -> Option<T> {
    let i = list.partition_point(|t| {
        let (start, len) = span(t);
        start.saturating_add(len) <= offset
    });
    let t = *list.get(i)?;
    let (start, _) = span(&t);
    (start <= offset).then_some(t)
}

impl Known {
    /// Replaces what is known with one reply's extents.
    pub fn replace(&mut self, alloc: Vec<Extent>, depth: Vec<DepthRun>) {
        self.alloc = alloc;
        self.depth = depth;
    }

    /// The allocation extent from `offset` on, if the last reply covered it.
    pub fn alloc_at(&self, offset: u64) -> Option<Extent> {
        find(&self.alloc, offset, |e| (e.offset, e.len))?.remainder(offset)
    }

    /// The depth run from `offset` on, if the last reply covered it.
    pub fn depth_at(&self, offset: u64) -> Option<DepthRun> {
        let r = find(&self.depth, offset, |r| (r.offset, r.len))?;
        // `find` returned a run starting at or before `offset`.
        let delta = offset.saturating_sub(r.offset);
        Some(DepthRun {
            offset,
            len: r.len.saturating_sub(delta),
            depth: r.depth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_cover_exactly_the_reply() {
        let mut k = Known::default();
        k.replace(
            alloc_extents(4096, &[(4096, 0), (8192, STATE_HOLE | STATE_ZERO)]),
            depth_runs(4096, &[(4096, 1), (4096, 2), (4096, 0)]),
        );
        assert_eq!(k.alloc_at(4095), None);
        let e = k.alloc_at(5000).unwrap();
        assert_eq!((e.offset, e.len, e.status), (5000, 3192, Status::Data));
        let e = k.alloc_at(8192).unwrap();
        assert_eq!((e.len, e.status), (8192, Status::Unallocated));
        assert_eq!(k.alloc_at(16384), None);
        assert_eq!(
            k.depth_at(9000),
            Some(DepthRun {
                offset: 9000,
                len: 3288,
                depth: 2
            })
        );
        assert_eq!(k.depth_at(12288).unwrap().depth, 0);
        assert_eq!(k.depth_at(16384), None);
    }
}
