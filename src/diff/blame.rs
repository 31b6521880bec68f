//! Layer blame: for a file, the layer that last changed its content and
//! its metadata, the layer that created its path, and how much of it each
//! layer holds. It reads every filesystem through [`Filesystem`] alone:
//! the file's runs say which layers serve its bytes; ext's replayed
//! journal (reached by downcast) says which bytes a layer's journal
//! serves.
//!
//! Going down the chain from the top, a layer can only have changed a file
//! if it holds one of the file's bytes (its node's on-disk structure, its
//! map, data or attribute blocks, as of that layer), or its replayed view
//! differs there from the one below; only those layers are compared with
//! the one below, with the comparison the tree diff uses. A layer holds
//! whole clusters, so it often holds a node's bytes unchanged (copied
//! with a neighbour that changed): those bytes are compared with the
//! ones below first, and a layer that changed none of them is passed
//! over like one that holds none. `blame -R` ([`super::blame_tree`])
//! gives this the names of one tree walk.
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::block::buffer::AlignedBuf;
use crate::block::cache::{Shared, CHUNK};
use crate::block::layered::LayeredReader;
use crate::block::{BlockError, BlockSource, Status};
use crate::bytes::us;
use crate::fs::ext::jbd2::ReplayedSource;
use crate::fs::ext::Ext4;
use crate::fs::{FileType, Filesystem, FsError, Metadata, NodeId, Problem, Run};

use super::compare::Delta;
use super::spans::{differ, Differ, AHEAD};
use super::tree::{compare, same_file};
use super::DiffError;

/// Bytes of a file that one layer holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Share {
    pub layer: Option<usize>,
    pub bytes: u64,
    /// Served from that layer's journal: blocks the replayed view takes
    /// from their copies in the journal ("journal of layer L").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub journal: bool,
}

/// The blame of one file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Blame {
    pub path: String,
    pub inode: u64,
    #[serde(rename = "type")]
    pub file_type: &'static str,
    /// The layer that last changed the bytes (or symlink target).
    pub content_layer: usize,
    /// The layer that last changed the metadata.
    pub metadata_layer: usize,
    /// The layer that created the path: the lowest of the layers from
    /// the top down in which the path exists without a break (0 when it
    /// is in the base). For a file named by node number, the layer where
    /// the node (this generation) appeared. `None` when the chain could
    /// not be followed down that far.
    pub created_layer: Option<usize>,
    /// The file at the path was replaced (a new node) in these layers,
    /// newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced_in: Vec<usize>,
    /// The file's bytes (data, map, attribute blocks) by the layer
    /// serving them; `layer: null` reads as zeros (no layer holds it).
    pub layers: Vec<Share>,
}

/// The chain, seen as of every layer.
pub struct Views {
    /// `fs[i]`: the filesystem as of layer `i` (0 is the base).
    pub fs: Vec<Arc<dyn Filesystem>>,
    /// Each layer's own source (what it holds by itself), seen through
    /// the filesystem's volume: offsets are volume offsets.
    pub layers: Vec<Arc<dyn BlockSource>>,
    /// The whole chain, to say who serves each block.
    pub reader: Arc<LayeredReader>,
    /// Where the filesystem's volume lies on the disk.
    pub geometry: Arc<crate::volume::Geometry>,
    /// Blocks of the volume (layer, block) compared in the layer's view
    /// and the one below: where their bytes differ (nowhere: the same),
    /// as byte ranges in the block (an inode table block holds many
    /// nodes, each asked about its own bytes): see [`Views::same_bytes`].
    /// `None`: they differ in too many places to keep (the part asked is
    /// compared each time).
    pub same_blocks: std::sync::Mutex<std::collections::HashMap<(usize, u64), Option<Differ>>>,
    /// Block status answers kept: which layers hold stretches of the
    /// volume (source `k`: layer `k`'s own), which layer serves
    /// stretches of the disk (source `layers.len()`: the chain).
    pub spans: super::spans::Spans,
    /// [`Views::same_bytes`]'s buffers, kept between calls.
    pub scratch: std::sync::Mutex<Scratch>,
    /// Whether any view replays a journal, once asked (most do not: no
    /// view need then be asked per range).
    pub replays: std::sync::OnceLock<bool>,
}

/// [`Views::same_bytes`]'s buffers: the bytes read in each view, and
/// the held parts of a range.
#[derive(Default)]
pub struct Scratch {
    /// Page-aligned: the kernel copies into an unaligned buffer ~3x
    /// slower.
    new: AlignedBuf,
    old: AlignedBuf,
    held: Vec<(u64, u64)>,
}

/// The unit [`Views::same_bytes`] compares and remembers.
const SAME_BLOCK: u64 = 4096;

/// Most bytes [`Views::same_bytes`] reads at once in each view: the
/// block asked and the held ones after it (a layer holds whole
/// clusters, and the nodes after one ask about the blocks after its).
const SAME_REGION: u64 = 64 << 10;

/// Most blocks [`Views::same_bytes`] remembers (then it starts again).
const SAME_BLOCKS_KEPT: usize = 1 << 18;

/// Where a path leads as of layer `k`: the node `lookup` finds there.
pub(super) type At<'a> = dyn FnMut(usize) -> Option<NodeId> + 'a;

/// Metadata already read: (lowest layer, highest layer, node, its
/// metadata as of those layers); the first entry for a layer and node
/// is its metadata.
type Seen = Vec<(usize, usize, NodeId, Metadata)>;

/// Notes in `seen` that node `node` has metadata `m` as of layers `lo`
/// to `hi`: the last entry stretched down when it holds the same from
/// `hi` (a node passed over layer after layer is cloned once).
fn saw(seen: &mut Seen, lo: usize, hi: usize, node: NodeId, m: &Metadata) {
    if let Some(last) = seen.last_mut() {
        if last.0 == hi && last.2 == node && last.3 == *m {
            last.0 = last.0.min(lo);
            return;
        }
    }
    seen.push((lo, hi, node, m.clone()));
}

/// Every run of `node` (data, map and attribute blocks).
fn runs(fs: &dyn Filesystem, node: NodeId) -> Result<Vec<Run>, FsError> {
    let mut out = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();
    fs.runs(node, &mut problems, &mut |r| {
        out.push(r);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// A directory's names and their nodes (its content, for blame).
fn entries(fs: &dyn Filesystem, dir: NodeId) -> Option<BTreeMap<Vec<u8>, NodeId>> {
    let mut out = BTreeMap::new();
    fs.read_dir(dir, &mut Vec::new(), &mut |e| {
        if !e.is_dot_or_dotdot() {
            out.insert(e.name, e.node);
        }
        ControlFlow::Continue(())
    })
    .ok()?;
    Some(out)
}

/// The node at `path` (bytes; names need not be UTF-8).
fn lookup(fs: &dyn Filesystem, path: &[u8]) -> Option<NodeId> {
    fs.lookup(path).ok()
}

/// The journal replayed under `fs`, when it is ext and one was.
fn replayed(fs: &dyn Filesystem) -> Option<&Arc<ReplayedSource>> {
    fs.as_any().downcast_ref::<Ext4>().and_then(Ext4::replayed)
}

impl Views {
    /// The history of a path, known to exist as of layer `from` (`at(k)`
    /// is the node it leads to as of layer `k`): the layer that created
    /// it (the lowest of the unbroken run of layers down from `from` in
    /// which the path exists) and the layers in that run where it came to
    /// hold another file (a new node, or the same number of a new
    /// generation), newest first. `seen` holds metadata already read.
    fn path_history(&self, at: &mut At, from: usize, seen: &Seen) -> (usize, Vec<usize>) {
        let mut replaced = Vec::new();
        let mut l = from;
        let mut here = at(l);
        while let Some(down) = l.checked_sub(1) {
            let Some(there) = at(down) else {
                break;
            };
            let same = here == Some(there)
                && match (self.meta(seen, l, there), self.meta(seen, down, there)) {
                    (Some(n), Some(o)) => same_file(&o, &n),
                    _ => false,
                };
            if !same {
                replaced.push(l);
            }
            here = Some(there);
            l = down;
        }
        (l, replaced)
    }

    /// The metadata of `node` as of layer `layer`: from `seen` when it
    /// was read, else read.
    fn meta<'a>(&self, seen: &'a Seen, layer: usize, node: NodeId) -> Option<Cow<'a, Metadata>> {
        if let Some((_, _, _, m)) = seen
            .iter()
            .find(|s| s.0 <= layer && layer <= s.1 && s.2 == node)
        {
            return Some(Cow::Borrowed(m));
        }
        self.fs.get(layer)?.metadata(node).ok().map(Cow::Owned)
    }

    /// The volume ranges of `node` as of layer `layer` that say whether a
    /// layer changed it: its own structure and its runs.
    pub(super) fn ranges_of(
        &self,
        layer: usize,
        node: NodeId,
    ) -> Result<Vec<(u64, u64)>, DiffError> {
        let Some(fs) = self.fs.get(layer) else {
            return Ok(Vec::new());
        };
        let mut ranges = vec![fs.node_span(node)?];
        ranges.extend(runs(fs.as_ref(), node)?.iter().map(|r| (r.physical, r.len)));
        Ok(ranges)
    }

    /// The parts of `ranges` where the views of `layer` and the one below
    /// may differ: what the layer holds, and whole ranges its replayed
    /// view takes from elsewhere (sorted, joined). Elsewhere they are the
    /// same bytes, which [`compare`] need not read.
    fn held_in(&self, layer: usize, ranges: &[(u64, u64)]) -> Result<Vec<(u64, u64)>, DiffError> {
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
    pub(super) fn holds(&self, layer: usize, ranges: &[(u64, u64)]) -> Result<bool, DiffError> {
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
    fn owner_at(&self, disk: u64, want: u64) -> Result<(Option<usize>, u64), DiffError> {
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
    pub(super) fn same_bytes(&self, layer: usize, ranges: &[(u64, u64)]) -> bool {
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

    /// Who serves the volume's bytes `[start, start + len)` of the top
    /// view: its replayed blocks from their journal's layer, the rest from
    /// the layer holding them.
    fn serve(
        &self,
        fs: &dyn Filesystem,
        start: u64,
        len: u64,
        shares: &mut Vec<Share>,
    ) -> Result<(), DiffError> {
        let bs = fs.block_size().max(1);
        let mut add = |layer: Option<usize>, journal: bool, n: u64| match shares
            .iter_mut()
            .find(|x| x.layer == layer && x.journal == journal)
        {
            Some(x) => x.bytes = x.bytes.saturating_add(n),
            None => shares.push(Share {
                layer,
                bytes: n,
                journal,
            }),
        };
        let replayed = replayed(fs);
        let end = start.saturating_add(len);
        let mut at = start;
        while at < end {
            let b = at.checked_div(bs).unwrap_or(0);
            let block_end = b.saturating_add(1).saturating_mul(bs).min(end);
            if let Some(layer) = replayed.and_then(|r| r.journal_layer(b)) {
                add(layer, true, block_end.saturating_sub(at));
                at = block_end;
                continue;
            }
            // Up to the next replayed block, from the layers.
            let stop = replayed
                .and_then(|r| r.next_replayed(b.saturating_add(1)))
                .map_or(end, |x| x.saturating_mul(bs).min(end));
            while at < stop {
                // The volume's bytes, on the disk (contiguous for a run).
                let Some((disk, run)) = self.geometry.to_disk(at) else {
                    return Ok(());
                };
                let (layer, len) = self.owner_at(disk, run.min(stop.saturating_sub(at)))?;
                // At least 1: every turn moves on.
                let n = len.max(1).min(stop.saturating_sub(at)).max(1);
                add(layer, false, n);
                at = at.saturating_add(n);
            }
        }
        Ok(())
    }

    /// Blames node `ino`, named `path`, as of the top layer.
    ///
    /// # Errors
    /// The node cannot be read as of the top; read errors.
    pub fn blame(&self, ino: u64, path: String) -> Result<Blame, DiffError> {
        self.blame_path(ino, path, None)
    }

    /// The top layer's number and view.
    pub(super) fn top(&self) -> Result<(usize, &dyn Filesystem), DiffError> {
        self.fs
            .len()
            .checked_sub(1)
            .and_then(|t| Some((t, self.fs.get(t)?.as_ref())))
            .ok_or_else(|| {
                DiffError::Block(BlockError::Internal {
                    what: "blame over a chain of no layers".into(),
                })
            })
    }

    /// Blames the file at `raw` (its path, as bytes) as of the top layer,
    /// node `ino` there; without `raw`, follows the node alone. With a
    /// path the history is the path's: a file replaced at it continues
    /// into the file it replaced, and the path was created where it first
    /// appears.
    ///
    /// # Errors
    /// The node cannot be read as of the top; read errors.
    pub fn blame_path(
        &self,
        ino: u64,
        path: String,
        raw: Option<&[u8]>,
    ) -> Result<Blame, DiffError> {
        let (_, fs) = self.top()?;
        let meta = fs.metadata(ino)?;
        let top_runs = runs(fs, ino)?;
        // The path looked up as of each layer, once.
        let mut found: BTreeMap<usize, Option<NodeId>> = BTreeMap::new();
        let mut at = |k: usize| {
            *found.entry(k).or_insert_with(|| {
                let (fs, p) = (self.fs.get(k)?, raw?);
                lookup(fs.as_ref(), p)
            })
        };
        self.blame_known(ino, path, raw.is_some(), meta, &top_runs, &mut at)
    }

    /// [`Views::blame_path`] of node `ino`, with what the caller knows:
    /// its metadata and runs as of the top, and (with `by_path`) where the
    /// path leads as of each layer (`at(k)`: the node `lookup` finds as
    /// of layer `k`).
    pub(super) fn blame_known(
        &self,
        ino: u64,
        path: String,
        by_path: bool,
        meta: Metadata,
        top_runs: &[Run],
        at: &mut At,
    ) -> Result<Blame, DiffError> {
        let (top, fs) = self.top()?;
        // Shares: who serves each byte now.
        let mut shares: Vec<Share> = Vec::new();
        for r in top_runs {
            self.serve(fs, r.physical, r.len, &mut shares)?;
        }
        shares.sort_by_key(|s| (std::cmp::Reverse(s.layer), s.journal));
        let mut b = Blame {
            path,
            inode: ino,
            file_type: meta.file_type.name(),
            content_layer: 0,
            metadata_layer: 0,
            created_layer: None,
            replaced_in: Vec::new(),
            layers: shares,
        };
        let (mut content, mut meta_layer) = (None, None);
        let mut ino = ino;
        // Whether the path is still being followed (until the layer that
        // created it).
        let mut on_path = by_path;
        // Metadata read on the way down, for the path's history.
        let mut seen: Seen = Vec::new();
        // The node's metadata and ranges as of the layer looked at next,
        // when known: as of the top, and below a layer that held none of
        // its bytes (the same bytes there).
        let mut known: Option<(Metadata, Vec<(u64, u64)>)> = None;
        if top > 0 {
            let mut ranges = Vec::with_capacity(top_runs.len().saturating_add(1));
            ranges.push(fs.node_span(ino)?);
            ranges.extend(top_runs.iter().map(|r| (r.physical, r.len)));
            known = Some((meta, ranges));
        }
        for l in (1..=top).rev() {
            // l is 1..=top, top < fs.len().
            let (Some(older), Some(newer)) = (self.fs.get(l.saturating_sub(1)), self.fs.get(l))
            else {
                break;
            };
            let (older, newer) = (older.as_ref(), newer.as_ref());
            let (n, ranges) = match known.take() {
                Some(k) => k,
                None => (newer.metadata(ino)?, self.ranges_of(l, ino)?),
            };
            // A layer that holds none of the node's bytes, or holds them
            // unchanged, changed nothing of it, unless the path now leads
            // elsewhere or the node is not a file in use.
            let unchanged = !self.holds(l, &ranges)?
                || (same_file(&n, &n)
                    && (!on_path || at(l.saturating_sub(1)) == Some(ino))
                    && self.same_bytes(l, &ranges));
            if unchanged {
                // The layer below has the same bytes: the same node.
                saw(&mut seen, l.saturating_sub(1), l, ino, &n);
                known = Some((n, ranges));
                continue;
            }
            let o = older.metadata(ino).ok();
            let same = o.as_ref().is_some_and(|o| same_file(o, &n));
            // Where the views may differ (the rest need not be read).
            let held = self.held_in(l, &ranges)?;
            if on_path {
                // The path as of the layer below: absent (created here,
                // by a new file or a move), the same file, or another
                // (replaced here).
                match at(l.saturating_sub(1)) {
                    None => on_path = false,
                    Some(other) if other != ino || !same => {
                        // What differs from the file it replaced is what
                        // this layer changed; the history goes on with it.
                        let old = older.metadata(other)?;
                        let d = if old.file_type == n.file_type {
                            let held = if other == ino {
                                Some(held.as_slice())
                            } else {
                                None
                            };
                            compare(older, &old, newer, &n, held)?
                        } else {
                            Delta {
                                content: true,
                                metadata: vec!["type"],
                            }
                        };
                        if d.content {
                            content.get_or_insert(l);
                        }
                        if !d.metadata.is_empty() {
                            meta_layer.get_or_insert(l);
                        }
                        ino = other;
                        if content.is_some() && meta_layer.is_some() {
                            break;
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            match o {
                Some(o) if same => {
                    saw(&mut seen, l, l, ino, &n);
                    saw(&mut seen, l.saturating_sub(1), l.saturating_sub(1), ino, &o);
                    let mut d = compare(older, &o, newer, &n, Some(&held))?;
                    if n.file_type == FileType::Directory {
                        // A directory's content is its entries.
                        d.content = entries(older, ino) != entries(newer, ino);
                    }
                    if d.content && content.is_none() {
                        content = Some(l);
                    }
                    if !d.metadata.is_empty() && meta_layer.is_none() {
                        meta_layer = Some(l);
                    }
                }
                _ => {
                    // A new file: everything about it is this layer's.
                    content.get_or_insert(l);
                    meta_layer.get_or_insert(l);
                    if !by_path {
                        b.created_layer = Some(l);
                    }
                    break;
                }
            }
            if content.is_some() && meta_layer.is_some() {
                break;
            }
        }
        if by_path {
            // The path's own history: it may be older or younger than the
            // file now at it.
            let (created, replaced) = self.path_history(at, top, &seen);
            b.replaced_in = replaced;
            b.created_layer = Some(created);
        } else if b.created_layer.is_none() && content.is_none() && meta_layer.is_none() {
            b.created_layer = Some(0);
        }
        b.content_layer = content.unwrap_or(0);
        b.metadata_layer = meta_layer.unwrap_or(0);
        Ok(b)
    }
}

/// Bytes `[first, first + size)` of `fs`'s volume: `Some(Some(_))` when
/// its cache holds them (shared, no read), `Some(None)` when they were
/// read into `buf`; `None` on a read error.
fn fill(
    fs: &dyn Filesystem,
    first: u64,
    size: usize,
    buf: &mut AlignedBuf,
) -> Option<Option<Shared>> {
    if let Some(h) = fs.cached_bytes(first, size) {
        return Some(Some(h));
    }
    if buf.len() < size {
        // Allocated once (most reads are at most a region), kept.
        *buf = AlignedBuf::new(size.max(us(SAME_REGION)));
    }
    fs.source().read_at(first, buf.get_mut(..size)?).ok()?;
    Some(None)
}
