//! The worker: the only place the TUI does I/O. It owns the chain and its
//! readers, answers [`Request`]s with [`Reply`]s, and on its own thread
//! coalesces queued requests so only the latest of each kind is served (a
//! held-down arrow key costs one read, not fifty).
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

mod ahead;
mod bitmap;
mod diff;
mod fs;
mod grid;
mod groups;
mod journal;
mod refine;
mod remote;
mod volumes;

use super::msg::{CellOwner, ChainInfo, Reply, Request};
use crate::block::cache::BlockCache;
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::{BlockError, BlockSource};
use crate::fs::Filesystem;

/// Hit map cells, at most.
const MAX_CELLS: usize = 1 << 16;
/// Cache for the hex pane's reads: a screen is a few KiB, and this holds
/// a few read-ahead windows (16 MiB made visiting every directory of the
/// benchmark's 2 GiB chain peak at 62 MiB RSS; 4 MiB, 50).
const CACHE_BYTES: u64 = 4 << 20;

struct View {
    reader: Arc<LayeredReader>,
    cache: BlockCache,
    /// The static map (start, end, owner), once walked whole.
    map: Option<Vec<(u64, u64, CellOwner)>>,
    /// The static map walked so far.
    walk: Option<refine::Walk>,
    /// The filesystem as of this layer on the volume in view, opened
    /// once.
    fs: Option<Result<Arc<dyn Filesystem>, String>>,
}

/// Owns the chain and everything read from it.
pub struct Worker {
    chain: Chain,
    views: HashMap<usize, View>,
    /// The diff running on its own thread.
    job: diff::Job,
    /// Where that thread sends its replies (None: run it here, for
    /// headless frames).
    replies: Option<Sink>,
    /// Bumped to cancel a running search (see [`Worker::search_cancel`]).
    cancel: Arc<AtomicU64>,
    /// The NBD connection state last seen, to log its changes.
    nbd_state: Option<String>,
    /// Over NBD with allocation depths, the server's layers (scanned on
    /// first use; None inside: the server gives no depths).
    remote: Option<Option<remote::Remote>>,
    /// The volume whose filesystem the panes show (`p1`, `vg0/root`, as
    /// `layerscope volumes` names it); `None`: the one holding a
    /// filesystem (a bare disk: the disk).
    volume: Option<String>,
    /// The disk's volumes and the one in view.
    vols: volumes::Volumes,
    /// How a filesystem whose journal needs recovery is read: replayed in
    /// memory (the default, as the kernel mounts it) or as on disk.
    replay: Replay,
    /// The static hit map grid being made better between requests.
    refine: Option<refine::Refine>,
    /// Subdirectories of the last listing to fetch ahead between
    /// requests (see `fs.rs`): the view (`as_of`) and their nodes.
    ahead: Option<(usize, Vec<u64>)>,
}

/// What the worker is told at the start: the volume in view and how to
/// read a journal that needs recovery.
#[derive(Clone, Default)]
pub struct Options {
    /// The volume whose filesystem the panes show (`p1`, `vg0/root`);
    /// `None`: the one holding a filesystem.
    pub volume: Option<String>,
    pub replay: Replay,
    /// The persistent dirty bitmap the hit map shows at the start
    /// (`--bitmap NAME`; read by the app, the worker gets the mode with
    /// each request).
    pub bitmap: Option<String>,
}

/// `--no-replay` and `--journal-dev`, for the worker.
#[derive(Clone, Default)]
pub struct Replay {
    /// Read the filesystem as it is on disk, without replaying its
    /// journal.
    pub no_replay: bool,
    /// The external journal of a filesystem whose journal is not inside
    /// it.
    pub journal_dev: Option<Arc<dyn BlockSource>>,
}

impl Worker {
    /// A worker for `chain`.
    pub fn new(chain: Chain) -> Worker {
        Worker {
            chain,
            views: HashMap::new(),
            job: diff::Job::default(),
            replies: None,
            cancel: Arc::default(),
            nbd_state: None,
            remote: None,
            volume: None,
            vols: volumes::Volumes::default(),
            replay: Replay::default(),
            refine: None,
            ahead: None,
        }
    }

    /// The same worker with `options`.
    pub fn with_options(self, options: Options) -> Worker {
        self.with_volume(options.volume).with_replay(options.replay)
    }

    /// The same worker reading a journal that needs recovery as `replay`
    /// says (by default replayed in memory).
    pub fn with_replay(mut self, replay: Replay) -> Worker {
        self.replay = replay;
        self
    }

    /// The same worker showing the filesystem of volume `name` (see
    /// [`crate::volume::open_named`]).
    pub fn with_volume(mut self, name: Option<String>) -> Worker {
        self.volume = name;
        self
    }

    /// The counter a running search watches: bumping it (a new search,
    /// Esc) stops the search at the next directory.
    pub fn search_cancel(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.cancel)
    }

    /// The layer serving each part of `[offset, offset + len)` as of
    /// `as_of`: (length, layer) in order; over NBD, the server's layers.
    fn owners(
        &mut self,
        as_of: usize,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, Option<usize>)>, BlockError> {
        if let Some(r) = self.remote()? {
            return r.owners(offset, len);
        }
        let reader = Arc::clone(&self.view(as_of)?.reader);
        let mut out = Vec::new();
        let end = offset.saturating_add(len).min(reader.len());
        let mut at = offset;
        while at < end {
            let left = end.saturating_sub(at);
            let o = reader.owner(at, left)?;
            let n = o.len.max(1).min(left);
            out.push((n, o.layer));
            at = at.saturating_add(n);
        }
        Ok(out)
    }

    fn view(&mut self, as_of: usize) -> Result<&mut View, BlockError> {
        if !self.views.contains_key(&as_of) {
            let cut = self.chain.cut(as_of);
            let reader = Arc::new(LayeredReader::new(&cut)?);
            let cache = BlockCache::new(reader.clone(), CACHE_BYTES);
            self.views.insert(
                as_of,
                View {
                    reader,
                    cache,
                    map: None,
                    walk: None,
                    fs: None,
                },
            );
        }
        self.views
            .get_mut(&as_of)
            .ok_or_else(|| BlockError::Internal {
                what: "view vanished".into(),
            })
    }

    /// Serves one request (logged with its time; errors logged too).
    pub fn handle(&mut self, request: Request) -> Reply {
        let start = std::time::Instant::now();
        let what = summary(&request);
        // Kept to say which request failed (a marks request is a screenful
        // of inode numbers at most).
        let asked = request.clone();
        let reply = match self.serve(request) {
            Reply::Error(error) => Reply::Failed {
                request: Box::new(asked),
                error,
            },
            other => other,
        };
        let ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
        match &reply {
            Reply::Error(e) | Reply::Failed { error: e, .. } => {
                tracing::warn!(request = %what, %ms, error = %e, "request failed")
            }
            _ => tracing::debug!(request = %what, %ms, "request served"),
        }
        reply
    }

    fn serve(&mut self, request: Request) -> Reply {
        let result = match request {
            Request::Hex { as_of, offset, len } => self.hex(as_of, offset, len).map(Reply::Hex),
            Request::Grid { as_of, cells, mode } => self.grid(as_of, cells, mode).map(Reply::Grid),
            Request::Fs { as_of } => self.fs(as_of).map(|fields| Reply::Fs { as_of, fields }),
            Request::Dir { as_of, ino } => self.dir(as_of, ino).map(|entries| Reply::Dir {
                as_of,
                ino,
                entries,
            }),
            Request::File { as_of, ino, cells } => self
                .file(as_of, ino, cells)
                .map(|f| Reply::FileAt(Box::new(f))),
            Request::Marks { as_of, inos } => self.marks(as_of, &inos),
            Request::Diff { to } => {
                let send = self.replies.clone().map(|sink| {
                    let send: Box<dyn Fn(Reply) + Send + Sync> = Box::new(move |r: Reply| {
                        let _ = sink(r);
                    });
                    send
                });
                match self.volume() {
                    Ok(Ok(v)) => {
                        let v = v.clone();
                        let no_replay = self.replay.no_replay;
                        Ok(self.job.start(&self.chain, v, to, no_replay, send))
                    }
                    Ok(Err(e)) => Ok(Reply::Diff {
                        from: to.saturating_sub(1),
                        to,
                        result: Err(format!("no volume to compare: {e}")),
                    }),
                    Err(e) => Err(e),
                }
            }
            Request::CancelDiff => {
                self.job.cancel();
                Ok(Reply::Done)
            }
            Request::Compare {
                to,
                change,
                offset,
                seek,
            } => self.compare(to, &change, offset, seek),
            Request::Inode { as_of, ino } => self.inode_at(as_of, ino, true),
            Request::Block { as_of, block } => self.block_at(as_of, block),
            Request::DirBlock { as_of, ino } => self.dir_block(as_of, ino),
            Request::Search { as_of, needle } => {
                let generation = self.cancel.load(Ordering::Relaxed);
                let cancel = Arc::clone(&self.cancel);
                self.fsys(as_of).map(|fs| match fs {
                    Ok(fs) => Reply::Found(Box::new(super::search::search(
                        fs.as_ref(),
                        as_of,
                        &needle,
                        &cancel,
                        generation,
                    ))),
                    Err(e) => Reply::Error(e),
                })
            }
            Request::Volumes => self.volume_list().map(|l| Reply::Volumes(Ok(l))),
            Request::Volume { name } => self.set_volume(name).map(|l| Reply::Volumes(Ok(l))),
            Request::Groups { as_of } => self
                .groups(as_of)
                .map(|table| Reply::Groups { as_of, table }),
            Request::GroupFields { as_of, group } => {
                self.group_fields(as_of, group)
                    .map(|fields| Reply::GroupFields {
                        as_of,
                        group,
                        fields,
                    })
            }
            Request::Nbd => match self.chain.layers.first().and_then(|l| l.nbd.clone()) {
                Some(n) => Ok(nbd_status(&n, &mut self.nbd_state)),
                None => Ok(Reply::Error("not an NBD export".into())),
            },
            Request::Ssh => match crate::block::ssh::session_of(&self.chain) {
                Some(s) => Ok(ssh_status(&s, &mut self.nbd_state)),
                None => Ok(Reply::Error("not read over ssh".into())),
            },
        };
        result.unwrap_or_else(|e| Reply::Error(crate::escape::printable(&error_chain(&e))))
    }
}

/// A request in a few words, for the log (not the inode lists).
fn summary(r: &Request) -> String {
    match r {
        Request::Marks { as_of, inos } => {
            format!("Marks {{ as_of: {as_of}, inodes: {} }}", inos.len())
        }
        other => format!("{other:?}"),
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The NBD connection's status, logging its state when it changed since
/// `last`.
fn nbd_status(n: &crate::block::nbd::NbdClient, last: &mut Option<String>) -> Reply {
    let snap = n.stats().snapshot();
    let state = format!("{:?}", snap.state);
    if last.as_ref() != Some(&state) {
        tracing::info!(
            from = last.as_deref().unwrap_or("-"),
            to = %state,
            last_error = snap.last_error.as_deref().unwrap_or("-"),
            "NBD connection state"
        );
        *last = Some(state);
    }
    Reply::Nbd(Box::new((n.info().clone(), snap)))
}

/// The ssh session's status, logging its state when it changed since
/// `last`.
fn ssh_status(s: &crate::block::ssh::Session, last: &mut Option<String>) -> Reply {
    let st = s.status();
    let state = format!("{:?}", st.stats.state);
    if last.as_ref() != Some(&state) {
        tracing::info!(
            from = last.as_deref().unwrap_or("-"),
            to = %state,
            host = %crate::escape::printable(&st.host),
            last_error = st.stats.last_error.as_deref().unwrap_or("-"),
            "ssh session state"
        );
        *last = Some(state);
    }
    Reply::Ssh(Box::new(st))
}

/// Where replies go: false once nobody listens.
pub type Sink = Arc<dyn Fn(Reply) -> bool + Send + Sync>;

/// Runs the worker on its own thread; replies come out of the receiver.
pub fn spawn(worker: Worker) -> (Sender<Request>, Receiver<Reply>) {
    let (rep_tx, rep_rx) = mpsc::channel::<Reply>();
    let tx = spawn_into(worker, Arc::new(move |r| rep_tx.send(r).is_ok()));
    (tx, rep_rx)
}

/// Runs the worker on its own thread, each reply handed to `sink` (the
/// UI's one event channel).
pub fn spawn_into(worker: Worker, sink: Sink) -> Sender<Request> {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    std::thread::spawn(move || serve(worker, req_rx, sink));
    req_tx
}

/// What opens the chain: run on the worker's thread, so the UI is up (and
/// answers `q`) while an NBD handshake or a slow disk takes its time.
pub type Opener = Box<dyn FnOnce() -> Result<Chain, String> + Send>;

/// Opens the chain on the worker's thread, says so ([`Reply::Opened`] or
/// [`Reply::OpenFailed`]), then serves requests as [`spawn_into`] does,
/// with `options`; `cancel` is the search's cancel counter (see
/// [`Worker::search_cancel`]).
pub fn spawn_opening(
    open: Opener,
    options: Options,
    cancel: Arc<AtomicU64>,
    sink: Sink,
) -> Sender<Request> {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let chain = match open() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the chain did not open");
                sink(Reply::OpenFailed(crate::escape::printable(&e)));
                return;
            }
        };
        tracing::info!(ms = %start.elapsed().as_millis(), "chain opened on the worker");
        if !sink(Reply::Opened(Box::new(ChainInfo::of(&chain)))) {
            return;
        }
        let mut worker = Worker::new(chain).with_options(options);
        worker.cancel = cancel;
        serve(worker, req_rx, sink);
    });
    req_tx
}

/// Serves requests until the UI goes away.
fn serve(mut worker: Worker, req_rx: Receiver<Request>, sink: Sink) {
    worker.replies = Some(Arc::clone(&sink));
    // The NBD and ssh status is answered on its own thread from the
    // client's lock-free counters, so it stays live while a read waits for
    // a slow or dead server (up to the request time limit).
    let nbd = worker.chain.layers.first().and_then(|l| l.nbd.clone());
    let ssh = crate::block::ssh::session_of(&worker.chain);
    let req_rx = match (nbd, ssh) {
        (None, None) => req_rx,
        (nbd, ssh) => {
            let (work_tx, work_rx) = mpsc::channel::<Request>();
            let status = Arc::clone(&sink);
            std::thread::spawn(move || {
                let mut last = None;
                for r in req_rx {
                    let sent = match (r, &nbd, &ssh) {
                        (Request::Nbd, Some(n), _) => status(nbd_status(n, &mut last)),
                        (Request::Ssh, _, Some(s)) => status(ssh_status(s, &mut last)),
                        (other, _, _) => work_tx.send(other).is_ok(),
                    };
                    if !sent {
                        return;
                    }
                }
            });
            work_rx
        }
    };
    loop {
        // Between requests the subdirectories on screen are fetched
        // ahead, and the hit map's grid is made better, a slice at a
        // time; otherwise wait for the next request.
        let first = if worker.refining() || worker.has_ahead() {
            match req_rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => {
                    if worker.has_ahead() {
                        worker.fetch_ahead();
                        continue;
                    }
                    if let Some(reply) = worker.refine(refine::SLICE) {
                        if !sink(reply) {
                            return;
                        }
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        } else {
            match req_rx.recv() {
                Ok(r) => r,
                Err(_) => return,
            }
        };
        // Coalesce: of the queued views (hex, hit map, NBD state) serve
        // the latest of each kind; every other request (a directory to
        // open, a file to find) is served.
        let mut latest: Vec<Request> = vec![first];
        while let Ok(more) = req_rx.try_recv() {
            if matches!(
                more,
                Request::Hex { .. } | Request::Grid { .. } | Request::Nbd | Request::Ssh
            ) {
                latest.retain(|r| std::mem::discriminant(r) != std::mem::discriminant(&more));
            }
            latest.push(more);
        }
        for r in latest {
            if !sink(worker.handle(r)) {
                return;
            }
        }
    }
}
