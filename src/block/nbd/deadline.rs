//! Time limits on a connection: one on every socket read and write (a
//! server that stops answering), and one on a whole operation (a server
//! that answers one byte a second never trips the first, because every
//! byte restarts it).
//!
//! [`Timed`] wraps the stream; before each read or write it shortens the
//! socket's time limit to what is left of the operation's, and once that
//! is gone every call fails with `TimedOut`. The socket option is changed
//! only when the limit to apply changes, so a fast transfer costs no
//! extra system calls.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::handshake::Stream;

/// A stream with a per-call and a per-operation time limit.
///
/// The limits sit in cells so that [`Stream::set_timeout`] (which takes
/// `&self`) can reach a `Timed` that another layer wraps: TLS runs over
/// the handshake's `Timed`, and the request wrapper over TLS sets its
/// limits through it.
pub struct Timed {
    inner: Box<dyn Stream>,
    /// Limit on each read or write.
    per_call: Cell<Duration>,
    /// End of the current operation, and its length (for messages).
    deadline: Cell<Option<(Instant, Duration)>>,
    /// The limit last set on the socket.
    applied: Cell<Option<Duration>>,
    /// Whether the limit armed for the current call is what was left of
    /// the operation (so a socket time-out on it is the operation's end,
    /// even when the clock says a fraction of a millisecond is left).
    armed_by_deadline: Cell<bool>,
}

impl Timed {
    /// Wraps `inner`, whose reads and writes may each take `per_call`.
    pub fn new(inner: Box<dyn Stream>, per_call: Duration) -> Timed {
        Timed {
            inner,
            per_call: Cell::new(per_call),
            deadline: Cell::new(None),
            applied: Cell::new(None),
            armed_by_deadline: Cell::new(false),
        }
    }

    /// Changes the per-call limit (after the handshake).
    pub fn set_per_call(&mut self, per_call: Duration) {
        self.per_call.set(per_call);
    }

    /// Starts an operation that must end within `limit` (None: no limit
    /// beyond the per-call one).
    pub fn start(&mut self, limit: Option<Duration>) {
        // A limit too far to represent is no limit beyond the per-call one.
        self.deadline
            .set(limit.and_then(|l| Some((Instant::now().checked_add(l)?, l))));
    }

    /// The error once the operation's time is up.
    fn expired(&self) -> Option<io::Error> {
        let (end, _) = self.deadline.get()?;
        (Instant::now() >= end).then(|| self.deadline_error())?
    }

    /// The operation's time-out, as an error.
    fn deadline_error(&self) -> Option<io::Error> {
        let (_, total) = self.deadline.get()?;
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the server did not finish answering within {total:?}"),
        ))
    }

    /// Sets the limit for the next call: the per-call one, or what is left
    /// of the operation when that is less.
    fn arm(&mut self) -> io::Result<()> {
        if let Some(e) = self.expired() {
            return Err(e);
        }
        let per_call = self.per_call.get();
        let (limit, by_deadline) = match self.deadline.get() {
            Some((end, _)) => {
                let left = end.saturating_duration_since(Instant::now());
                (left.min(per_call), left < per_call)
            }
            None => (per_call, false),
        };
        self.armed_by_deadline.set(by_deadline);
        // Whole milliseconds, rounded up (the socket option is changed at
        // most once a millisecond near the end), and never zero, which
        // means "none".
        let ms = limit
            .as_micros()
            .div_ceil(1000)
            .try_into()
            .unwrap_or(u64::MAX)
            .max(1);
        let limit = Duration::from_millis(ms);
        if self.applied.get() != Some(limit) {
            self.inner.set_timeout(limit)?;
            self.applied.set(Some(limit));
        }
        Ok(())
    }

    /// A socket time-out that was the operation's deadline is reported as
    /// that: when the call was armed with what was left of the operation
    /// (the clock may still show a sliver left), or the time is up.
    fn explain(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                let operation = if self.armed_by_deadline.get() {
                    self.deadline_error()
                } else {
                    self.expired()
                };
                operation.unwrap_or(e)
            }
            _ => e,
        }
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.inner.read(buf).map_err(|e| self.explain(e))
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.inner.write(buf).map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Stream for Timed {
    /// Asked by a layer above (TLS, or the request wrapper over it): `t`
    /// becomes the per-call limit and any operation deadline of this
    /// wrapper (the handshake's) ends; the socket is set on the next call.
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.per_call.set(t);
        self.deadline.set(None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_trickle_is_cut_at_the_operation_deadline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // One byte every 50 ms: each read is quick, the whole is not.
            for _ in 0..200 {
                if b.write_all(&[1]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut t = Timed::new(Box::new(a), Duration::from_secs(5));
        t.start(Some(Duration::from_millis(400)));
        let mut buf = [0u8; 100];
        let started = Instant::now();
        let err = t.read_exact(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("within"), "{err}");
        // A hang guard, not a timing figure.
        assert!(started.elapsed() < Duration::from_secs(8));
        drop(t);
        writer.join().unwrap();
    }
}
