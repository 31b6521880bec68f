//! One SFTP connection: the `ssh` process, a thread that writes requests to
//! its stdin, a thread that reads replies from its stdout and hands each to
//! the caller waiting for its id, and a thread keeping the tail of its
//! stderr for error messages.
//!
//! Callers never block on a pipe: they queue bytes for the writer and wait
//! for replies on a channel with a deadline. When a deadline passes or the
//! stream breaks, the link is marked dead and the process killed, which
//! unblocks every thread; the session then starts a new link. Any number
//! of threads may have requests in flight on one link at once.
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::process::{Child, ChildStderr, ChildStdout, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::proto::{self, Reply};
use super::uri::SshUri;
use crate::block::nbd::status::Stats;

/// A reply routed to its waiter: the request id and the reply, or the
/// error that killed the link.
pub(super) type Routed = (u32, Result<Reply, Fault>);

/// Why a request failed.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The server answered with an SSH_FXP_STATUS error: the link is fine.
    Status { code: u32, message: String },
    /// The link broke (process gone, stream closed, deadline passed,
    /// protocol violation): the session reconnects.
    Link {
        kind: io::ErrorKind,
        message: String,
    },
}

impl Fault {
    pub(super) fn link(e: &io::Error) -> Fault {
        Fault::Link {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The fault as an `io::Error` (status codes become NotFound,
    /// PermissionDenied or Other).
    pub fn to_io(&self) -> io::Error {
        match self {
            Fault::Status { code, message } => {
                let kind = match *code {
                    proto::FX_NO_SUCH_FILE => io::ErrorKind::NotFound,
                    proto::FX_PERMISSION_DENIED => io::ErrorKind::PermissionDenied,
                    proto::FX_EOF => io::ErrorKind::UnexpectedEof,
                    _ => io::ErrorKind::Other,
                };
                let name = proto::status_name(*code);
                let text = if message.is_empty() || message.eq_ignore_ascii_case(name) {
                    format!("SFTP server: {name}")
                } else {
                    format!(
                        "SFTP server: {name} ({})",
                        crate::escape::printable(message)
                    )
                };
                io::Error::new(kind, text)
            }
            Fault::Link { kind, message } => io::Error::new(*kind, message.clone()),
        }
    }
}

/// Requests waiting for replies, and whether the link is still alive.
#[derive(Default)]
struct Waiting {
    map: HashMap<u32, (Sender<Routed>, Instant)>,
    dead: Option<Fault>,
}

/// State shared by the link and its threads.
struct Shared {
    waiting: Mutex<Waiting>,
    child: Mutex<Child>,
    stderr: Mutex<VecDeque<u8>>,
    stats: Arc<Stats>,
}

/// Bytes of stderr kept for messages.
const STDERR_TAIL: usize = 2048;

impl Shared {
    /// Marks the link dead (first cause wins), fails every waiter, and
    /// kills the process so no thread stays blocked on its pipes.
    fn kill(&self, fault: Fault) {
        let waiters: Vec<(u32, Sender<Routed>)> = match self.waiting.lock() {
            Ok(mut w) => {
                if w.dead.is_none() {
                    w.dead = Some(fault.clone());
                }
                w.map.drain().map(|(id, (tx, _))| (id, tx)).collect()
            }
            Err(_) => Vec::new(),
        };
        self.stats.in_flight.store(0, Ordering::Relaxed);
        for (id, tx) in waiters {
            let _ = tx.send((id, Err(fault.clone())));
        }
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
        }
    }

    /// What ssh said on stderr, last lines, escaped.
    fn stderr_tail(&self) -> String {
        let bytes: Vec<u8> = self
            .stderr
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        crate::escape::printable(&lines.join("; "))
    }
}

/// A live SFTP connection.
pub(super) struct Link {
    shared: Arc<Shared>,
    writer: Mutex<Option<Sender<Vec<u8>>>>,
    next_id: AtomicU32,
    /// Set once the link's failure was counted in the stats.
    reported: std::sync::atomic::AtomicBool,
    /// Bytes asked per READ request: [`proto::DEFAULT_READ`] until the
    /// server's limits are known (see [`Link::read_size`]).
    read_size: AtomicU32,
    /// The limits request sent at the start, whose answer is taken when
    /// the first read needs it (its deadline with it): the first open
    /// does not wait a round trip for it.
    limits: Mutex<Option<(Receiver<Routed>, Instant)>>,
    /// The server's extensions, from VERSION.
    pub(super) extensions: Vec<String>,
}

impl Link {
    /// Starts `ssh … -s host sftp`, sends INIT and waits for VERSION (and
    /// the server's read limit) within `timeout`.
    pub(super) fn start(
        uri: &SshUri,
        opts: &super::client::Options,
        batch: bool,
        stats: Arc<Stats>,
    ) -> io::Result<Link> {
        let timeout = opts.connect_timeout;
        // A reconnection goes around a shared master: the master's own
        // connection may be what broke.
        let sharing = if batch {
            None
        } else {
            uri.sharing(opts.ssh_command.as_deref(), opts.share_seconds)
        };
        let mut cmd = uri.command(opts.ssh_command.as_deref(), batch, sharing.as_ref());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run the ssh command ({:?}): {e}", cmd.get_program()),
            )
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("ssh started without its pipes"));
        };
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting::default()),
            child: Mutex::new(child),
            stderr: Mutex::new(VecDeque::with_capacity(STDERR_TAIL)),
            stats,
        });
        let (wtx, wrx) = mpsc::channel::<Vec<u8>>();
        spawn_writer(Arc::clone(&shared), stdin, wrx)?;
        spawn_stderr(Arc::clone(&shared), stderr)?;
        let (vtx, vrx) = mpsc::channel();
        spawn_reader(Arc::clone(&shared), stdout, vtx)?;
        let mut link = Link {
            shared,
            writer: Mutex::new(Some(wtx)),
            next_id: AtomicU32::new(1),
            reported: std::sync::atomic::AtomicBool::new(false),
            read_size: AtomicU32::new(proto::DEFAULT_READ),
            limits: Mutex::new(None),
            extensions: Vec::new(),
        };
        link.send(proto::init()?)?;
        let version = match vrx.recv_timeout(timeout) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(link.explain_start(e)),
            Err(_) => {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no SFTP answer within {timeout:?}"),
                );
                link.shared.kill(Fault::link(&e));
                return Err(link.explain_start(e));
            }
        };
        let (v, extensions) = proto::decode_version(&version)?;
        if v < proto::VERSION {
            return Err(io::Error::other(format!(
                "the SFTP server speaks version {v}; layerscope needs {}",
                proto::VERSION
            )));
        }
        link.extensions = extensions;
        if link.extensions.iter().any(|e| e == proto::LIMITS_EXT) {
            let id = link.id();
            let (tx, rx) = mpsc::channel();
            link.submit(&[(id, proto::extended(id, proto::LIMITS_EXT)?)], &tx)
                .map_err(|f| f.to_io())?;
            let deadline = Instant::now()
                .checked_add(timeout)
                .unwrap_or_else(Instant::now);
            link.limits = Mutex::new(Some((rx, deadline)));
        }
        Ok(link)
    }

    /// Bytes to ask per READ request: the server's limit, its answer
    /// waited for here the first time (within the connection's deadline;
    /// a server that does not answer kills the link, one whose answer
    /// does not decode leaves [`proto::DEFAULT_READ`]).
    pub(super) fn read_size(&self) -> u32 {
        let pending = self.limits.lock().ok().and_then(|mut l| l.take());
        if let Some((rx, deadline)) = pending {
            let left = deadline.saturating_duration_since(Instant::now());
            if let (_, Ok(Reply::Extended(data))) = self.wait(&rx, left) {
                if let Ok(max) = proto::decode_limits(&data) {
                    let max = u32::try_from(max).unwrap_or(u32::MAX);
                    let size = if max == 0 {
                        proto::MAX_READ
                    } else {
                        max.clamp(proto::DEFAULT_READ.min(max), proto::MAX_READ)
                    };
                    self.read_size.store(size, Ordering::Relaxed);
                }
            }
        }
        self.read_size.load(Ordering::Relaxed)
    }

    /// The read size known so far, not waiting for the server's limits.
    pub(super) fn read_size_now(&self) -> u32 {
        self.read_size.load(Ordering::Relaxed)
    }

    /// Adds what ssh said (and its exit status) to an error from the start
    /// of the connection: "Permission denied (publickey)", "Could not
    /// resolve hostname".
    fn explain_start(&self, e: io::Error) -> io::Error {
        // Give ssh a moment to finish writing stderr and exit.
        let deadline = Instant::now().checked_add(Duration::from_millis(500));
        let mut status = None;
        while deadline.is_some_and(|d| Instant::now() < d) {
            match self.shared.child.lock().map(|mut c| c.try_wait()) {
                Ok(Ok(Some(s))) => {
                    status = Some(s);
                    break;
                }
                Ok(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        let said = self.shared.stderr_tail();
        let mut msg = e.to_string();
        // Only when the stream just ended is the exit the news (after a
        // timeout we killed it; after garbage the garbage is).
        if let Some(s) = status.filter(|_| e.kind() == io::ErrorKind::UnexpectedEof) {
            msg = format!("ssh exited ({s}) before the SFTP session started");
        }
        if !said.is_empty() {
            msg = format!("{msg}; ssh said: {said}");
        }
        io::Error::new(e.kind(), msg)
    }

    /// A fresh request id.
    pub(super) fn id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues bytes for the writer thread.
    fn send(&self, bytes: Vec<u8>) -> io::Result<()> {
        let w = self
            .writer
            .lock()
            .map_err(|_| io::Error::other("SFTP writer lock poisoned"))?;
        match w.as_ref() {
            Some(tx) if tx.send(bytes).is_ok() => Ok(()),
            _ => Err(self.dead_error()),
        }
    }

    fn dead_error(&self) -> io::Error {
        match self.shared.waiting.lock().ok().and_then(|w| w.dead.clone()) {
            Some(f) => f.to_io(),
            None => io::Error::new(io::ErrorKind::BrokenPipe, "the SFTP connection is closed"),
        }
    }

    /// The fault that ended the link, if it is dead.
    pub(super) fn dead(&self) -> Option<Fault> {
        self.shared.waiting.lock().ok().and_then(|w| w.dead.clone())
    }

    /// Registers the ids with `tx` and sends their packets in one write.
    ///
    /// # Errors
    /// The link's fault when it is dead.
    pub(super) fn submit(
        &self,
        requests: &[(u32, Vec<u8>)],
        tx: &Sender<Routed>,
    ) -> Result<(), Fault> {
        if requests.is_empty() {
            return Ok(());
        }
        {
            let mut w = self.shared.waiting.lock().map_err(|_| Fault::Link {
                kind: io::ErrorKind::Other,
                message: "SFTP lock poisoned".into(),
            })?;
            if let Some(f) = &w.dead {
                return Err(f.clone());
            }
            let now = Instant::now();
            for (id, _) in requests {
                w.map.insert(*id, (tx.clone(), now));
            }
            let n = u64::try_from(w.map.len()).unwrap_or(u64::MAX);
            self.shared.stats.in_flight.store(n, Ordering::Relaxed);
        }
        let bytes: Vec<u8> = requests
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        self.send(bytes).map_err(|e| Fault::link(&e))
    }

    /// Waits for the next reply on `rx`; past `timeout` the link is
    /// declared dead (the host or the network stopped answering).
    pub(super) fn wait(&self, rx: &Receiver<Routed>, timeout: Duration) -> Routed {
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                let f = Fault::Link {
                    kind: io::ErrorKind::TimedOut,
                    message: format!("no answer from the SFTP server within {timeout:?}"),
                };
                self.shared.kill(f.clone());
                (0, Err(f))
            }
            Err(RecvTimeoutError::Disconnected) => (0, Err(Fault::link(&self.dead_error()))),
        }
    }

    /// One request, one reply, within `timeout`.
    ///
    /// # Errors
    /// The server's status or the link's fault.
    pub(super) fn call(
        &self,
        build: impl FnOnce(u32) -> io::Result<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply, Fault> {
        let id = self.id();
        let packet = build(id).map_err(|e| Fault::link(&e))?;
        let (tx, rx) = mpsc::channel();
        self.submit(&[(id, packet)], &tx)?;
        match self.wait(&rx, timeout) {
            (_, Err(f)) => Err(f),
            (_, Ok(Reply::Status { code, message })) if code != proto::FX_OK => {
                Err(Fault::Status { code, message })
            }
            (_, Ok(r)) => Ok(r),
        }
    }

    /// True the first time it is called on a dead link: the caller counts
    /// its failure (a failure is seen by the request that hit it and by the
    /// next one that finds the link dead; it is one error).
    pub(super) fn first_report(&self) -> bool {
        !self.reported.swap(true, Ordering::Relaxed)
    }

    /// Marks the link dead and kills the process (a caller found the
    /// server breaking the protocol).
    pub(super) fn kill(&self, fault: Fault) {
        self.shared.kill(fault);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closing stdin ends the SFTP session politely; ssh then exits.
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        // ssh is reaped (or killed after a grace period) on a thread of
        // its own: nothing here waits for its goodbye to the server. A
        // command ending now (`info`, `ls`) exits without paying ssh's
        // teardown, 10-40 ms of polling here before; ssh, its stdin
        // closed, ends by itself. A long session (the TUI reconnecting)
        // leaves no zombie behind.
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("ssh-reaper".into())
            .spawn(move || reap(&shared));
        if spawned.is_err() {
            reap(&self.shared);
        }
    }
}

/// Waits up to 300 ms for ssh to exit once its stdin is closed, then
/// kills it; either way it is waited for.
fn reap(shared: &Shared) {
    let deadline = Instant::now().checked_add(Duration::from_millis(300));
    loop {
        let done = match shared.child.lock() {
            Ok(mut c) => !matches!(c.try_wait(), Ok(None)),
            Err(_) => true,
        };
        if done {
            break;
        }
        if deadline.is_none_or(|d| Instant::now() >= d) {
            if let Ok(mut c) = shared.child.lock() {
                let _ = c.kill();
                let _ = c.wait();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_writer(
    shared: Arc<Shared>,
    mut stdin: std::process::ChildStdin,
    rx: Receiver<Vec<u8>>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("sftp-writer".into())
        .spawn(move || {
            for bytes in rx {
                if let Err(e) = stdin.write_all(&bytes).and_then(|()| stdin.flush()) {
                    shared.kill(Fault::link(&io::Error::new(
                        e.kind(),
                        format!("writing to ssh: {e}"),
                    )));
                    return;
                }
            }
        })
        .map(drop)
}

fn spawn_stderr(shared: Arc<Shared>, mut stderr: ChildStderr) -> io::Result<()> {
    std::thread::Builder::new()
        .name("sftp-stderr".into())
        .spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf) {
                let Some(got) = buf.get(..n).filter(|g| !g.is_empty()) else {
                    return;
                };
                tracing::info!(
                    "ssh: {}",
                    crate::escape::printable(&String::from_utf8_lossy(got))
                );
                if let Ok(mut t) = shared.stderr.lock() {
                    t.extend(got);
                    while t.len() > STDERR_TAIL {
                        t.pop_front();
                    }
                }
            }
        })
        .map(drop)
}

/// Reads one packet (type and payload); the length is bounded first.
fn read_packet(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head)?;
    let len = proto::packet_len(head)?;
    let mut packet = vec![0u8; len];
    r.read_exact(&mut packet)?;
    Ok(packet)
}

fn spawn_reader(
    shared: Arc<Shared>,
    stdout: ChildStdout,
    version: Sender<io::Result<Vec<u8>>>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("sftp-reader".into())
        .spawn(move || {
            let mut r = BufReader::with_capacity(512 << 10, stdout);
            match read_packet(&mut r) {
                Ok(p) => {
                    let _ = version.send(Ok(p));
                }
                Err(e) => {
                    let e = closed(e);
                    shared.kill(Fault::link(&e));
                    let _ = version.send(Err(e));
                    return;
                }
            }
            loop {
                let routed = read_packet(&mut r).and_then(|p| proto::decode_reply(&p));
                let (id, reply) = match routed {
                    Ok(x) => x,
                    Err(e) => {
                        shared.kill(Fault::link(&closed(e)));
                        return;
                    }
                };
                let waiter = shared.waiting.lock().ok().and_then(|mut w| {
                    let got = w.map.remove(&id);
                    let n = u64::try_from(w.map.len()).unwrap_or(u64::MAX);
                    shared.stats.in_flight.store(n, Ordering::Relaxed);
                    got
                });
                match waiter {
                    Some((tx, sent)) => {
                        let bytes = match &reply {
                            Reply::Data(d) => u64::try_from(d.len()).unwrap_or(0),
                            _ => 0,
                        };
                        shared.stats.record_request(sent.elapsed(), bytes);
                        shared.stats.bytes_read.fetch_add(bytes, Ordering::Relaxed);
                        // The waiter may have given up: nothing to do.
                        let _ = tx.send((id, Ok(reply)));
                    }
                    None => {
                        shared.kill(Fault::link(&proto::invalid(format!(
                            "SFTP reply for unknown request id {id}"
                        ))));
                        return;
                    }
                }
            }
        })
        .map(drop)
}

/// Says in plain words that the stream ended.
fn closed(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the ssh connection closed (the ssh process exited)",
        )
    } else {
        e
    }
}
