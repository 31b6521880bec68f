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
    /// The layer where this file (this inode and generation) appeared,
    /// when it was found on the way down.
    pub created_layer: Option<usize>,
    /// The file's blocks (data, map, attribute) by the layer serving
    /// them; `layer: null` reads as zeros (no layer holds it).
    pub layers: Vec<Share>,
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
    /// (filesystem byte offsets).
    fn holds(&self, layer: usize, ranges: &[(u64, u64)]) -> Result<bool, DiffError> {
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

    /// Blames inode `ino`, named `path`, as of the top layer.
    ///
    /// # Errors
    /// The inode cannot be read as of the top; read errors.
    pub fn blame(&self, ino: u64, path: String) -> Result<Blame, DiffError> {
        let top = self.fs.len() - 1;
        let fs = &self.fs[top];
        let inode = fs.inode(ino)?;
        let bs = fs.superblock().block_size;
        // Shares: who serves each block now.
        let mut shares: Vec<Share> = Vec::new();
        for (s, l) in owned_blocks(fs, &inode) {
            let mut at = s * bs;
            let end = at + l * bs;
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
            file_type: inode.type_name(),
            content_layer: 0,
            metadata_layer: 0,
            created_layer: None,
            layers: shares,
        };
        let (mut content, mut meta) = (None, None);
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
            match o {
                Some(o) if same_file(&o, &n) => {
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
                    content.get_or_insert(l);
                    meta.get_or_insert(l);
                    b.created_layer = Some(l);
                    break;
                }
            }
            if content.is_some() && meta.is_some() {
                break;
            }
        }
        if b.created_layer.is_none() && content.is_none() && meta.is_none() {
            b.created_layer = Some(0);
        }
        b.content_layer = content.unwrap_or(0);
        b.metadata_layer = meta.unwrap_or(0);
        Ok(b)
    }
}
