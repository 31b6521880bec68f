//! NBD_CMD_BLOCK_STATUS on the wire: requests sent together, replies
//! taken apart and checked.
//!
//! Several requests go out in one write and their replies may interleave
//! (each chunk names its cookie), so a walk over a whole disk is a few
//! round trips, not one per window. The server answers for every
//! negotiated context in each reply. Every chunk is checked before it is
//! kept: known cookie, negotiated context, bounded length, non-empty
//! descriptors, at most one chunk per context and request, nothing after
//! DONE.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::HashMap;
use std::io::{self, Read, Write};

use super::conn::Conn;
use super::handshake::MAX_REPLIES_PER_OPTION;
use super::pipeline::read_chunk;
use super::proto::*;

/// Descriptors of each metadata context, by context id: (length, flags)
/// from the request's offset on, clamped to the request.
pub type Descriptors = HashMap<u32, Vec<(u64, u32)>>;

/// One request.
///
/// # Errors
/// As [`block_status_many`].
pub(super) fn block_status(c: &mut Conn, offset: u64, len: u32) -> io::Result<Descriptors> {
    let mut all = block_status_many(c, &[(offset, len)])?;
    Ok(all.pop().unwrap_or_default())
}

/// Sends one request per window `(offset, length)` in a single write, then
/// reads every reply; answers in the order of `windows`.
///
/// # Errors
/// I/O errors; `InvalidData` for protocol violations; a server error
/// (`Other`, "server error …") once every reply has been read, so the
/// connection stays in step.
pub(super) fn block_status_many(
    c: &mut Conn,
    windows: &[(u64, u32)],
) -> io::Result<Vec<Descriptors>> {
    let mut batch = StatusBatch::new(windows.to_vec());
    let wire = batch.requests(c);
    let w = c.reader.get_mut();
    w.write_all(&wire)?;
    w.flush()?;
    while !batch.finished() {
        let header = ReplyHeader::read_from(&mut c.reader)?;
        batch.on_reply(c, header)?;
    }
    batch.finish()
}

/// Block status requests in flight and their answers so far: the replies
/// may come mixed with those of reads sent in the same write (see
/// `NbdClient::read_many_with_status`).
pub(super) struct StatusBatch {
    windows: Vec<(u64, u32)>,
    by_cookie: HashMap<u64, usize>,
    out: Vec<Descriptors>,
    done: Vec<bool>,
    left: usize,
    error: Option<io::Error>,
    /// Chunks read, and the most allowed (each must make progress toward
    /// DONE; bounded anyway).
    chunks: usize,
    limit: usize,
    /// Open the multi-conn connections once these requests are written
    /// ([`StatusBatch::warming`]).
    warm: bool,
}

impl StatusBatch {
    /// Nothing sent yet.
    pub(super) fn new(windows: Vec<(u64, u32)>) -> StatusBatch {
        let n = windows.len();
        StatusBatch {
            by_cookie: HashMap::with_capacity(n),
            out: vec![HashMap::new(); n],
            done: vec![false; n],
            left: n,
            error: None,
            chunks: 0,
            limit: MAX_REPLIES_PER_OPTION.saturating_mul(n.max(1)),
            windows,
            warm: false,
        }
    }

    /// The batch of a tree walk's first round: the connections the next
    /// rounds spread over start opening once its requests are written
    /// (`NbdClient::warm_extras`), not before. Opened before, their
    /// handshakes held up the server's taking of the round's requests
    /// (nbdkit's log: the probe's four reads taken at 5, 9, 13 and 17 ms
    /// instead of at once), and the round with them.
    pub(super) fn warming(mut self) -> StatusBatch {
        self.warm = true;
        self
    }

    /// Whether the connections are to be opened now (once).
    pub(super) fn take_warm(&mut self) -> bool {
        std::mem::take(&mut self.warm)
    }

    /// The requests, one per window, with fresh cookies, to be written.
    pub(super) fn requests(&mut self, c: &mut Conn) -> Vec<u8> {
        let mut wire = Vec::with_capacity(self.windows.len().saturating_mul(28));
        for (i, &(offset, len)) in self.windows.iter().enumerate() {
            let req = c.request(Command::BlockStatus, offset, len);
            self.by_cookie.insert(req.cookie, i);
            wire.extend_from_slice(&req.to_bytes());
        }
        wire
    }

    /// Whether a reply with this cookie answers one of these requests.
    pub(super) fn owns(&self, cookie: u64) -> bool {
        self.by_cookie.contains_key(&cookie)
    }

    /// Every reply has ended.
    pub(super) fn finished(&self) -> bool {
        self.left == 0
    }

    /// Takes one reply chunk (its header read, its payload not yet).
    ///
    /// # Errors
    /// I/O errors; `InvalidData` for protocol violations.
    pub(super) fn on_reply(&mut self, c: &mut Conn, header: ReplyHeader) -> io::Result<()> {
        self.chunks = self.chunks.saturating_add(1);
        if self.chunks > self.limit {
            return Err(invalid("block status reply never finished".into()));
        }
        let (cookie, flags, kind, length) = match header {
            ReplyHeader::Simple { error: e, cookie } => match self.by_cookie.get(&cookie) {
                Some(&i) if e != 0 && self.done.get(i) == Some(&false) => {
                    self.error.get_or_insert(io::Error::other(format!(
                        "server error {e} ({})",
                        errno_name(e)
                    )));
                    if let Some(d) = self.done.get_mut(i) {
                        *d = true;
                    }
                    self.left = self.left.saturating_sub(1);
                    return Ok(());
                }
                _ => return Err(invalid("simple reply to block status".into())),
            },
            ReplyHeader::Structured {
                flags,
                kind,
                cookie,
                length,
            } => (cookie, flags, kind, length),
        };
        let i = match self.by_cookie.get(&cookie) {
            Some(&i) if self.done.get(i) == Some(&false) => i,
            Some(_) => {
                return Err(invalid(format!(
                    "reply chunk for cookie {cookie:#x} after its last chunk"
                )))
            }
            None => return Err(invalid(format!("reply for unknown cookie {cookie:#x}"))),
        };
        // `i` indexes `windows`, `out` and `done` (all of its length).
        let (Some(&(offset, len)), Some(descriptors)) = (self.windows.get(i), self.out.get_mut(i))
        else {
            return Err(invalid(format!("reply for unknown cookie {cookie:#x}")));
        };
        match kind {
            REPLY_TYPE_BLOCK_STATUS => {
                // The context id and at least one descriptor.
                if length < 12
                    || length.saturating_sub(4) % 8 != 0
                    || length > MAX_OPTION_REPLY.saturating_mul(16)
                {
                    return Err(invalid(format!("block status chunk of {length} bytes")));
                }
                let mut p = vec![0u8; crate::bytes::us(length)];
                c.reader.read_exact(&mut p)?;
                let (Some(ctx), Some(rest)) = (crate::bytes::be32(&p, 0), p.get(4..)) else {
                    return Err(invalid(format!("block status chunk of {length} bytes")));
                };
                if !c.info.meta_contexts.iter().any(|(id, _)| *id == ctx) {
                    return Err(invalid(format!(
                        "block status for context {ctx}, which was not negotiated"
                    )));
                }
                let list = descriptors.entry(ctx).or_default();
                if !list.is_empty() {
                    return Err(invalid(format!(
                        "two block status chunks for context {ctx}"
                    )));
                }
                let end = offset.saturating_add(u64::from(len));
                let mut pos = offset;
                for d in rest.chunks_exact(8) {
                    let n = u64::from(crate::bytes::be32(d, 0).unwrap_or(0));
                    let f = crate::bytes::be32(d, 4).unwrap_or(0);
                    if n == 0 {
                        return Err(invalid("zero-length block status descriptor".into()));
                    }
                    // The last extent may reach past the request: clamp.
                    let n = n.min(end.saturating_sub(pos));
                    if n == 0 {
                        break;
                    }
                    list.push((n, f));
                    pos = pos.saturating_add(n);
                }
            }
            REPLY_TYPE_NONE if flags & REPLY_FLAG_DONE == 0 => {
                return Err(invalid("NONE chunk without the DONE flag".into()));
            }
            _ => {
                let mut sink = vec![0u8; 0];
                let mut e = None;
                read_chunk(c, kind, length, offset, &mut sink, &mut e)?;
                if let Some(e) = e {
                    self.error.get_or_insert(e);
                }
            }
        }
        if flags & REPLY_FLAG_DONE != 0 {
            if self.error.is_none() && descriptors.values().all(Vec::is_empty) {
                return Err(invalid("block status reply without descriptors".into()));
            }
            if let Some(d) = self.done.get_mut(i) {
                *d = true;
            }
            self.left = self.left.saturating_sub(1);
        }
        Ok(())
    }

    /// The answers, in the order of the windows.
    ///
    /// # Errors
    /// A server error met in a reply; `InvalidData` if a reply has not
    /// ended.
    pub(super) fn finish(self) -> io::Result<Vec<Descriptors>> {
        if self.left > 0 {
            return Err(invalid("block status reply never finished".into()));
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}
