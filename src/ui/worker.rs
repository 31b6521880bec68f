//! The worker: the only place the TUI does I/O. It owns the chain and its
//! readers, answers [`Request`]s with [`Reply`]s, and on its own thread
//! coalesces queued requests so only the latest of each kind is served (a
//! held-down arrow key costs one read, not fifty).
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use super::app::{CellOwner, FieldRow, Grid, HexData, HitMode, Reply, Request, TreeNode};
use crate::block::cache::BlockCache;
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::map::MapIter;
use crate::block::{BlockError, BlockSource};
use crate::fs::ext::Ext4;

/// Map entries kept per layer for the static hit map; past this the rest
/// of the disk shows as "not read" rather than using unbounded memory.
const MAX_MAP_ENTRIES: usize = 1 << 20;
/// Cache for the hex pane's reads.
const CACHE_BYTES: u64 = 16 << 20;

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
}

impl Worker {
    /// A worker for `chain`.
    pub fn new(chain: Chain) -> Worker {
        Worker {
            chain,
            views: HashMap::new(),
        }
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

    /// Serves one request.
    pub fn handle(&mut self, request: Request) -> Reply {
        let result = match request {
            Request::Hex { as_of, offset, len } => self.hex(as_of, offset, len).map(Reply::Hex),
            Request::Grid { as_of, cells, mode } => self.grid(as_of, cells, mode).map(Reply::Grid),
            Request::Fs { as_of } => self.fs(as_of).map(|fields| Reply::Fs { as_of, fields }),
            Request::Dir { as_of, ino } => self.dir(as_of, ino).map(|entries| Reply::Dir {
                as_of,
                ino,
                entries,
            }),
            Request::File { as_of, ino } => {
                self.file(as_of, ino).map(|(offset, layers)| Reply::FileAt {
                    as_of,
                    ino,
                    offset,
                    layers,
                })
            }
            Request::Nbd => match self.chain.layers.first().and_then(|l| l.nbd.clone()) {
                Some(n) => Ok(Reply::Nbd(Box::new((
                    n.info().clone(),
                    n.stats().snapshot(),
                )))),
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

    fn fs(&mut self, as_of: usize) -> Result<Result<Vec<FieldRow>, String>, BlockError> {
        Ok(self.ext(as_of)?.map(|fs| {
            fs.superblock()
                .fields
                .iter()
                .map(|f| FieldRow {
                    name: f.name,
                    offset: f.offset,
                    size: f.size,
                    value: f.text.clone().unwrap_or_else(|| f.value.to_string()),
                })
                .collect()
        }))
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
                    }
                })
                .collect();
            out.sort_by(|a, b| (!a.is_dir, &a.name).cmp(&(!b.is_dir, &b.name)));
            Ok(out)
        }))
    }

    /// A file's first data byte and the layers holding its blocks.
    fn file(
        &mut self,
        as_of: usize,
        ino: u64,
    ) -> Result<(Option<u64>, Vec<Option<usize>>), BlockError> {
        let reader = Arc::clone(&self.view(as_of)?.reader);
        let Ok(fs) = self.ext(as_of)? else {
            return Ok((None, Vec::new()));
        };
        let Ok(node) = fs.inode(ino) else {
            return Ok((None, Vec::new()));
        };
        let bs = fs.superblock().block_size;
        let Ok(runs) = fs.runs(&node) else {
            return Ok((None, Vec::new()));
        };
        let mut layers: Vec<Option<usize>> = Vec::new();
        // Bounded: a file with a pathological number of runs is sampled.
        for r in runs.iter().filter(|r| !r.meta).take(4096) {
            let (mut at, end) = (r.physical * bs, (r.physical + r.len) * bs);
            while at < end {
                let o = reader.owner(at, end - at)?;
                if !layers.contains(&o.layer) {
                    layers.push(o.layer);
                }
                at += o.len.max(1);
            }
        }
        layers.sort_by(|a, b| b.cmp(a));
        Ok((
            runs.iter().find(|r| !r.meta).map(|r| r.physical * bs),
            layers,
        ))
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
        let cells = cells.clamp(1, 1 << 16);
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

/// Runs the worker on its own thread.
pub fn spawn(mut worker: Worker) -> (Sender<Request>, Receiver<Reply>) {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    let (rep_tx, rep_rx) = mpsc::channel::<Reply>();
    // The NBD status is answered on its own thread from the client's
    // lock-free counters, so it stays live while a read waits for a slow
    // or dead server (up to the request time limit).
    let nbd = worker.chain.layers.first().and_then(|l| l.nbd.clone());
    let req_rx = match nbd {
        Some(n) => {
            let (work_tx, work_rx) = mpsc::channel::<Request>();
            let status_tx = rep_tx.clone();
            std::thread::spawn(move || {
                for r in req_rx {
                    let sent = match r {
                        Request::Nbd => status_tx
                            .send(Reply::Nbd(Box::new((
                                n.info().clone(),
                                n.stats().snapshot(),
                            ))))
                            .is_ok(),
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
            // Coalesce: of what is queued, serve the latest of each kind.
            let mut latest: Vec<Request> = vec![first];
            while let Ok(more) = req_rx.try_recv() {
                latest.retain(|r| std::mem::discriminant(r) != std::mem::discriminant(&more));
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
