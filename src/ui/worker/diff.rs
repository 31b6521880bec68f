//! The worker's side of the layer diff: the diff itself on its own thread
//! (progress sent as it goes, cancellable), and a changed file's bytes as
//! of both layers from the first difference.
//!
//! Both run on the volume in view (a partition, a logical volume, or the
//! bare disk) through [`Filesystem`], as `layerscope diff --volume` does:
//! ext2/3/4 gets its quick diff from the overlays' clusters, XFS and FAT
//! the tree compare over the same held ranges.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::BlockSource;
use crate::bytes::u64_of;
use crate::diff::{Change, Kind, Progress};
use crate::fs::ext::Ext4;
use crate::fs::{FileType, Filesystem};
use crate::ui::msg::{FileCompare, Reply, Seek, COMPARE_BYTES};
use crate::volume::Volume;

/// How far the first difference is looked for.
const SEARCH_LIMIT: u64 = 256 << 20;

/// The running job's handle, kept by the worker.
#[derive(Default)]
pub struct Job {
    cancel: Option<Arc<AtomicBool>>,
}

impl Job {
    /// Cancels the running job, if any.
    pub fn cancel(&mut self) {
        if let Some(c) = self.cancel.take() {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// Starts a diff of `to` against `to - 1` of `chain` on `volume`: on
    /// a thread when `send` is given (progress and the result go there),
    /// else here (the headless frames). Returns the reply to give now.
    pub fn start(
        &mut self,
        chain: &Chain,
        volume: Volume,
        to: usize,
        no_replay: bool,
        send: Option<Box<dyn Fn(Reply) + Send + Sync>>,
    ) -> Reply {
        self.cancel();
        let from = to.saturating_sub(1);
        let new = chain.cut(to);
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancel = Some(cancel.clone());
        match send {
            None => finished(from, to, run(&new, &volume, no_replay, &|_| {}, &cancel)),
            Some(send) => {
                std::thread::spawn(move || {
                    let result = run(&new, &volume, no_replay, &|r| send(r), &cancel);
                    if !cancel.load(Ordering::Relaxed) {
                        send(finished(from, to, result));
                    }
                });
                Reply::DiffProgress {
                    to,
                    phase: "starting".into(),
                    done: 0,
                    total: 0,
                }
            }
        }
    }
}

fn finished(from: usize, to: usize, result: Result<(Vec<Change>, String), String>) -> Reply {
    Reply::Diff { from, to, result }
}

/// Progress sent to the UI at most every 1/64 of the work.
struct Sender<'a> {
    to: usize,
    send: &'a (dyn Fn(Reply) + Sync),
    cancel: &'a AtomicBool,
    last: std::sync::Mutex<(String, u64)>,
}

impl Progress for Sender<'_> {
    fn step(&self, phase: &str, done: u64, total: u64) -> bool {
        if let Ok(mut last) = self.last.lock() {
            let step = (total / 64).max(1);
            if last.0 != phase || done >= last.1.saturating_add(step) || done == total {
                *last = (phase.to_owned(), done);
                (self.send)(Reply::DiffProgress {
                    to: self.to,
                    phase: phase.to_owned(),
                    done,
                    total,
                });
            }
        }
        !self.cancel.load(Ordering::Relaxed)
    }
}

/// The filesystem on `volume` as of the top of `chain` (its journal
/// replayed in memory unless `no_replay`).
fn open(chain: &Chain, volume: &Volume, no_replay: bool) -> Result<Arc<dyn Filesystem>, String> {
    let e = |e: &dyn std::error::Error| crate::escape::printable(&super::error_chain(e));
    let n = chain.layers.len().saturating_sub(1);
    let reader = LayeredReader::new(chain).map_err(|x| e(&x))?;
    let disk: Arc<dyn BlockSource> = Arc::new(reader);
    let src = volume.source_over(disk).map_err(|x| e(&x))?;
    let mount = crate::fs::Mount {
        no_replay,
        ..Default::default()
    };
    crate::fs::open_with(src, &mount).map_err(|x| {
        format!(
            "volume {} as of layer {n}: {}",
            crate::escape::printable(&volume.name),
            e(&x)
        )
    })
}

/// The diff of the top of `new` over the layer below it, on `volume`.
fn run(
    new: &Chain,
    volume: &Volume,
    no_replay: bool,
    send: &(dyn Fn(Reply) + Sync),
    cancel: &AtomicBool,
) -> Result<(Vec<Change>, String), String> {
    let to = new.layers.len().saturating_sub(1);
    if to == 0 {
        return Err("the base layer has nothing below it to compare with".into());
    }
    let from = to.saturating_sub(1);
    let old = new.cut(from);
    let (ofs, nfs) = (
        open(&old, volume, no_replay)?,
        open(new, volume, no_replay)?,
    );
    let geometry = volume.geometry().ok_or_else(|| {
        format!(
            "volume {} cannot be read",
            crate::escape::printable(&volume.name)
        )
    })?;
    let held = crate::diff::blocks::held_volume_ranges(new, from, to, geometry)
        .map_err(|e| crate::escape::printable(&super::error_chain(&e)))?;
    // ext on both sides has the quick diff and the journal replay.
    let ext = match (
        ofs.as_any().downcast_ref::<Ext4>(),
        nfs.as_any().downcast_ref::<Ext4>(),
    ) {
        (Some(o), Some(n)) => Some((o, n)),
        _ => None,
    };
    // Blocks a journal replay rewrote count as changed too.
    let held = match ext {
        Some((o, n)) => crate::diff::blocks::with_replayed(held, o, n),
        None => held,
    };
    let progress = Sender {
        to,
        send,
        cancel,
        last: Default::default(),
    };
    let d = match ext {
        Some((o, n)) => crate::diff::diff(o, n, &held, &progress).map(|mut d| {
            // In path terms: a replaced file is one M, so no name shows twice.
            crate::diff::paths::path_level(&mut d, o, n, true);
            d
        }),
        None => crate::diff::tree::diff_trees(ofs.as_ref(), nfs.as_ref(), Some(&held), &progress),
    }
    .map_err(|e| crate::escape::printable(&e.to_string()))?;
    // Named when it is not the whole disk.
    let on = match volume.role {
        crate::volume::Role::Disk => String::new(),
        _ => format!(" on {}", crate::escape::printable(&volume.name)),
    };
    let summary = if d.stats.trees_compared {
        format!(
            "{} change(s){on}; trees compared ({} has no quick diff): {} file(s) compared",
            d.changes.len(),
            nfs.kind().name(),
            d.stats.inodes_compared
        )
    } else {
        format!(
            "{} change(s){on}, {} block(s) changed, {} copied up",
            d.changes.len(),
            d.stats.changed_blocks,
            d.stats.copied_up_blocks
        )
    };
    Ok((d.changes, summary))
}

/// Bytes read at a time when looking for a difference.
const STEP: usize = 1 << 20;

/// A window of change `c` as of both layers: at `offset`, or around the
/// difference `seek` finds from there (looked for within
/// [`SEARCH_LIMIT`] bytes).
pub fn compare(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    to: usize,
    c: &Change,
    offset: u64,
    seek: Seek,
) -> Result<FileCompare, String> {
    // A replaced file was another inode in the older layer.
    let a_side = Side::of(old, c.old_inode.unwrap_or(c.inode), c.change != Kind::Added)?;
    let b_side = Side::of(new, c.inode, c.change != Kind::Deleted)?;
    let read = |fs: &dyn Filesystem, s: &Option<Side>, at: u64, len: usize| {
        s.as_ref().map_or(Ok(Vec::new()), |s| s.read(fs, at, len))
    };
    let end = a_side
        .as_ref()
        .map_or(0, |s| s.size)
        .max(b_side.as_ref().map_or(0, |s| s.size));
    // The first (or last) index where two chunks differ, a byte one side
    // lacks included.
    let differ = |a: &[u8], b: &[u8], i: usize| a.get(i) != b.get(i);
    let found = match seek {
        Seek::At => None,
        Seek::First | Seek::Next => {
            let mut at = if seek == Seek::First { 0 } else { offset };
            let stop = end.min(at.saturating_add(SEARCH_LIMIT));
            let mut found = None;
            while at < stop {
                let a = read(old, &a_side, at, STEP)?;
                let b = read(new, &b_side, at, STEP)?;
                let n = a.len().max(b.len());
                if let Some(i) = (0..n).find(|&i| differ(&a, &b, i)) {
                    found = Some(at.saturating_add(u64_of(i)));
                    break;
                }
                at = at.saturating_add(u64_of(n.max(1)));
            }
            found
        }
        Seek::Prev => {
            let mut hi = offset.min(end);
            let stop = hi.saturating_sub(SEARCH_LIMIT);
            let mut found = None;
            while hi > stop {
                let lo = hi.saturating_sub(u64_of(STEP)).max(stop);
                let len = usize::try_from(hi.saturating_sub(lo)).unwrap_or(STEP);
                let a = read(old, &a_side, lo, len)?;
                let b = read(new, &b_side, lo, len)?;
                if let Some(i) = (0..len).rev().find(|&i| differ(&a, &b, i)) {
                    found = Some(lo.saturating_add(u64_of(i)));
                    break;
                }
                hi = lo;
            }
            found
        }
    };
    // Around a difference, with some bytes before it to scroll back to.
    let at = match found {
        Some(f) => (f & !15).saturating_sub(u64_of(COMPARE_BYTES) / 4),
        None if seek == Seek::First => 0,
        None => offset & !15,
    };
    Ok(FileCompare {
        to,
        path: c.path.clone(),
        seek,
        found,
        offset: at,
        old: read(old, &a_side, at, COMPARE_BYTES)?,
        new: read(new, &b_side, at, COMPARE_BYTES)?,
        old_size: a_side.as_ref().map(|s| s.size),
        new_size: b_side.as_ref().map(|s| s.size),
    })
}

/// One side of a comparison: the node, its size, and a symlink's target
/// (its bytes are the target).
struct Side {
    node: u64,
    size: u64,
    target: Option<Vec<u8>>,
}

impl Side {
    /// Node `node` of `fs`, when `present` (absent where the file was
    /// added or deleted).
    fn of(fs: &dyn Filesystem, node: u64, present: bool) -> Result<Option<Side>, String> {
        if !present {
            return Ok(None);
        }
        let e = |e: crate::fs::FsError| crate::escape::printable(&super::error_chain(&e));
        let m = fs.metadata(node).map_err(e)?;
        let target = if m.file_type == FileType::Symlink {
            Some(fs.read_link(node).map_err(e)?)
        } else {
            None
        };
        let size = target.as_ref().map_or(m.size, |t| u64_of(t.len()));
        Ok(Some(Side { node, size, target }))
    }

    /// Up to `len` bytes at `at`.
    fn read(&self, fs: &dyn Filesystem, at: u64, len: usize) -> Result<Vec<u8>, String> {
        if let Some(t) = &self.target {
            let s = usize::try_from(at).unwrap_or(usize::MAX).min(t.len());
            return Ok(t
                .get(s..)
                .unwrap_or_default()
                .iter()
                .take(len)
                .copied()
                .collect());
        }
        let want = usize::try_from(self.size.saturating_sub(at).min(u64_of(len))).unwrap_or(0);
        let mut buf = vec![0u8; want];
        if !buf.is_empty() {
            let n = fs
                .read_file(self.node, at, &mut buf)
                .map_err(|e| crate::escape::printable(&super::error_chain(&e)))?;
            buf.truncate(n);
        }
        Ok(buf)
    }
}
