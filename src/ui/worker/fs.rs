//! The worker's filesystem requests: the superblock, directories, where a
//! file's blocks are and which layers hold them, structures to mark in
//! hex, the group table, and a changed file as of two layers.
use std::ops::ControlFlow;
use std::sync::Arc;

use super::ahead::AHEAD_DIRS;
use super::{error_chain, Worker, MAX_CELLS};
use crate::block::{BlockError, BlockSource};
use crate::bytes::u64_of;
use crate::fs::ext::Ext4;
use crate::fs::report::RawValue;
use crate::fs::{FileType, Filesystem, Report, ReportField, Run, RunKind};
use crate::ui::msg::{FieldRow, FileAt, FsView, LayerSet, Marks, Reply, Structure, TreeNode};

impl Worker {
    /// The filesystem as of `as_of` on the volume in view, opened on first
    /// use (ext, XFS or FAT).
    pub(super) fn fsys(
        &mut self,
        as_of: usize,
    ) -> Result<Result<Arc<dyn Filesystem>, String>, BlockError> {
        if self.view(as_of)?.fs.is_none() {
            let opened = match self.volume()? {
                Err(e) => Err(e),
                Ok(volume) => {
                    let volume = volume.clone();
                    let reader = Arc::clone(&self.view(as_of)?.reader);
                    let disk: Arc<dyn BlockSource> = reader.clone();
                    // Replayed blocks are recorded in the hit map as served
                    // by the journal of the layer holding their copy.
                    let mount = crate::fs::Mount {
                        no_replay: self.replay.no_replay,
                        origin: volume.geometry().map(|g| {
                            let origin: Arc<dyn crate::block::origin::Origin> =
                                Arc::new(crate::volume::layers::Origin {
                                    reader,
                                    geometry: Arc::clone(g),
                                });
                            origin
                        }),
                        journal_dev: self.replay.journal_dev.clone(),
                    };
                    volume
                        .source_over(disk)
                        .map_err(|e| printable_chain(&e))
                        .and_then(|src| {
                            crate::fs::open_with(src, &mount).map_err(|e| printable_chain(&e))
                        })
                }
            };
            self.view(as_of)?.fs = Some(opened);
        }
        Ok(match self.view(as_of)?.fs.as_ref() {
            Some(Ok(fs)) => Ok(Arc::clone(fs)),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no filesystem".into()),
        })
    }

    /// The filesystem as of `as_of` when it is ext2/3/4 (for what only ext
    /// has here: its group table with checksums, directory block marks,
    /// the layer diff).
    pub(super) fn ext(&mut self, as_of: usize) -> Result<Result<&Ext4, String>, BlockError> {
        let _ = self.fsys(as_of)?;
        Ok(match self.view(as_of)?.fs.as_ref() {
            Some(Ok(fs)) => fs
                .as_any()
                .downcast_ref::<Ext4>()
                .ok_or_else(|| format!("not for {}: ext2/3/4 only", fs.kind().name())),
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
        let (old, new) = (self.fsys(from)?, self.fsys(to)?);
        // Errors here are escaped already.
        let result = old.and_then(|old| {
            super::diff::compare(old.as_ref(), new?.as_ref(), to, change, offset, seek)
        });
        Ok(match result {
            Ok(c) => Reply::Compare(Box::new(c)),
            Err(e) => Reply::Error(e),
        })
    }

    /// The filesystem in view: kind, volume, root, block size and the
    /// superblock's fields at disk offsets.
    pub(super) fn fs(&mut self, as_of: usize) -> Result<Result<FsView, String>, BlockError> {
        let fs = match self.fsys(as_of)? {
            Ok(fs) => fs,
            Err(e) => return Ok(Err(e)),
        };
        let report = fs.superblock();
        let mut fields = self.report_rows(&report);
        let journal = fs
            .as_any()
            .downcast_ref::<Ext4>()
            .and_then(|e| super::journal::note(e, self.replay.no_replay));
        if journal.as_ref().is_some_and(|j| j.replayed) {
            // The flag stays set in the replayed superblock (the kernel
            // clears it once recovery is written back): say it was done.
            for f in fields.iter_mut().filter(|f| f.name == "s_feature_incompat") {
                f.value = f
                    .value
                    .replace("needs_recovery", "needs_recovery (replayed in memory)");
            }
        }
        Ok(Ok(FsView {
            kind: fs.kind().name(),
            volume: self.volume_at(),
            root: fs.root(),
            block_size: fs.block_size(),
            fields,
            journal,
        }))
    }

    /// A report's fields as pane rows, at disk offsets.
    pub(super) fn report_rows(&mut self, report: &Report) -> Vec<FieldRow> {
        report
            .fields
            .iter()
            .map(|f| {
                let mut row = report_row(f);
                row.offset = self.disk_offset(f.offset);
                row
            })
            .collect()
    }

    pub(super) fn dir(
        &mut self,
        as_of: usize,
        ino: u64,
    ) -> Result<Result<Vec<TreeNode>, String>, BlockError> {
        let fs = match self.fsys(as_of)? {
            Ok(fs) => fs,
            Err(e) => return Ok(Err(e)),
        };
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        let listed = fs.read_dir(ino, &mut problems, &mut |e| {
            if !e.is_dot_or_dotdot() {
                entries.push(e);
            }
            if entries.len() >= MAX_DIR_ROWS {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Err(e) = listed {
            return Ok(Err(printable_chain(&e)));
        }
        // Over a remote disk: every row's inode in one batch, not one
        // round trip per read-ahead window.
        let nodes: Vec<_> = entries.iter().map(|e| e.node).collect();
        fs.prefetch_nodes(&nodes);
        let mut out: Vec<TreeNode> = entries
            .iter()
            .map(|e| {
                let meta = fs.metadata(e.node).ok();
                let is_dir = match &meta {
                    Some(m) => m.file_type == FileType::Directory,
                    None => e.file_type == Some(FileType::Directory),
                };
                TreeNode {
                    ino: e.node,
                    name: crate::escape::printable_bytes(&e.name),
                    depth: 0,
                    is_dir,
                    expanded: false,
                    size: meta.as_ref().map_or(0, |m| m.size),
                    mode: meta
                        .as_ref()
                        .map_or(0, |m| u16::try_from(m.mode & 0xffff).unwrap_or(0)),
                    marks: Marks::Unknown,
                }
            })
            .collect();
        out.sort_by(|a, b| (!a.is_dir, &a.name).cmp(&(!b.is_dir, &b.name)));
        // The subdirectories first on screen (directories sort first):
        // what the next key is likely to open, fetched ahead when the
        // worker is idle ([`Worker::fetch_ahead`]).
        self.ahead = Some((
            as_of,
            out.iter()
                .filter(|n| n.is_dir)
                .take(AHEAD_DIRS)
                .map(|n| n.ino)
                .collect(),
        ));
        Ok(Ok(out))
    }

    /// A file's first data byte, the layers holding its blocks, and the
    /// hit map cells (of `cells`) they fall in.
    pub(super) fn file(
        &mut self,
        as_of: usize,
        ino: u64,
        cells: usize,
    ) -> Result<FileAt, BlockError> {
        let size = self.view(as_of)?.reader.len();
        let mut out = FileAt {
            as_of,
            ino,
            offset: None,
            layers: LayerSet::default(),
            cells: vec![false; cells.min(MAX_CELLS)],
        };
        let Ok(fs) = self.fsys(as_of)? else {
            return Ok(out);
        };
        let Some(runs) = data_runs(fs.as_ref(), ino) else {
            return Ok(out);
        };
        let ranges = self.disk_ranges_of(&runs);
        out.offset = ranges.first().map(|r| r.0);
        out.layers = self.layer_set(as_of, &ranges)?;
        if !out.cells.is_empty() {
            let cell = size.div_ceil(u64_of(out.cells.len())).max(1);
            let last = out.cells.len().saturating_sub(1);
            for &(start, end) in ranges.iter().filter(|r| r.1 > r.0) {
                let span = super::grid::cell_span(start, end, cell, last);
                if let Some(cells) = out.cells.get_mut(span) {
                    cells.fill(true);
                }
            }
        }
        Ok(out)
    }

    /// Volume runs as disk ranges.
    fn disk_ranges_of(&mut self, runs: &[Run]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for r in runs {
            out.extend(self.disk_ranges(r.physical, r.physical.saturating_add(r.len)));
        }
        out
    }

    /// Node `ino`'s on-disk structure (an inode in its table, a FAT
    /// directory entry), its fields marked; `focus` moves the focus to
    /// the hex view (a `g`, not a step in the tree).
    pub(super) fn inode_at(
        &mut self,
        as_of: usize,
        ino: u64,
        focus: bool,
    ) -> Result<Reply, BlockError> {
        let fs = match self.fsys(as_of)? {
            Ok(fs) => fs,
            Err(e) => return Ok(Reply::Error(e)),
        };
        let report = match fs.node_report(ino) {
            Ok(r) => r,
            Err(e) => return Ok(Reply::Error(printable_chain(&e))),
        };
        let what = match fs.metadata(ino) {
            Ok(m) => format!(" ({}, {} bytes)", type_name(m.file_type), m.size),
            Err(_) => String::new(),
        };
        let at = self.disk_offset(report.offset);
        let fields = self
            .report_rows(&report)
            .iter()
            .map(|f| (f.offset, f.size))
            .collect();
        Ok(Reply::Structure(Box::new(Structure {
            as_of,
            label: format!("{}{what}", crate::escape::printable(&fs.node_name(ino))),
            at,
            fields,
            focus,
        })))
    }

    /// Directory `ino`'s first block, each entry's fields (the entry
    /// table's, then the name) marked; nothing for an inline directory.
    /// Other filesystems than ext show the directory's own node (XFS's
    /// inode, with a short-form directory inside; FAT's entry).
    pub(super) fn dir_block(&mut self, as_of: usize, ino: u64) -> Result<Reply, BlockError> {
        use crate::fs::ext::dir::{decode_block, ENTRY};
        if self.ext(as_of)?.is_err() && self.fsys(as_of)?.is_ok() {
            return self.inode_at(as_of, ino, false);
        }
        let (first, block, bs) = {
            let fs = match self.ext(as_of)? {
                Ok(fs) => fs,
                Err(e) => return Ok(Reply::Error(e)),
            };
            let Some(first) = data_runs(fs, ino).and_then(|r| r.into_iter().next()) else {
                return Ok(Reply::Error(format!(
                    "directory inode {ino} has no blocks (inline)"
                )));
            };
            let bs = fs.superblock().block_size;
            let block = match fs.block(first.physical.checked_div(bs).unwrap_or(0)) {
                Ok(b) => b,
                Err(e) => return Ok(Reply::Error(printable_chain(&e))),
            };
            (first, block, bs)
        };
        let at = self.disk_offset(first.physical);
        let mut fields = Vec::new();
        for e in decode_block(&block, at).entries {
            fields.extend(
                ENTRY
                    .iter()
                    .map(|f| (e.offset.saturating_add(u64_of(f.offset)), f.size)),
            );
            fields.push((e.offset.saturating_add(8), e.name.len()));
        }
        Ok(Reply::Structure(Box::new(Structure {
            as_of,
            label: format!(
                "directory inode {ino}, block {}",
                first.physical.checked_div(bs).unwrap_or(0)
            ),
            at,
            fields,
            focus: false,
        })))
    }

    /// The layers holding each inode's blocks.
    pub(super) fn marks(&mut self, as_of: usize, inos: &[u64]) -> Result<Reply, BlockError> {
        let mut runs = Vec::new();
        if let Ok(fs) = self.fsys(as_of)? {
            for &ino in inos {
                runs.push((ino, data_runs(fs.as_ref(), ino)));
            }
        }
        let mut marks = Vec::new();
        for (ino, r) in runs {
            let set = match r {
                Some(r) => {
                    let ranges = self.disk_ranges_of(&r);
                    self.layer_set(as_of, &ranges)?
                }
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
                for (_, layer) in self.owners(as_of, start, end.saturating_sub(start))? {
                    set.add(layer);
                }
            }
        }
        Ok(set)
    }
}

/// Entries of one directory listed at most (a damaged or absurd
/// directory shows its first ones).
const MAX_DIR_ROWS: usize = 1 << 16;

pub(super) fn printable_chain(e: &dyn std::error::Error) -> String {
    crate::escape::printable(&error_chain(e))
}

/// How the hex title names a node's type.
fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::Unknown => "unknown type",
    }
}

/// Runs a file's layers are looked up over, at most: a file with more
/// (badly fragmented, or a damaged map) is sampled.
const MAX_RUNS: usize = 4096;

/// The data runs of node `ino` (volume bytes, the first [`MAX_RUNS`]), or
/// None when it cannot be read.
fn data_runs(fs: &dyn Filesystem, ino: u64) -> Option<Vec<Run>> {
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    fs.runs(ino, &mut problems, &mut |r| {
        if !matches!(r.kind, RunKind::Meta { .. }) && r.len > 0 {
            runs.push(r);
        }
        if runs.len() >= MAX_RUNS {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .ok()?;
    Some(runs)
}

/// A report field as a pane row: the raw value, then what it means where
/// that says more (a date, feature names, a magic in hex), then a
/// checksum's state (escaped; the offset is the volume's until mapped).
pub(super) fn report_row(f: &ReportField) -> FieldRow {
    let raw = match &f.raw {
        RawValue::Uint(v) if is_magic(f.name) => format!("{v:#x}"),
        RawValue::Uint(v) => v.to_string(),
        RawValue::Bytes(b) => crate::escape::printable_bytes(b),
    };
    let mut shown = crate::escape::printable(&f.shown);
    if shown.eq_ignore_ascii_case(&raw) {
        shown.clear();
    }
    let mut value = match &f.raw {
        RawValue::Bytes(_) if !shown.is_empty() => shown,
        // An unset name or path: nothing to show, as dumpe2fs.
        RawValue::Bytes(b) if b.iter().all(|&x| x == 0) => String::new(),
        _ if shown.is_empty() || shown == raw => raw,
        _ => format!("{raw} = {shown}"),
    };
    if let Some(c) = &f.check {
        let state = if c.stored == c.computed {
            "ok".to_owned()
        } else {
            format!("BAD, computed {:#x}", c.computed)
        };
        value = format!("{:#x} {state}", c.stored);
    }
    FieldRow {
        name: f.name,
        offset: f.offset,
        size: usize::try_from(f.size).unwrap_or(0),
        value,
    }
}

/// A decoded field as a pane row (a magic number in hex when the
/// decoder gave no text).
pub(super) fn field_row(f: &crate::layout::FieldValue) -> FieldRow {
    let raw = if is_magic(f.name) {
        format!("{:#x}", f.value)
    } else {
        f.value.to_string()
    };
    FieldRow {
        name: f.name,
        offset: f.offset,
        size: f.size,
        value: f.text.clone().unwrap_or(raw),
    }
}

/// Whether a field holds a magic number or a signature (`s_magic`,
/// `sb_magicnum`, `h_magic`, FAT's `Signature_word`, `FSI_LeadSig`): a
/// constant that reads in hex, as the specifications, dumpe2fs and xfs_db
/// write it.
fn is_magic(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("magic") || n.contains("signature") || n.ends_with("sig") || n.contains("_sig")
}
