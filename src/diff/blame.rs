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
//! the one below, with the comparison the tree diff uses.
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::block::layered::LayeredReader;
use crate::block::{BlockError, BlockSource, Status};
use crate::fs::ext::jbd2::ReplayedSource;
use crate::fs::ext::Ext4;
use crate::fs::{FileType, Filesystem, FsError, NodeId, Problem, Run};

use super::compare::Delta;
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
    /// The history of `path`, known to exist as of layer `from`: the layer
    /// that created it (the lowest of the unbroken run of layers down from
    /// `from` in which the path exists) and the layers in that run where
    /// it came to hold another file (a new node, or the same number of a
    /// new generation), newest first.
    fn path_history(&self, path: &[u8], from: usize) -> (usize, Vec<usize>) {
        let mut replaced = Vec::new();
        let mut l = from;
        let mut here = self.fs.get(l).and_then(|fs| lookup(fs.as_ref(), path));
        while let Some(down) = l.checked_sub(1) {
            let (Some(fs), Some(below)) = (self.fs.get(l), self.fs.get(down)) else {
                break;
            };
            let Some(there) = lookup(below.as_ref(), path) else {
                break;
            };
            let same = here == Some(there)
                && match (fs.metadata(there), below.metadata(there)) {
                    (Ok(n), Ok(o)) => same_file(&o, &n),
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

    /// Whether layer `layer` holds any byte of the volume ranges `ranges`
    /// (offset, length), or its replayed view differs there from the one
    /// below (a copy in its journal, or a replay that changed).
    fn holds(&self, layer: usize, ranges: &[(u64, u64)]) -> Result<bool, DiffError> {
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
                let e = src.locate(at, end.saturating_sub(at))?;
                if e.status != Status::Unallocated {
                    return Ok(true);
                }
                at = e.end().max(at.saturating_add(1));
            }
        }
        Ok(false)
    }

    /// Whether the views of `layer` and the one below replay any block of
    /// `ranges` from different places.
    fn replay_differs(&self, layer: usize, ranges: &[(u64, u64)]) -> bool {
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
                let o = self.reader.owner(disk, run.min(stop.saturating_sub(at)))?;
                // At least 1: every turn moves on.
                let n = o.len.max(1).min(stop.saturating_sub(at)).max(1);
                add(o.layer, false, n);
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
        let Some((top, fs)) = self
            .fs
            .len()
            .checked_sub(1)
            .and_then(|t| Some((t, self.fs.get(t)?)))
        else {
            return Err(DiffError::Block(BlockError::Internal {
                what: "blame over a chain of no layers".into(),
            }));
        };
        let fs = fs.as_ref();
        let meta = fs.metadata(ino)?;
        // Shares: who serves each byte now.
        let mut shares: Vec<Share> = Vec::new();
        for r in runs(fs, ino)? {
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
        let mut on_path = raw.is_some();
        for l in (1..=top).rev() {
            // l is 1..=top, top < fs.len().
            let (Some(older), Some(newer)) = (self.fs.get(l.saturating_sub(1)), self.fs.get(l))
            else {
                break;
            };
            let (older, newer) = (older.as_ref(), newer.as_ref());
            let n = newer.metadata(ino)?;
            let at = newer.node_report(ino)?;
            let mut ranges: Vec<(u64, u64)> = vec![(at.offset, at.len)];
            ranges.extend(runs(newer, ino)?.iter().map(|r| (r.physical, r.len)));
            if !self.holds(l, &ranges)? {
                continue;
            }
            let o = older.metadata(ino).ok();
            let same = o.as_ref().is_some_and(|o| same_file(o, &n));
            if let (true, Some(p)) = (on_path, raw) {
                // The path as of the layer below: absent (created here,
                // by a new file or a move), the same file, or another
                // (replaced here).
                match lookup(older, p) {
                    None => on_path = false,
                    Some(other) if other != ino || !same => {
                        // What differs from the file it replaced is what
                        // this layer changed; the history goes on with it.
                        let old = older.metadata(other)?;
                        let d = if old.file_type == n.file_type {
                            compare(older, &old, newer, &n, None)?
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
                    let mut d = compare(older, &o, newer, &n, None)?;
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
                    if raw.is_none() {
                        b.created_layer = Some(l);
                    }
                    break;
                }
            }
            if content.is_some() && meta_layer.is_some() {
                break;
            }
        }
        b.created_layer = match raw {
            // The path's own history: it may be older or younger than the
            // file now at it.
            Some(p) => {
                let (created, replaced) = self.path_history(p, top);
                b.replaced_in = replaced;
                Some(created)
            }
            None if b.created_layer.is_none() && content.is_none() && meta_layer.is_none() => {
                Some(0)
            }
            None => b.created_layer,
        };
        b.content_layer = content.unwrap_or(0);
        b.metadata_layer = meta_layer.unwrap_or(0);
        Ok(b)
    }
}
