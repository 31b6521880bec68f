//! Reads on one connection, pipelined: requests of at most a piece
//! each, many in flight and sent in one write, and their replies taken as
//! they come. Every read reply is checked before it touches memory:
//! chunks inside their request, no overlaps or gaps, a bounded number of
//! error chunks, only our cookies. Block status requests may ride in the
//! same write (`block_status::StatusBatch`).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::block_status::StatusBatch;
use super::client::NbdClient;
use super::conn::Conn;
use super::proto::*;
use crate::bytes::{u64_of, us};

impl NbdClient {
    /// A read of many requests in flight: `buf` filled from `offset`.
    pub(super) fn pipelined_read(
        &self,
        c: &mut Conn,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        self.pipelined_scatter(c, &mut [(offset, buf)])
    }

    /// Reads of several ranges on one connection, many requests in flight
    /// (at most `max_in_flight`), each range split into requests of at
    /// most the server's block size: every `(offset, buf)` filled.
    ///
    /// A buffer is not cleared first: every byte must be covered by
    /// exactly one data or hole chunk (overlaps and gaps are protocol
    /// errors), so nothing stale can survive.
    fn pipelined_scatter(&self, c: &mut Conn, segs: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        let piece = self.stream_piece(c);
        self.scatter_with_status(c, segs, None, piece)
    }

    /// The largest request of a streaming read on `c`: `max_request`,
    /// within the server's block size.
    pub(super) fn stream_piece(&self, c: &Conn) -> u64 {
        u64::from(
            self.opts
                .max_request
                .min(c.info.block_max.unwrap_or(u32::MAX))
                .max(512),
        )
    }

    /// The largest request of a batch ([`BlockSource::read_many`](crate::block::BlockSource::read_many)):
    /// [`BATCH_PIECE`] (`max_request` when that is larger), within the
    /// server's block size (32 MiB when it names none, the spec's
    /// bound for clients).
    pub(super) fn batch_piece(&self) -> u64 {
        u64::from(
            self.opts
                .max_request
                .max(BATCH_PIECE)
                .min(self.info.block_max.unwrap_or(32 << 20))
                .max(512),
        )
    }

    /// [`NbdClient::pipelined_scatter`] in requests of at most `piece`
    /// bytes, and the block status requests of `side` sent in the same
    /// first write, their replies taken as they come among the reads'.
    pub(super) fn scatter_with_status(
        &self,
        c: &mut Conn,
        segs: &mut [(u64, &mut [u8])],
        mut side: Option<&mut StatusBatch>,
        piece: u64,
    ) -> io::Result<()> {
        // Each request's length is a u32.
        let piece = piece.clamp(512, u64::from(u32::MAX));
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        // The next request: segment, and position in it.
        let mut seg = 0usize;
        let mut next = 0u64;
        let mut error: Option<io::Error> = None;
        let max_in_flight = self.opts.max_in_flight.clamp(1, 1024);
        let mut requests = Vec::with_capacity(max_in_flight.saturating_mul(28));
        let mut side_wire = side.as_mut().map(|b| b.requests(c));
        loop {
            // Top up the requests in flight, sent in one write: the reads
            // first, so that a server serving a few requests at a time
            // (nbdkit, qemu-nbd: 16 a connection) takes them in its first
            // round rather than after the side's.
            requests.clear();
            while pending.len() < max_in_flight {
                let Some((offset, buf)) = segs.get(seg) else {
                    break;
                };
                let total = u64_of(buf.len());
                if next >= total {
                    seg = seg.saturating_add(1);
                    next = 0;
                    continue;
                }
                // piece is a u32 (max_request, block_max).
                let len32 = u32::try_from(piece.min(total.saturating_sub(next))).unwrap_or(0);
                let len = u64::from(len32);
                let req = c.request(Command::Read, offset.saturating_add(next), len32);
                requests.extend_from_slice(&req.to_bytes());
                pending.insert(
                    req.cookie,
                    Pending {
                        seg,
                        start: next,
                        len,
                        covered: BTreeMap::new(),
                        got: 0,
                        errors: 0,
                        sent: Instant::now(),
                    },
                );
                next = next.saturating_add(len);
            }
            if let Some(wire) = side_wire.take() {
                requests.extend_from_slice(&wire);
            }
            if !requests.is_empty() {
                let w = c.reader.get_mut();
                w.write_all(&requests)?;
                w.flush()?;
                self.stats
                    .in_flight
                    .store(u64_of(pending.len()), Ordering::Relaxed);
                if side.as_mut().is_some_and(|b| b.take_warm()) {
                    self.warm_extras();
                }
            }
            let side_done = side.as_ref().is_none_or(|b| b.finished());
            if pending.is_empty() && side_done {
                break;
            }
            let header = ReplyHeader::read_from(&mut c.reader)?;
            let cookie = match header {
                ReplyHeader::Simple { cookie, .. } | ReplyHeader::Structured { cookie, .. } => {
                    cookie
                }
            };
            if !pending.contains_key(&cookie) {
                if let Some(b) = side.as_mut().filter(|b| b.owns(cookie)) {
                    b.on_reply(c, header)?;
                    continue;
                }
            }
            let p = pending
                .get_mut(&cookie)
                .ok_or_else(|| invalid(format!("reply for unknown cookie {cookie:#x}")))?;
            // The request's part of its buffer (start + len <= its length).
            let (seg_offset, part) = match segs.get_mut(p.seg) {
                Some((o, b)) => (
                    *o,
                    b.get_mut(us(p.start)..us(p.start.saturating_add(p.len))),
                ),
                None => return Err(invalid("a reply for no request".into())),
            };
            let Some(part) = part else {
                return Err(invalid("a reply for no request".into()));
            };
            let mut done = false;
            match header {
                ReplyHeader::Simple { error: e, .. } => {
                    if e != 0 {
                        error.get_or_insert(io::Error::other(format!(
                            "server error {} ({})",
                            e,
                            errno_name(e)
                        )));
                    } else if c.info.structured_replies {
                        return Err(invalid(
                            "simple reply with data to a read after structured replies were agreed"
                                .into(),
                        ));
                    } else {
                        read_payload(&mut c.reader, part)?;
                        self.stats.bytes_read.fetch_add(p.len, Ordering::Relaxed);
                    }
                    done = true;
                }
                ReplyHeader::Structured {
                    flags,
                    kind,
                    length,
                    ..
                } => {
                    let base = seg_offset.saturating_add(p.start);
                    let done_flag = flags & REPLY_FLAG_DONE != 0;
                    // The spec: a NONE chunk "MUST always be used with
                    // NBD_REPLY_FLAG_DONE". Error chunks may come several
                    // to a reply, but not without end: each costs a
                    // header and at most MAX_OPTION_REPLY bytes, so a
                    // server could otherwise keep a read waiting forever.
                    if kind == REPLY_TYPE_NONE && !done_flag {
                        return Err(invalid("NONE chunk without the DONE flag".into()));
                    }
                    if kind & (1 << 15) != 0 {
                        p.errors = p.errors.saturating_add(1);
                        if p.errors > MAX_ERROR_CHUNKS {
                            return Err(invalid(format!(
                                "more than {MAX_ERROR_CHUNKS} error chunks in one read reply"
                            )));
                        }
                    }
                    if let Some((at, n)) = read_chunk(c, kind, length, base, part, &mut error)? {
                        // Chunks must not overlap: the covered ranges are
                        // kept sorted, so each check is a look at two
                        // neighbours, not a scan (a server sending one-byte
                        // chunks costs n log n, not n squared).
                        // Within the request (read_chunk checked it).
                        let end = at.saturating_add(n);
                        let before = p.covered.range(..=at).next_back();
                        let after = p.covered.range(at..end).next();
                        if before.is_some_and(|(_, &e)| e > at) || after.is_some() {
                            return Err(invalid(format!(
                                "overlapping reply chunks at {:#x}",
                                base.saturating_add(at)
                            )));
                        }
                        // Neighbours merge: in-order chunks keep one
                        // range, whatever their number.
                        let mut range = (at, end);
                        if let Some((&s, &e)) = p.covered.range(..at).next_back() {
                            if e == at {
                                p.covered.remove(&s);
                                range.0 = s;
                            }
                        }
                        if let Some(e) = p.covered.remove(&end) {
                            range.1 = e;
                        }
                        p.covered.insert(range.0, range.1);
                        p.got = p.got.saturating_add(n);
                        self.stats.bytes_read.fetch_add(n, Ordering::Relaxed);
                    }
                    if done_flag {
                        let got = p.got;
                        if error.is_none() && got != p.len {
                            return Err(invalid(format!(
                                "read reply covered {got} of {} bytes",
                                p.len
                            )));
                        }
                        done = true;
                    }
                }
            }
            if done {
                if let Some(p) = pending.remove(&cookie) {
                    self.stats.record_request(p.sent.elapsed(), 0);
                }
                self.stats
                    .in_flight
                    .store(u64_of(pending.len()), Ordering::Relaxed);
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A read request waiting for its reply.
struct Pending {
    /// Which of the caller's buffers its bytes go to, and where in it.
    seg: usize,
    start: u64,
    len: u64,
    /// Ranges (relative to `start`, start -> end) already filled by chunks.
    covered: BTreeMap<u64, u64>,
    /// Bytes they cover.
    got: u64,
    /// Error chunks received.
    errors: u32,
    sent: Instant,
}

/// Largest request of a batch of reads
/// ([`BlockSource::read_many`](crate::block::BlockSource::read_many)),
/// within the server's block size. A streaming read keeps to
/// `max_request` (256 KiB): many requests in flight keep its pipeline
/// full. A batch is waited for as a whole, and a server's cost is per
/// request more than per byte (nbdkit's delay filter and nbd plugin in
/// front of qemu-nbd: ~85 us of CPU a request, ~2 us a KiB), so a long
/// range of one (a filesystem's inode tables fetched ahead: 5.7 MiB on
/// the bench chain) is 3 requests, not 23.
const BATCH_PIECE: u32 = 2 << 20;

/// Error chunks accepted in one reply (the spec allows several, one per
/// failed offset; a server cannot send them without end).
const MAX_ERROR_CHUNKS: u32 = 64;

/// Reads a reply's payload into `into`: what the buffer already holds,
/// then the rest straight from the socket. `BufReader::read_exact` would
/// pass every byte through its buffer whenever what is left is shorter
/// than the buffer (256 KiB, as long as a request): one more copy of all
/// the data read, 37% of a multi-conn `read`'s CPU (perf, issue 18).
fn read_payload<R: Read>(s: &mut io::BufReader<R>, into: &mut [u8]) -> io::Result<()> {
    let held = s.buffer().len().min(into.len());
    let (head, rest) = into.split_at_mut(held);
    s.read_exact(head)?;
    if rest.is_empty() {
        return Ok(());
    }
    // The buffer is empty now: reading the inner stream skips nothing.
    s.get_mut().read_exact(rest)
}

/// Reads one structured chunk of a read reply into `buf` (which starts at
/// disk offset `base`); returns the range of `buf` it filled, if any.
pub(super) fn read_chunk(
    c: &mut Conn,
    kind: u16,
    length: u32,
    base: u64,
    buf: &mut [u8],
    error: &mut Option<io::Error>,
) -> io::Result<Option<(u64, u64)>> {
    let s = &mut c.reader;
    let end = base.saturating_add(u64_of(buf.len()));
    let mut b8 = [0u8; 8];
    match kind {
        REPLY_TYPE_NONE => {
            if length != 0 {
                return Err(invalid(format!("NONE chunk with {length} bytes")));
            }
            Ok(None)
        }
        REPLY_TYPE_OFFSET_DATA => {
            if length < 8 {
                return Err(invalid("OFFSET_DATA chunk shorter than 8 bytes".into()));
            }
            s.read_exact(&mut b8)?;
            let at = u64::from_be_bytes(b8);
            let n = u64::from(length.saturating_sub(8));
            if at < base || at.checked_add(n).is_none_or(|e| e > end) {
                return Err(invalid(format!(
                    "data chunk {at:#x}+{n} outside the read {base:#x}..{end:#x}"
                )));
            }
            // base <= at and at + n <= end (checked above).
            let from = at.saturating_sub(base);
            let into = buf
                .get_mut(us(from)..us(from.saturating_add(n)))
                .ok_or_else(|| invalid(format!("data chunk {at:#x}+{n} outside the read")))?;
            read_payload(s, into)?;
            Ok(Some((from, n)))
        }
        REPLY_TYPE_OFFSET_HOLE => {
            if length != 12 {
                return Err(invalid(format!(
                    "OFFSET_HOLE chunk of {length} bytes, expected 12"
                )));
            }
            s.read_exact(&mut b8)?;
            let at = u64::from_be_bytes(b8);
            let mut b4 = [0u8; 4];
            s.read_exact(&mut b4)?;
            let n = u64::from(u32::from_be_bytes(b4));
            if n == 0 || at < base || at.checked_add(n).is_none_or(|e| e > end) {
                return Err(invalid(format!(
                    "hole chunk {at:#x}+{n} outside the read {base:#x}..{end:#x}"
                )));
            }
            let from = at.saturating_sub(base);
            buf.get_mut(us(from)..us(from.saturating_add(n)))
                .ok_or_else(|| invalid(format!("hole chunk {at:#x}+{n} outside the read")))?
                .fill(0);
            Ok(Some((from, n)))
        }
        REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
            if !(6..=MAX_OPTION_REPLY).contains(&length) {
                return Err(invalid(format!("error chunk of {length} bytes")));
            }
            let mut p = vec![0u8; us(length)];
            s.read_exact(&mut p)?;
            // length >= 6 (checked above).
            let code = crate::bytes::be32(&p, 0).unwrap_or(0);
            let mlen = usize::from(crate::bytes::be16(&p, 4).unwrap_or(0));
            let msg = p
                .get(6..mlen.saturating_add(6))
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            error.get_or_insert(io::Error::other(format!(
                "server error {code} ({}){}{}",
                errno_name(code),
                if msg.is_empty() { "" } else { ": " },
                crate::escape::printable(&msg)
            )));
            Ok(None)
        }
        k => Err(invalid(format!(
            "unexpected chunk type {k} in a read reply"
        ))),
    }
}
