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

use super::client::{read_chunk, Conn};
use super::handshake::MAX_REPLIES_PER_OPTION;
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
    let mut wire = Vec::with_capacity(windows.len().saturating_mul(28));
    let mut by_cookie: HashMap<u64, usize> = HashMap::with_capacity(windows.len());
    for (i, &(offset, len)) in windows.iter().enumerate() {
        let req = c.request(Command::BlockStatus, offset, len);
        by_cookie.insert(req.cookie, i);
        wire.extend_from_slice(&req.to_bytes());
    }
    let w = c.reader.get_mut();
    w.write_all(&wire)?;
    w.flush()?;
    let mut out: Vec<Descriptors> = vec![HashMap::new(); windows.len()];
    let mut done = vec![false; windows.len()];
    let mut left = windows.len();
    let mut error: Option<io::Error> = None;
    // Each chunk must make progress toward DONE; bound the count anyway.
    let limit = MAX_REPLIES_PER_OPTION.saturating_mul(windows.len().max(1));
    for _ in 0..limit {
        if left == 0 {
            break;
        }
        let header = ReplyHeader::read_from(&mut c.reader)?;
        let (cookie, flags, kind, length) = match header {
            ReplyHeader::Simple { error: e, cookie } => match by_cookie.get(&cookie) {
                Some(&i) if e != 0 && done.get(i) == Some(&false) => {
                    error.get_or_insert(io::Error::other(format!(
                        "server error {e} ({})",
                        errno_name(e)
                    )));
                    if let Some(d) = done.get_mut(i) {
                        *d = true;
                    }
                    left = left.saturating_sub(1);
                    continue;
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
        let i = match by_cookie.get(&cookie) {
            Some(&i) if done.get(i) == Some(&false) => i,
            Some(_) => {
                return Err(invalid(format!(
                    "reply chunk for cookie {cookie:#x} after its last chunk"
                )))
            }
            None => return Err(invalid(format!("reply for unknown cookie {cookie:#x}"))),
        };
        // `i` indexes `windows`, `out` and `done` (all of its length).
        let (Some(&(offset, len)), Some(descriptors)) = (windows.get(i), out.get_mut(i)) else {
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
                    error.get_or_insert(e);
                }
            }
        }
        if flags & REPLY_FLAG_DONE != 0 {
            if error.is_none() && descriptors.values().all(Vec::is_empty) {
                return Err(invalid("block status reply without descriptors".into()));
            }
            if let Some(d) = done.get_mut(i) {
                *d = true;
            }
            left = left.saturating_sub(1);
        }
    }
    if left > 0 {
        return Err(invalid("block status reply never finished".into()));
    }
    match error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
