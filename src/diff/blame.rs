//! Layer blame: for a file, the layer that last changed its content and
//! its metadata, and how much of it each layer holds.
//!
//! Going down the chain from the top, a layer can only have changed a file
//! if it holds one of the file's blocks (its inode's table block, its map,
//! data or attribute blocks, as of that layer); only those layers are
//! compared with the one below, with the same comparison the diff uses.
use std::sync::Arc;

use crate::block::layered::LayeredReader;
use crate::block::{BlockSource, Status};
use crate::fs::ext::Ext4;

use super::compare::{compare, same_file};
use super::index::owned_blocks;
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
    /// is in the base). For a file named by inode number, the layer where
    /// the inode (this generation) appeared. `None` when the chain could
    /// not be followed down that far.
    pub created_layer: Option<usize>,
    /// The file at the path was replaced (a new inode) in these layers,
    /// newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced_in: Vec<usize>,
    /// The file's blocks (data, map, attribute) by the layer serving
    /// them; `layer: null` reads as zeros (no layer holds it).
    pub layers: Vec<Share>,
}

impl Views {
    /// The history of `path`, known to exist as of layer `from`: the layer
    /// that created it (the lowest of the unbroken run of layers down from
    /// `from` in which the path exists) and the layers in that run where
    /// it came to hold another file (a new inode, or the same number of a
    /// new generation), newest first.
    fn path_history(&self, path: &[u8], from: usize) -> (usize, Vec<usize>) {
        let mut replaced = Vec::new();
        let mut l = from;
        let mut here = self.fs.get(l).and_then(|fs| lookup(fs, path));
        while l > 0 {
            let (Some(fs), Some(below)) = (self.fs.get(l), self.fs.get(l - 1)) else {
                break;
            };
            let Some(there) = lookup(below, path) else {
                break;
            };
            let same = here == Some(there)
                && match (fs.inode(there), below.inode(there)) {
                    (Ok(n), Ok(o)) => same_file(&o, &n),
                    _ => false,
                };
            if !same {
                replaced.push(l);
            }
            here = Some(there);
            l -= 1;
        }
        (l, replaced)
    }
}

/// The inode at `path` (bytes; names need not be UTF-8).
fn lookup(fs: &Ext4, path: &[u8]) -> Option<u64> {
    match std::str::from_utf8(path) {
        Ok(p) => fs.lookup(p).ok(),
        Err(_) => crate::fs::Filesystem::lookup(fs, path).ok(),
    }
}

/// The chain, seen as of every layer.
pub struct Views {
    /// `fs[i]`: the filesystem as of layer `i` (0 is the base).
    pub fs: Vec<Ext4>,
    /// Each layer's own source (what it holds by itself), seen through
    /// the filesystem's volume: offsets are volume offsets.
    pub layers: Vec<Arc<dyn BlockSource>>,
    /// The whole chain, to say who serves each block.
    pub reader: Arc<LayeredReader>,
    /// Where the filesystem's volume lies on the disk.
    pub geometry: Arc<crate::volume::Geometry>,
}

impl Views {
    /// Whether layer `layer` holds any byte of the disk ranges `ranges`
    /// (filesystem byte offsets), or its replayed view differs there from
    /// the one below (a copy in its journal, or a replay that changed).
    fn holds(&self, layer: usize, ranges: &[(u64, u64)]) -> Result<bool, DiffError> {
        if layer > 0 && self.replay_differs(layer, ranges) {
            return Ok(true);
        }
        let src = &self.layers[layer];
        for &(start, len) in ranges {
            let mut at = start;
            let end = (at + len).min(src.len());
            while at < end {
                let e = src.locate(at, end - at)?;
                if e.status != Status::Unallocated {
                    return Ok(true);
                }
                at = e.end().max(at + 1);
            }
        }
        Ok(false)
    }

    /// Whether the views of `layer` and the one below replay any block of
    /// `ranges` from different places.
    fn replay_differs(&self, layer: usize, ranges: &[(u64, u64)]) -> bool {
        let (Some(new), Some(old)) = (self.fs.get(layer), self.fs.get(layer - 1)) else {
            return false;
        };
        if new.replayed().is_none() && old.replayed().is_none() {
            return false;
        }
        let bs = new.superblock().block_size.max(1);
        let copy = |fs: &Ext4, b: u64| fs.replayed().and_then(|r| r.copy_of(b));
        ranges.iter().any(|&(start, len)| {
            let first = start / bs;
            let end = start.saturating_add(len).div_ceil(bs);
            let replayed = |fs: &Ext4| {
                fs.replayed()
                    .is_some_and(|r| r.blocks().any(|b| b >= first && b < end))
            };
            (replayed(new) || replayed(old)) && (first..end).any(|b| copy(new, b) != copy(old, b))
        })
    }

    /// Who serves `[s, s + l)` (filesystem blocks) of the top view: its
    /// replayed blocks from their journal's layer, the rest from the layer
    /// holding them.
    fn serve(&self, fs: &Ext4, s: u64, l: u64, shares: &mut Vec<Share>) -> Result<(), DiffError> {
        let bs = fs.superblock().block_size;
        let mut add = |layer: Option<usize>, journal: bool, n: u64| match shares
            .iter_mut()
            .find(|x| x.layer == layer && x.journal == journal)
        {
            Some(x) => x.bytes += n,
            None => shares.push(Share {
                layer,
                bytes: n,
                journal,
            }),
        };
        let replayed = fs.replayed();
        let mut b = s;
        let end = s + l;
        while b < end {
            if let Some(layer) = replayed.and_then(|r| r.journal_layer(b)) {
                add(layer, true, bs);
                b += 1;
                continue;
            }
            // Up to the next replayed block, from the layers.
            let next = replayed
                .and_then(|r| r.blocks().find(|&x| x > b && x < end))
                .unwrap_or(end);
            let mut at = b * bs;
            let stop = next * bs;
            while at < stop {
                // The volume's bytes, on the disk (contiguous for a run).
                let Some((disk, run)) = self.geometry.to_disk(at) else {
                    break;
                };
                let o = self.reader.owner(disk, run.min(stop - at))?;
                let n = o.len.max(1).min(stop - at);
                add(o.layer, false, n);
                at += n;
            }
            b = next;
        }
        Ok(())
    }

    /// Blames inode `ino`, named `path`, as of the top layer.
    ///
    /// # Errors
    /// The inode cannot be read as of the top; read errors.
    pub fn blame(&self, ino: u64, path: String) -> Result<Blame, DiffError> {
        self.blame_path(ino, path, None)
    }

    /// Blames the file at `raw` (its path, as bytes) as of the top layer,
    /// inode `ino` there; without `raw`, follows the inode alone. With a
    /// path the history is the path's: a file replaced at it continues
    /// into the file it replaced, and the path was created where it first
    /// appears.
    ///
    /// # Errors
    /// The inode cannot be read as of the top; read errors.
    pub fn blame_path(
        &self,
        ino: u64,
        path: String,
        raw: Option<&[u8]>,
    ) -> Result<Blame, DiffError> {
        let top = self.fs.len() - 1;
        let fs = &self.fs[top];
        let inode = fs.inode(ino)?;
        let bs = fs.superblock().block_size;
        // Shares: who serves each block now.
        let mut shares: Vec<Share> = Vec::new();
        for (s, l) in owned_blocks(fs, &inode) {
            self.serve(fs, s, l, &mut shares)?;
        }
        shares.sort_by_key(|s| (std::cmp::Reverse(s.layer), s.journal));
        let mut b = Blame {
            path,
            inode: ino,
            file_type: inode.type_name(),
            content_layer: 0,
            metadata_layer: 0,
            created_layer: None,
            replaced_in: Vec::new(),
            layers: shares,
        };
        let (mut content, mut meta) = (None, None);
        let mut ino = ino;
        // Whether the path is still being followed (until the layer that
        // created it).
        let mut on_path = raw.is_some();
        for l in (1..=top).rev() {
            let n = self.fs[l].inode(ino)?;
            let isz = u64::from(self.fs[l].superblock().inode_size).max(128);
            let mut ranges: Vec<(u64, u64)> = vec![(n.base, isz)];
            ranges.extend(
                owned_blocks(&self.fs[l], &n)
                    .into_iter()
                    .map(|(s, c)| (s * bs, c * bs)),
            );
            if !self.holds(l, &ranges)? {
                continue;
            }
            let o = self.fs[l - 1].inode(ino).ok();
            let same = o.as_ref().is_some_and(|o| same_file(o, &n));
            if let (true, Some(p)) = (on_path, raw) {
                // The path as of the layer below: absent (created here,
                // by a new file or a move), the same file, or another
                // (replaced here).
                match lookup(&self.fs[l - 1], p) {
                    None => on_path = false,
                    Some(other) if other != ino || !same => {
                        // What differs from the file it replaced is what
                        // this layer changed; the history goes on with it.
                        let old = self.fs[l - 1].inode(other)?;
                        let d = if old.mode & 0xf000 == n.mode & 0xf000 {
                            compare(&self.fs[l - 1], &old, &self.fs[l], &n, None)?
                        } else {
                            super::compare::Delta {
                                content: true,
                                metadata: vec!["type"],
                            }
                        };
                        if d.content {
                            content.get_or_insert(l);
                        }
                        if !d.metadata.is_empty() {
                            meta.get_or_insert(l);
                        }
                        ino = other;
                        if content.is_some() && meta.is_some() {
                            break;
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            match o {
                Some(o) if same => {
                    let mut d = compare(&self.fs[l - 1], &o, &self.fs[l], &n, None)?;
                    if n.is_dir() {
                        // A directory's content is its entries.
                        let entries = |fs: &Ext4| super::index::entries(fs, ino).ok().map(|e| e.0);
                        d.content = entries(&self.fs[l - 1]) != entries(&self.fs[l]);
                    }
                    if d.content && content.is_none() {
                        content = Some(l);
                    }
                    if !d.metadata.is_empty() && meta.is_none() {
                        meta = Some(l);
                    }
                }
                _ => {
                    // A new file: everything about it is this layer's.
                    content.get_or_insert(l);
                    meta.get_or_insert(l);
                    if raw.is_none() {
                        b.created_layer = Some(l);
                    }
                    break;
                }
            }
            if content.is_some() && meta.is_some() {
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
            None if b.created_layer.is_none() && content.is_none() && meta.is_none() => Some(0),
            None => b.created_layer,
        };
        b.content_layer = content.unwrap_or(0);
        b.metadata_layer = meta.unwrap_or(0);
        Ok(b)
    }
}
