//! The worker: the only place the TUI does I/O. It owns the chain and its
//! readers, answers [`Request`]s with [`Reply`]s, and on its own thread
//! coalesces queued requests so only the latest of each kind is served (a
//! held-down arrow key costs one read, not fifty).
use crate::fs::ext::superblock::RoCompat;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use super::app::{
    CellOwner, FieldRow, FileAt, Grid, HexData, HitMode, LayerSet, Marks, Reply, Request, TreeNode,
};
use super::goto::Structure;
use super::groups::{Checksum, GroupRow, GroupsTable, MAX_GROUP_ROWS};
use crate::block::cache::BlockCache;
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::map::MapIter;
use crate::block::{BlockError, BlockSource};
use crate::fs::ext::Ext4;

/// Map entries kept per layer for the static hit map; past this the rest
/// of the disk shows as "not read" rather than using unbounded memory.
const MAX_MAP_ENTRIES: usize = 1 << 20;
/// Cache for the hex pane's reads: a screen is a few KiB, and this holds
/// a few read-ahead windows (16 MiB made visiting every directory of the
/// benchmark's 2 GiB chain peak at 62 MiB RSS; 4 MiB, 50).
const CACHE_BYTES: u64 = 4 << 20;

struct View {
    reader: Arc<LayeredReader>,
    cache: BlockCache,
    /// The static map (start, end, owner), computed once.
    map: Option<Vec<(u64, u64, CellOwner)>>,
    /// The filesystem as of this layer, opened once.
    fs: Option<Result<Ext4, String>>,
}

/// Owns the chain and everything read from it.
pub struct Worker {
    chain: Chain,
    views: HashMap<usize, View>,
    /// The diff running on its own thread.
    job: super::changes::Job,
    /// Where that thread sends its replies (None: run it here, for
    /// headless frames).
    replies: Option<Sender<Reply>>,
    /// Bumped to cancel a running search (see [`Worker::search_cancel`]).
    cancel: Arc<AtomicU64>,
    /// The NBD connection state last seen, to log its changes.
    nbd_state: Option<String>,
}

impl Worker {
    /// A worker for `chain`.
    pub fn new(chain: Chain) -> Worker {
        Worker {
            chain,
            views: HashMap::new(),
            job: super::changes::Job::default(),
            replies: None,
            cancel: Arc::default(),
            nbd_state: None,
        }
    }

    /// The counter a running search watches: bumping it (a new search,
    /// Esc) stops the search at the next directory.
    pub fn search_cancel(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.cancel)
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
        let reply = self.serve(request);
        let ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
        match &reply {
            Reply::Error(e) => tracing::warn!(request = %what, %ms, error = %e, "request failed"),
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
                let send = self.replies.clone().map(|tx| {
                    Box::new(move |r: Reply| {
                        let _ = tx.send(r);
                    }) as Box<dyn Fn(Reply) + Send + Sync>
                });
                Ok(self.job.start(&self.chain, to, send))
            }
            Request::CancelDiff => {
                self.job.cancel();
                Ok(Reply::Done)
            }
            Request::Compare { to, change, offset } => self.compare(to, &change, offset),
            Request::Inode { as_of, ino } => self.inode_at(as_of, ino),
            Request::DirBlock { as_of, ino } => self.dir_block(as_of, ino),
            Request::Search { as_of, needle } => {
                let generation = self.cancel.load(Ordering::Relaxed);
                let cancel = Arc::clone(&self.cancel);
                self.ext(as_of).map(|fs| match fs {
                    Ok(fs) => Reply::Found(Box::new(super::search::search(
                        fs, as_of, &needle, &cancel, generation,
                    ))),
                    Err(e) => Reply::Error(e),
                })
            }
            Request::Groups { as_of } => self.ext(as_of).map(|fs| Reply::Groups {
                as_of,
                table: fs.map(groups_table),
            }),
            Request::GroupFields { as_of, group } => self.ext(as_of).map(|fs| Reply::GroupFields {
                as_of,
                group,
                fields: fs.and_then(|fs| {
                    fs.group(group)
                        .map(|d| d.fields().iter().map(field_row).collect())
                        .map_err(|e| crate::escape::printable(&error_chain(&e)))
                }),
            }),
            Request::Nbd => match self.chain.layers.first().and_then(|l| l.nbd.clone()) {
                Some(n) => Ok(nbd_status(&n, &mut self.nbd_state)),
                None => Ok(Reply::Error("not an NBD export".into())),
            },
        };
        result.unwrap_or_else(|e| Reply::Error(crate::escape::printable(&error_chain(&e))))
    }

    /// The filesystem as of `as_of`, opened on first use.
    fn ext(&mut self, as_of: usize) -> Result<Result<&Ext4, String>, BlockError> {
        let view = self.view(as_of)?;
        if view.fs.is_none() {
            let source: Arc<dyn BlockSource> = view.reader.clone();
            view.fs =
                Some(Ext4::open(source).map_err(|e| crate::escape::printable(&error_chain(&e))));
        }
        Ok(match view.fs.as_ref() {
            Some(Ok(fs)) => Ok(fs),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no filesystem".into()),
        })
    }

    /// A changed file as of layer `to` and the one below, from the views
    /// (and their caches) the other panes use.
    fn compare(
        &mut self,
        to: usize,
        change: &crate::diff::Change,
        offset: Option<u64>,
    ) -> Result<Reply, BlockError> {
        let from = to.saturating_sub(1);
        // Open both (a filesystem that does not open stays in its view,
        // read below), then borrow both.
        let _ = self.ext(from)?;
        let _ = self.ext(to)?;
        let fs = |n: usize| match self.views.get(&n).and_then(|v| v.fs.as_ref()) {
            Some(Ok(fs)) => Ok(fs),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no filesystem".to_owned()),
        };
        let result = fs(from).and_then(|old| {
            let new = fs(to)?;
            super::changes::compare(old, new, to, change, offset)
        });
        Ok(match result {
            Ok(c) => Reply::Compare(Box::new(c)),
            Err(e) => Reply::Error(crate::escape::printable(&e)),
        })
    }

    fn fs(&mut self, as_of: usize) -> Result<Result<Vec<FieldRow>, String>, BlockError> {
        Ok(self
            .ext(as_of)?
            .map(|fs| fs.superblock().fields().iter().map(field_row).collect()))
    }

    fn dir(&mut self, as_of: usize, ino: u64) -> Result<Result<Vec<TreeNode>, String>, BlockError> {
        Ok(self.ext(as_of)?.and_then(|fs| {
            let node = fs.inode(ino).map_err(|e| e.to_string())?;
            let mut errors = Vec::new();
            let entries = fs.read_dir(&node, &mut errors).map_err(|e| e.to_string())?;
            let mut out: Vec<TreeNode> = entries
                .iter()
                .filter(|e| e.name != b"." && e.name != b"..")
                .map(|e| {
                    let child = fs.inode(u64::from(e.inode)).ok();
                    TreeNode {
                        ino: u64::from(e.inode),
                        name: e.display_name(),
                        depth: 0,
                        is_dir: child.as_ref().is_some_and(|c| c.is_dir()),
                        expanded: false,
                        size: child.as_ref().map_or(0, |c| c.size),
                        mode: child.as_ref().map_or(0, |c| c.mode),
                        marks: Marks::Unknown,
                    }
                })
                .collect();
            out.sort_by(|a, b| (!a.is_dir, &a.name).cmp(&(!b.is_dir, &b.name)));
            Ok(out)
        }))
    }

    /// A file's first data byte, the layers holding its blocks, and the
    /// hit map cells (of `cells`) they fall in.
    fn file(&mut self, as_of: usize, ino: u64, cells: usize) -> Result<FileAt, BlockError> {
        let reader = Arc::clone(&self.view(as_of)?.reader);
        let mut out = FileAt {
            as_of,
            ino,
            offset: None,
            layers: LayerSet::default(),
            cells: vec![false; cells.min(MAX_CELLS)],
        };
        let Ok(fs) = self.ext(as_of)? else {
            return Ok(out);
        };
        let Some(runs) = data_runs(fs, ino) else {
            return Ok(out);
        };
        let bs = fs.superblock().block_size;
        out.offset = runs.first().map(|r| r.physical.saturating_mul(bs));
        out.layers = layer_set(&reader, &runs, bs)?;
        if !out.cells.is_empty() {
            let cell = reader.len().div_ceil(out.cells.len() as u64).max(1);
            let last = out.cells.len() - 1;
            for r in runs.iter().filter(|r| r.len > 0) {
                let start = r.physical.saturating_mul(bs);
                let end = r.physical.saturating_add(r.len).saturating_mul(bs);
                let first = ((start / cell) as usize).min(last);
                let end_cell = (((end - 1) / cell) as usize).min(last);
                out.cells[first..=end_cell].fill(true);
            }
        }
        Ok(out)
    }

    /// Inode `ino`'s slot, its fields from the inode table.
    fn inode_at(&mut self, as_of: usize, ino: u64) -> Result<Reply, BlockError> {
        let fs = match self.ext(as_of)? {
            Ok(fs) => fs,
            Err(e) => return Ok(Reply::Error(e)),
        };
        Ok(match fs.inode(ino) {
            Ok(node) => Reply::Structure(Box::new(Structure {
                as_of,
                label: format!("inode {ino} ({}, {} bytes)", node.type_name(), node.size),
                at: node.base,
                fields: node.fields().iter().map(|f| (f.offset, f.size)).collect(),
                focus: true,
            })),
            Err(e) => Reply::Error(crate::escape::printable(&error_chain(&e))),
        })
    }

    /// Directory `ino`'s first block, each entry's fields (the entry
    /// table's, then the name) marked; nothing for an inline directory.
    fn dir_block(&mut self, as_of: usize, ino: u64) -> Result<Reply, BlockError> {
        use crate::fs::ext::dir::{decode_block, ENTRY};
        let Ok(fs) = self.ext(as_of)? else {
            return Ok(Reply::Error("no filesystem".into()));
        };
        let Some(first) = data_runs(fs, ino).and_then(|r| r.into_iter().next()) else {
            return Ok(Reply::Error(format!(
                "directory inode {ino} has no blocks (inline)"
            )));
        };
        let block = match fs.block(first.physical) {
            Ok(b) => b,
            Err(e) => return Ok(Reply::Error(crate::escape::printable(&error_chain(&e)))),
        };
        let at = first.physical.saturating_mul(fs.superblock().block_size);
        let mut fields = Vec::new();
        for e in decode_block(&block, at).entries {
            fields.extend(ENTRY.iter().map(|f| (e.offset + f.offset as u64, f.size)));
            fields.push((e.offset + 8, e.name.len()));
        }
        Ok(Reply::Structure(Box::new(Structure {
            as_of,
            label: format!("directory inode {ino}, block {}", first.physical),
            at,
            fields,
            focus: false,
        })))
    }

    /// The layers holding each inode's blocks.
    fn marks(&mut self, as_of: usize, inos: &[u64]) -> Result<Reply, BlockError> {
        let reader = Arc::clone(&self.view(as_of)?.reader);
        let mut marks = Vec::new();
        if let Ok(fs) = self.ext(as_of)? {
            let bs = fs.superblock().block_size;
            for &ino in inos {
                let set = match data_runs(fs, ino) {
                    Some(runs) => layer_set(&reader, &runs, bs)?,
                    None => LayerSet::default(),
                };
                marks.push((ino, set));
            }
        }
        Ok(Reply::Marks { as_of, marks })
    }

    fn hex(&mut self, as_of: usize, offset: u64, len: u64) -> Result<HexData, BlockError> {
        let view = self.view(as_of)?;
        let mut bytes = vec![0u8; len as usize];
        view.cache.read_at(offset, &mut bytes)?;
        let owners = (0..len.div_ceil(16))
            .map(|row| {
                let at = offset + row * 16;
                view.reader
                    .owner(at, 16.min(len - row * 16))
                    .map(|o| o.layer)
            })
            .collect::<Result<_, _>>()?;
        Ok(HexData {
            as_of,
            offset,
            bytes,
            owners,
        })
    }

    fn grid(&mut self, as_of: usize, cells: usize, mode: HitMode) -> Result<Grid, BlockError> {
        let layers = as_of + 1;
        let view = self.view(as_of)?;
        let size = view.reader.len();
        let cells = cells.clamp(1, MAX_CELLS);
        let cell = size.div_ceil(cells as u64).max(1);
        let mut out = vec![CellOwner::NotRead; cells];
        let mut bytes = vec![0u64; layers];
        let mut nowhere = 0;
        match mode {
            HitMode::Static => {
                if view.map.is_none() {
                    let mut map = Vec::new();
                    for e in MapIter::new(&view.reader).take(MAX_MAP_ENTRIES) {
                        let e = e?;
                        let owner = if e.present {
                            CellOwner::Layer(as_of.saturating_sub(e.depth as usize))
                        } else {
                            CellOwner::Nowhere
                        };
                        map.push((e.start, e.start + e.length, owner));
                    }
                    view.map = Some(map);
                }
                for &(start, end, owner) in view.map.iter().flatten() {
                    match owner {
                        CellOwner::Layer(l) => bytes[l.min(layers - 1)] += end - start,
                        _ => nowhere += end - start,
                    }
                    for c in &mut out[(start / cell) as usize..=((end - 1) / cell) as usize] {
                        // The topmost layer with anything in the cell wins:
                        // a small overlay write stays visible.
                        *c = match (*c, owner) {
                            (CellOwner::Layer(a), CellOwner::Layer(b)) => {
                                CellOwner::Layer(a.max(b))
                            }
                            (CellOwner::Layer(a), _) => CellOwner::Layer(a),
                            (_, o) => o,
                        };
                    }
                }
            }
            HitMode::Runtime => {
                let hits = view.reader.hits();
                let step = hits.cell_size().max(1);
                for (i, c) in out.iter_mut().enumerate() {
                    let (start, end) = (i as u64 * cell, ((i as u64 + 1) * cell).min(size));
                    let mut at = start;
                    while at < end {
                        *c = match (*c, CellOwner::from(hits.served(at))) {
                            (CellOwner::Layer(a), CellOwner::Layer(b)) => {
                                CellOwner::Layer(a.max(b))
                            }
                            (CellOwner::Layer(a), _) => CellOwner::Layer(a),
                            (CellOwner::Nowhere, CellOwner::NotRead) => CellOwner::Nowhere,
                            (_, o) => o,
                        };
                        at += step;
                    }
                }
                let (per_layer, none) = hits.totals();
                // Over NBD the server's layers, as deep as reads found them.
                bytes.resize(bytes.len().max(per_layer.len()), 0);
                for (i, t) in per_layer.iter().enumerate() {
                    bytes[i] = t.bytes;
                }
                nowhere = none.bytes;
            }
        }
        Ok(Grid {
            mode,
            as_of,
            cells: out,
            bytes,
            nowhere,
        })
    }
}

/// Runs a file's layers are looked up over, at most: a file with more
/// (badly fragmented, or a damaged map) is sampled.
const MAX_RUNS: usize = 4096;
/// Hit map cells, at most.
const MAX_CELLS: usize = 1 << 16;

/// The data runs of inode `ino` (the first [`MAX_RUNS`]), or None when it
/// cannot be read.
fn data_runs(fs: &Ext4, ino: u64) -> Option<Vec<crate::fs::ext::blockmap::Run>> {
    let node = fs.inode(ino).ok()?;
    let runs = fs.runs(&node).ok()?;
    Some(
        runs.into_iter()
            .filter(|r| !r.meta)
            .take(MAX_RUNS)
            .collect(),
    )
}

/// The layers serving `runs` (of `bs`-byte blocks).
fn layer_set(
    reader: &LayeredReader,
    runs: &[crate::fs::ext::blockmap::Run],
    bs: u64,
) -> Result<LayerSet, BlockError> {
    let mut set = LayerSet::default();
    for r in runs {
        let mut at = r.physical.saturating_mul(bs);
        let end = r
            .physical
            .saturating_add(r.len)
            .saturating_mul(bs)
            .min(reader.len());
        while at < end {
            let o = reader.owner(at, end - at)?;
            set.add(o.layer);
            at += o.len.max(1);
        }
    }
    Ok(set)
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

/// A decoded field as a pane row.
fn field_row(f: &crate::layout::FieldValue) -> FieldRow {
    FieldRow {
        name: f.name,
        offset: f.offset,
        size: f.size,
        value: f.text.clone().unwrap_or_else(|| f.value.to_string()),
    }
}

/// The group descriptor table (the first [`MAX_GROUP_ROWS`] groups); a
/// descriptor that cannot be read is a row with its error.
fn groups_table(fs: &Ext4) -> GroupsTable {
    use crate::fs::ext::group_desc::expected_checksum;
    let sb = fs.superblock();
    let count = sb.group_count();
    let desc_size = if sb.is_64bit() {
        usize::from(sb.desc_size)
    } else {
        32
    };
    let rows = (0..count.min(MAX_GROUP_ROWS))
        .map(|g| match fs.group(g) {
            Ok(d) => {
                let offset = Some(d.base);
                let checksum = match d.checksum_ok() {
                    None => Checksum::None,
                    Some(true) => Checksum::Ok(d.checksum),
                    Some(false) => {
                        // The expected value, from the descriptor's bytes.
                        let mut raw = vec![0u8; desc_size];
                        let expected = offset
                            .and_then(|o| fs.disk().read_at(o, &mut raw).ok())
                            .and_then(|()| expected_checksum(sb, g, &raw))
                            .unwrap_or(0);
                        Checksum::Bad {
                            stored: d.checksum,
                            expected,
                        }
                    }
                };
                GroupRow {
                    group: g,
                    offset,
                    block_bitmap: d.block_bitmap,
                    inode_bitmap: d.inode_bitmap,
                    inode_table: d.inode_table,
                    free_blocks: d.free_blocks,
                    free_inodes: d.free_inodes,
                    used_dirs: d.used_dirs,
                    itable_unused: d.itable_unused,
                    flags: d.flag_names(),
                    checksum,
                    error: None,
                }
            }
            Err(e) => GroupRow {
                group: g,
                offset: None,
                block_bitmap: 0,
                inode_bitmap: 0,
                inode_table: 0,
                free_blocks: 0,
                free_inodes: 0,
                used_dirs: 0,
                itable_unused: 0,
                flags: Vec::new(),
                checksum: Checksum::None,
                error: Some(crate::escape::printable(&error_chain(&e))),
            },
        })
        .collect();
    GroupsTable {
        count,
        desc_size,
        checksum_kind: if sb.has_metadata_csum() {
            "crc32c"
        } else if sb.has_ro_compat(RoCompat::UNINIT_BG) {
            "crc16"
        } else {
            "none"
        },
        rows,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
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

/// Runs the worker on its own thread.
pub fn spawn(mut worker: Worker) -> (Sender<Request>, Receiver<Reply>) {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    let (rep_tx, rep_rx) = mpsc::channel::<Reply>();
    worker.replies = Some(rep_tx.clone());
    // The NBD status is answered on its own thread from the client's
    // lock-free counters, so it stays live while a read waits for a slow
    // or dead server (up to the request time limit).
    let nbd = worker.chain.layers.first().and_then(|l| l.nbd.clone());
    let req_rx = match nbd {
        Some(n) => {
            let (work_tx, work_rx) = mpsc::channel::<Request>();
            let status_tx = rep_tx.clone();
            std::thread::spawn(move || {
                let mut last = None;
                for r in req_rx {
                    let sent = match r {
                        Request::Nbd => status_tx.send(nbd_status(&n, &mut last)).is_ok(),
                        other => work_tx.send(other).is_ok(),
                    };
                    if !sent {
                        return;
                    }
                }
            });
            work_rx
        }
        None => req_rx,
    };
    std::thread::spawn(move || {
        while let Ok(first) = req_rx.recv() {
            // Coalesce: of the queued views (hex, hit map, NBD state) serve
            // the latest of each kind; every other request (a directory to
            // open, a file to find) is served.
            let mut latest: Vec<Request> = vec![first];
            while let Ok(more) = req_rx.try_recv() {
                if matches!(
                    more,
                    Request::Hex { .. } | Request::Grid { .. } | Request::Nbd
                ) {
                    latest.retain(|r| std::mem::discriminant(r) != std::mem::discriminant(&more));
                }
                latest.push(more);
            }
            for r in latest {
                if rep_tx.send(worker.handle(r)).is_err() {
                    return;
                }
            }
        }
    });
    (req_tx, rep_rx)
}
