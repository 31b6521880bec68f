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

/// What the block status replies so far said, merged (a later answer
/// replaces what it covers), and the stand-in for a short reply's
/// unanswered rest (see `NbdClient::refresh`).
#[derive(Debug, Default)]
pub struct Known {
    alloc: Vec<Extent>,
    depth: Vec<DepthRun>,
    /// Served as data, not what the server said: only reads use it.
    alloc_fill: Option<Extent>,
    depth_fill: Option<DepthRun>,
}

/// Runs kept at most; past it what was known before the latest answer is
/// forgotten (memory stays bounded whatever the server says).
const MAX_RUNS: usize = 1 << 18;

/// A run of the disk: start, length, and the same run cut to a range.
trait Run: Copy {
    fn span(&self) -> (u64, u64);
    /// The part inside `[from, to)` (which overlaps it).
    fn cut(&self, from: u64, to: u64) -> Self;
}

impl Run for Extent {
    fn span(&self) -> (u64, u64) {
        (self.offset, self.len)
    }
    fn cut(&self, from: u64, to: u64) -> Self {
        let e = self.remainder(from.max(self.offset)).unwrap_or(*self);
        Extent {
            len: e.len.min(to.saturating_sub(e.offset)),
            ..e
        }
    }
}

impl Run for DepthRun {
    fn span(&self) -> (u64, u64) {
        (self.offset, self.len)
    }
    fn cut(&self, from: u64, to: u64) -> Self {
        let start = from.max(self.offset);
        let end = to.min(self.offset.saturating_add(self.len));
        DepthRun {
            offset: start,
            len: end.saturating_sub(start),
            depth: self.depth,
        }
    }
}

/// `old` with `new` (sorted, contiguous) laid over it: what `new` covers
/// replaced, the rest kept, sorted.
fn merge<T: Run>(old: &mut Vec<T>, new: Vec<T>) {
    let (Some(first), Some(last)) = (new.first(), new.last()) else {
        return;
    };
    let from = first.span().0;
    let to = last.span().0.saturating_add(last.span().1);
    if old.len().saturating_add(new.len()) > MAX_RUNS {
        old.clear();
    }
    let mut out: Vec<T> = Vec::with_capacity(old.len().saturating_add(new.len()));
    let mut placed = false;
    let mut new = Some(new);
    for r in old.drain(..) {
        let (start, len) = r.span();
        let end = start.saturating_add(len);
        if start < from {
            out.push(r.cut(start, end.min(from)));
        }
        if end > to {
            if !placed {
                out.extend(new.take().unwrap_or_default());
                placed = true;
            }
            out.push(r.cut(start.max(to), end));
        }
    }
    if !placed {
        out.extend(new.take().unwrap_or_default());
    }
    out.retain(|r| r.span().1 > 0);
    *old = out;
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
    /// Lays one reply's extents over what is known; `alloc_fill` and
    /// `depth_fill` stand in for a short reply's unanswered rest.
    pub fn merge(
        &mut self,
        alloc: Vec<Extent>,
        depth: Vec<DepthRun>,
        alloc_fill: Option<Extent>,
        depth_fill: Option<DepthRun>,
    ) {
        merge(&mut self.alloc, alloc);
        merge(&mut self.depth, depth);
        self.alloc_fill = alloc_fill;
        self.depth_fill = depth_fill;
    }

    /// The allocation extent from `offset` on, if a reply covered it (or
    /// the stand-in for a short reply's rest does).
    pub fn alloc_at(&self, offset: u64) -> Option<Extent> {
        self.alloc_exact(offset)
            .or_else(|| self.alloc_fill.and_then(|f| f.remainder(offset)))
    }

    /// The allocation extent from `offset` on, only as the server said it.
    pub fn alloc_exact(&self, offset: u64) -> Option<Extent> {
        find(&self.alloc, offset, |e| (e.offset, e.len))?.remainder(offset)
    }

    /// The server's extents of `[offset, offset + len)` from `offset` on,
    /// in order, while they are known and contiguous (empty when the
    /// first is not known).
    pub fn alloc_range(&self, offset: u64, len: u64) -> Vec<Extent> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        let mut at = offset;
        let i = self
            .alloc
            .partition_point(|e| e.offset.saturating_add(e.len) <= offset);
        for e in self.alloc.get(i..).unwrap_or_default() {
            // A gap ends the contiguous part.
            if at >= end || e.offset > at {
                break;
            }
            let piece = e.cut(at, end);
            if piece.len == 0 {
                break;
            }
            at = piece.offset.saturating_add(piece.len);
            out.push(piece);
        }
        out
    }

    /// The depth run from `offset` on, if a reply covered it (or the
    /// stand-in for a short reply's rest does).
    pub fn depth_at(&self, offset: u64) -> Option<DepthRun> {
        let r = find(&self.depth, offset, |r| (r.offset, r.len))
            .or_else(|| self.depth_fill.filter(|f| f.offset <= offset))?;
        let end = r.offset.saturating_add(r.len);
        if offset >= end {
            return None;
        }
        Some(DepthRun {
            offset,
            len: end.saturating_sub(offset),
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
        k.merge(
            alloc_extents(4096, &[(4096, 0), (8192, STATE_HOLE | STATE_ZERO)]),
            depth_runs(4096, &[(4096, 1), (4096, 2), (4096, 0)]),
            None,
            None,
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

    #[test]
    fn later_answers_replace_what_they_cover_and_keep_the_rest() {
        let mut k = Known::default();
        k.merge(
            alloc_extents(0, &[(8192, 0), (8192, STATE_HOLE)]),
            vec![],
            None,
            None,
        );
        // A later answer from 4096: the first 4096 bytes stay known.
        k.merge(
            alloc_extents(4096, &[(4096, STATE_ZERO)]),
            vec![],
            None,
            None,
        );
        let got: Vec<_> = k
            .alloc_range(0, 16384)
            .iter()
            .map(|e| (e.offset, e.len, e.status))
            .collect();
        assert_eq!(
            got,
            [
                (0, 4096, Status::Data),
                (4096, 4096, Status::Zero),
                (8192, 8192, Status::Unallocated)
            ]
        );
        assert_eq!(k.alloc_range(16384, 10), vec![]);
        // Cut to the range asked.
        let r = k.alloc_range(1000, 4000);
        assert_eq!((r[0].offset, r[0].len, r.len()), (1000, 3096, 2));
        assert_eq!(r[1].len, 904);
        // A stand-in serves reads, never the server's answer.
        let fill = Extent {
            offset: 16384,
            len: 4096,
            status: Status::Data,
            compressed: false,
            host_offset: None,
            reads_zero: false,
        };
        k.merge(vec![], vec![], Some(fill), None);
        assert_eq!(k.alloc_at(17000).map(|e| e.len), Some(3480));
        assert_eq!(k.alloc_exact(17000), None);
        assert!(k.alloc_range(16384, 10).is_empty());
    }
}
