//! The replayed view: the volume as it reads after the kernel's journal
//! recovery, computed in memory. A [`ReplayedSource`] wraps the volume's
//! [`BlockSource`] and serves each block that recovery writes from its copy
//! in the journal (the journal's own blocks, read through the same
//! layers), every other byte from the volume. Nothing is written and
//! nothing is copied up front: the map holds where each copy is, so its
//! size follows the journal, not the disk.
//!
//! A block served from the journal is recorded in the hit map as served
//! by "the journal of layer L", L being the layer that holds the copy
//! (through an [`Origin`], when the opener knows the layers).
use std::sync::Arc;

use crate::block::origin::Origin;
use crate::block::{check_range, BlockError, BlockSource, Extent, Status};

use super::recovery::{Outcome, Recovery};
use super::MAGIC;

/// What a replay did, for notes, the TUI's panes and `--json`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReplayInfo {
    pub outcome: Outcome,
    /// Transactions replayed.
    pub transactions: u32,
    /// Filesystem blocks served from the journal.
    pub blocks: usize,
    /// The first transaction replayed (`s_sequence`) and the first not
    /// replayed.
    pub first_sequence: u32,
    pub end_sequence: u32,
    /// Revoke records that cancelled a logged block.
    pub revoke_hits: u64,
    /// What recovery noticed on the way (bad checksums, the end of the
    /// log), one line each.
    pub notes: Vec<String>,
}

impl ReplayInfo {
    pub fn of(r: &Recovery) -> ReplayInfo {
        ReplayInfo {
            outcome: r.outcome.clone(),
            transactions: r.transactions,
            blocks: r.blocks(),
            first_sequence: r.geometry.sequence,
            end_sequence: r.end_transaction,
            revoke_hits: r.revoke_hits,
            notes: r.notes.clone(),
        }
    }

    /// The one line every command prints.
    pub fn summary(&self) -> String {
        match &self.outcome {
            Outcome::Clean => "journal clean: nothing to replay".into(),
            Outcome::Replayed => format!(
                "journal replayed in memory: {} transaction(s), {} block(s)",
                self.transactions, self.blocks
            ),
            Outcome::ReplayedThenRefused { why } => format!(
                "journal replayed in memory: {} transaction(s), {} block(s); the kernel would then refuse to mount: {why}",
                self.transactions, self.blocks
            ),
            Outcome::Failed { why } => {
                format!("journal recovery fails ({why}): the kernel would refuse to mount; showing the filesystem as it is on disk")
            }
        }
    }
}

/// One replayed block.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Filesystem block.
    block: u64,
    /// Byte offset of its copy in the journal's source.
    copy: u64,
    escaped: bool,
    /// The layer holding the copy, when known.
    layer: Option<usize>,
}

/// The volume with the journal replayed over it.
pub struct ReplayedSource {
    inner: Arc<dyn BlockSource>,
    /// Where the copies are: the volume itself, or a journal device.
    journal: Arc<dyn BlockSource>,
    name: String,
    block_size: u64,
    /// Sorted by block.
    entries: Vec<Entry>,
    origin: Option<Arc<dyn Origin>>,
    info: ReplayInfo,
}

impl ReplayedSource {
    /// The replayed view of `inner` after `recovery`, whose log lives in
    /// `journal` (`offset` gives each journal block's byte offset there).
    /// With `origin`, each copy's layer is looked up once here, and reads
    /// of replayed blocks are recorded as served by that layer's journal.
    ///
    /// # Errors
    /// A journal block whose place cannot be found (already checked by
    /// recovery, so only a changed disk); the layers' metadata errors.
    pub fn new(
        inner: Arc<dyn BlockSource>,
        journal: Arc<dyn BlockSource>,
        recovery: &Recovery,
        offset: &dyn Fn(u64) -> Option<u64>,
        block_size: u64,
        origin: Option<Arc<dyn Origin>>,
    ) -> Result<ReplayedSource, BlockError> {
        let same = Arc::ptr_eq(&inner, &journal);
        let mut entries = Vec::with_capacity(recovery.replay.len());
        for (&block, r) in &recovery.replay {
            let Some(copy) = offset(r.journal_block) else {
                continue;
            };
            let layer = match (&origin, same) {
                (Some(o), true) => o.layer_at(copy)?,
                _ => None,
            };
            entries.push(Entry {
                block,
                copy,
                escaped: r.escaped,
                layer,
            });
        }
        Ok(ReplayedSource {
            name: format!("{} (journal replayed)", inner.name()),
            inner,
            journal,
            block_size,
            entries,
            origin,
            info: ReplayInfo::of(recovery),
        })
    }

    /// What the replay did.
    pub fn info(&self) -> &ReplayInfo {
        &self.info
    }

    /// The volume below (the on-disk view).
    pub fn inner(&self) -> &Arc<dyn BlockSource> {
        &self.inner
    }

    /// The replayed blocks, in order.
    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.block)
    }

    /// The layer whose journal holds the copy of `block`, if it is
    /// replayed: `Some(layer)` (`Some(None)` when the layer is unknown).
    pub fn journal_layer(&self, block: u64) -> Option<Option<usize>> {
        self.entry(block).map(|e| e.layer)
    }

    /// Byte range of the copy of `block` in the journal's source.
    pub fn copy_of(&self, block: u64) -> Option<u64> {
        self.entry(block).map(|e| e.copy)
    }

    /// The first replayed block at or after `block`.
    pub fn next_replayed(&self, block: u64) -> Option<u64> {
        self.entries.get(self.first_from(block)).map(|e| e.block)
    }

    /// Whether any block of `[first, end)` is replayed.
    pub fn any_in(&self, first: u64, end: u64) -> bool {
        self.next_replayed(first).is_some_and(|b| b < end)
    }

    fn entry(&self, block: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.block < block);
        self.entries.get(i).filter(|e| e.block == block)
    }

    /// The first replayed entry at or after block `block`.
    fn first_from(&self, block: u64) -> usize {
        self.entries.partition_point(|e| e.block < block)
    }

    fn block_start(&self, block: u64) -> u64 {
        block.saturating_mul(self.block_size)
    }
}

impl BlockSource for ReplayedSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        check_range(&self.name, self.len(), offset, len)?;
        let end = offset.saturating_add(len);
        let bs = self.block_size.max(1);
        let mut pos = offset;
        let mut i = self.first_from(offset.checked_div(bs).unwrap_or(0));
        while pos < end {
            let next = self
                .entries
                .get(i)
                .filter(|e| self.block_start(e.block) < end);
            let Some(e) = next else {
                // No replayed block left in the range.
                let from = usize::try_from(pos.saturating_sub(offset)).unwrap_or(0);
                if let Some(piece) = buf.get_mut(from..) {
                    self.inner.read_at(pos, piece)?;
                }
                break;
            };
            let start = self.block_start(e.block);
            if start > pos {
                let from = usize::try_from(pos.saturating_sub(offset)).unwrap_or(0);
                let to = usize::try_from(start.saturating_sub(offset)).unwrap_or(0);
                if let Some(piece) = buf.get_mut(from..to) {
                    self.inner.read_at(pos, piece)?;
                }
                pos = start;
            }
            let stop = start.saturating_add(bs).min(end);
            let within = pos.saturating_sub(start);
            let from = usize::try_from(pos.saturating_sub(offset)).unwrap_or(0);
            let to = usize::try_from(stop.saturating_sub(offset)).unwrap_or(0);
            if let Some(piece) = buf.get_mut(from..to) {
                self.journal.read_at(e.copy.saturating_add(within), piece)?;
                if e.escaped && within < 4 {
                    // The copy's first four bytes were the magic.
                    let magic = MAGIC.to_be_bytes();
                    for (k, b) in piece.iter_mut().enumerate() {
                        let at = usize::try_from(within).unwrap_or(4).saturating_add(k);
                        match magic.get(at) {
                            Some(m) => *b = *m,
                            None => break,
                        }
                    }
                }
            }
            if let Some(o) = &self.origin {
                o.record_journal(e.layer, pos, stop.saturating_sub(pos));
            }
            pos = stop;
            i = i.saturating_add(1);
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        check_range(&self.name, self.len(), offset, len)?;
        let bs = self.block_size.max(1);
        let i = self.first_from(offset.checked_div(bs).unwrap_or(0));
        let end = offset.saturating_add(len);
        match self.entries.get(i) {
            Some(e) if self.block_start(e.block) <= offset => {
                // A run of replayed blocks: data, from the journal.
                let mut stop = self.block_start(e.block).saturating_add(bs);
                let mut k = i.saturating_add(1);
                while let Some(n) = self.entries.get(k) {
                    if self.block_start(n.block) != stop || stop >= end {
                        break;
                    }
                    stop = stop.saturating_add(bs);
                    k = k.saturating_add(1);
                }
                Ok(vec![Extent {
                    offset,
                    len: stop.min(end).saturating_sub(offset),
                    status: Status::Data,
                    compressed: false,
                    host_offset: None,
                    reads_zero: false,
                }])
            }
            next => {
                let limit = next.map_or(end, |e| self.block_start(e.block).min(end));
                let mut out = Vec::new();
                for x in self
                    .inner
                    .block_status(offset, limit.saturating_sub(offset))?
                {
                    if x.offset >= limit {
                        break;
                    }
                    let mut x = x;
                    x.len = x.len.min(limit.saturating_sub(x.offset));
                    out.push(x);
                }
                Ok(out)
            }
        }
    }
}
