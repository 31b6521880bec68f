//! One connection to the server: opening it (the stream, the handshake
//! within `connect_timeout`, then per-request time limits), numbering
//! its requests, and running an operation on it with its deadline,
//! reconnecting with bounded backoff when it breaks.
//!
//! What goes over an open connection is elsewhere: reads in `pipeline`,
//! block status in `block_status` and `status_ahead`.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use super::client::NbdClient;
use super::deadline::Timed;
use super::handshake::{dial, handshake, ExportInfo};
use super::options::Options;
use super::proto::{Command, Request};
use super::status::ConnState;
use super::uri::NbdUri;
use crate::block::BlockError;

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

/// One connection, gone (`None`) until it is reconnected.
pub(super) type Slot = Mutex<Option<Conn>>;

impl NbdClient {
    /// Runs `op` on a live connection, reconnecting (with backoff) when the
    /// connection is gone or breaks.
    pub(super) fn with_conn<T>(
        &self,
        what: &'static str,
        offset: u64,
        op: impl FnMut(&mut Conn) -> io::Result<T>,
    ) -> Result<T, BlockError> {
        self.with_slot(&self.conn, what, offset, op)
    }

    /// [`NbdClient::with_conn`] on one of the connections.
    pub(super) fn with_slot<T>(
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
pub(super) fn open_many(uri: &NbdUri, opts: &Options, n: usize) -> Vec<io::Result<Conn>> {
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

pub(super) fn open_conn(uri: &NbdUri, opts: &Options) -> io::Result<Conn> {
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
