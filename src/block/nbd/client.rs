//! The NBD client: one connection, read-only, with pipelined reads.
//!
//! Every reply is checked before it touches memory: chunk offsets must fall
//! inside the request, lengths are bounded, cookies must be ours, and every
//! socket operation has a time limit, so a hostile or dead server gives an
//! error, never a hang or a huge allocation. A broken connection is
//! re-established on the next request, with bounded backoff.
//!
//! This file holds the client itself and its [`BlockSource`] face; the
//! rest of it lives beside it, one file a part: `options` (settings),
//! `conn` (one connection: opening, deadlines, reconnecting),
//! `multi_conn` (extra connections), `pipeline` (pipelined reads and the
//! read reply checks), `status_ahead` (block status for callers) and
//! `cache` (what later reads reuse).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::{open_conn, Conn};
pub use super::handshake::{handshake, list_exports, ExportInfo, Stream};
use super::known::{alloc_extents, Known};
use super::multi_conn::{Extra, MULTI_CONN_MIN};
pub use super::options::Options;
use super::proto::*;
use super::recent::Recent;
use super::status::{ConnState, Stats};
use super::status_ahead::Primed;
use super::uri::NbdUri;
use crate::block::{check_range, BlockError, BlockSource, Extent, Status};
use crate::bytes::{u64_of, us};

/// A read-only NBD export as a block source.
pub struct NbdClient {
    pub(super) uri: NbdUri,
    pub(super) name: String,
    pub(super) opts: Options,
    pub(super) conn: Mutex<Option<Conn>>,
    pub(super) info: ExportInfo,
    pub(super) stats: Arc<Stats>,
    /// The extents of the last block status answer, reused for reads
    /// inside them (one round trip serves many extents).
    pub(super) known: Mutex<Known>,
    /// Extra connections (multi-conn), opened when a read first needs
    /// them; none when the server does not allow it.
    pub(super) extra: Mutex<Extra>,
    /// Recent small reads, answered again from memory.
    pub(super) recent: Mutex<Recent>,
    /// The first round of a block status walk over the whole export,
    /// asked with the export probe's reads (the windows, the answers).
    pub(super) primed: Mutex<Option<Primed>>,
}

impl NbdClient {
    /// Connects and negotiates.
    ///
    /// # Errors
    /// Connection, handshake and protocol errors, naming the URI.
    pub fn connect(uri: NbdUri, opts: Options) -> Result<NbdClient, BlockError> {
        let name = uri.to_string();
        let stats = Arc::new(Stats::new());
        stats.set_state(ConnState::Connecting, None);
        let conn = open_conn(&uri, &opts).map_err(|e| {
            stats.set_state(ConnState::Failed, Some(e.to_string()));
            BlockError::Connect {
                uri: name.clone(),
                source: e,
            }
        })?;
        stats.set_state(ConnState::Ready, None);
        let info = conn.info.clone();
        Ok(NbdClient {
            uri,
            name,
            opts,
            conn: Mutex::new(Some(conn)),
            info,
            stats,
            known: Mutex::new(Known::default()),
            extra: Mutex::new(Extra::default()),
            recent: Mutex::new(Recent::default()),
            primed: Mutex::new(None),
        })
    }

    /// What the server said in the handshake.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// Live counters for the UI and `nbd-info`.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        // NBD_CMD_DISC on every connection, the multi-conn ones too ("the
        // client SHOULD send NBD_CMD_DISC" before closing): a polite
        // goodbye; errors do not matter any more.
        if let Ok(mut g) = self.conn.lock() {
            if let Some(c) = g.as_mut() {
                goodbye(c);
            }
        }
        self.each_extra(goodbye);
    }
}

/// Sends NBD_CMD_DISC on `c`; a server that stopped reading must not
/// hold up the exit.
fn goodbye(c: &mut Conn) {
    let req = c.request(Command::Disconnect, 0, 0);
    let w = c.reader.get_mut();
    w.start(Some(Duration::from_secs(1)));
    let _ = w.write_all(&req.to_bytes());
    let _ = w.flush();
}

impl BlockSource for NbdClient {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.info.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.name, self.info.size, offset, u64_of(buf.len()))?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.opts.connections > 1 {
            if let Some(worker) = crate::block::stream::bulk_worker() {
                let extra = self.extra_conns(self.opts.connections.saturating_sub(1));
                // One of a bulk copy's reader threads, as many as the
                // connections: each its own connection, its whole segment
                // pipelined there. Splitting every segment over all the
                // connections instead cost a thread per part and made the
                // readers queue for each other's connections (4
                // connections read slower than 1 on a local socket).
                let n = extra.len().saturating_add(1);
                let slot = match worker.checked_rem(n).unwrap_or(0) {
                    0 => &self.conn,
                    k => extra.get(k.saturating_sub(1)).map_or(&self.conn, |s| &**s),
                };
                return self.with_slot(slot, "reading", offset, |c| {
                    self.pipelined_read(c, offset, buf)
                });
            }
        }
        if buf.len() >= MULTI_CONN_MIN && self.opts.connections > 1 {
            let extra = self.extra_conns(self.opts.connections.saturating_sub(1));
            if !extra.is_empty() {
                return self.read_multi(&extra, offset, buf);
            }
        }
        if self.served(offset, buf) {
            return Ok(());
        }
        self.with_conn("reading", offset, |c| self.pipelined_read(c, offset, buf))?;
        self.keep(offset, buf);
        Ok(())
    }

    /// All the ranges in flight together (those a recent read holds are
    /// answered from memory): on one connection, up to `max_in_flight`
    /// requests at a time; a batch larger than that is spread over the
    /// multi-conn connections when the server allows them (up to
    /// `walk_connections`, as many as the batch fills), each with its
    /// share in flight.
    ///
    /// Ranges longer than a request are split first, so a batch of a few
    /// long ranges is spread like one of many short ones.
    ///
    /// Only a batch of one range is kept among the recent reads: a
    /// larger batch is a prefetch whose caller keeps the bytes in its
    /// own store (the filesystem's page store), and holding them here
    /// too doubled the memory of a remote `ls -R` (32 → 45.5 MiB).
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        for (offset, buf) in reqs.iter() {
            check_range(&self.name, self.info.size, *offset, u64_of(buf.len()))?;
        }
        // A batch: a walk has begun, whose next batches are larger.
        self.warm_extras();
        let mut left: Vec<(u64, &mut [u8])> = Vec::with_capacity(reqs.len());
        for (o, b) in reqs.iter_mut() {
            if !b.is_empty() && !self.served(*o, b) {
                left.push((*o, &mut **b));
            }
        }
        // Ranges in requests of at most BATCH_PIECE, counted and shared
        // out as such: a batch of a few long ranges (the inode tables of
        // a filesystem) is a few requests in one round on the connection
        // in hand, not many spread over connections that may still be
        // shaking hands; a batch of more requests than a connection
        // carries at once is spread over them.
        let piece64 = self.batch_piece();
        let piece = us(piece64);
        let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(left.len());
        for (o, b) in left {
            let mut at = o;
            for part in b.chunks_mut(piece) {
                let n = u64_of(part.len());
                reqs.push((at, part));
                at = at.saturating_add(n);
            }
        }
        let Some(&(first, _)) = reqs.first() else {
            return Ok(());
        };
        let per_conn = self.opts.max_in_flight.max(1);
        if reqs.len() > per_conn && self.opts.connections > 1 {
            let want = reqs
                .len()
                .div_ceil(per_conn)
                .min(self.opts.walk_connections.max(self.opts.connections))
                .saturating_sub(1);
            let extra = self.extra_conns(want);
            if !extra.is_empty() {
                let per = reqs.len().div_ceil(extra.len().saturating_add(1));
                std::thread::scope(|scope| {
                    let slots = std::iter::once(&self.conn).chain(extra.iter().map(|s| &**s));
                    let tasks: Vec<_> = reqs
                        .chunks_mut(per)
                        .zip(slots)
                        .map(|(group, slot)| {
                            let at = group.first().map_or(first, |g| g.0);
                            scope.spawn(move || {
                                self.with_slot(slot, "reading", at, |c| {
                                    self.scatter_with_status(c, group, None, piece64)
                                })
                            })
                        })
                        .collect();
                    tasks.into_iter().try_for_each(|t| {
                        t.join().unwrap_or_else(|_| {
                            Err(BlockError::Internal {
                                what: "an NBD read thread panicked".into(),
                            })
                        })
                    })
                })?;
                return Ok(());
            }
        }
        self.with_conn("reading", first, |c| {
            self.scatter_with_status(c, &mut reqs, None, piece64)
        })?;
        if let [(o, b)] = reqs.as_slice() {
            self.keep(*o, b);
        }
        Ok(())
    }

    fn remote(&self) -> bool {
        true
    }

    fn held(&self, offset: u64, max: u64) -> Option<bytes::Bytes> {
        let max = max.min(self.info.size.checked_sub(offset)?);
        self.held_recent(offset, max)
    }

    fn bulk_readers(&self) -> usize {
        if self.info.flags & TFLAG_CAN_MULTI_CONN == 0 {
            1
        } else {
            self.opts.connections.clamp(1, 64)
        }
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        check_range(&self.name, self.info.size, offset, len)?;
        if self.info.context("base:allocation").is_none() {
            return Ok(vec![Extent {
                offset,
                len,
                status: Status::Data,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            }]);
        }
        // What the server said before (a walk over the disk asks once
        // for the rest of it, not once per step), else ask from here on.
        let known = self.known(|k| k.alloc_range(offset, len))?;
        if !known.is_empty() {
            return Ok(known);
        }
        self.refresh(offset)?;
        let known = self.known(|k| k.alloc_range(offset, len))?;
        if !known.is_empty() {
            return Ok(known);
        }
        let all = self.status_all(offset, len)?;
        let out = alloc_extents(
            offset,
            all.get("base:allocation").map_or(&[][..], Vec::as_slice),
        );
        if out.is_empty() {
            return Err(BlockError::io(
                &self.name,
                "block status",
                offset,
                invalid("no base:allocation descriptors".into()),
            ));
        }
        Ok(out)
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.name, self.info.size, offset, len)?;
        if self.info.context("base:allocation").is_none() {
            return self.block_status(offset, len).map(|mut v| v.remove(0));
        }
        let first = match self.known(|k| k.alloc_at(offset))? {
            Some(e) => e,
            None => {
                self.refresh(offset)?;
                self.known(|k| k.alloc_at(offset))?.ok_or_else(|| {
                    BlockError::io(
                        &self.name,
                        "block status",
                        offset,
                        invalid("no base:allocation descriptors".into()),
                    )
                })?
            }
        };
        Ok(Extent {
            len: first.len.min(len),
            ..first
        })
    }
}
