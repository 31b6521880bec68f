//! Multi-conn: the extra connections a server advertising
//! NBD_FLAG_CAN_MULTI_CONN allows, opened when bulk reads or a walk's
//! batches first want them (or ahead, in the background, for a walk),
//! and a bulk read split over them. Only the connections and the
//! split; each part is an ordinary pipelined read (`pipeline`).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::NbdClient;
use super::conn::{open_conn, open_many, Conn, Slot};
use super::options::Options;
use super::proto::TFLAG_CAN_MULTI_CONN;
use crate::block::BlockError;
use crate::bytes::u64_of;

/// The extra connections opened so far, and how many were tried (a
/// connection that failed is not tried again).
#[derive(Default)]
pub(super) struct Extra {
    open: Vec<Arc<Slot>>,
    tried: usize,
    /// Connections being opened in the background
    /// ([`NbdClient::warm_extras`]): how many are still to come, and
    /// where each arrives as it is ready.
    opening: Option<(usize, mpsc::Receiver<io::Result<Conn>>)>,
}

/// Reads at least this large are split over the multi-conn connections.
pub(super) const MULTI_CONN_MIN: usize = 1 << 20;

impl NbdClient {
    /// Up to `want` connections besides the main one, when the server
    /// advertises NBD_FLAG_CAN_MULTI_CONN ("the server allows multiple
    /// connections … and will ensure … consistent" answers): opened on
    /// first use, all at once, fewer if some fail. A connection the
    /// server does not take within a second (a server at its client
    /// limit leaves it waiting) is given up and not tried again.
    pub(super) fn extra_conns(&self, want: usize) -> Vec<Arc<Slot>> {
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

    /// Runs `f` on every extra connection that is open, those opened in
    /// the background and not used yet among them (one still shaking
    /// hands is not waited for).
    pub(super) fn each_extra(&self, mut f: impl FnMut(&mut Conn)) {
        let Ok(extra) = self.extra.lock() else {
            return;
        };
        for slot in &extra.open {
            if let Ok(mut g) = slot.lock() {
                if let Some(c) = g.as_mut() {
                    f(c);
                }
            }
        }
        if let Some((_, rx)) = &extra.opening {
            while let Ok(ready) = rx.try_recv() {
                if let Ok(mut c) = ready {
                    f(&mut c);
                }
            }
        }
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
    pub(super) fn warm_extras(&self) {
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
    pub(super) fn read_multi(
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
}
