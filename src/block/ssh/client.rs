//! An SFTP session over the user's `ssh`: read-only file access with
//! deadlines, pipelined reads and reconnection.
//!
//! The session owns the current [`Link`]; when it breaks (the process
//! exits, the network drops, a deadline passes) the next request starts a
//! new one, with bounded attempts and backoff, and files reopen their
//! handles on it. A server's refusal (no such file, permission denied) is
//! an answer, not a broken link, and is returned as it is.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::link::{Fault, Link};
use super::proto::{self, Attrs, Reply};
use super::uri::SshUri;
use crate::block::nbd::status::{ConnState, Stats, StatsSnapshot};

/// Session settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Limit on starting ssh and the SFTP handshake (ssh may prompt for a
    /// passphrase first, so it is generous).
    pub connect_timeout: Duration,
    /// Limit on waiting for any one reply.
    pub request_timeout: Duration,
    /// READ requests in flight at once for one read.
    pub max_in_flight: usize,
    /// New connections tried per failed request.
    pub reconnect_attempts: u32,
    /// A command line replacing `ssh` (run by `sh -c` with ssh's arguments
    /// after it). Default: `$LAYERSCOPE_SSH_COMMAND`.
    pub ssh_command: Option<String>,
    /// Seconds the connection is kept for the next command after this
    /// one ends, shared through ssh's ControlMaster (0: not shared; see
    /// [`super::share`]). Default: `$LAYERSCOPE_SSH_SHARE`, else 60.
    pub share_seconds: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 64,
            reconnect_attempts: 3,
            ssh_command: std::env::var(super::uri::SSH_COMMAND_ENV)
                .ok()
                .filter(|c| !c.trim().is_empty()),
            share_seconds: super::share::persist_from_env(),
        }
    }
}

/// The live link and its generation (bumped by every new connection, so
/// open files know their handles are stale).
struct Current {
    link: Option<Arc<Link>>,
    generation: u64,
}

/// What the status pane shows about an ssh session.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SshStatus {
    /// `[user@]host[:port]`.
    pub host: String,
    /// Bytes asked per READ request (the server's limit, at most 256 KiB).
    pub read_size: u32,
    /// Requests, bytes, requests in flight, errors, reconnects, round-trip
    /// times (p50/p99 of the last requests), state and last error.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

/// Round trips of a session: a round begins when requests go out while
/// none sent before is still unanswered (its reply not yet taken by
/// whoever waits for it). A request whose reply is taken later, such as
/// an open sent ahead ([`Session::open_send`]), keeps the requests sent
/// meanwhile in its round: they do not wait for each other.
#[derive(Debug, Default)]
struct Rounds {
    unanswered: AtomicU64,
    rounds: AtomicU64,
}

impl Rounds {
    fn sent(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        if n > 0 && self.unanswered.fetch_add(n, Ordering::Relaxed) == 0 {
            self.rounds.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn taken(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let _ = self
            .unanswered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// A new link: its INIT and VERSION are a round; nothing of the last
    /// link is awaited any more.
    fn new_link(&self) {
        self.unanswered.store(0, Ordering::Relaxed);
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// An open sent and not yet answered ([`Session::open_send`]).
pub(super) struct PendingOpen {
    ids: [u32; 3],
    rx: mpsc::Receiver<super::link::Routed>,
}

/// An SFTP session to one host.
pub struct Session {
    uri: SshUri,
    opts: Options,
    current: Mutex<Current>,
    stats: Arc<Stats>,
    read_size: AtomicU64,
    rounds: Rounds,
}

impl Session {
    /// Starts ssh and the SFTP subsystem on the host named by `uri` (its
    /// path is not used here).
    ///
    /// # Errors
    /// ssh failing to start or connect (with what it said on stderr), or
    /// the server not speaking SFTP v3.
    pub fn connect(uri: &SshUri, opts: Options) -> std::io::Result<Arc<Session>> {
        let stats = Arc::new(Stats::new());
        stats.set_state(ConnState::Connecting, None);
        let link = Link::start(uri, &opts, false, Arc::clone(&stats))
            .inspect_err(|e| stats.set_state(ConnState::Failed, Some(e.to_string())))?;
        stats.set_state(ConnState::Ready, None);
        let read_size = AtomicU64::new(u64::from(link.read_size_now()));
        let rounds = Rounds::default();
        rounds.new_link();
        Ok(Arc::new(Session {
            uri: uri.clone(),
            opts,
            current: Mutex::new(Current {
                link: Some(Arc::new(link)),
                generation: 1,
            }),
            stats,
            read_size,
            rounds,
        }))
    }

    /// Round trips so far (see [`Rounds`]): the connection's start, then
    /// every batch of requests that had to wait for the one before.
    pub fn round_trips(&self) -> u64 {
        self.rounds.rounds.load(Ordering::Relaxed)
    }

    /// `[user@]host[:port]`.
    pub fn host(&self) -> String {
        self.uri.endpoint()
    }

    /// `ssh://[user@]host[:port]`: the prefix of every layer's name.
    pub fn authority(&self) -> String {
        self.uri.authority()
    }

    /// Live counters (the same type as the NBD client's).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The connection as the status pane shows it.
    pub fn status(&self) -> SshStatus {
        SshStatus {
            host: self.host(),
            read_size: u32::try_from(self.read_size.load(Ordering::Relaxed)).unwrap_or(0),
            stats: self.stats.snapshot(),
        }
    }

    /// The live link, starting a new one (non-interactively) when the last
    /// one died.
    fn live(&self) -> Result<(Arc<Link>, u64), Fault> {
        let mut cur = self.current.lock().map_err(|_| Fault::Link {
            kind: std::io::ErrorKind::Other,
            message: "SFTP session lock poisoned".into(),
        })?;
        if let Some(l) = &cur.link {
            match l.dead() {
                None => return Ok((Arc::clone(l), cur.generation)),
                // Died between requests (the reader saw the stream end).
                Some(f) => self.count_fault(l, &f),
            }
        }
        cur.link = None;
        self.stats.set_state(ConnState::Reconnecting, None);
        let link =
            Link::start(&self.uri, &self.opts, true, Arc::clone(&self.stats)).map_err(|e| {
                self.stats.set_state(ConnState::Failed, Some(e.to_string()));
                Fault::link(&e)
            })?;
        tracing::info!("ssh {}: reconnected", self.host());
        self.rounds.new_link();
        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        self.stats.set_state(ConnState::Ready, None);
        self.read_size
            .store(u64::from(link.read_size_now()), Ordering::Relaxed);
        let link = Arc::new(link);
        cur.link = Some(Arc::clone(&link));
        cur.generation = cur.generation.wrapping_add(1);
        Ok((link, cur.generation))
    }

    /// Counts a link's failure once, as an error and the last error.
    fn count_fault(&self, link: &Link, fault: &Fault) {
        if link.first_report() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let text = fault.to_io().to_string();
            tracing::warn!("ssh {}: connection lost: {text}", self.host());
            self.stats.set_state(ConnState::Failed, Some(text));
        }
    }

    /// Runs `op` on a live link; when the link breaks, reconnects and runs
    /// it again (bounded attempts, growing pauses). Server refusals return
    /// at once.
    ///
    /// # Errors
    /// The server's status, or the last link fault.
    pub(super) fn run<T>(
        &self,
        mut op: impl FnMut(&Link, u64) -> Result<T, Fault>,
    ) -> Result<T, Fault> {
        let mut attempt = 0u32;
        loop {
            let fault = match self.live() {
                Ok((link, generation)) => match op(&link, generation) {
                    Ok(v) => return Ok(v),
                    Err(f @ Fault::Status { .. }) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        self.stats.set_last_error(f.to_io().to_string());
                        return Err(f);
                    }
                    Err(f) => {
                        // Make sure the next turn starts a new link.
                        link.kill(f.clone());
                        self.count_fault(&link, &f);
                        f
                    }
                },
                Err(f) => {
                    // No new link could be made.
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    f
                }
            };
            let protocol = matches!(&fault, Fault::Link { kind, .. } if *kind == std::io::ErrorKind::InvalidData);
            if protocol || attempt >= self.opts.reconnect_attempts {
                return Err(fault);
            }
            attempt = attempt.saturating_add(1);
            std::thread::sleep(Duration::from_millis(100u64 << attempt.min(5)));
        }
    }

    /// The request deadline.
    pub(super) fn timeout(&self) -> Duration {
        self.opts.request_timeout
    }

    /// The requests kept in flight by one read.
    pub(super) fn window(&self) -> usize {
        self.opts.max_in_flight.clamp(1, 1024)
    }

    /// The server's canonical absolute form of `path` (SSH_FXP_REALPATH).
    ///
    /// # Errors
    /// As [`Session::run`].
    pub fn realpath(&self, path: &str) -> Result<String, Fault> {
        let t = self.timeout();
        self.run(|link, _| {
            self.rounds.sent(1);
            let reply = link.call(|id| proto::realpath(id, path.as_bytes()), t);
            self.rounds.taken(1);
            match reply? {
                Reply::Name(n) => Ok(String::from_utf8_lossy(&n).into_owned()),
                other => Err(unexpected(link, "REALPATH", &other)),
            }
        })
    }

    /// Opens `path` for reading on `link`, in one round trip: REALPATH, STAT
    /// and OPEN sent together. Returns the canonical path, the attributes
    /// and the handle (closed again, and an error returned, for a
    /// directory).
    pub(super) fn open_on(
        &self,
        link: &Link,
        path: &str,
    ) -> Result<(String, Attrs, Vec<u8>), Fault> {
        let pending = self.open_send(link, path)?;
        self.open_take(link, pending)
    }

    /// The requests of [`Session::open_on`] sent on `link`, their replies
    /// left for [`Session::open_take`].
    pub(super) fn open_send(&self, link: &Link, path: &str) -> Result<PendingOpen, Fault> {
        let (tx, rx) = mpsc::channel();
        let ids = [link.id(), link.id(), link.id()];
        let requests = vec![
            (
                ids[0],
                proto::realpath(ids[0], path.as_bytes()).map_err(|e| Fault::link(&e))?,
            ),
            (
                ids[1],
                proto::stat(ids[1], path.as_bytes()).map_err(|e| Fault::link(&e))?,
            ),
            (
                ids[2],
                proto::open_read(ids[2], path.as_bytes()).map_err(|e| Fault::link(&e))?,
            ),
        ];
        link.submit(&requests, &tx)?;
        self.rounds.sent(requests.len());
        Ok(PendingOpen { ids, rx })
    }

    /// The answer to an open sent with [`Session::open_send`] on `link`.
    pub(super) fn open_take(
        &self,
        link: &Link,
        pending: PendingOpen,
    ) -> Result<(String, Attrs, Vec<u8>), Fault> {
        let t = self.timeout();
        let PendingOpen { ids, rx } = pending;
        let mut replies = Vec::with_capacity(3);
        for left in (1..=ids.len()).rev() {
            let (id, reply) = link.wait(&rx, t);
            self.rounds.taken(1);
            match reply {
                Ok(r) => replies.push((id, r)),
                Err(f) => {
                    self.rounds.taken(left.saturating_sub(1));
                    return Err(f);
                }
            }
        }
        let mut real = None;
        let mut attrs = None;
        let mut handle = None;
        let mut refused = None;
        for (id, reply) in replies {
            match (reply, id) {
                (Reply::Status { code, message }, _) if code != proto::FX_OK => {
                    // The first refusal in request order says most (a
                    // missing file fails all three the same way).
                    refused.get_or_insert(Fault::Status { code, message });
                }
                (Reply::Name(n), i) if i == ids[0] => {
                    real = Some(String::from_utf8_lossy(&n).into_owned())
                }
                (Reply::Attrs(a), i) if i == ids[1] => attrs = Some(a),
                (Reply::Handle(h), i) if i == ids[2] => handle = Some(h),
                (other, _) => return Err(unexpected(link, "opening a file", &other)),
            }
        }
        match (real, attrs, handle, refused) {
            (Some(r), Some(a), Some(h), None) => Ok((r, a, h)),
            (_, _, h, f) => {
                if let Some(h) = h {
                    self.close_on(link, &h);
                }
                Err(f.unwrap_or_else(|| Fault::Link {
                    kind: std::io::ErrorKind::InvalidData,
                    message: "the SFTP server answered an open with the wrong replies".into(),
                }))
            }
        }
    }

    /// Closes a handle, not waiting for the answer.
    pub(super) fn close_on(&self, link: &Link, handle: &[u8]) {
        let id = link.id();
        if let Ok(p) = proto::close(id, handle) {
            let (tx, _rx) = mpsc::channel();
            let _ = link.submit(&[(id, p)], &tx);
        }
    }

    /// The current link and generation, when there is a live one (for
    /// closing handles without reconnecting).
    pub(super) fn current(&self) -> Option<(Arc<Link>, u64)> {
        let cur = self.current.lock().ok()?;
        let link = cur.link.as_ref()?;
        link.dead()
            .is_none()
            .then(|| (Arc::clone(link), cur.generation))
    }

    /// Fills each `(offset, buf)` of the open file `handle` on `link`, with
    /// up to [`Options::max_in_flight`] READ requests in flight for all of
    /// them together. A short DATA reply (allowed by the protocol) is
    /// followed by a request for the rest.
    pub(super) fn read_on(
        &self,
        link: &Link,
        handle: &[u8],
        reqs: &mut [(u64, &mut [u8])],
    ) -> Result<(), Fault> {
        use std::collections::{HashMap, VecDeque};
        let size = link.read_size();
        self.read_size.store(u64::from(size), Ordering::Relaxed);
        let piece = usize::try_from(size.max(512)).unwrap_or(32 << 10);
        // (which request, where in its buffer, how many bytes)
        let mut todo: VecDeque<(usize, usize, usize)> = VecDeque::new();
        for (i, (_, buf)) in reqs.iter().enumerate() {
            let mut at = 0usize;
            while at < buf.len() {
                let n = piece.min(buf.len().saturating_sub(at));
                todo.push_back((i, at, n));
                at = at.saturating_add(n);
            }
        }
        let (tx, rx) = mpsc::channel();
        let mut flying: HashMap<u32, (usize, usize, usize)> = HashMap::new();
        let done = self.read_loop(link, handle, reqs, &mut todo, &mut flying, &tx, &rx);
        // Whatever is still in flight after an error is not awaited.
        self.rounds.taken(flying.len());
        done
    }

    /// The loop of [`Session::read_on`]: `todo` pieces sent (the window
    /// full), replies taken into `reqs`, until none is left or one fails.
    #[allow(clippy::too_many_arguments)]
    fn read_loop(
        &self,
        link: &Link,
        handle: &[u8],
        reqs: &mut [(u64, &mut [u8])],
        todo: &mut std::collections::VecDeque<(usize, usize, usize)>,
        flying: &mut std::collections::HashMap<u32, (usize, usize, usize)>,
        tx: &mpsc::Sender<super::link::Routed>,
        rx: &mpsc::Receiver<super::link::Routed>,
    ) -> Result<(), Fault> {
        let t = self.timeout();
        let window = self.window();
        loop {
            let mut batch = Vec::new();
            while flying.len() < window {
                let Some((i, start, len)) = todo.pop_front() else {
                    break;
                };
                let base = reqs.get(i).map_or(0, |r| r.0);
                let id = link.id();
                let pos = base
                    .checked_add(u64::try_from(start).unwrap_or(u64::MAX))
                    .ok_or_else(|| bad("read offset overflows"))?;
                let len32 = u32::try_from(len).map_err(|_| bad("read piece too large"))?;
                batch.push((
                    id,
                    proto::read(id, handle, pos, len32).map_err(|e| Fault::link(&e))?,
                ));
                flying.insert(id, (i, start, len));
            }
            link.submit(&batch, tx)?;
            self.rounds.sent(batch.len());
            if flying.is_empty() {
                return Ok(());
            }
            let (id, reply) = link.wait(rx, t);
            self.rounds.taken(1);
            let reply = reply?;
            let Some((i, start, len)) = flying.remove(&id) else {
                let f = bad(&format!(
                    "SFTP reply for request {id}, which is not in flight"
                ));
                link.kill(f.clone());
                return Err(f);
            };
            match reply {
                Reply::Data(d) if !d.is_empty() && d.len() <= len => {
                    let end = start.saturating_add(d.len());
                    reqs.get_mut(i)
                        .and_then(|r| r.1.get_mut(start..end))
                        .ok_or_else(|| bad("SFTP data outside the read"))?
                        .copy_from_slice(&d);
                    if d.len() < len {
                        todo.push_front((i, end, len.saturating_sub(d.len())));
                    }
                }
                Reply::Data(d) => {
                    let f = bad(&format!(
                        "SFTP DATA reply of {} bytes to a read of {len}",
                        d.len()
                    ));
                    link.kill(f.clone());
                    return Err(f);
                }
                Reply::Status { code, message } => {
                    let base = reqs.get(i).map_or(0, |r| r.0);
                    return Err(Fault::Status {
                        code,
                        message: if code == proto::FX_EOF {
                            format!(
                                "end of file at {:#x}: the file is shorter than it was",
                                base.saturating_add(u64::try_from(start).unwrap_or(0))
                            )
                        } else {
                            message
                        },
                    });
                }
                other => return Err(unexpected(link, "READ", &other)),
            }
        }
    }
}

fn bad(msg: &str) -> Fault {
    Fault::Link {
        kind: std::io::ErrorKind::InvalidData,
        message: msg.to_owned(),
    }
}

/// A reply of the wrong type: a protocol violation that ends the link.
fn unexpected(link: &Link, what: &str, reply: &Reply) -> Fault {
    let kind = match reply {
        Reply::Status { .. } => "STATUS",
        Reply::Handle(_) => "HANDLE",
        Reply::Data(_) => "DATA",
        Reply::Name(_) => "NAME",
        Reply::Attrs(_) => "ATTRS",
        Reply::Extended(_) => "EXTENDED_REPLY",
    };
    let f = bad(&format!("the SFTP server answered {what} with {kind}"));
    link.kill(f.clone());
    f
}
