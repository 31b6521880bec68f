//! The worker's filesystem requests: the superblock, directories, where a
//! file's blocks are and which layers hold them, structures to mark in
//! hex, the group table, and a changed file as of two layers.
use std::sync::Arc;

use super::{error_chain, Worker, MAX_CELLS};
use crate::block::{BlockError, BlockSource};
use crate::fs::ext::Ext4;
use crate::ui::msg::{
    Checksum, FieldRow, FileAt, GroupRow, GroupsTable, LayerSet, Marks, Reply, Structure, TreeNode,
    MAX_GROUP_ROWS,
};

impl Worker {
    /// The filesystem as of `as_of`, opened on first use.
    pub(super) fn ext(&mut self, as_of: usize) -> Result<Result<&Ext4, String>, BlockError> {
        let view = self.view(as_of)?;
        if view.fs.is_none() {
            let source: Arc<dyn BlockSource> = view.reader.clone();
            view.fs =
                Some(Ext4::open(source).map_err(|e| crate::escape::printable(&error_chain(&e))));
        }
        Ok(match view.fs.as_ref() {
            Some(Ok(fs)) => Ok(fs),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no filesystem".into()),
        })
    }

    /// A changed file as of layer `to` and the one below, from the views
    /// (and their caches) the other panes use.
    pub(super) fn compare(
        &mut self,
        to: usize,
        change: &crate::diff::Change,
        offset: u64,
        seek: crate::ui::msg::Seek,
    ) -> Result<Reply, BlockError> {
        let from = to.saturating_sub(1);
        // Open both (a filesystem that does not open stays in its view,
        // read below), then borrow both.
        let _ = self.ext(from)?;
        let _ = self.ext(to)?;
        let fs = |n: usize| match self.views.get(&n).and_then(|v| v.fs.as_ref()) {
            Some(Ok(fs)) => Ok(fs),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no filesystem".to_owned()),
        };
        let result = fs(from).and_then(|old| {
            let new = fs(to)?;
            super::diff::compare(old, new, to, change, offset, seek)
        });
        Ok(match result {
            Ok(c) => Reply::Compare(Box::new(c)),
            Err(e) => Reply::Error(crate::escape::printable(&e)),
        })
    }

    pub(super) fn fs(&mut self, as_of: usize) -> Result<Result<Vec<FieldRow>, String>, BlockError> {
        Ok(self
            .ext(as_of)?
            .map(|fs| fs.superblock().fields.iter().map(field_row).collect()))
    }

    pub(super) fn dir(
        &mut self,
        as_of: usize,
        ino: u64,
    ) -> Result<Result<Vec<TreeNode>, String>, BlockError> {
        Ok(self.ext(as_of)?.and_then(|fs| {
            let node = fs.inode(ino).map_err(|e| e.to_string())?;
            let mut errors = Vec::new();
            let entries = fs.read_dir(&node, &mut errors).map_err(|e| e.to_string())?;
            let mut out: Vec<TreeNode> = entries
                .iter()
                .filter(|e| e.name != b"." && e.name != b"..")
                .map(|e| {
                    let child = fs.inode(u64::from(e.inode)).ok();
                    TreeNode {
                        ino: u64::from(e.inode),
                        name: e.display_name(),
                        depth: 0,
                        is_dir: child.as_ref().is_some_and(|c| c.is_dir()),
                        expanded: false,
                        size: child.as_ref().map_or(0, |c| c.size),
                        mode: child.as_ref().map_or(0, |c| c.mode),
                        marks: Marks::Unknown,
                    }
                })
                .collect();
            out.sort_by(|a, b| (!a.is_dir, &a.name).cmp(&(!b.is_dir, &b.name)));
            Ok(out)
        }))
    }

    /// A file's first data byte, the layers holding its blocks, and the
    /// hit map cells (of `cells`) they fall in.
    pub(super) fn file(
        &mut self,
        as_of: usize,
        ino: u64,
        cells: usize,
    ) -> Result<FileAt, BlockError> {
        let reader = Arc::clone(&self.view(as_of)?.reader);
        let mut out = FileAt {
            as_of,
            ino,
            offset: None,
            layers: LayerSet::default(),
            cells: vec![false; cells.min(MAX_CELLS)],
        };
        let Ok(fs) = self.ext(as_of)? else {
            return Ok(out);
        };
        let Some(runs) = data_runs(fs, ino) else {
            return Ok(out);
        };
        let bs = fs.superblock().block_size;
        out.offset = runs.first().map(|r| r.physical.saturating_mul(bs));
        out.layers = self.layer_set(as_of, &byte_ranges(&runs, bs))?;
        if !out.cells.is_empty() {
            let cell = reader.len().div_ceil(out.cells.len() as u64).max(1);
            let last = out.cells.len() - 1;
            for r in runs.iter().filter(|r| r.len > 0) {
                let start = r.physical.saturating_mul(bs);
                let end = r.physical.saturating_add(r.len).saturating_mul(bs);
                let first = ((start / cell) as usize).min(last);
                let end_cell = (((end - 1) / cell) as usize).min(last);
                out.cells[first..=end_cell].fill(true);
            }
        }
        Ok(out)
    }

    /// Inode `ino`'s slot, its fields from the inode table.
    pub(super) fn inode_at(&mut self, as_of: usize, ino: u64) -> Result<Reply, BlockError> {
        let fs = match self.ext(as_of)? {
            Ok(fs) => fs,
            Err(e) => return Ok(Reply::Error(e)),
        };
        Ok(match fs.inode(ino) {
            Ok(node) => Reply::Structure(Box::new(Structure {
                as_of,
                label: format!("inode {ino} ({}, {} bytes)", node.type_name(), node.size),
                at: node.base,
                fields: node.fields().iter().map(|f| (f.offset, f.size)).collect(),
                focus: true,
            })),
            Err(e) => Reply::Error(crate::escape::printable(&error_chain(&e))),
        })
    }

    /// Directory `ino`'s first block, each entry's fields (the entry
    /// table's, then the name) marked; nothing for an inline directory.
    pub(super) fn dir_block(&mut self, as_of: usize, ino: u64) -> Result<Reply, BlockError> {
        use crate::fs::ext::dir::{decode_block, ENTRY};
        let Ok(fs) = self.ext(as_of)? else {
            return Ok(Reply::Error("no filesystem".into()));
        };
        let Some(first) = data_runs(fs, ino).and_then(|r| r.into_iter().next()) else {
            return Ok(Reply::Error(format!(
                "directory inode {ino} has no blocks (inline)"
            )));
        };
        let block = match fs.block(first.physical) {
            Ok(b) => b,
            Err(e) => return Ok(Reply::Error(crate::escape::printable(&error_chain(&e)))),
        };
        let at = first.physical.saturating_mul(fs.superblock().block_size);
        let mut fields = Vec::new();
        for e in decode_block(&block, at).entries {
            fields.extend(ENTRY.iter().map(|f| (e.offset + f.offset as u64, f.size)));
            fields.push((e.offset + 8, e.name.len()));
        }
        Ok(Reply::Structure(Box::new(Structure {
            as_of,
            label: format!("directory inode {ino}, block {}", first.physical),
            at,
            fields,
            focus: false,
        })))
    }

    /// The layers holding each inode's blocks.
    pub(super) fn marks(&mut self, as_of: usize, inos: &[u64]) -> Result<Reply, BlockError> {
        let mut ranges = Vec::new();
        if let Ok(fs) = self.ext(as_of)? {
            let bs = fs.superblock().block_size;
            for &ino in inos {
                ranges.push((ino, data_runs(fs, ino).map(|r| byte_ranges(&r, bs))));
            }
        }
        let mut marks = Vec::new();
        for (ino, r) in ranges {
            let set = match r {
                Some(r) => self.layer_set(as_of, &r)?,
                None => LayerSet::default(),
            };
            marks.push((ino, set));
        }
        Ok(Reply::Marks { as_of, marks })
    }

    /// The layers serving byte ranges of the disk.
    fn layer_set(&mut self, as_of: usize, ranges: &[(u64, u64)]) -> Result<LayerSet, BlockError> {
        let size = self.view(as_of)?.reader.len();
        let mut set = LayerSet::default();
        for &(start, end) in ranges {
            let end = end.min(size);
            if start < end {
                for (_, layer) in self.owners(as_of, start, end - start)? {
                    set.add(layer);
                }
            }
        }
        Ok(set)
    }
}

/// Runs a file's layers are looked up over, at most: a file with more
/// (badly fragmented, or a damaged map) is sampled.
const MAX_RUNS: usize = 4096;

/// The data runs of inode `ino` (the first [`MAX_RUNS`]), or None when it
/// cannot be read.
fn data_runs(fs: &Ext4, ino: u64) -> Option<Vec<crate::fs::ext::blockmap::Run>> {
    let node = fs.inode(ino).ok()?;
    let runs = fs.runs(&node).ok()?;
    Some(
        runs.into_iter()
            .filter(|r| !r.meta)
            .take(MAX_RUNS)
            .collect(),
    )
}

/// Runs (of `bs`-byte blocks) as byte ranges of the disk.
fn byte_ranges(runs: &[crate::fs::ext::blockmap::Run], bs: u64) -> Vec<(u64, u64)> {
    runs.iter()
        .map(|r| {
            (
                r.physical.saturating_mul(bs),
                r.physical.saturating_add(r.len).saturating_mul(bs),
            )
        })
        .collect()
}

/// A decoded field as a pane row.
pub(super) fn field_row(f: &crate::layout::FieldValue) -> FieldRow {
    FieldRow {
        name: f.name,
        offset: f.offset,
        size: f.size,
        value: f.text.clone().unwrap_or_else(|| f.value.to_string()),
    }
}

/// The group descriptor table (the first [`MAX_GROUP_ROWS`] groups); a
/// descriptor that cannot be read is a row with its error.
pub(super) fn groups_table(fs: &Ext4) -> GroupsTable {
    use crate::fs::ext::group_desc::expected_checksum;
    let sb = fs.superblock();
    let count = sb.group_count();
    let desc_size = if sb.is_64bit() {
        usize::from(sb.desc_size)
    } else {
        32
    };
    let rows = (0..count.min(MAX_GROUP_ROWS))
        .map(|g| match fs.group(g) {
            Ok(d) => {
                let offset = d.fields.first().map(|f| f.offset);
                let checksum = match d.checksum_ok {
                    None => Checksum::None,
                    Some(true) => Checksum::Ok(d.checksum),
                    Some(false) => {
                        // The expected value, from the descriptor's bytes.
                        let mut raw = vec![0u8; desc_size];
                        let expected = offset
                            .and_then(|o| fs.disk().read_at(o, &mut raw).ok())
                            .and_then(|()| expected_checksum(sb, g, &raw))
                            .unwrap_or(0);
                        Checksum::Bad {
                            stored: d.checksum,
                            expected,
                        }
                    }
                };
                GroupRow {
                    group: g,
                    offset,
                    block_bitmap: d.block_bitmap,
                    inode_bitmap: d.inode_bitmap,
                    inode_table: d.inode_table,
                    free_blocks: d.free_blocks,
                    free_inodes: d.free_inodes,
                    used_dirs: d.used_dirs,
                    itable_unused: d.itable_unused,
                    flags: d.flag_names(),
                    checksum,
                    error: None,
                }
            }
            Err(e) => GroupRow {
                group: g,
                offset: None,
                block_bitmap: 0,
                inode_bitmap: 0,
                inode_table: 0,
                free_blocks: 0,
                free_inodes: 0,
                used_dirs: 0,
                itable_unused: 0,
                flags: Vec::new(),
                checksum: Checksum::None,
                error: Some(crate::escape::printable(&error_chain(&e))),
            },
        })
        .collect();
    GroupsTable {
        count,
        desc_size,
        checksum_kind: if sb.has_metadata_csum() {
            "crc32c"
        } else if sb.has_ro_compat(0x10) {
            "crc16"
        } else {
            "none"
        },
        rows,
    }
}
