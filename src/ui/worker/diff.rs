//! The worker's side of the layer diff: the diff itself on its own thread
//! (progress sent as it goes, cancellable), and a changed file's bytes as
//! of both layers from the first difference.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::BlockSource;
use crate::diff::{Change, Kind, Progress};
use crate::fs::ext::Ext4;
use crate::ui::msg::{FileCompare, Reply, Seek, COMPARE_BYTES};

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

    /// Starts a diff of `to` against `to - 1` of `chain`: on a thread when
    /// `send` is given (progress and the result go there), else here (the
    /// headless frames). Returns the reply to give now.
    pub fn start(
        &mut self,
        chain: &Chain,
        to: usize,
        send: Option<Box<dyn Fn(Reply) + Send + Sync>>,
    ) -> Reply {
        self.cancel();
        let from = to.saturating_sub(1);
        let (old, new) = (chain.cut(from), chain.cut(to));
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancel = Some(cancel.clone());
        match send {
            None => finished(from, to, run(&old, &new, &|_| {}, &cancel)),
            Some(send) => {
                std::thread::spawn(move || {
                    let result = run(&old, &new, &|r| send(r), &cancel);
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
            if last.0 != phase || done >= last.1 + step || done == total {
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

fn open(chain: &Chain) -> Result<Ext4, String> {
    let reader = LayeredReader::new(chain).map_err(|e| e.to_string())?;
    let src: Arc<dyn BlockSource> = Arc::new(reader);
    Ext4::open(src).map_err(|e| e.to_string())
}

fn run(
    old: &Chain,
    new: &Chain,
    send: &(dyn Fn(Reply) + Sync),
    cancel: &AtomicBool,
) -> Result<(Vec<Change>, String), String> {
    let from = old.layers.len().saturating_sub(1);
    let to = new.layers.len().saturating_sub(1);
    if from == to {
        return Err("the base layer has nothing below it to compare with".into());
    }
    let (ofs, nfs) = (open(old)?, open(new)?);
    let held = crate::diff::blocks::held_ranges(new, from, to, 0, nfs.disk().len())
        .map_err(|e| e.to_string())?;
    let progress = Sender {
        to,
        send,
        cancel,
        last: Default::default(),
    };
    let d = crate::diff::diff(&ofs, &nfs, &held, &progress).map_err(|e| e.to_string())?;
    let summary = format!(
        "{} change(s), {} block(s) changed, {} copied up",
        d.changes.len(),
        d.stats.changed_blocks,
        d.stats.copied_up_blocks
    );
    Ok((d.changes, summary))
}

/// Bytes read at a time when looking for a difference.
const STEP: usize = 1 << 20;

/// A window of change `c` as of both layers: at `offset`, or around the
/// difference `seek` finds from there (looked for within
/// [`SEARCH_LIMIT`] bytes).
pub fn compare(
    old: &Ext4,
    new: &Ext4,
    to: usize,
    c: &Change,
    offset: u64,
    seek: Seek,
) -> Result<FileCompare, String> {
    // The file as of each layer, read once (absent where it was added or
    // deleted).
    let side = |fs: &Ext4, present: bool| -> Result<Option<Side>, String> {
        if !present {
            return Ok(None);
        }
        let e = |e: crate::fs::ext::FsError| e.to_string();
        let inode = fs.inode(c.inode).map_err(e)?;
        let target = if inode.is_symlink() {
            Some(fs.symlink_target(&inode).map_err(e)?)
        } else {
            None
        };
        let runs = if target.is_none() {
            fs.runs(&inode).map_err(e)?
        } else {
            Vec::new()
        };
        Ok(Some(Side {
            inode,
            runs,
            target,
        }))
    };
    let a_side = side(old, c.change != Kind::Added)?;
    let b_side = side(new, c.change != Kind::Deleted)?;
    let read = |fs: &Ext4, s: &Option<Side>, at: u64, len: usize| -> Result<Vec<u8>, String> {
        s.as_ref().map_or(Ok(Vec::new()), |s| s.read(fs, at, len))
    };
    let end = a_side
        .as_ref()
        .map_or(0, Side::size)
        .max(b_side.as_ref().map_or(0, Side::size));
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
                    found = Some(at + i as u64);
                    break;
                }
                at += n.max(1) as u64;
            }
            found
        }
        Seek::Prev => {
            let mut hi = offset.min(end);
            let stop = hi.saturating_sub(SEARCH_LIMIT);
            let mut found = None;
            while hi > stop {
                let lo = hi.saturating_sub(STEP as u64).max(stop);
                let len = usize::try_from(hi - lo).unwrap_or(STEP);
                let a = read(old, &a_side, lo, len)?;
                let b = read(new, &b_side, lo, len)?;
                if let Some(i) = (0..len).rev().find(|&i| differ(&a, &b, i)) {
                    found = Some(lo + i as u64);
                    break;
                }
                hi = lo;
            }
            found
        }
    };
    // Around a difference, with some bytes before it to scroll back to.
    let at = match found {
        Some(f) => (f & !15).saturating_sub(COMPARE_BYTES as u64 / 4),
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
        old_size: a_side.as_ref().map(Side::size),
        new_size: b_side.as_ref().map(Side::size),
    })
}

/// One side of a comparison: the inode and where its bytes are.
struct Side {
    inode: crate::fs::ext::inode::Inode,
    runs: Vec<crate::fs::ext::blockmap::Run>,
    /// A symlink's target.
    target: Option<Vec<u8>>,
}

impl Side {
    fn size(&self) -> u64 {
        self.inode.size
    }

    /// Up to `len` bytes at `at`.
    fn read(&self, fs: &Ext4, at: u64, len: usize) -> Result<Vec<u8>, String> {
        if let Some(t) = &self.target {
            let s = usize::try_from(at).unwrap_or(usize::MAX).min(t.len());
            return Ok(t[s..].iter().take(len).copied().collect());
        }
        let mut buf = vec![0u8; self.size().saturating_sub(at).min(len as u64) as usize];
        if !buf.is_empty() {
            fs.read_file(&self.inode, &self.runs, at, &mut buf)
                .map_err(|e| e.to_string())?;
        }
        Ok(buf)
    }
}
