//! The NBD client: one connection, read-only, with pipelined reads.
//!
//! Every reply is checked before it touches memory: chunk offsets must fall
//! inside the request, lengths are bounded, cookies must be ours, and every
//! socket operation has a time limit, so a hostile or dead server gives an
//! error, never a hang or a huge allocation. A broken connection is
//! re-established on the next request, with bounded backoff.
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::known::{alloc_extents, depth_runs, Known};
use super::proto::*;
use super::status::{ConnState, Stats};
use super::uri::{NbdUri, Transport};
use crate::block::{check_range, BlockError, BlockSource, Extent, Status};

/// Connection settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Limit on connecting and on the whole handshake.
    pub connect_timeout: Duration,
    /// Limit on any single socket read or write during transmission.
    pub request_timeout: Duration,
    /// Read requests sent before waiting for replies.
    pub max_in_flight: usize,
    /// Largest single read request (further capped by the server's maximum
    /// block size).
    pub max_request: u32,
    /// Reconnection attempts per failed request.
    pub reconnect_attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 16,
            max_request: 256 << 10,
            reconnect_attempts: 3,
        }
    }
}

/// What the server told us about the export.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportInfo {
    pub name: String,
    pub size: u64,
    pub flags: u16,
    pub block_min: Option<u32>,
    pub block_preferred: Option<u32>,
    pub block_max: Option<u32>,
    pub description: Option<String>,
    pub structured_replies: bool,
    /// Negotiated metadata contexts: (id, name).
    pub meta_contexts: Vec<(u32, String)>,
    /// The handshake used: "newstyle-go", "newstyle-export-name", "oldstyle".
    pub handshake: &'static str,
}

impl ExportInfo {
    /// The id of a negotiated metadata context.
    pub fn context(&self, name: &str) -> Option<u32> {
        self.meta_contexts
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
    }
}

/// A byte stream to a server.
pub trait Stream: Read + Write + Send {
    /// Sets the time limit on every read and write.
    ///
    /// # Errors
    /// From the socket.
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Stream for UnixStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// Opens a stream to the URI's server.
fn dial(uri: &NbdUri, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    match &uri.transport {
        Transport::Tcp { host, port } => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
            for addr in (host.as_str(), *port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        s.set_timeout(timeout)?;
                        return Ok(Box::new(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        Transport::Unix { socket } => {
            let s = UnixStream::connect(socket)?;
            s.set_timeout(timeout)?;
            Ok(Box::new(s))
        }
    }
}

/// Upper bound on replies to one option (a server cannot keep us here).
const MAX_REPLIES_PER_OPTION: usize = 4096;

/// Sends an option and collects its replies up to ACK or an error.
fn option(s: &mut dyn Stream, opt: u32, data: &[u8]) -> io::Result<Result<Vec<OptionReply>, u32>> {
    write_option(s, opt, data)?;
    let mut replies = Vec::new();
    for _ in 0..MAX_REPLIES_PER_OPTION {
        let r = OptionReply::read_from(s)?;
        if r.option != opt {
            return Err(invalid(format!(
                "reply to option {} while waiting for option {opt}",
                r.option
            )));
        }
        if r.kind & REP_FLAG_ERROR != 0 {
            return Ok(Err(r.kind));
        }
        if r.kind == REP_ACK {
            return Ok(Ok(replies));
        }
        replies.push(r);
    }
    Err(invalid(format!(
        "more than {MAX_REPLIES_PER_OPTION} replies to option {opt}"
    )))
}

fn name_payload(export: &str) -> io::Result<Vec<u8>> {
    let len = u32::try_from(export.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut d = len.to_be_bytes().to_vec();
    d.extend_from_slice(export.as_bytes());
    Ok(d)
}

/// The whole handshake, up to transmission.
pub fn handshake(s: &mut dyn Stream, export: &str) -> io::Result<ExportInfo> {
    let mut b8 = [0u8; 8];
    s.read_exact(&mut b8)?;
    if u64::from_be_bytes(b8) != NBDMAGIC {
        return Err(invalid("not an NBD server (no NBDMAGIC)".into()));
    }
    s.read_exact(&mut b8)?;
    let mut info = ExportInfo::default();
    match u64::from_be_bytes(b8) {
        CLISERV_MAGIC => {
            // Oldstyle: size, flags, 124 bytes of zeros.
            s.read_exact(&mut b8)?;
            info.size = u64::from_be_bytes(b8);
            let mut f = [0u8; 4];
            s.read_exact(&mut f)?;
            info.flags = (u32::from_be_bytes(f) & 0xffff) as u16;
            let mut pad = [0u8; 124];
            s.read_exact(&mut pad)?;
            info.handshake = "oldstyle";
            return Ok(info);
        }
        IHAVEOPT => {}
        m => return Err(invalid(format!("unknown handshake magic {m:#x}"))),
    }
    let mut f2 = [0u8; 2];
    s.read_exact(&mut f2)?;
    let server_flags = u16::from_be_bytes(f2);
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(invalid(
            "server does not speak fixed newstyle negotiation".into(),
        ));
    }
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags = CLIENT_FIXED_NEWSTYLE | if no_zeroes { CLIENT_NO_ZEROES } else { 0 };
    s.write_all(&client_flags.to_be_bytes())?;

    info.name = export.to_owned();
    info.structured_replies = option(s, OPT_STRUCTURED_REPLY, &[])?.is_ok();
    if info.structured_replies {
        let mut d = name_payload(export)?;
        let queries = ["base:allocation", "qemu:allocation-depth"];
        d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        if let Ok(replies) = option(s, OPT_SET_META_CONTEXT, &d)? {
            for r in replies
                .iter()
                .filter(|r| r.kind == REP_META_CONTEXT && r.data.len() >= 4)
            {
                let id = u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]);
                info.meta_contexts
                    .push((id, String::from_utf8_lossy(&r.data[4..]).into_owned()));
            }
        }
    }
    let mut d = name_payload(export)?;
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    match option(s, OPT_GO, &d)? {
        Ok(replies) => {
            let mut have_export = false;
            for r in replies
                .iter()
                .filter(|r| r.kind == REP_INFO && r.data.len() >= 2)
            {
                let t = u16::from_be_bytes([r.data[0], r.data[1]]);
                let p = &r.data[2..];
                match t {
                    INFO_EXPORT if p.len() >= 10 => {
                        info.size = u64::from_be_bytes(p[0..8].try_into().unwrap_or([0; 8]));
                        info.flags = u16::from_be_bytes([p[8], p[9]]);
                        have_export = true;
                    }
                    INFO_BLOCK_SIZE if p.len() >= 12 => {
                        let w = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
                        info.block_min = Some(w(0));
                        info.block_preferred = Some(w(4));
                        info.block_max = Some(w(8));
                    }
                    INFO_DESCRIPTION => {
                        info.description = Some(String::from_utf8_lossy(p).into_owned())
                    }
                    _ => {}
                }
            }
            if !have_export {
                return Err(invalid(
                    "NBD_OPT_GO succeeded without NBD_INFO_EXPORT".into(),
                ));
            }
            info.handshake = "newstyle-go";
        }
        Err(kind) if kind == REP_FLAG_ERROR | 1 => {
            // NBD_REP_ERR_UNSUP: an old server. NBD_OPT_EXPORT_NAME has no
            // error reply: a bad name just closes the connection.
            write_option(s, OPT_EXPORT_NAME, export.as_bytes())?;
            s.read_exact(&mut b8)?;
            info.size = u64::from_be_bytes(b8);
            s.read_exact(&mut f2)?;
            info.flags = u16::from_be_bytes(f2);
            if !no_zeroes {
                let mut pad = [0u8; 124];
                s.read_exact(&mut pad)?;
            }
            info.handshake = "newstyle-export-name";
        }
        Err(kind) => {
            return Err(io::Error::other(format!(
                "server refused export {export:?}: {}",
                rep_error_name(kind)
            )))
        }
    }
    Ok(info)
}

/// Asks the server for its exports (NBD_OPT_LIST): (name, description).
///
/// # Errors
/// Connection and protocol errors.
pub fn list_exports(uri: &NbdUri, opts: &Options) -> Result<Vec<(String, String)>, BlockError> {
    let name = uri.to_string();
    let io_err = |e: io::Error| BlockError::Connect {
        uri: name.clone(),
        source: e,
    };
    let mut s = dial(uri, opts.connect_timeout).map_err(io_err)?;
    let mut b8 = [0u8; 8];
    s.read_exact(&mut b8).map_err(io_err)?;
    s.read_exact(&mut b8).map_err(io_err)?;
    if u64::from_be_bytes(b8) != IHAVEOPT {
        return Err(io_err(invalid(
            "server does not support listing (no newstyle)".into(),
        )));
    }
    let mut f2 = [0u8; 2];
    s.read_exact(&mut f2).map_err(io_err)?;
    let flags = u16::from_be_bytes(f2);
    let cf = CLIENT_FIXED_NEWSTYLE
        | if flags & FLAG_NO_ZEROES != 0 {
            CLIENT_NO_ZEROES
        } else {
            0
        };
    s.write_all(&cf.to_be_bytes()).map_err(io_err)?;
    let replies = option(s.as_mut(), OPT_LIST, &[])
        .map_err(io_err)?
        .map_err(|k| {
            BlockError::unsupported(&name, format!("listing exports: {}", rep_error_name(k)))
        })?;
    let _ = write_option(s.as_mut(), OPT_ABORT, &[]);
    Ok(replies
        .iter()
        .filter(|r| r.kind == REP_SERVER && r.data.len() >= 4)
        .filter_map(|r| {
            let n = u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]) as usize;
            let rest = &r.data[4..];
            let (name, desc) = (rest.get(..n)?, rest.get(n..)?);
            Some((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(desc).into_owned(),
            ))
        })
        .collect())
}

struct Conn {
    /// Buffered for replies (headers are many small reads); requests are
    /// written to the stream underneath.
    reader: io::BufReader<Box<dyn Stream>>,
    info: ExportInfo,
    next_cookie: u64,
}

impl Conn {
    /// A request with a fresh cookie.
    fn request(&mut self, command: Command, offset: u64, length: u32) -> Request {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        // No flags: no DF (fragmented replies are handled chunk by chunk),
        // and nothing that writes.
        Request {
            flags: 0,
            command,
            cookie,
            offset,
            length,
        }
    }
}

/// A read-only NBD export as a block source.
pub struct NbdClient {
    uri: NbdUri,
    name: String,
    opts: Options,
    conn: Mutex<Option<Conn>>,
    info: ExportInfo,
    stats: Arc<Stats>,
    /// The extents of the last block status answer, reused for reads
    /// inside them (one round trip serves many extents).
    known: Mutex<Known>,
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

    /// Runs `op` on a live connection, reconnecting (with backoff) when the
    /// connection is gone or breaks.
    fn with_conn<T>(
        &self,
        what: &'static str,
        offset: u64,
        mut op: impl FnMut(&mut Conn) -> io::Result<T>,
    ) -> Result<T, BlockError> {
        let mut guard = self.conn.lock().map_err(|_| BlockError::Internal {
            what: "NBD connection lock poisoned".into(),
        })?;
        let mut attempt = 0u32;
        loop {
            if guard.is_none() {
                self.stats.set_state(ConnState::Reconnecting, None);
                match open_conn(&self.uri, &self.opts) {
                    Ok(c) if c.info.size == self.info.size => {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        self.stats.set_state(ConnState::Ready, None);
                        *guard = Some(c);
                    }
                    Ok(c) => {
                        let e = io::Error::other(format!(
                            "export size changed from {} to {} bytes",
                            self.info.size, c.info.size
                        ));
                        self.stats.set_state(ConnState::Failed, Some(e.to_string()));
                        return Err(BlockError::io(&self.name, what, offset, e));
                    }
                    Err(e) => {
                        self.stats.set_state(ConnState::Failed, Some(e.to_string()));
                        if attempt >= self.opts.reconnect_attempts {
                            return Err(BlockError::io(&self.name, what, offset, e));
                        }
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(100u64 << attempt.min(5)));
                        continue;
                    }
                }
            }
            let Some(conn) = guard.as_mut() else { continue };
            match op(conn).map_err(|e| explain(e, self.opts.request_timeout)) {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.kind() == io::ErrorKind::Other
                        && e.to_string().starts_with("server error") =>
                {
                    // The server answered with an error: the connection is fine.
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.stats.set_last_error(e.to_string());
                    return Err(BlockError::io(&self.name, what, offset, e));
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.stats.set_state(ConnState::Failed, Some(e.to_string()));
                    *guard = None;
                    self.stats.in_flight.store(0, Ordering::Relaxed);
                    let protocol = e.kind() == io::ErrorKind::InvalidData;
                    if protocol || attempt >= self.opts.reconnect_attempts {
                        return Err(BlockError::io(&self.name, what, offset, e));
                    }
                    attempt += 1;
                }
            }
        }
    }

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
        let len32 = len.min(u64::from(u32::MAX) & !0xfff).max(1) as u32;
        let by_id = self.with_conn("block status", offset, |c| {
            let t = Instant::now();
            let r = block_status(c, offset, len32);
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

    /// A read of many requests in flight: `buf` filled from `offset`.
    ///
    /// The buffer is not cleared first: every byte must be covered by
    /// exactly one data or hole chunk (overlaps and gaps are protocol
    /// errors), so nothing stale can survive.
    fn pipelined_read(&self, c: &mut Conn, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let piece = u64::from(
            self.opts
                .max_request
                .min(c.info.block_max.unwrap_or(u32::MAX))
                .max(512),
        );
        let total = buf.len() as u64;
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut next = 0u64;
        let mut error: Option<io::Error> = None;
        let mut requests = Vec::with_capacity(28 * self.opts.max_in_flight.max(1));
        while next < total || !pending.is_empty() {
            // Top up the requests in flight, sent in one write.
            requests.clear();
            while next < total && pending.len() < self.opts.max_in_flight.max(1) {
                let len = piece.min(total - next);
                let req = c.request(Command::Read, offset + next, len as u32);
                requests.extend_from_slice(&req.to_bytes());
                pending.insert(
                    req.cookie,
                    Pending {
                        start: next,
                        len,
                        covered: Vec::new(),
                        sent: Instant::now(),
                    },
                );
                next += len;
            }
            if !requests.is_empty() {
                let w = c.reader.get_mut();
                w.write_all(&requests)?;
                w.flush()?;
                self.stats
                    .in_flight
                    .store(pending.len() as u64, Ordering::Relaxed);
            }
            let header = ReplyHeader::read_from(&mut c.reader)?;
            let cookie = match header {
                ReplyHeader::Simple { cookie, .. } | ReplyHeader::Structured { cookie, .. } => {
                    cookie
                }
            };
            let p = pending
                .get_mut(&cookie)
                .ok_or_else(|| invalid(format!("reply for unknown cookie {cookie:#x}")))?;
            let (start, len) = (p.start as usize, p.len as usize);
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
                        c.reader.read_exact(&mut buf[start..start + len])?;
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
                    let base = offset + p.start;
                    if let Some((at, n)) = read_chunk(
                        c,
                        kind,
                        length,
                        base,
                        &mut buf[start..start + len],
                        &mut error,
                    )? {
                        if p.covered.iter().any(|&(a, m)| at < a + m && a < at + n) {
                            return Err(invalid(format!(
                                "overlapping reply chunks at {:#x}",
                                base + at
                            )));
                        }
                        p.covered.push((at, n));
                        self.stats.bytes_read.fetch_add(n, Ordering::Relaxed);
                    }
                    if flags & REPLY_FLAG_DONE != 0 {
                        let got: u64 = p.covered.iter().map(|&(_, n)| n).sum();
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
                    .store(pending.len() as u64, Ordering::Relaxed);
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
    /// Where its bytes go in the caller's buffer.
    start: u64,
    len: u64,
    /// Ranges (relative to `start`) already filled by chunks.
    covered: Vec<(u64, u64)>,
    sent: Instant,
}

/// Reads one structured chunk of a read reply into `buf` (which starts at
/// disk offset `base`); returns the range of `buf` it filled, if any.
fn read_chunk(
    c: &mut Conn,
    kind: u16,
    length: u32,
    base: u64,
    buf: &mut [u8],
    error: &mut Option<io::Error>,
) -> io::Result<Option<(u64, u64)>> {
    let s = &mut c.reader;
    let end = base + buf.len() as u64;
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
            let n = u64::from(length - 8);
            if at < base || at.checked_add(n).is_none_or(|e| e > end) {
                return Err(invalid(format!(
                    "data chunk {at:#x}+{n} outside the read {base:#x}..{end:#x}"
                )));
            }
            let from = (at - base) as usize;
            s.read_exact(&mut buf[from..from + n as usize])?;
            Ok(Some((at - base, n)))
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
            let from = (at - base) as usize;
            buf[from..from + n as usize].fill(0);
            Ok(Some((at - base, n)))
        }
        REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
            if !(6..=MAX_OPTION_REPLY).contains(&length) {
                return Err(invalid(format!("error chunk of {length} bytes")));
            }
            let mut p = vec![0u8; length as usize];
            s.read_exact(&mut p)?;
            let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            let mlen = usize::from(u16::from_be_bytes([p[4], p[5]]));
            let msg = p
                .get(6..6 + mlen)
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

/// Descriptors of each metadata context, by context id.
type Descriptors = HashMap<u32, Vec<(u64, u32)>>;

/// One BLOCK_STATUS request: the server answers for every negotiated
/// context at once, so one round trip serves them all.
fn block_status(c: &mut Conn, offset: u64, len: u32) -> io::Result<Descriptors> {
    let req = c.request(Command::BlockStatus, offset, len);
    let cookie = req.cookie;
    let w = c.reader.get_mut();
    w.write_all(&req.to_bytes())?;
    w.flush()?;
    let mut out: Descriptors = HashMap::new();
    let mut error = None;
    // Each chunk must make progress toward DONE; bound the count anyway.
    for _ in 0..MAX_REPLIES_PER_OPTION {
        let header = ReplyHeader::read_from(&mut c.reader)?;
        let ReplyHeader::Structured {
            flags,
            kind,
            cookie: got,
            length,
        } = header
        else {
            if let ReplyHeader::Simple {
                error: e,
                cookie: got,
            } = header
            {
                if got == cookie && e != 0 {
                    return Err(io::Error::other(format!(
                        "server error {e} ({})",
                        errno_name(e)
                    )));
                }
            }
            return Err(invalid("simple reply to block status".into()));
        };
        if got != cookie {
            return Err(invalid(format!("reply for unknown cookie {got:#x}")));
        }
        match kind {
            REPLY_TYPE_BLOCK_STATUS => {
                if length < 4 || (length - 4) % 8 != 0 || length > MAX_OPTION_REPLY * 16 {
                    return Err(invalid(format!("block status chunk of {length} bytes")));
                }
                let mut p = vec![0u8; length as usize];
                c.reader.read_exact(&mut p)?;
                let ctx = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                if !c.info.meta_contexts.iter().any(|(id, _)| *id == ctx) {
                    return Err(invalid(format!(
                        "block status for context {ctx}, which was not negotiated"
                    )));
                }
                let list = out.entry(ctx).or_default();
                if !list.is_empty() {
                    return Err(invalid(format!(
                        "two block status chunks for context {ctx}"
                    )));
                }
                let mut pos = offset;
                for d in p[4..].chunks_exact(8) {
                    let n = u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
                    let f = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
                    if n == 0 {
                        return Err(invalid("zero-length block status descriptor".into()));
                    }
                    // The last extent may reach past the request: clamp.
                    let n = n.min((offset + u64::from(len)).saturating_sub(pos));
                    if n == 0 {
                        break;
                    }
                    list.push((n, f));
                    pos += n;
                }
            }
            _ => {
                let mut sink = vec![0u8; 0];
                let mut e = None;
                read_chunk(c, kind, length, offset, &mut sink, &mut e)?;
                if let Some(e) = e {
                    error = Some(e);
                }
            }
        }
        if flags & REPLY_FLAG_DONE != 0 {
            if let Some(e) = error {
                return Err(e);
            }
            if out.values().all(Vec::is_empty) {
                return Err(invalid("block status reply without descriptors".into()));
            }
            return Ok(out);
        }
    }
    Err(invalid("block status reply never finished".into()))
}

/// Says in plain words what the socket layer reports tersely.
fn explain(e: io::Error, timeout: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection in the middle of a reply",
        ),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from the server within {timeout:?}"),
        ),
        _ => e,
    }
}

fn open_conn(uri: &NbdUri, opts: &Options) -> io::Result<Conn> {
    let mut stream = dial(uri, opts.connect_timeout)?;
    let info =
        handshake(stream.as_mut(), &uri.export).map_err(|e| explain(e, opts.connect_timeout))?;
    stream.set_timeout(opts.request_timeout)?;
    Ok(Conn {
        reader: io::BufReader::with_capacity(256 << 10, stream),
        info,
        next_cookie: 1,
    })
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        // NBD_CMD_DISC: a polite goodbye; errors do not matter any more.
        if let Ok(mut g) = self.conn.lock() {
            if let Some(c) = g.as_mut() {
                let req = c.request(Command::Disconnect, 0, 0);
                let w = c.reader.get_mut();
                let _ = w.write_all(&req.to_bytes());
                let _ = w.flush();
            }
        }
    }
}

impl BlockSource for NbdClient {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.info.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.name, self.info.size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.with_conn("reading", offset, |c| self.pipelined_read(c, offset, buf))
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

impl NbdClient {
    /// Runs `f` on what the last block status reply said.
    fn known<T>(&self, f: impl FnOnce(&Known) -> T) -> Result<T, BlockError> {
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
    fn refresh(&self, offset: u64) -> Result<(), BlockError> {
        let all = self.status_all(offset, self.info.size - offset)?;
        let none = &[][..];
        let alloc = alloc_extents(
            offset,
            all.get("base:allocation").map_or(none, Vec::as_slice),
        );
        let depth = depth_runs(
            offset,
            all.get("qemu:allocation-depth").map_or(none, Vec::as_slice),
        );
        self.known
            .lock()
            .map(|mut k| k.replace(alloc, depth))
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
        let end = offset + len;
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
            let n = run.len.min(end - pos);
            match out.last_mut() {
                Some(last) if last.1 == run.depth => last.0 += n,
                _ => out.push((n, run.depth)),
            }
            pos += n;
        }
        Ok(Some(out))
    }
}

impl NbdClient {
    /// The allocation map of the export, merged like `qemu-img map`, for
    /// `[offset, offset + len)`: from `base:allocation` (data, zero, hole)
    /// and, where the server offers it, `qemu:allocation-depth` (which
    /// layer of the server's chain holds each range: 1 is the top).
    ///
    /// Without a depth context every range is depth 0. With one, an
    /// unallocated range gets the deepest depth seen so far (the server
    /// does not say how deep its chain is; this equals qemu's bottom depth
    /// whenever the base layer holds anything).
    ///
    /// # Errors
    /// Connection and protocol errors.
    pub fn map_entries(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Vec<crate::block::map::MapEntry>, BlockError> {
        use crate::block::map::MapEntry;
        check_range(&self.name, self.info.size, offset, len)?;
        let end = offset + len;
        let has_depth = self.info.context("qemu:allocation-depth").is_some();
        let has_alloc = self.info.context("base:allocation").is_some();
        let mut out: Vec<MapEntry> = Vec::new();
        let mut deepest = 0u64;
        let mut pos = offset;
        let mut alloc: std::collections::VecDeque<(u64, u32)> = Default::default();
        let mut depth: std::collections::VecDeque<(u64, u32)> = Default::default();
        while pos < end {
            if (has_alloc && alloc.is_empty()) || (has_depth && depth.is_empty()) {
                // Both contexts come back from one request.
                let mut all = self.status_all(pos, end - pos)?;
                if has_alloc && alloc.is_empty() {
                    alloc = all.remove("base:allocation").unwrap_or_default().into();
                }
                if has_depth && depth.is_empty() {
                    depth = all
                        .remove("qemu:allocation-depth")
                        .unwrap_or_default()
                        .into();
                }
            }
            if !has_alloc {
                alloc = vec![(end - pos, 0)].into();
            }
            if !has_depth {
                depth = vec![(end - pos, 1)].into();
            }
            let (Some(&(a_len, a_flags)), Some(&(d_len, d_value))) = (alloc.front(), depth.front())
            else {
                break;
            };
            let n = a_len.min(d_len).min(end - pos);
            for q in [&mut alloc, &mut depth] {
                if let Some(front) = q.front_mut() {
                    front.0 -= n;
                    if front.0 == 0 {
                        q.pop_front();
                    }
                }
            }
            let hole = a_flags & STATE_HOLE != 0;
            let present = if has_depth { d_value > 0 } else { !hole };
            let entry = MapEntry {
                start: pos,
                length: n,
                depth: u64::from(d_value.saturating_sub(1)),
                present,
                zero: a_flags & STATE_ZERO != 0 || hole,
                data: !hole,
                compressed: false,
                offset: None,
            };
            pos += n;
            if present {
                deepest = deepest.max(entry.depth);
            }
            out.push(entry);
        }
        // Unallocated ranges sit at the bottom of the chain, as in qemu.
        for e in out.iter_mut().filter(|e| !e.present) {
            e.depth = deepest;
        }
        let mut merged: Vec<MapEntry> = Vec::with_capacity(out.len());
        for e in out {
            match merged.last_mut() {
                Some(last) if last.mergeable(&e) => last.length += e.length,
                _ => merged.push(e),
            }
        }
        Ok(merged)
    }
}
