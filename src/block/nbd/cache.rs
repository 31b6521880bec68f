//! What the client remembers between requests, so that the reads that
//! follow cost no round trip: the last block status answers (`known`:
//! where the data is, which server layer serves it) and recent small
//! reads (`recent`). Asking the server again when they do not cover a
//! request, and coping with servers that answer a sliver at a time, is
//! here too; the stores themselves are `known` and `recent`.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::client::NbdClient;
use super::known::{alloc_extents, depth_runs, Known};
use super::proto::invalid;
use super::recent::MAX_SPAN;
use crate::block::{check_range, BlockError, Extent, Status};
use crate::bytes::u64_of;

/// A block status reply covering less than this (before the end of the
/// disk) is a short one: see [`NbdClient::refresh`].
const SHORT_REPLY: u64 = 64 << 10;
/// How far past a short reply reads go without asking again.
const SHORT_FILL: u64 = 4 << 20;

impl NbdClient {
    /// Bytes held by the recent reads (see
    /// [`BlockSource::read_many`](crate::block::BlockSource::read_many) for
    /// what is kept).
    pub fn recent_bytes(&self) -> u64 {
        self.recent.lock().map_or(0, |r| r.bytes())
    }

    /// Fills `buf` from the recent reads that hold it (one, or several
    /// in a row); false when they do not.
    pub(super) fn served(&self, offset: u64, buf: &mut [u8]) -> bool {
        self.recent.lock().is_ok_and(|r| r.serve(offset, buf))
    }

    /// What the recent reads hold at `offset`, shared
    /// ([`crate::block::BlockSource::held`]).
    pub(super) fn held_recent(&self, offset: u64, max: u64) -> Option<bytes::Bytes> {
        self.recent.lock().ok()?.held(offset, max)
    }

    /// Keeps a small read for later reads of the same bytes.
    pub(super) fn keep(&self, offset: u64, buf: &[u8]) {
        if u64_of(buf.len()) <= MAX_SPAN {
            if let Ok(mut r) = self.recent.lock() {
                r.keep(offset, buf);
            }
        }
    }

    /// Keeps a read of any length without copying it, a span of at most
    /// [`MAX_SPAN`] at a time (the probe's head: see
    /// `nbd_files::open_uri`).
    pub fn keep_shared(&self, offset: u64, bytes: &bytes::Bytes) {
        if let Ok(mut r) = self.recent.lock() {
            r.keep_shared(offset, bytes);
        }
    }

    /// Runs `f` on what the last block status reply said.
    pub(super) fn known<T>(&self, f: impl FnOnce(&Known) -> T) -> Result<T, BlockError> {
        self.known
            .lock()
            .map(|k| f(&k))
            .map_err(|_| BlockError::Internal {
                what: "NBD extent cache lock poisoned".into(),
            })
    }

    /// Asks about the rest of the disk from `offset`, not just one read:
    /// the answer (both contexts in one reply) covers the reads that
    /// follow.
    ///
    /// A server may answer with as little as one tiny extent each time
    /// (the spec allows it); asking again for every 512 bytes would cost a
    /// round trip per sector. A reply covering less than [`SHORT_REPLY`]
    /// is taken as it is and the next [`SHORT_FILL`] bytes are served as
    /// data without asking: a read returns the real bytes either way, only
    /// zero skipping and the layer attribution of those bytes are coarser.
    pub(super) fn refresh(&self, offset: u64) -> Result<(), BlockError> {
        let all = self.status_all(offset, self.info.size.saturating_sub(offset))?;
        self.learn(offset, &all)
    }

    /// Keeps a block status answer from `offset` on (see
    /// [`NbdClient::refresh`]).
    pub(super) fn learn(
        &self,
        offset: u64,
        all: &HashMap<String, Vec<(u64, u32)>>,
    ) -> Result<(), BlockError> {
        let none = &[][..];
        let alloc = alloc_extents(
            offset,
            all.get("base:allocation").map_or(none, Vec::as_slice),
        );
        let depth = depth_runs(
            offset,
            all.get("qemu:allocation-depth").map_or(none, Vec::as_slice),
        );
        let size = self.info.size;
        let covered = alloc.last().map_or(offset, Extent::end);
        let (mut alloc_fill, mut depth_fill) = (None, None);
        if covered < size && covered.saturating_sub(offset) < SHORT_REPLY {
            let end = offset.saturating_add(SHORT_FILL).min(size);
            if let Some(len) = end.checked_sub(covered).filter(|&l| l > 0) {
                alloc_fill = Some(Extent {
                    offset: covered,
                    len,
                    status: Status::Data,
                    compressed: false,
                    host_offset: None,
                    reads_zero: false,
                });
            }
            let depth_end = depth
                .last()
                .map_or(offset, |r| r.offset.saturating_add(r.len));
            if let Some(len) = end.checked_sub(depth_end).filter(|&l| l > 0) {
                let last = depth.last().map_or(1, |r| r.depth);
                depth_fill = Some(super::known::DepthRun {
                    offset: depth_end,
                    len,
                    depth: last,
                });
            }
            self.stats.short_replies.fetch_add(1, Ordering::Relaxed);
        }
        self.known
            .lock()
            .map(|mut k| k.merge(alloc, depth, alloc_fill, depth_fill))
            .map_err(|_| BlockError::Internal {
                what: "NBD extent cache lock poisoned".into(),
            })
    }

    /// Which layer of the server's chain serves `[offset, offset + len)`:
    /// (length, depth) runs covering the range in order, depth as qemu's
    /// `qemu:allocation-depth` gives it (0 unallocated, 1 the top layer).
    /// `None` when the server offers no depth context. Answers come from
    /// the last block status reply when it covers the range, so a
    /// sequential read costs one request per reply, not one per read.
    ///
    /// # Errors
    /// Connection and protocol errors of the block status request.
    pub fn served_depths(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<(u64, u32)>>, BlockError> {
        if self.info.context("qemu:allocation-depth").is_none() {
            return Ok(None);
        }
        check_range(&self.name, self.info.size, offset, len)?;
        let end = offset.saturating_add(len);
        let mut pos = offset;
        let mut out: Vec<(u64, u32)> = Vec::new();
        while pos < end {
            let run = match self.known(|k| k.depth_at(pos))? {
                Some(r) => r,
                None => {
                    self.refresh(pos)?;
                    self.known(|k| k.depth_at(pos))?.ok_or_else(|| {
                        BlockError::io(
                            &self.name,
                            "block status",
                            pos,
                            invalid("no qemu:allocation-depth descriptors".into()),
                        )
                    })?
                }
            };
            // Descriptors are never empty, so every turn moves on.
            let n = run.len.min(end.saturating_sub(pos));
            match out.last_mut() {
                Some(last) if last.1 == run.depth => last.0 = last.0.saturating_add(n),
                _ => out.push((n, run.depth)),
            }
            pos = pos.saturating_add(n);
        }
        Ok(Some(out))
    }
}
