//! The worker's volumes: the disk's partitions and logical volumes
//! (scanned once, on the top layer), the one whose filesystem the panes
//! show, and the mapping from that volume's offsets (what a filesystem
//! reports) to the disk's (what the hex view and the hit map show).
//!
//! Without a volume named, the one volume holding a filesystem layerscope
//! reads is chosen as the CLI chooses it ([`VolumeTree::choose`]); a bare
//! disk is its own volume.
use std::sync::Arc;

use super::{error_chain, Worker};
use crate::block::{BlockError, BlockSource};
use crate::ui::msg::{Reply, Structure, VolumeList, VolumeRow};
use crate::volume::{ChooseError, Role, Volume, VolumeError, VolumeTree};

/// The disk's volume stack and the volume in view.
#[derive(Default)]
pub(super) struct Volumes {
    /// The scan (None: not yet; Err: it failed, why).
    tree: Option<Result<VolumeTree, String>>,
    /// The volume in view (None: not chosen yet; Err: none could be).
    current: Option<Result<Volume, String>>,
}

impl Volumes {
    /// Forgets the volume in view (another is wanted).
    pub(super) fn unchoose(&mut self) {
        self.current = None;
    }
}

impl Worker {
    /// The disk's volumes, scanned on the top layer once.
    fn volume_tree(&mut self) -> Result<&Result<VolumeTree, String>, BlockError> {
        if self.vols.tree.is_none() {
            let top = self.chain.layers.len().saturating_sub(1);
            let disk: Arc<dyn BlockSource> = self.view(top)?.reader.clone();
            let tree = crate::volume::scan(disk).map_err(|e| printable_chain(&e));
            self.vols.tree = Some(tree);
        }
        match &self.vols.tree {
            Some(t) => Ok(t),
            None => Err(BlockError::Internal {
                what: "volume scan vanished".into(),
            }),
        }
    }

    /// The volume whose filesystem the panes show: the one named, or the
    /// one holding a filesystem.
    pub(super) fn volume(&mut self) -> Result<Result<&Volume, String>, BlockError> {
        if self.vols.current.is_none() {
            let top = self.chain.layers.len().saturating_sub(1);
            let disk: Arc<dyn BlockSource> = self.view(top)?.reader.clone();
            let name = self.volume.clone();
            let chosen = match self.volume_tree()? {
                Err(e) => Err(e.clone()),
                Ok(tree) => choose(tree, &disk, name.as_deref()),
            };
            if let Ok(v) = &chosen {
                tracing::info!(volume = %crate::escape::printable(&v.name), "volume in view");
            }
            self.vols.current = Some(chosen);
        }
        Ok(match &self.vols.current {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no volume".into()),
        })
    }

    /// The volume in view's bytes `[start, end)` as disk ranges (a
    /// partition is one window; a logical volume's segments may split
    /// them). Without a volume, the same range.
    pub(super) fn disk_ranges(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let geometry = match self.volume() {
            Ok(Ok(v)) => v.geometry().cloned(),
            _ => None,
        };
        let Some(g) = geometry else {
            return vec![(start, end)];
        };
        let mut out = Vec::new();
        let mut at = start;
        while at < end {
            let Some((disk, run)) = g.to_disk(at) else {
                break;
            };
            let n = run.min(end.saturating_sub(at));
            if n == 0 {
                break;
            }
            out.push((disk, disk.saturating_add(n)));
            at = at.saturating_add(n);
        }
        out
    }

    /// The disk offset of the volume in view's byte `offset` (itself when
    /// it cannot be mapped: past the volume's end).
    pub(super) fn disk_offset(&mut self, offset: u64) -> u64 {
        self.disk_ranges(offset, offset.saturating_add(1))
            .first()
            .map_or(offset, |r| r.0)
    }

    /// Where the volume in view starts on the disk, when it is one window;
    /// its name unless it is the whole disk.
    pub(super) fn volume_at(&mut self) -> Option<(String, Option<u64>)> {
        match self.volume() {
            Ok(Ok(v)) if v.role != Role::Disk => Some((
                crate::escape::printable(&v.name),
                v.geometry().and_then(|g| g.window_start()),
            )),
            _ => None,
        }
    }

    /// Block `block` of the filesystem in view: where its bytes are on
    /// the disk (a striped LV's block may sit anywhere), marked in hex.
    pub(super) fn block_at(&mut self, as_of: usize, block: u64) -> Result<Reply, BlockError> {
        let bs = match self.fsys(as_of)? {
            Ok(fs) => fs.block_size().max(1),
            Err(_) => 4096,
        };
        let (name, len) = match self.volume()? {
            Ok(v) => (crate::escape::printable(&v.name), v.len),
            Err(_) => ("disk".to_owned(), self.view(as_of)?.reader.len()),
        };
        let Some(start) = block.checked_mul(bs).filter(|&s| s < len) else {
            return Ok(Reply::Error(format!(
                "block {block} is past the end of {name} ({} blocks of {bs} bytes)",
                len.checked_div(bs).unwrap_or(0)
            )));
        };
        let ranges = self.disk_ranges(start, start.saturating_add(bs).min(len));
        let Some(&(at, _)) = ranges.first() else {
            return Ok(Reply::Error(format!(
                "block {block} of {name} is not on the disk"
            )));
        };
        let label = if ranges.len() == 1 && at == start {
            format!("block {block} ({bs} bytes)")
        } else {
            format!("block {block} of {name} at disk {at:#x} ({bs} bytes)")
        };
        Ok(Reply::Structure(Box::new(Structure {
            as_of,
            label,
            at,
            fields: ranges
                .iter()
                .map(|&(s, e)| (s, usize::try_from(e.saturating_sub(s)).unwrap_or(0)))
                .collect(),
            focus: true,
        })))
    }

    /// Shows volume `name` from now on.
    pub(super) fn set_volume(&mut self, name: String) -> Result<VolumeList, BlockError> {
        // A diff running on the volume left would answer for it.
        self.job.cancel();
        self.volume = Some(name);
        self.vols.unchoose();
        for view in self.views.values_mut() {
            view.fs = None;
        }
        self.volume_list()
    }

    /// The volumes, as the pane lists them.
    pub(super) fn volume_list(&mut self) -> Result<VolumeList, BlockError> {
        let current = self.volume()?.ok().map(|v| v.name.clone());
        let tree = match self.volume_tree()? {
            Ok(t) => t,
            Err(e) => {
                return Ok(VolumeList {
                    problems: vec![e.clone()],
                    ..VolumeList::default()
                })
            }
        };
        let esc = crate::escape::printable;
        let rows: Vec<VolumeRow> = tree
            .volumes
            .iter()
            .map(|v| VolumeRow {
                name: esc(&v.name),
                what: esc(&what(v)),
                start: v.geometry().and_then(|g| g.window_start()),
                len: v.len,
                content: esc(&content(v)),
                readable: v.unsupported.is_none() && v.content.is_filesystem(),
            })
            .collect();
        Ok(VolumeList {
            current: current.and_then(|c| tree.volumes.iter().position(|v| v.name == c)),
            rows,
            problems: tree
                .all_problems()
                .iter()
                .map(|p| esc(&format!("{}: {}", p.structure, p.detail)))
                .collect(),
        })
    }
}

/// The volume named, or the one holding a filesystem (a bare disk: the
/// disk itself, whatever is on it, so its own error is shown). Where the
/// CLI would ask which of several, the TUI opens the first (an EFI system
/// partition last) and the Volumes pane offers the others.
fn choose(
    tree: &VolumeTree,
    disk: &Arc<dyn BlockSource>,
    name: Option<&str>,
) -> Result<Volume, String> {
    if name.is_none() {
        if let ([only], None) = (tree.volumes.as_slice(), &tree.table) {
            return Ok(only.clone());
        }
    }
    match tree.choose(disk, name, crate::fs::probe) {
        Ok((v, _)) => Ok(v.clone()),
        Err(ChooseError::Volume(VolumeError::Ambiguous { .. })) => {
            let esp = |v: &&Volume| matches!(&v.role, Role::Partition(p) if p.role == crate::volume::gpt_types::Role::EfiSystem);
            let (others, esps): (Vec<&Volume>, Vec<&Volume>) = tree
                .volumes
                .iter()
                .filter(|v| v.role != Role::Disk && v.content.is_filesystem())
                .partition(|v| !esp(v));
            others
                .into_iter()
                .chain(esps)
                .find(|v| {
                    v.source_over(disk.clone())
                        .is_ok_and(|src| crate::fs::probe(src).is_ok())
                })
                .cloned()
                .ok_or_else(|| "no volume holds a filesystem layerscope reads".to_owned())
        }
        Err(e) => Err(printable_chain(&e)),
    }
}

/// What a volume is: the disk, a partition and its type, an LV.
fn what(v: &Volume) -> String {
    match &v.role {
        Role::Disk => "whole disk".into(),
        Role::Partition(p) => match p.type_name {
            Some(t) => t.to_owned(),
            None => format!("partition type {}", p.kind),
        },
        Role::Logical { vg, lv } => format!("LV of {vg}, {}", lv.layout),
    }
}

/// What a volume holds: type, label; or why it cannot be read.
fn content(v: &Volume) -> String {
    if let Some(u) = &v.unsupported {
        return format!("not readable: {u}");
    }
    let c = &v.content;
    let mut s = c.kind.unwrap_or("unknown").to_owned();
    if let Some(l) = c.label.as_ref().filter(|l| !l.is_empty()) {
        s.push_str(&format!(" \"{}\"", String::from_utf8_lossy(l.raw())));
    }
    if !c.is_filesystem() && c.kind.is_some() {
        s.push_str(" (not a filesystem)");
    }
    s
}

fn printable_chain(e: &dyn std::error::Error) -> String {
    crate::escape::printable(&error_chain(e))
}
