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
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::handshake::Stream;

/// A stream with a per-call and a per-operation time limit.
pub struct Timed {
    inner: Box<dyn Stream>,
    /// Limit on each read or write.
    per_call: Duration,
    /// End of the current operation, and its length (for messages).
    deadline: Option<(Instant, Duration)>,
    /// The limit last set on the socket.
    applied: Option<Duration>,
}

impl Timed {
    /// Wraps `inner`, whose reads and writes may each take `per_call`.
    pub fn new(inner: Box<dyn Stream>, per_call: Duration) -> Timed {
        Timed {
            inner,
            per_call,
            deadline: None,
            applied: None,
        }
    }

    /// Changes the per-call limit (after the handshake).
    pub fn set_per_call(&mut self, per_call: Duration) {
        self.per_call = per_call;
    }

    /// Starts an operation that must end within `limit` (None: no limit
    /// beyond the per-call one).
    pub fn start(&mut self, limit: Option<Duration>) {
        self.deadline = limit.map(|l| (Instant::now() + l, l));
    }

    /// The error once the operation's time is up.
    fn expired(&self) -> Option<io::Error> {
        let (end, total) = self.deadline?;
        (Instant::now() >= end).then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the server did not finish answering within {total:?}"),
            )
        })
    }

    /// Sets the limit for the next call: the per-call one, or what is left
    /// of the operation when that is less.
    fn arm(&mut self) -> io::Result<()> {
        if let Some(e) = self.expired() {
            return Err(e);
        }
        let limit = match self.deadline {
            Some((end, _)) => end
                .saturating_duration_since(Instant::now())
                .min(self.per_call),
            None => self.per_call,
        };
        // Whole milliseconds (the socket option is changed at most once a
        // millisecond near the end), and never zero, which means "none".
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
        let limit = Duration::from_millis(ms);
        if self.applied != Some(limit) {
            self.inner.set_timeout(limit)?;
            self.applied = Some(limit);
        }
        Ok(())
    }

    /// A socket time-out that was the operation's deadline is reported as
    /// that.
    fn explain(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.expired().unwrap_or(e),
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
    fn set_timeout(&self, _t: Duration) -> io::Result<()> {
        // The per-call limit is this wrapper's to set (see `Timed::new`).
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
