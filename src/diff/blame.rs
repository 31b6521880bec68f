//! Layer blame: for a file, the layer that last changed its content and
//! its metadata, and how much of it each layer holds. It reads every
//! filesystem through [`Filesystem`] alone: the file's runs say which
//! layers serve its bytes.
//!
//! Going down the chain from the top, a layer can only have changed a file
//! if it holds one of the file's bytes (its node's on-disk structure, its
//! map, data or attribute blocks, as of that layer); only those layers are
//! compared with the one below, with the comparison the tree diff uses.
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::block::layered::LayeredReader;
use crate::block::{BlockSource, Status};
use crate::fs::{FileType, Filesystem, FsError, NodeId, Problem, Run};

use super::tree::{compare, same_file};
use super::DiffError;

/// Bytes of a file that one layer holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Share {
    pub layer: Option<usize>,
    pub bytes: u64,
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
    /// The layer where this file (this node and generation) appeared,
    /// when it was found on the way down.
    pub created_layer: Option<usize>,
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

impl Views {
    /// Whether layer `layer` holds any byte of the volume ranges `ranges`
    /// (offset, length).
    fn holds(&self, layer: usize, ranges: &[(u64, u64)]) -> Result<bool, DiffError> {
        let src = &self.layers[layer];
        for &(start, len) in ranges {
            let mut at = start;
            let end = at.saturating_add(len).min(src.len());
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

    /// Blames node `ino`, named `path`, as of the top layer.
    ///
    /// # Errors
    /// The node cannot be read as of the top; read errors.
    pub fn blame(&self, ino: u64, path: String) -> Result<Blame, DiffError> {
        let top = self.fs.len() - 1;
        let fs = self.fs[top].as_ref();
        let meta = fs.metadata(ino)?;
        // Shares: who serves each byte now.
        let mut shares: Vec<Share> = Vec::new();
        for r in runs(fs, ino)? {
            let mut at = r.physical;
            let end = at.saturating_add(r.len);
            while at < end {
                // The volume's bytes, on the disk (contiguous for a run).
                let Some((disk, run)) = self.geometry.to_disk(at) else {
                    break;
                };
                let o = self.reader.owner(disk, run.min(end - at))?;
                let n = o.len.max(1).min(end - at);
                match shares.iter_mut().find(|x| x.layer == o.layer) {
                    Some(x) => x.bytes += n,
                    None => shares.push(Share {
                        layer: o.layer,
                        bytes: n,
                    }),
                }
                at += n;
            }
        }
        shares.sort_by_key(|s| std::cmp::Reverse(s.layer));
        let mut b = Blame {
            path,
            inode: ino,
            file_type: meta.file_type.name(),
            content_layer: 0,
            metadata_layer: 0,
            created_layer: None,
            layers: shares,
        };
        let (mut content, mut meta_layer) = (None, None);
        for l in (1..=top).rev() {
            let (older, newer) = (self.fs[l - 1].as_ref(), self.fs[l].as_ref());
            let n = newer.metadata(ino)?;
            let at = newer.node_report(ino)?;
            let mut ranges: Vec<(u64, u64)> = vec![(at.offset, at.len)];
            ranges.extend(runs(newer, ino)?.iter().map(|r| (r.physical, r.len)));
            if !self.holds(l, &ranges)? {
                continue;
            }
            match older.metadata(ino).ok() {
                Some(o) if same_file(&o, &n) => {
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
                    content.get_or_insert(l);
                    meta_layer.get_or_insert(l);
                    b.created_layer = Some(l);
                    break;
                }
            }
            if content.is_some() && meta_layer.is_some() {
                break;
            }
        }
        if b.created_layer.is_none() && content.is_none() && meta_layer.is_none() {
            b.created_layer = Some(0);
        }
        b.content_layer = content.unwrap_or(0);
        b.metadata_layer = meta_layer.unwrap_or(0);
        Ok(b)
    }
}
