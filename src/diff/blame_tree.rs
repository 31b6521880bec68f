//! `blame -R` in one walk of the top's tree.
//!
//! Blaming each file on its own ([`Views::blame_path`]) looks its path up
//! in every layer below the top, reads its node several times over, and
//! reads the bytes of every file whose node shares a cluster with a
//! changed one. Here the names come from one directory walk, each node is
//! read once as of the top, and where a path leads as of each layer is
//! carried down the tree: a directory whose bytes a layer does not hold
//! lists the same names as of the layer below, so its entries lead to the
//! nodes they lead to above, and only the directories a layer changed
//! are searched again. The result is [`Views::blame_path`]'s, file by
//! file (the blame tests compare them).
use std::collections::{HashMap, HashSet};
use std::ops::{ControlFlow, Range};

use super::blame::{Blame, Views};
use super::DiffError;
use crate::fs::{FileType, Filesystem, FsError, Metadata, NodeId, Run};

/// A directory waiting to be listed, and where its path leads below the
/// top.
struct Dir {
    node: NodeId,
    path: Vec<u8>,
    /// `below[k]`: the node the path leads to as of layer `k` (`k` below
    /// the top), as `lookup` finds it there.
    below: Vec<Option<NodeId>>,
    /// `same[k]`: as of layer `k` the directory has the bytes it has as
    /// of layer `k + 1` (the same node, not held by `k + 1`), so a name
    /// in it leads to the same node in both.
    same: Vec<bool>,
}

/// Most names of a directory [`Views::listing`] keeps (a larger one is
/// searched name by name).
const LISTED_NAMES: usize = 1 << 20;

/// A directory's names and the nodes they lead to (the first entry of
/// a name, as a search that lists the directory finds it).
type Names = HashMap<Vec<u8>, NodeId>;

/// Where each file and directory walked is reported: its path (raw
/// bytes) and its blame, or why it could not be blamed.
pub type Each<'a> = dyn FnMut(&[u8], Result<Blame, DiffError>) -> ControlFlow<()> + 'a;

/// What the walk of [`Views::blame_tree`] finds, in order: a file or
/// directory to blame, or a note about a directory.
// Entries are nearly every item: boxing them would allocate per entry.
#[allow(clippy::large_enum_variant)]
enum Found<'a> {
    Entry {
        node: NodeId,
        /// Its path (raw bytes).
        path: &'a [u8],
        /// Its metadata and runs as of the top (the runs' error apart).
        read: Read,
        runs: &'a [Run],
        /// Where its path leads below the top (`Dir::below`).
        below: &'a [Option<NodeId>],
    },
    Note(String),
    /// The end of a directory's entries and notes.
    DirEnd,
}

/// A node's metadata as of the top, and whether its runs could be read.
type Read = Result<(Metadata, Result<(), FsError>), FsError>;

/// [`Found`]s handed from the walking thread to the blaming one, kept
/// together: each entry's path, runs and `below` in shared buffers (one
/// batch's buffers are used again and again).
#[derive(Default)]
struct Batch {
    items: Vec<Item>,
    paths: Vec<u8>,
    runs: Vec<Run>,
    below: Vec<Option<NodeId>>,
}

/// One [`Found`] in a [`Batch`]: its parts as ranges of the batch's
/// buffers.
// As [`Found`].
#[allow(clippy::large_enum_variant)]
enum Item {
    Entry {
        node: NodeId,
        path: Range<usize>,
        read: Read,
        runs: Range<usize>,
        below: Range<usize>,
    },
    Note(String),
    DirEnd,
}

/// Entries per [`Batch`]: handed over a hundred or so at a time, the two
/// threads rarely wait for each other (the first batch is smaller: the
/// blame starts sooner).
const BATCH: usize = 128;

/// Entries in the first [`Batch`].
const FIRST_BATCH: usize = 16;

/// Batches under way at once (memory stays bounded).
const BATCHES: usize = 4;

impl Batch {
    fn clear(&mut self) {
        self.items.clear();
        self.paths.clear();
        self.runs.clear();
        self.below.clear();
    }

    fn push(&mut self, found: Found) {
        let put = |from: usize, to: usize| from..to;
        match found {
            Found::Entry {
                node,
                path,
                read,
                runs,
                below,
            } => {
                let p = self.paths.len();
                self.paths.extend_from_slice(path);
                let r = self.runs.len();
                self.runs.extend_from_slice(runs);
                let b = self.below.len();
                self.below.extend_from_slice(below);
                self.items.push(Item::Entry {
                    node,
                    path: put(p, self.paths.len()),
                    read,
                    runs: put(r, self.runs.len()),
                    below: put(b, self.below.len()),
                });
            }
            Found::Note(n) => self.items.push(Item::Note(n)),
            Found::DirEnd => self.items.push(Item::DirEnd),
        }
    }

    /// Hands each item to `f` as a [`Found`], in order, until it breaks
    /// at the end of a directory.
    fn drain(&mut self, f: &mut dyn FnMut(Found) -> ControlFlow<()>) -> ControlFlow<()> {
        let Batch {
            items,
            paths,
            runs,
            below,
        } = self;
        for item in items.drain(..) {
            let found = match item {
                Item::Entry {
                    node,
                    path,
                    read,
                    runs: r,
                    below: b,
                } => Found::Entry {
                    node,
                    path: paths.get(path).unwrap_or_default(),
                    read,
                    runs: runs.get(r).unwrap_or_default(),
                    below: below.get(b).unwrap_or_default(),
                },
                Item::Note(n) => Found::Note(n),
                Item::DirEnd => Found::DirEnd,
            };
            let end = matches!(found, Found::DirEnd);
            if f(found).is_break() && end {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

impl Views {
    /// Blames every file and directory under directory `root` (named
    /// `path`), as the top's listing gives them: a directory's entries in
    /// on-disk order, then its subdirectories, each directory once (the
    /// order of [`super::walk_tree`]). With `by_path` each is blamed as a
    /// path ([`Views::blame_path`] with its path), else as a node.
    /// Directories that cannot be listed go to `note`.
    ///
    /// With processors to spare ([`spare_processor`]), one thread walks
    /// the tree (reads the directories and nodes) while this one blames
    /// what it found and hands it to `each`, in the walk's order; else
    /// both in turn on this thread.
    pub fn blame_tree(
        &self,
        root: NodeId,
        path: &[u8],
        by_path: bool,
        note: &mut dyn FnMut(String),
        each: &mut Each,
    ) {
        let Ok((top, fs)) = self.top() else {
            return;
        };
        // Once `each` stops, the rest of its directory's notes are still
        // given (then the walk ends).
        let mut stopping = false;
        let mut blame = |found: Found| match found {
            Found::Entry { .. } if stopping => ControlFlow::Continue(()),
            Found::Entry {
                node,
                path,
                read,
                runs,
                below,
            } => {
                let blamed = read.map_err(DiffError::from).and_then(|(meta, listed)| {
                    listed?;
                    let shown = crate::escape::printable_bytes(path);
                    let mut at = |k: usize| {
                        if k == top {
                            Some(node)
                        } else {
                            below.get(k).copied().flatten()
                        }
                    };
                    self.blame_known(node, shown, by_path, meta, runs, &mut at)
                });
                let flow = each(path, blamed);
                stopping = flow.is_break();
                flow
            }
            Found::Note(n) => {
                note(n);
                ControlFlow::Continue(())
            }
            Found::DirEnd if stopping => ControlFlow::Break(()),
            Found::DirEnd => ControlFlow::Continue(()),
        };
        if !spare_processor() {
            self.walk(root, path, by_path, top, fs, &mut blame);
            return;
        }
        std::thread::scope(|s| {
            let (full, fulls) = std::sync::mpsc::sync_channel::<Batch>(BATCHES);
            let (empty, empties) = std::sync::mpsc::channel::<Batch>();
            let walker = std::thread::Builder::new()
                .name("blame walk".into())
                .spawn_scoped(s, move || {
                    let mut batch = Batch::default();
                    let hand = |batch: &mut Batch| {
                        let next = empties.try_recv().unwrap_or_default();
                        let done = std::mem::replace(batch, next);
                        full.send(done).map_err(|_| ())
                    };
                    let (mut stopped, mut size) = (false, FIRST_BATCH);
                    self.walk(root, path, by_path, top, fs, &mut |found| {
                        batch.push(found);
                        if batch.items.len() >= size {
                            size = BATCH;
                            if hand(&mut batch).is_err() {
                                // The blaming side stopped.
                                stopped = true;
                                return ControlFlow::Break(());
                            }
                        }
                        ControlFlow::Continue(())
                    });
                    if !stopped && !batch.items.is_empty() {
                        let _ = hand(&mut batch);
                    }
                });
            if walker.is_err() {
                // No thread: the walk and the blame in turn, here.
                drop(fulls);
                self.walk(root, path, by_path, top, fs, &mut blame);
                return;
            }
            for mut batch in fulls.iter() {
                if batch.drain(&mut blame).is_break() {
                    // Dropping the receiver stops the walk at its next
                    // batch.
                    return;
                }
                batch.clear();
                let _ = empty.send(batch);
            }
        });
    }

    /// The walk of [`Views::blame_tree`]: each entry under `root` with
    /// what the top says of it, and the notes of directories, to `found`
    /// in order until it breaks.
    fn walk(
        &self,
        root: NodeId,
        path: &[u8],
        by_path: bool,
        top: usize,
        fs: &dyn Filesystem,
        found: &mut dyn FnMut(Found) -> ControlFlow<()>,
    ) {
        // Paths are followed down the layers only for a path's history.
        let paths = by_path && top > 0;
        let below = if paths {
            (0..top)
                .map(|k| {
                    let fs = self.fs.get(k)?;
                    fs.lookup(path).ok()
                })
                .collect()
        } else {
            Vec::new()
        };
        let same = self.unchanged(root, &below, None);
        let mut stack = vec![Dir {
            node: root,
            path: path.to_vec(),
            below,
            same,
        }];
        let mut seen = HashSet::from([root]);
        let mut runs: Vec<Run> = Vec::new();
        while let Some(dir) = stack.pop() {
            // The layers below that changed the directory: its names
            // there, listed once (not searched once per name).
            let names: Vec<Option<Names>> = if paths {
                (0..top)
                    .map(|k| match (dir.below.get(k), dir.same.get(k)) {
                        (Some(&Some(d)), Some(false)) => self.listing(k, d),
                        _ => None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let mut subdirs = Vec::new();
            let mut problems = Vec::new();
            let mut stopped = false;
            // Each entry's path and where it leads below, in buffers kept
            // across the entries (copied for subdirectories).
            let (mut path, mut below) = (Vec::new(), Vec::new());
            let listed = fs.read_dir(dir.node, &mut problems, &mut |e| {
                if e.is_dot_or_dotdot() || e.node == 0 {
                    return ControlFlow::Continue(());
                }
                // What super::join gives.
                path.clear();
                path.extend_from_slice(&dir.path);
                if path.last() != Some(&b'/') {
                    path.push(b'/');
                }
                path.extend_from_slice(&e.name);
                below.clear();
                if paths {
                    self.child_below(&dir, &names, &e.name, &path, e.node, &mut below);
                }
                runs.clear();
                let read = fs.metadata_runs(e.node, &mut Vec::new(), &mut |r| {
                    runs.push(r);
                    ControlFlow::Continue(())
                });
                let is_dir = read
                    .as_ref()
                    .is_ok_and(|(m, _)| m.file_type == FileType::Directory);
                let mapped = matches!(read, Ok((_, Ok(()))));
                let entry = Found::Entry {
                    node: e.node,
                    path: &path,
                    read,
                    runs: &runs,
                    below: &below,
                };
                if found(entry).is_break() {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                if is_dir && seen.insert(e.node) {
                    // Its ranges as of the top, read above.
                    let known = mapped
                        .then(|| fs.node_span(e.node).ok())
                        .flatten()
                        .map(|span| {
                            let mut r = vec![span];
                            r.extend(runs.iter().map(|r| (r.physical, r.len)));
                            r
                        });
                    let same = self.unchanged(e.node, &below, known);
                    subdirs.push(Dir {
                        node: e.node,
                        path: path.clone(),
                        below: below.clone(),
                        same,
                    });
                }
                ControlFlow::Continue(())
            });
            // The directory's notes, also after a stop (as before it).
            let shown = crate::escape::printable_bytes(&dir.path);
            let notes = listed
                .err()
                .map(|e| format!("{shown}: {e}"))
                .into_iter()
                .chain(problems.iter().map(|p| format!("{shown}: {p}")));
            for n in notes {
                let _ = found(Found::Note(n));
            }
            if found(Found::DirEnd).is_break() || stopped {
                return;
            }
            stack.extend(subdirs);
        }
    }

    /// Where the path of entry `name` (node `node` as of the top) in
    /// `dir` leads as of each layer below the top: nowhere where the
    /// directory's path leads nowhere; the node it leads to one layer up
    /// where the directory is unchanged; else found in the directory's
    /// listing there (`names[k]`), or looked up. Written to `out`.
    fn child_below(
        &self,
        dir: &Dir,
        names: &[Option<Names>],
        name: &[u8],
        path: &[u8],
        node: NodeId,
        out: &mut Vec<Option<NodeId>>,
    ) {
        let top = dir.below.len();
        out.clear();
        out.resize(top, None);
        // A name `lookup` would not take as one component is looked up.
        let plain = !name.is_empty() && name != b"." && !name.contains(&b'/');
        let mut above = Some(node);
        for k in (0..top).rev() {
            let here = match (dir.below.get(k), dir.same.get(k)) {
                (Some(None) | None, _) => None,
                (Some(Some(_)), Some(true)) if plain => above,
                _ => match names.get(k) {
                    Some(Some(names)) if plain => names.get(name).copied(),
                    _ => self.fs.get(k).and_then(|fs| fs.lookup(path).ok()),
                },
            };
            if let Some(slot) = out.get_mut(k) {
                *slot = here;
            }
            above = here;
        }
    }

    /// The names of directory `dir` as of layer `layer`, for
    /// [`Views::child_below`]; `None` when it cannot be listed or holds
    /// more than [`LISTED_NAMES`] (then each name is looked up).
    fn listing(&self, layer: usize, dir: NodeId) -> Option<Names> {
        let fs = self.fs.get(layer)?;
        let mut names = Names::new();
        let mut over = false;
        fs.read_dir(dir, &mut Vec::new(), &mut |e| {
            if names.len() >= LISTED_NAMES {
                over = true;
                return ControlFlow::Break(());
            }
            names.entry(e.name).or_insert(e.node);
            ControlFlow::Continue(())
        })
        .ok()?;
        (!over).then_some(names)
    }

    /// For a directory, node `node` as of the top and `below` as of the
    /// layers below: whether as of each layer `k` it has the bytes it has
    /// as of `k + 1` (`same[k]`). An error reading it says no (its names
    /// are then looked up). `top_ranges`: its [`Views::ranges_of`] as of
    /// the top, when the caller read them.
    fn unchanged(
        &self,
        node: NodeId,
        below: &[Option<NodeId>],
        top_ranges: Option<Vec<(u64, u64)>>,
    ) -> Vec<bool> {
        let top = below.len();
        let mut same = vec![false; top];
        // The directory's ranges as of layer k + 1, when known.
        let mut known: Option<Vec<(u64, u64)>> = top_ranges;
        for k in (0..top).rev() {
            let above = if k.saturating_add(1) == top {
                Some(node)
            } else {
                below.get(k.saturating_add(1)).copied().flatten()
            };
            let (Some(a), Some(b)) = (above, below.get(k).copied().flatten()) else {
                known = None;
                continue;
            };
            let ranges = match known.take() {
                Some(r) => r,
                None => match self.ranges_of(k.saturating_add(1), a) {
                    Ok(r) => r,
                    Err(_) => continue,
                },
            };
            let l = k.saturating_add(1);
            if a == b
                && (matches!(self.holds(l, &ranges), Ok(false)) || self.same_bytes(l, &ranges))
            {
                if let Some(s) = same.get_mut(k) {
                    *s = true;
                }
                known = Some(ranges);
            }
        }
        same
    }
}

/// Whether a second thread would run beside this one rather than wait
/// for a processor: at least two processors with nothing else running
/// on them right now (the running count of /proc/loadavg, ourselves
/// left out; the one-minute average lags a minute behind a load that
/// came or went). The walk and the blame each take about half of a
/// `blame -R`, and split over two threads they hand batches across:
/// with a processor for each that halves the wall time, but when one
/// thread must wait for a processor each handoff waits with it.
/// Measured on 2 processors (the bench's 20,000-file chain, interleaved
/// medians): with a fuzzer busy on one, two threads took 1.29x e2fsck
/// -fn's time and one 1.04x; with both idle, two 0.81x and one 0.93x.
/// Without /proc/loadavg, two processors are enough.
fn spare_processor() -> bool {
    let Ok(n) = std::thread::available_parallelism() else {
        return false;
    };
    let running = std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| {
        let field = l.split_whitespace().nth(3)?;
        field.split('/').next()?.parse::<usize>().ok()
    });
    // `running` counts this thread.
    let others = running.map_or(0, |r| r.saturating_sub(1));
    n.get().saturating_sub(others) >= 2
}
