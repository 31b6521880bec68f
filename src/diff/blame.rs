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
use crate::block::cache::Shared;
use crate::block::layered::LayeredReader;
use crate::block::{BlockError, BlockSource};
use crate::bytes::us;
use crate::fs::ext::jbd2::ReplayedSource;
use crate::fs::ext::Ext4;
use crate::fs::{FileType, Filesystem, FsError, Metadata, NodeId, Problem, Run};

use super::compare::Delta;
use super::spans::Differ;
use super::tree::{compare, same_file};
use super::DiffError;

mod bytes;

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
