//! The NBD client: one connection, read-only, with pipelined reads.
//!
//! Every reply is checked before it touches memory: chunk offsets must fall
//! inside the request, lengths are bounded, cookies must be ours, and every
//! socket operation has a time limit, so a hostile or dead server gives an
//! error, never a hang or a huge allocation. A broken connection is
//! re-established on the next request, with bounded backoff.
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
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::block_status::{block_status, block_status_many, StatusBatch};
use super::deadline::Timed;
use super::handshake::dial;
pub use super::handshake::{handshake, list_exports, ExportInfo, Stream};
use super::known::{alloc_extents, depth_runs, Known};
use super::proto::*;
use super::recent::{Recent, MAX_SPAN};
use super::status::{ConnState, Stats};
use super::uri::NbdUri;
use crate::block::{check_range, BlockError, BlockSource, Extent, Status};
use crate::bytes::{u64_of, us};

/// Connection settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Limit on connecting and on the whole handshake.
    pub connect_timeout: Duration,
    /// Limit on any single socket read or write during transmission.
    pub request_timeout: Duration,
    /// Limit on one whole operation (a read, a block status walk step),
    /// however its bytes trickle in: a server sending one byte a second
    /// never trips `request_timeout`.
    pub operation_timeout: Duration,
    /// Read requests sent before waiting for replies.
    pub max_in_flight: usize,
    /// Largest single read request (further capped by the server's maximum
    /// block size).
    pub max_request: u32,
    /// Reconnection attempts per failed request.
    pub reconnect_attempts: u32,
    /// TLS: `None` follows the URI (`nbds://` requires it, `nbd://` does
    /// not use it).
    pub tls: Option<super::tls::TlsMode>,
    /// The `tls-certificates` directory (overrides the URI's).
    pub tls_certificates: Option<std::path::PathBuf>,
    /// Connections for bulk reads when the server allows multi-conn.
    pub connections: usize,
    /// Connections for a large batch of scattered reads (a metadata walk)
    /// when the server allows multi-conn and `connections` is above 1: a
    /// scattered read is waiting, not streaming, and servers answer a
    /// few requests at a time per connection (qemu-nbd and nbdkit 16).
    pub walk_connections: usize,
    /// Metadata contexts beyond the two every map reads, and whether to
    /// list what the server offers.
    pub meta: super::handshake::MetaQuery,
    /// The command walks a tree (`ls -R`): the connections its batches
    /// spread over start opening with the export probe's round, not at
    /// the first batch, which would otherwise wait for their handshakes.
    pub walk_ahead: bool,
}

impl Options {
    /// The TLS settings for `uri`: these options over the URI's.
    pub fn tls_for(&self, uri: &NbdUri) -> super::tls::TlsOptions {
        use super::tls::TlsMode;
        super::tls::TlsOptions {
            mode: self.tls.unwrap_or(if uri.tls {
                TlsMode::Require
            } else {
                TlsMode::Off
            }),
            certificates: self
                .tls_certificates
                .clone()
                .or_else(|| uri.tls_certificates.as_ref().map(Into::into)),
            hostname: uri.tls_hostname.clone(),
            psk_file: uri.tls_psk_file.as_ref().map(Into::into),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
            max_in_flight: 16,
            max_request: 256 << 10,
            reconnect_attempts: 3,
            tls: None,
            tls_certificates: None,
            connections: 4,
            walk_connections: 16,
            meta: super::handshake::MetaQuery::default(),
            walk_ahead: false,
        }
    }
}

pub(super) struct Conn {
    /// Buffered for replies (headers are many small reads); requests are
    /// written to the stream underneath.
    pub(super) reader: io::BufReader<Timed>,
    pub(super) info: ExportInfo,
    next_cookie: u64,
}

impl Conn {
    /// A request with a fresh cookie.
    pub(super) fn request(&mut self, command: Command, offset: u64, length: u32) -> Request {
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
    /// Extra connections (multi-conn), opened when a read first needs
    /// them; none when the server does not allow it.
    extra: Mutex<Extra>,
    /// Recent small reads, answered again from memory.
    recent: Mutex<Recent>,
    /// The first round of a block status walk over the whole export,
    /// asked with the export probe's reads (the windows, the answers).
    primed: Mutex<Option<Primed>>,
}

type Primed = (Vec<(u64, u32)>, Vec<super::block_status::Descriptors>);

/// One connection, gone (`None`) until it is reconnected.
type Slot = Mutex<Option<Conn>>;

/// The extra connections opened so far, and how many were tried (a
/// connection that failed is not tried again).
#[derive(Default)]
struct Extra {
    open: Vec<Arc<Slot>>,
    tried: usize,
    /// Connections being opened in the background
    /// ([`NbdClient::warm_extras`]): how many are still to come, and
    /// where each arrives as it is ready.
    opening: Option<(usize, mpsc::Receiver<io::Result<Conn>>)>,
}

/// Reads at least this large are split over the multi-conn connections.
const MULTI_CONN_MIN: usize = 1 << 20;

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

    /// Up to `want` connections besides the main one, when the server
    /// advertises NBD_FLAG_CAN_MULTI_CONN ("the server allows multiple
    /// connections … and will ensure … consistent" answers): opened on
    /// first use, all at once, fewer if some fail. A connection the
    /// server does not take within a second (a server at its client
    /// limit leaves it waiting) is given up and not tried again.
    fn extra_conns(&self, want: usize) -> Vec<Arc<Slot>> {
        let want = want.min(63);
        if self.info.flags & TFLAG_CAN_MULTI_CONN == 0 || want == 0 {
            return Vec::new();
        }
        let Ok(mut extra) = self.extra.lock() else {
            return Vec::new();
        };
        // Those opened in the background: the ready ones, and waiting
        // only as long as fewer than `want` are open.
        if let Some((mut left, rx)) = extra.opening.take() {
            while left > 0 {
                let next = if extra.open.len() < want {
                    rx.recv().ok()
                } else {
                    rx.try_recv().ok()
                };
                let Some(c) = next else { break };
                left = left.saturating_sub(1);
                self.adopt(&mut extra, vec![c]);
            }
            if left > 0 {
                extra.opening = Some((left, rx));
            }
        }
        if extra.tried < want {
            let more = want.saturating_sub(extra.tried);
            extra.tried = want;
            let opened = open_many(&self.uri, &self.extra_opts(), more);
            self.adopt(&mut extra, opened);
        }
        extra.open.iter().take(want).cloned().collect()
    }

    /// Options for an extra connection: one the server does not take
    /// within a second (a server at its client limit leaves it waiting)
    /// is given up.
    fn extra_opts(&self) -> Options {
        Options {
            connect_timeout: self.opts.connect_timeout.min(Duration::from_secs(1)),
            ..self.opts.clone()
        }
    }

    /// Starts opening, in the background, the connections a walk's
    /// batches will want (`walk_connections` in all), once: a walk's
    /// first batch is one read, the next ones many, and connecting then
    /// cost each a handshake round trip before its requests went out
    /// (two on the bench chain, the second level's and the third's).
    /// Nothing when the server does not allow multi-conn or the user
    /// asked for one connection.
    fn warm_extras(&self) {
        if self.info.flags & TFLAG_CAN_MULTI_CONN == 0 || self.opts.connections <= 1 {
            return;
        }
        let Ok(mut extra) = self.extra.lock() else {
            return;
        };
        let want = self
            .opts
            .walk_connections
            .max(self.opts.connections)
            .saturating_sub(1)
            .min(63);
        if extra.tried > 0 || want == 0 {
            return;
        }
        // One thread started here (the batch's requests are not held up
        // by more), which opens the connections all at once and hands
        // each on as it is ready.
        let (tx, rx) = mpsc::channel();
        let (uri, opts) = (self.uri.clone(), self.extra_opts());
        let spawned = std::thread::Builder::new()
            .name("nbd-connect".into())
            .spawn(move || {
                std::thread::scope(|scope| {
                    for _ in 0..want {
                        let (uri, opts, tx) = (&uri, &opts, tx.clone());
                        scope.spawn(move || {
                            let _ = tx.send(open_conn(uri, opts));
                        });
                    }
                });
            });
        if spawned.is_ok() {
            extra.tried = want;
            extra.opening = Some((want, rx));
        }
    }

    /// Keeps the connections opened that serve the same export.
    fn adopt(&self, extra: &mut Extra, opened: Vec<io::Result<Conn>>) {
        for c in opened {
            match c {
                Ok(c) if c.info.size == self.info.size => {
                    extra.open.push(Arc::new(Mutex::new(Some(c))));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("{}: extra connection for multi-conn: {e}", self.name);
                }
            }
        }
    }

    /// Connections that bulk reads use (1 when multi-conn is off).
    pub fn connections_in_use(&self) -> usize {
        self.extra
            .lock()
            .map_or(0, |e| {
                e.open.len().min(self.opts.connections.saturating_sub(1))
            })
            .saturating_add(1)
    }

    /// A bulk read split over the main and the extra connections, each
    /// part pipelined on its own connection, all at once.
    fn read_multi(
        &self,
        extra: &[Arc<Slot>],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), BlockError> {
        let n = extra.len().saturating_add(1);
        // Parts in whole 64 KiB units, so requests stay aligned.
        let part = buf.len().div_ceil(n).next_multiple_of(64 << 10);
        std::thread::scope(|scope| {
            let mut tasks = Vec::new();
            let mut slots = std::iter::once(&self.conn).chain(extra.iter().map(|s| &**s));
            let mut at = 0u64;
            for piece in buf.chunks_mut(part) {
                let Some(slot) = slots.next() else { break };
                let pos = offset.saturating_add(at);
                at = at.saturating_add(u64_of(piece.len()));
                tasks.push(scope.spawn(move || {
                    self.with_slot(slot, "reading", pos, |c| self.pipelined_read(c, pos, piece))
                }));
            }
            tasks.into_iter().try_for_each(|t| {
                t.join().unwrap_or_else(|_| {
                    Err(BlockError::Internal {
                        what: "an NBD read thread panicked".into(),
                    })
                })
            })
        })
    }

    /// Runs `op` on a live connection, reconnecting (with backoff) when the
    /// connection is gone or breaks.
    fn with_conn<T>(
        &self,
        what: &'static str,
        offset: u64,
        op: impl FnMut(&mut Conn) -> io::Result<T>,
    ) -> Result<T, BlockError> {
        self.with_slot(&self.conn, what, offset, op)
    }

    /// [`NbdClient::with_conn`] on one of the connections.
    fn with_slot<T>(
        &self,
        slot: &Slot,
        what: &'static str,
        offset: u64,
        mut op: impl FnMut(&mut Conn) -> io::Result<T>,
    ) -> Result<T, BlockError> {
        let mut guard = slot.lock().map_err(|_| BlockError::Internal {
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
                        attempt = attempt.saturating_add(1);
                        std::thread::sleep(Duration::from_millis(100u64 << attempt.min(5)));
                        continue;
                    }
                }
            }
            let Some(conn) = guard.as_mut() else { continue };
            conn.reader
                .get_mut()
                .start(Some(self.opts.operation_timeout));
            let result = op(conn);
            conn.reader.get_mut().start(None);
            match result.map_err(|e| explain(e, self.opts.request_timeout)) {
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
                    attempt = attempt.saturating_add(1);
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

    /// A read of many requests in flight: `buf` filled from `offset`.
    fn pipelined_read(&self, c: &mut Conn, offset: u64, buf: &mut [u8]) -> io::Result<()> {
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
    fn stream_piece(&self, c: &Conn) -> u64 {
        u64::from(
            self.opts
                .max_request
                .min(c.info.block_max.unwrap_or(u32::MAX))
                .max(512),
        )
    }

    /// The largest request of a batch ([`BlockSource::read_many`]):
    /// [`BATCH_PIECE`] (`max_request` when that is larger), within the
    /// server's block size (32 MiB when it names none, the spec's
    /// bound for clients).
    fn batch_piece(&self) -> u64 {
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
    fn scatter_with_status(
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
                        c.reader.read_exact(part)?;
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

/// Largest request of a batch of reads ([`BlockSource::read_many`]),
/// within the server's block size. A streaming read keeps to
/// `max_request` (256 KiB): many requests in flight keep its pipeline
/// full. A batch is waited for as a whole, and a server's cost is per
/// request more than per byte (nbdkit's delay filter and nbd plugin in
/// front of qemu-nbd: ~85 us of CPU a request, ~2 us a KiB), so a long
/// range of one (a filesystem's inode tables fetched ahead: 5.7 MiB on
/// the bench chain) is 3 requests, not 23.
const BATCH_PIECE: u32 = 2 << 20;

/// Rounds one [`NbdClient::status_ahead`] makes for the rests of windows
/// answered in part (a server answering a sliver at a time ends it here;
/// the walk asks again from where the answers stop).
const AHEAD_ROUNDS: usize = 32;

/// A block status reply covering less than this (before the end of the
/// disk) is a short one: see [`NbdClient::refresh`].
const SHORT_REPLY: u64 = 64 << 10;
/// How far past a short reply reads go without asking again.
const SHORT_FILL: u64 = 4 << 20;

/// Error chunks accepted in one reply (the spec allows several, one per
/// failed offset; a server cannot send them without end).
const MAX_ERROR_CHUNKS: u32 = 64;

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
            s.read_exact(into)?;
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

/// Says in plain words what the socket layer reports tersely (errors that
/// already carry a message, such as an operation's deadline, are kept).
fn explain(e: io::Error, timeout: Duration) -> io::Error {
    if e.get_ref().is_some() {
        return e;
    }
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

/// `n` connections opened at once.
fn open_many(uri: &NbdUri, opts: &Options, n: usize) -> Vec<io::Result<Conn>> {
    std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..n)
            .map(|_| scope.spawn(|| open_conn(uri, opts)))
            .collect();
        tasks
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("panic"))))
            .collect()
    })
}

fn open_conn(uri: &NbdUri, opts: &Options) -> io::Result<Conn> {
    let stream = dial(uri, opts.connect_timeout)?;
    // The whole handshake within connect_timeout, however it trickles
    // (TLS included: it runs over this wrapper).
    let mut timed = Timed::new(stream, opts.connect_timeout);
    timed.start(Some(opts.connect_timeout));
    let (stream, info) = handshake(
        Box::new(timed),
        &uri.export,
        &opts.tls_for(uri),
        &uri.tls_hostname(),
        &opts.meta,
    )
    .map_err(|e| explain(e, opts.connect_timeout))?;
    // Requests set their own deadlines on the outer wrapper; its limits
    // reach the inner one through `Stream::set_timeout`, which also ends
    // the handshake's deadline there.
    stream.set_timeout(opts.request_timeout)?;
    let stream = Timed::new(stream, opts.request_timeout);
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
                // A server that stopped reading must not hold up the exit.
                w.start(Some(Duration::from_secs(1)));
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

impl NbdClient {
    /// [`BlockSource::read_many`] (on the main connection) with the first
    /// round of a block status walk over the whole export sent in the
    /// same write: the export probe's one round trip also answers where
    /// the disk's data is, for the map, the hit map and reads that skip
    /// holes. A block status the server refuses is left for later.
    ///
    /// # Errors
    /// As [`BlockSource::read_many`].
    pub fn read_many_with_status(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        if self.opts.walk_ahead {
            self.warm_extras();
        }
        let size = self.info.size;
        if self.info.meta_contexts.is_empty() || size == 0 {
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
        let piece = u64::from(
            self.opts
                .max_request
                .min(self.info.block_max.unwrap_or(u32::MAX))
                .max(512),
        );
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
            let piece = self.stream_piece(c);
            self.scatter_with_status(c, reqs, Some(&mut batch), piece)?;
            Ok(batch.finish().ok())
        })?;
        for (o, b) in reqs.iter() {
            self.keep(*o, b);
        }
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

    /// Bytes held by the recent reads (see [`BlockSource::read_many`] for
    /// what is kept).
    pub fn recent_bytes(&self) -> u64 {
        self.recent.lock().map_or(0, |r| r.bytes())
    }

    /// Fills `buf` from a recent read that holds it; false when none does.
    fn served(&self, offset: u64, buf: &mut [u8]) -> bool {
        u64_of(buf.len()) <= MAX_SPAN && self.recent.lock().is_ok_and(|r| r.serve(offset, buf))
    }

    /// Keeps a small read for later reads of the same bytes.
    fn keep(&self, offset: u64, buf: &[u8]) {
        if u64_of(buf.len()) <= MAX_SPAN {
            if let Ok(mut r) = self.recent.lock() {
                r.keep(offset, buf);
            }
        }
    }

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
    ///
    /// A server may answer with as little as one tiny extent each time
    /// (the spec allows it); asking again for every 512 bytes would cost a
    /// round trip per sector. A reply covering less than [`SHORT_REPLY`]
    /// is taken as it is and the next [`SHORT_FILL`] bytes are served as
    /// data without asking: a read returns the real bytes either way, only
    /// zero skipping and the layer attribution of those bytes are coarser.
    fn refresh(&self, offset: u64) -> Result<(), BlockError> {
        let all = self.status_all(offset, self.info.size.saturating_sub(offset))?;
        self.learn(offset, &all)
    }

    /// Keeps a block status answer from `offset` on (see
    /// [`NbdClient::refresh`]).
    fn learn(&self, offset: u64, all: &HashMap<String, Vec<(u64, u32)>>) -> Result<(), BlockError> {
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
