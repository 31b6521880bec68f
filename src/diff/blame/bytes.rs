//! What a layer holds of a file's bytes, and whether those bytes differ
//! from the layer below's: the test that lets blame pass over a layer
//! holding a file's clusters unchanged.
use std::sync::Arc;

use super::{fill, replayed, Scratch, Views, SAME_BLOCK, SAME_BLOCKS_KEPT, SAME_REGION};
use crate::block::buffer::AlignedBuf;
use crate::block::cache::CHUNK;
use crate::block::{BlockSource, Status};
use crate::diff::spans::{differ, Differ, AHEAD};
use crate::diff::DiffError;
use crate::fs::ext::jbd2::ReplayedSource;

impl Views {
    /// The parts of `ranges` where the views of `layer` and the one below
    /// may differ: what the layer holds, and whole ranges its replayed
    /// view takes from elsewhere (sorted, joined). Elsewhere they are the
    /// same bytes, which [`crate::diff::tree::compare`] need not read.
    pub(super) fn held_in(
        &self,
        layer: usize,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<(u64, u64)>, DiffError> {
        let mut out = Vec::new();
        self.held_into(layer, ranges, &mut out)?;
        Ok(out)
    }

    /// [`Views::held_in`], written to `out` (cleared first).
    fn held_into(
        &self,
        layer: usize,
        ranges: &[(u64, u64)],
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), DiffError> {
        out.clear();
        let Some(src) = self.layers.get(layer) else {
            out.extend_from_slice(ranges);
            return Ok(());
        };
        for &(start, len) in ranges {
            let end = start.saturating_add(len);
            if self.replay_differs(layer, &[(start, len)]) {
                out.push((start, len));
                continue;
            }
            // Past the layer's end: not known to be the same.
            if end > src.len() {
                let from = start.max(src.len());
                out.push((from, end.saturating_sub(from)));
            }
            let end = end.min(src.len());
            let mut at = start;
            while at < end {
                // Block status asked ahead and kept: the files after
                // this one lie in the same stretches.
                let (held, next) = self.held_at(layer, src.as_ref(), at, end)?;
                let next = next.max(at.saturating_add(1)).min(end);
                if held {
                    out.push((at, next.saturating_sub(at)));
                }
                at = next;
            }
        }
        crate::block::merge_in_place(out);
        Ok(())
    }

    /// Whether layer `layer` holds any byte of the volume ranges `ranges`
    /// (offset, length), or its replayed view differs there from the one
    /// below (a copy in its journal, or a replay that changed).
    pub(in crate::diff) fn holds(
        &self,
        layer: usize,
        ranges: &[(u64, u64)],
    ) -> Result<bool, DiffError> {
        if layer > 0 && self.replay_differs(layer, ranges) {
            return Ok(true);
        }
        let Some(src) = self.layers.get(layer) else {
            return Ok(false);
        };
        for &(start, len) in ranges {
            let mut at = start;
            let end = at.saturating_add(len).min(src.len());
            while at < end {
                let (held, next) = self.held_at(layer, src.as_ref(), at, end)?;
                if held {
                    return Ok(true);
                }
                at = next.max(at.saturating_add(1));
            }
        }
        Ok(false)
    }

    /// Whether layer `layer` (source `src`) holds the bytes at `at`, and
    /// up to where that holds (past `at`): asked up to [`AHEAD`] bytes
    /// further than `end`, and kept.
    fn held_at(
        &self,
        layer: usize,
        src: &dyn BlockSource,
        at: u64,
        end: u64,
    ) -> Result<(bool, u64), DiffError> {
        if let Some((held, next)) = self.spans.get(layer, at) {
            return Ok((held.is_some(), next));
        }
        let want = end.saturating_sub(at);
        let ahead = want.max(AHEAD).min(src.len().saturating_sub(at)).max(want);
        let e = src.locate(at, ahead)?;
        let next = e.end().max(at.saturating_add(1));
        let held = e.status != Status::Unallocated;
        self.spans.put(layer, at, next, held.then_some(layer));
        Ok((held, next))
    }

    /// The layer serving the disk's bytes at `disk` (`None`: zeros), and
    /// for how many of the `want` bytes from there: the chain asked up to
    /// [`AHEAD`] bytes further, and the answer kept.
    pub(super) fn owner_at(&self, disk: u64, want: u64) -> Result<(Option<usize>, u64), DiffError> {
        let chain = self.layers.len();
        if let Some((layer, end)) = self.spans.get(chain, disk) {
            return Ok((layer, end.saturating_sub(disk).min(want)));
        }
        let ahead = want
            .max(AHEAD)
            .min(self.reader.len().saturating_sub(disk))
            .max(want);
        let o = self.reader.owner(disk, ahead)?;
        let end = disk.saturating_add(o.len.max(1));
        self.spans.put(chain, disk, end, o.layer);
        Ok((o.layer, o.len.min(want)))
    }

    /// Whether the views of `layer` and the one below have the same bytes
    /// in `ranges`: neither replays a block of them from elsewhere, and
    /// where the layer holds them (whole clusters, so a layer holds much
    /// it did not change) its bytes are those below. False when unsure
    /// (a read error).
    pub(in crate::diff) fn same_bytes(&self, layer: usize, ranges: &[(u64, u64)]) -> bool {
        // The buffers of the last call: memory already faulted in.
        let mut scratch = self
            .scratch
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let same = self.same_bytes_in(layer, ranges, &mut scratch);
        if let Ok(mut s) = self.scratch.lock() {
            *s = scratch;
        }
        same
    }

    /// [`Views::same_bytes`], with buffers `scratch`.
    fn same_bytes_in(&self, layer: usize, ranges: &[(u64, u64)], scratch: &mut Scratch) -> bool {
        let below = layer.checked_sub(1).and_then(|l| self.fs.get(l));
        let (Some(new_fs), Some(old_fs)) = (self.fs.get(layer), below) else {
            return false;
        };
        if self.replay_differs(layer, ranges) {
            return false;
        }
        let Scratch {
            new: a,
            old: b,
            held,
        } = scratch;
        // Each view's bytes from its filesystem's cache where it holds
        // them (the top's holds the node it just read), else read.
        let (new_fs, old_fs) = (new_fs.as_ref(), old_fs.as_ref());
        let (new, old) = (new_fs.source(), old_fs.source());
        // In the order given: a node's own structure first, which differs
        // soonest.
        for r in ranges {
            if self
                .held_into(layer, std::slice::from_ref(r), held)
                .is_err()
            {
                return false;
            }
            for &(start, len) in held.iter() {
                let mut at = start;
                let end = start.saturating_add(len);
                while at < end {
                    // The whole block around `at`: the same in both views
                    // (remembered), or compared where asked.
                    let block = at.checked_div(SAME_BLOCK).unwrap_or(0);
                    let first = block.saturating_mul(SAME_BLOCK);
                    let last = first.saturating_add(SAME_BLOCK).min(new.len()).max(at);
                    let stop = end.min(last);
                    // The part asked, as offsets in the block.
                    let (Some(from), Some(to)) = (at.checked_sub(first), stop.checked_sub(first))
                    else {
                        return false;
                    };
                    let meets = |d: &Differ| {
                        d.iter()
                            .any(|&(s, e)| u64::from(s) < to && from < u64::from(e))
                    };
                    let remembered = self
                        .same_blocks
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&(layer, block)).map(|d| d.as_ref().map(meets)));
                    match remembered {
                        Some(Some(true)) => return false,
                        Some(Some(false)) => {}
                        // Known to differ in many places: the block alone
                        // read again and its part compared.
                        Some(None) => {
                            let (Ok(size), Ok(from), Ok(to)) = (
                                usize::try_from(last.saturating_sub(first)),
                                usize::try_from(from),
                                usize::try_from(to),
                            ) else {
                                return false;
                            };
                            let (Some(x), Some(y)) =
                                (fill(new_fs, first, size, a), fill(old_fs, first, size, b))
                            else {
                                return false;
                            };
                            let x = x.as_deref().unwrap_or(a.get(..size).unwrap_or_default());
                            let y = y.as_deref().unwrap_or(b.get(..size).unwrap_or_default());
                            if x.get(from..to).is_none() || x.get(from..to) != y.get(from..to) {
                                return false;
                            }
                        }
                        None => {
                            // The block and the held ones after it, read
                            // in both views at once and remembered: the
                            // nodes after this one ask about them next.
                            let reach = self.same_reach(layer, first, last, old.len());
                            // Inside the cache chunk of the block: the top's
                            // cache mostly holds it (its node was just read).
                            let chunk_end = first
                                .checked_div(CHUNK)
                                .unwrap_or(0)
                                .saturating_add(1)
                                .saturating_mul(CHUNK);
                            let reach = reach.min(chunk_end).max(last);
                            let size = |end: u64| usize::try_from(end.saturating_sub(first)).ok();
                            let (Some(whole), Some(alone)) = (size(reach), size(last)) else {
                                return false;
                            };
                            let read = |size: usize, a: &mut AlignedBuf, b: &mut AlignedBuf| {
                                Some((
                                    fill(new_fs, first, size, a)?,
                                    fill(old_fs, first, size, b)?,
                                    size,
                                ))
                            };
                            let (x, y, size) = match read(whole, a, b) {
                                Some(xy) => xy,
                                None if reach == last => return false,
                                None => match read(alone, a, b) {
                                    Some(xy) => xy,
                                    None => return false,
                                },
                            };
                            let a = x.as_deref().unwrap_or(a.get(..size).unwrap_or_default());
                            let b = y.as_deref().unwrap_or(b.get(..size).unwrap_or_default());
                            let same = match self.remember_region(layer, block, a, b) {
                                Some(d) => !meets(&d),
                                None => {
                                    // Too many places to keep: the part
                                    // itself compared.
                                    let part = |v: &[u8]| -> Option<Vec<u8>> {
                                        let from = usize::try_from(from).ok()?;
                                        let to = usize::try_from(to).ok()?;
                                        v.get(from..to).map(<[u8]>::to_vec)
                                    };
                                    part(a).is_some() && part(a) == part(b)
                                }
                            };
                            if !same {
                                return false;
                            }
                        }
                    }
                    if stop <= at {
                        return false;
                    }
                    at = stop;
                }
            }
        }
        true
    }

    /// Where the bytes [`Views::same_bytes`] reads from block start
    /// `first` end: the block (to `last`), and the blocks after it the
    /// layer holds, up to [`SAME_REGION`] bytes, inside both views
    /// (`old_len`: the lower one's length); whole blocks only.
    fn same_reach(&self, layer: usize, first: u64, last: u64, old_len: u64) -> u64 {
        let Some(src) = self.layers.get(layer) else {
            return last;
        };
        let held = match self.held_at(layer, src.as_ref(), first, last) {
            Ok((true, next)) => next,
            _ => return last,
        };
        let end = first
            .saturating_add(SAME_REGION)
            .min(held)
            .min(src.len())
            .min(old_len);
        // Down to a block's end, unless the volume ends there.
        let whole = if end == src.len() {
            end
        } else {
            end.saturating_sub(end.checked_rem(SAME_BLOCK).unwrap_or(0))
        };
        whole.max(last)
    }

    /// Remembers where the views differ in each block of `a` (layer
    /// `layer`'s view) and `b` (the one below), read from the start of
    /// block `block` (a block differing in too many places to keep, as
    /// such); returns the first block's (`None`: too many places).
    fn remember_region(&self, layer: usize, block: u64, a: &[u8], b: &[u8]) -> Option<Differ> {
        let size = usize::try_from(SAME_BLOCK).unwrap_or(usize::MAX);
        let mut first = None;
        let Ok(mut m) = self.same_blocks.lock() else {
            return differ(a.get(..size).unwrap_or(a), b.get(..size).unwrap_or(b));
        };
        for (i, (x, y)) in a.chunks(size).zip(b.chunks(size)).enumerate() {
            let d = differ(x, y);
            if i == 0 {
                first = Some(d.clone());
            }
            if m.len() >= SAME_BLOCKS_KEPT {
                m.clear();
            }
            let n = u64::try_from(i).unwrap_or(u64::MAX);
            m.insert((layer, block.saturating_add(n)), d);
        }
        first.flatten()
    }

    /// Whether the views of `layer` and the one below replay any block of
    /// `ranges` from different places.
    fn replay_differs(&self, layer: usize, ranges: &[(u64, u64)]) -> bool {
        let any = self
            .replays
            .get_or_init(|| self.fs.iter().any(|f| replayed(f.as_ref()).is_some()));
        if !any {
            return false;
        }
        let below = layer.checked_sub(1).and_then(|l| self.fs.get(l));
        let (Some(new), Some(old)) = (self.fs.get(layer), below) else {
            return false;
        };
        let (rn, ro) = (replayed(new.as_ref()), replayed(old.as_ref()));
        if rn.is_none() && ro.is_none() {
            return false;
        }
        let bs = new.block_size().max(1);
        let copy = |r: Option<&Arc<ReplayedSource>>, b: u64| r.and_then(|r| r.copy_of(b));
        ranges.iter().any(|&(start, len)| {
            let first = start.checked_div(bs).unwrap_or(0);
            let end = start.saturating_add(len).div_ceil(bs);
            let any = |r: Option<&Arc<ReplayedSource>>| r.is_some_and(|r| r.any_in(first, end));
            (any(rn) || any(ro)) && (first..end).any(|b| copy(rn, b) != copy(ro, b))
        })
    }
}
