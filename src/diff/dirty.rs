//! The files a dirty bitmap marks: what an incremental backup taken from
//! the bitmap will carry, in files (`diff --bitmap NAME`).
//!
//! A persistent dirty bitmap (qcow2's, or an NBD server's
//! `qemu:dirty-bitmap:NAME`) says which disk ranges were written since it
//! was created, not what they held before, so there is nothing to compare:
//! a file is listed when any of its blocks (data, map or attribute
//! blocks, through [`Filesystem::runs`]) or its own record (the inode,
//! through [`Filesystem::node_offset`]) lies in a dirty range. The tree is
//! walked once through the filesystem trait, so every filesystem
//! layerscope reads is covered; cost follows the number of files, memory
//! the number of dirty files.
use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::fs::{FileType, Filesystem, NodeId, Problem};
use crate::volume::Geometry;

use super::{DiffError, Progress};

/// Most dirty ranges kept: a bitmap of 512-byte granularity over a large
/// disk, alternating bits, would otherwise take memory in proportion to
/// the disk (16 bytes a range: 64 MiB here).
pub const MAX_RANGES: usize = 1 << 22;
/// Most names walked (a damaged directory cannot make the walk endless).
const MAX_NAMES: u64 = 50_000_000;

/// A bitmap's dirty ranges more fragmented than [`MAX_RANGES`].
#[derive(Debug, thiserror::Error)]
#[error("the bitmap has more than {MAX_RANGES} dirty ranges inside the volume (stopped at disk offset {offset:#x})")]
pub struct TooFragmented {
    pub offset: u64,
}

/// Dirty ranges of the volume, sorted and merged, widened to whole
/// filesystem blocks.
#[derive(Debug, Default)]
pub struct DirtyRanges {
    ranges: Vec<(u64, u64)>,
    /// Volume block size the ranges are widened to.
    block: u64,
}

impl DirtyRanges {
    /// An empty set whose ranges are widened to `block` bytes (the
    /// filesystem's block: a write inside a block dirties the block).
    pub fn new(block: u64) -> DirtyRanges {
        DirtyRanges {
            ranges: Vec::new(),
            block: block.max(1),
        }
    }

    /// Adds disk range `[offset, offset + len)` as volume ranges through
    /// `geometry` (the parts outside the volume are dropped). Disk ranges
    /// must come in ascending order, as bitmaps give them.
    ///
    /// # Errors
    /// More than [`MAX_RANGES`] ranges.
    pub fn add_disk(
        &mut self,
        geometry: &Geometry,
        offset: u64,
        len: u64,
    ) -> Result<(), TooFragmented> {
        // Volume pieces whose disk bytes meet the range. A window (a
        // partition) is one piece; a striped logical volume many.
        for (vol, disk, n) in pieces(geometry) {
            let s = offset.max(disk);
            let e = offset.saturating_add(len).min(disk.saturating_add(n));
            if s < e {
                self.push(
                    vol.saturating_add(s.saturating_sub(disk)),
                    e.saturating_sub(s),
                )
                .map_err(|()| TooFragmented { offset })?;
            }
        }
        Ok(())
    }

    fn push(&mut self, start: u64, len: u64) -> Result<(), ()> {
        let b = self.block;
        let s = start.checked_div(b).unwrap_or(0).saturating_mul(b);
        let e = start.saturating_add(len).div_ceil(b).saturating_mul(b);
        // Ranges arrive sorted for a window; a striped volume's pieces
        // come in volume order per disk range, so the last few may
        // overlap: merged when adjacent, sorted at the end otherwise.
        if let Some(last) = self.ranges.last_mut() {
            if s >= last.0 && s <= last.0.saturating_add(last.1) {
                last.1 = last.1.max(e.saturating_sub(last.0));
                return Ok(());
            }
        }
        if self.ranges.len() >= MAX_RANGES {
            return Err(());
        }
        self.ranges.push((s, e.saturating_sub(s)));
        Ok(())
    }

    /// Sorts and merges (after the last [`DirtyRanges::add_disk`]).
    pub fn finish(&mut self) {
        self.ranges = crate::block::merge_ranges(std::mem::take(&mut self.ranges));
    }

    /// The ranges, sorted and merged.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Dirty bytes in all.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().fold(0, |t, r| t.saturating_add(r.1))
    }

    /// Dirty bytes of `[start, start + len)`.
    pub fn overlap(&self, start: u64, len: u64) -> u64 {
        let end = start.saturating_add(len);
        let first = self
            .ranges
            .partition_point(|r| r.0.saturating_add(r.1) <= start);
        let mut n = 0u64;
        for &(s, l) in self.ranges.get(first..).unwrap_or_default() {
            if s >= end {
                break;
            }
            let a = s.max(start);
            let b = s.saturating_add(l).min(end);
            n = n.saturating_add(b.saturating_sub(a));
        }
        n
    }

    /// Whether byte `at` is dirty.
    pub fn contains(&self, at: u64) -> bool {
        self.overlap(at, 1) > 0
    }
}

/// The volume as (volume offset, disk offset, length) pieces.
fn pieces(geometry: &Geometry) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    let mut at = 0u64;
    std::iter::from_fn(move || {
        let (disk, n) = geometry.to_disk(at)?;
        let n = n.min(geometry.len().saturating_sub(at));
        if n == 0 {
            return None;
        }
        let piece = (at, disk, n);
        at = at.saturating_add(n);
        Some(piece)
    })
}

/// One file the bitmap marks.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DirtyFile {
    /// Escaped for terminals.
    pub path: String,
    #[serde(skip)]
    pub raw_path: Vec<u8>,
    /// The node (ext: the inode number).
    pub node: NodeId,
    #[serde(rename = "type")]
    pub file_type: &'static str,
    pub size: u64,
    /// Bytes of the node's blocks (data, map and attribute blocks) in
    /// dirty ranges: what a backup carries for it.
    pub dirty_bytes: u64,
    /// Its own record (inode) lies in a dirty range: metadata changed, or
    /// a neighbour's did.
    pub node_dirty: bool,
}

/// What [`dirty_files`] found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Dirty {
    /// Sorted by path; a file with several names is listed under each.
    pub files: Vec<DirtyFile>,
    /// Dirty bytes of the volume.
    pub dirty_bytes: u64,
    /// Of them, in some file's blocks (each node counted once).
    pub file_bytes: u64,
    /// Files (names) walked.
    pub walked: u64,
    /// Damage met on the way, escaped.
    pub notes: Vec<String>,
}

/// The files of `fs` whose blocks or records lie in `dirty`.
///
/// # Errors
/// `Cancelled`.
pub fn dirty_files(
    fs: &dyn Filesystem,
    dirty: &DirtyRanges,
    progress: &dyn Progress,
) -> Result<Dirty, DiffError> {
    let mut out = Dirty {
        dirty_bytes: dirty.bytes(),
        ..Dirty::default()
    };
    let root = fs.root();
    // Per node: its dirty bytes and record (each node's runs read once).
    let mut seen: std::collections::HashMap<NodeId, (u64, bool)> = Default::default();
    let mut dirs_seen = HashSet::from([root]);
    let mut stack: Vec<(NodeId, Vec<u8>)> = vec![(root, b"/".to_vec())];
    let mut check = |node: NodeId,
                     path: Vec<u8>,
                     file_type: FileType,
                     size: u64,
                     out: &mut Dirty|
     -> (u64, bool) {
        let (bytes, record) = *seen.entry(node).or_insert_with(|| {
            let mut bytes = 0u64;
            let mut problems: Vec<Problem> = Vec::new();
            let r = fs.runs(node, &mut problems, &mut |run| {
                bytes = bytes.saturating_add(dirty.overlap(run.physical, run.len));
                ControlFlow::Continue(())
            });
            let shown = crate::escape::printable_bytes(&path);
            if let Err(e) = r {
                out.notes.push(format!("{shown}: {e}"));
            }
            out.notes
                .extend(problems.iter().map(|p| format!("{shown}: {p}")));
            let record = fs.node_offset(node).is_ok_and(|o| dirty.contains(o));
            out.file_bytes = out.file_bytes.saturating_add(bytes);
            (bytes, record)
        });
        if bytes > 0 || record {
            out.files.push(DirtyFile {
                path: crate::escape::printable_bytes(&path),
                raw_path: path,
                node,
                file_type: file_type.name(),
                size,
                dirty_bytes: bytes,
                node_dirty: record,
            });
        }
        (bytes, record)
    };
    if let Ok(m) = fs.metadata(root) {
        check(root, b"/".to_vec(), m.file_type, m.size, &mut out);
    }
    while let Some((dir, dpath)) = stack.pop() {
        if !progress.step("walking the tree", out.walked, 0) {
            return Err(DiffError::Cancelled);
        }
        let mut problems: Vec<Problem> = Vec::new();
        let mut entries = Vec::new();
        let listed = fs.read_dir(dir, &mut problems, &mut |e| {
            if !e.is_dot_or_dotdot() {
                entries.push(e);
            }
            ControlFlow::Continue(())
        });
        let shown = crate::escape::printable_bytes(&dpath);
        if let Err(e) = listed {
            out.notes.push(format!("{shown}: {e}"));
            continue;
        }
        out.notes
            .extend(problems.iter().map(|p| format!("{shown}: {p}")));
        for e in entries {
            if out.walked >= MAX_NAMES {
                out.notes.push(format!(
                    "stopped after {MAX_NAMES} names: the tree is larger than a walk covers"
                ));
                stack.clear();
                break;
            }
            out.walked = out.walked.saturating_add(1);
            let path = super::join(&dpath, &e.name);
            let Ok(m) = fs.metadata(e.node) else {
                out.notes.push(format!(
                    "{}: {} cannot be read",
                    crate::escape::printable_bytes(&path),
                    fs.node_name(e.node)
                ));
                continue;
            };
            if m.file_type == FileType::Directory && dirs_seen.insert(e.node) {
                stack.push((e.node, path.clone()));
            }
            check(e.node, path, m.file_type, m.size, &mut out);
        }
    }
    out.files.sort_by(|a, b| a.raw_path.cmp(&b.raw_path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_through_a_window_widen_to_blocks_and_merge() {
        // A partition at 1 MiB of 8 MiB, 4 KiB blocks.
        let g = Geometry::window(1 << 20, 8 << 20);
        let mut d = DirtyRanges::new(4096);
        d.add_disk(&g, 0, 512 << 10).unwrap(); // before the volume
        d.add_disk(&g, (1 << 20) + 100, 10).unwrap(); // block 0
        d.add_disk(&g, (1 << 20) + 4096, 4096).unwrap(); // block 1: joins
        d.add_disk(&g, (1 << 20) + 65536, 512).unwrap();
        d.add_disk(&g, (9 << 20) - 512, 4096).unwrap(); // crosses the end
        d.finish();
        assert_eq!(
            d.ranges(),
            &[(0, 8192), (65536, 4096), ((8 << 20) - 4096, 4096)]
        );
        assert_eq!(d.bytes(), 16384);
        assert_eq!(d.overlap(4000, 10_000), 8192 - 4000);
        assert!(d.contains(65536 + 4095) && !d.contains(65536 + 4096));
    }
}
