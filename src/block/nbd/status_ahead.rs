//! Block status for the client's callers: one request
//! ([`NbdClient::status_all`]), a range asked as windows sent together
//! ([`NbdClient::status_ahead`], for the map and walks), and the first
//! round of such a walk sent with the export probe's reads
//! ([`NbdClient::read_many_with_status`]), kept until the walk asks it.
//! The wire side (requests, reply checks) is `block_status`; what the
//! reads that follow reuse of the answers is `cache`.
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
use std::time::Instant;

use super::block_status::{block_status, block_status_many, StatusBatch};
use super::client::NbdClient;
use crate::block::{check_range, BlockError, BlockSource};
use crate::bytes::{u64_of, us};

/// A first round asked ahead: its windows and their answers (see
/// [`NbdClient::read_many_with_status`]).
pub(super) type Primed = (Vec<(u64, u32)>, Vec<super::block_status::Descriptors>);

impl NbdClient {
    /// Block status for `[offset, offset+len)`: for each negotiated
    /// metadata context (by name), (length, flags) descriptors covering a
    /// prefix of the range.
    ///
    /// # Errors
    /// `Unsupported` when no context was negotiated; I/O and protocol
    /// errors.
    pub fn status_all(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<HashMap<String, Vec<(u64, u32)>>, BlockError> {
        if self.info.meta_contexts.is_empty() {
            return Err(BlockError::unsupported(
                &self.name,
                "the server agreed to no metadata context",
            ));
        }
        check_range(&self.name, self.info.size, offset, len)?;
        let len32 = u32::try_from(len.min(u64::from(u32::MAX) & !0xfff).max(1)).unwrap_or(1);
        let by_id = self.with_conn("block status", offset, |c| {
            let t = Instant::now();
            self.stats.in_flight.store(1, Ordering::Relaxed);
            let r = block_status(c, offset, len32);
            self.stats.in_flight.store(0, Ordering::Relaxed);
            self.stats.record_request(t.elapsed(), 0);
            r
        })?;
        Ok(self
            .info
            .meta_contexts
            .iter()
            .filter_map(|(id, name)| by_id.get(id).map(|d| (name.clone(), d.clone())))
            .collect())
    }

    /// [`NbdClient::status_all`] for a walk: the range is asked as several
    /// windows sent together (up to `max_in_flight`, at least 64 MiB
    /// each). A window the server answers only in part is asked again
    /// for the rest, all such rests together in the next round (at most
    /// [`AHEAD_ROUNDS`] rounds), so the answers of later windows are kept
    /// rather than asked again. The answers are joined while contiguous.
    ///
    /// # Errors
    /// As [`NbdClient::status_all`].
    pub fn status_ahead(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<HashMap<String, Vec<(u64, u32)>>, BlockError> {
        self.status_ahead_rounds(offset, len, AHEAD_ROUNDS)
    }

    /// The windows [`NbdClient::status_ahead`] asks first for `[offset,
    /// offset + len)` (inside the export).
    /// When the export probe asked the first round for this range, its
    /// windows (fewer: the probe's reads went in the same write), so
    /// that round's answers are used rather than asked again.
    fn ahead_windows(&self, offset: u64, len: u64) -> Vec<(u64, u32)> {
        if let Some(w) = self.primed.lock().ok().and_then(|p| {
            p.as_ref()
                .filter(|(w, _)| {
                    w.first().is_some_and(|f| f.0 == offset)
                        && offset.saturating_add(len) == self.info.size
                })
                .map(|(w, _)| w.clone())
        }) {
            return w;
        }
        self.windows_of(offset, len, self.opts.max_in_flight)
    }

    /// `[offset, offset + len)` in at most `count` windows of at least
    /// 64 MiB each.
    fn windows_of(&self, offset: u64, len: u64, count: usize) -> Vec<(u64, u32)> {
        const MIN_WINDOW: u64 = 64 << 20;
        const MAX_WINDOW: u64 = 0xffff_ffff & !0xf_ffff;
        let count = u64_of(count.clamp(1, 64));
        let piece = len
            .div_ceil(count)
            .clamp(MIN_WINDOW, MAX_WINDOW)
            .next_multiple_of(1 << 20);
        let end = offset.saturating_add(len);
        let mut windows: Vec<(u64, u32)> = Vec::new();
        let mut start = offset;
        while start < end && u64_of(windows.len()) < count {
            // piece <= MAX_WINDOW < 2^32.
            let n = u32::try_from(piece.min(end.saturating_sub(start))).unwrap_or(0x1000_0000);
            windows.push((start, n));
            start = start.saturating_add(u64::from(n));
        }
        windows
    }

    /// [`NbdClient::status_ahead`] in at most `rounds` rounds.
    fn status_ahead_rounds(
        &self,
        offset: u64,
        len: u64,
        rounds: usize,
    ) -> Result<HashMap<String, Vec<(u64, u32)>>, BlockError> {
        if self.info.meta_contexts.is_empty() {
            return Err(BlockError::unsupported(
                &self.name,
                "the server agreed to no metadata context",
            ));
        }
        check_range(&self.name, self.info.size, offset, len)?;
        let windows = self.ahead_windows(offset, len);
        let ids: Vec<u32> = self.info.meta_contexts.iter().map(|(id, _)| *id).collect();
        // Per window, each context's descriptors so far (all covering the
        // same length: each answer is cut to what every context covers).
        let mut got: Vec<HashMap<u32, Vec<(u64, u32)>>> = vec![HashMap::new(); windows.len()];
        let mut asks: Vec<(usize, u64, u32)> = windows
            .iter()
            .enumerate()
            .map(|(i, &(o, n))| (i, o, n))
            .collect();
        for _ in 0..rounds {
            if asks.is_empty() {
                break;
            }
            let wire: Vec<(u64, u32)> = asks.iter().map(|&(_, o, n)| (o, n)).collect();
            // Asked already with the export probe's reads?
            let primed = self.primed.lock().ok().and_then(|p| {
                p.as_ref()
                    .filter(|(w, _)| *w == wire)
                    .map(|(_, r)| r.clone())
            });
            let replies = match primed {
                Some(r) => r,
                None => self.with_conn("block status", offset, |c| {
                    let t = Instant::now();
                    self.stats
                        .in_flight
                        .store(u64_of(wire.len()), Ordering::Relaxed);
                    let r = block_status_many(c, &wire);
                    self.stats.in_flight.store(0, Ordering::Relaxed);
                    self.stats.record_request(t.elapsed(), 0);
                    r
                })?,
            };
            let mut next = Vec::new();
            for (&(i, o, n), mut reply) in asks.iter().zip(replies) {
                // What every context covers (a context left out covers 0).
                let cov = ids
                    .iter()
                    .map(|id| {
                        reply
                            .get(id)
                            .map_or(0, |l| l.iter().fold(0u64, |t, d| t.saturating_add(d.0)))
                    })
                    .min()
                    .unwrap_or(0)
                    .min(u64::from(n));
                if cov == 0 {
                    // No progress: the window stays short here.
                    continue;
                }
                let Some(slot) = got.get_mut(i) else { continue };
                for id in &ids {
                    let list = reply.remove(id).unwrap_or_default();
                    let into = slot.entry(*id).or_default();
                    let mut left = cov;
                    for (dl, f) in list {
                        if left == 0 {
                            break;
                        }
                        let take = dl.min(left);
                        // Neighbours with the same flags join.
                        match into.last_mut() {
                            Some(last) if last.1 == f => last.0 = last.0.saturating_add(take),
                            _ => into.push((take, f)),
                        }
                        left = left.saturating_sub(take);
                    }
                }
                if cov < u64::from(n) {
                    // cov < n: the rest fits n's type.
                    let rest = u32::try_from(u64::from(n).saturating_sub(cov)).unwrap_or(0);
                    next.push((i, o.saturating_add(cov), rest));
                }
            }
            asks = next;
        }
        let mut out = HashMap::new();
        for (id, name) in &self.info.meta_contexts {
            let mut joined: Vec<(u64, u32)> = Vec::new();
            for (&(_, n), window) in windows.iter().zip(&got) {
                let list = window.get(id).map_or(&[][..], Vec::as_slice);
                match (joined.last_mut(), list.first()) {
                    (Some(last), Some(first)) if last.1 == first.1 => {
                        last.0 = last.0.saturating_add(first.0);
                        joined.extend_from_slice(list.get(1..).unwrap_or_default());
                    }
                    _ => joined.extend_from_slice(list),
                }
                // A short answer ends the contiguous part.
                if list.iter().fold(0u64, |t, d| t.saturating_add(d.0)) < u64::from(n) {
                    break;
                }
            }
            if !joined.is_empty() {
                out.insert(name.clone(), joined);
            }
        }
        Ok(out)
    }

    /// [`BlockSource::read_many`] (on the main connection) with the first
    /// round of a block status walk over the whole export sent in the
    /// same write: the export probe's one round trip also answers where
    /// the disk's data is, for the map, the hit map and reads that skip
    /// holes. A block status the server refuses is left for later. The
    /// bytes read are the caller's to keep ([`NbdClient::keep_shared`]
    /// keeps them without a copy).
    ///
    /// # Errors
    /// As [`BlockSource::read_many`].
    pub fn read_many_with_status(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        let size = self.info.size;
        if self.info.meta_contexts.is_empty() || size == 0 {
            if self.opts.walk_ahead {
                self.warm_extras();
            }
            return self.read_many(reqs);
        }
        for (offset, buf) in reqs.iter() {
            check_range(&self.name, size, *offset, u64_of(buf.len()))?;
        }
        // Reads and windows together no more than the requests the
        // server serves at once: a read queued behind the windows would
        // wait a server round more. The map and the walks then ask the
        // same windows ([`NbdClient::ahead_windows`]) and use these
        // answers.
        // Requests of a batch's size: a tree walk's longer head (see
        // `nbd_files::open_uri`) is a few requests, leaving the windows
        // their room.
        let piece = self.batch_piece();
        let reads = reqs.iter().fold(0usize, |n, (_, b)| {
            n.saturating_add(us(u64_of(b.len()).div_ceil(piece)))
        });
        let windows = self.windows_of(
            0,
            size,
            self.opts.max_in_flight.saturating_sub(reads).max(1),
        );
        let first = reqs.first().map_or(0, |r| r.0);
        let answers = self.with_conn("reading", first, |c| {
            let mut batch = StatusBatch::new(windows.clone());
            if self.opts.walk_ahead {
                batch = batch.warming();
            }
            self.scatter_with_status(c, reqs, Some(&mut batch), piece)?;
            Ok(batch.finish().ok())
        })?;
        if let Some(answers) = answers {
            if let Ok(mut p) = self.primed.lock() {
                *p = Some((windows, answers));
            }
            // What the reads that follow want to know: the first round's
            // answer, kept (no further round trip here).
            let all = self.status_ahead_rounds(0, size, 1)?;
            self.learn(0, &all)?;
        }
        Ok(())
    }
}

/// Rounds one [`NbdClient::status_ahead`] makes for the rests of windows
/// answered in part (a server answering a sliver at a time ends it here;
/// the walk asks again from where the answers stop).
const AHEAD_ROUNDS: usize = 32;
