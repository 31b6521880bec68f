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
use std::ops::ControlFlow;

use super::blame::{Blame, Views};
use super::DiffError;
use crate::fs::{FileType, NodeId, Run};

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

impl Views {
    /// Blames every file and directory under directory `root` (named
    /// `path`), as the top's listing gives them: a directory's entries in
    /// on-disk order, then its subdirectories, each directory once (the
    /// order of [`super::walk_tree`]). With `by_path` each is blamed as a
    /// path ([`Views::blame_path`] with its path), else as a node.
    /// Directories that cannot be listed go to `note`.
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
                let mut mapped = false;
                let blamed = read.map_err(DiffError::from).and_then(|(meta, listed)| {
                    listed?;
                    mapped = true;
                    let mut at = |k: usize| {
                        if k == top {
                            Some(e.node)
                        } else {
                            below.get(k).copied().flatten()
                        }
                    };
                    let shown = crate::escape::printable_bytes(&path);
                    self.blame_known(e.node, shown, by_path, meta, &runs, &mut at)
                });
                if each(&path, blamed).is_break() {
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
            if let Err(e) = listed {
                note(format!(
                    "{}: {e}",
                    crate::escape::printable_bytes(&dir.path)
                ));
            }
            for p in problems {
                note(format!(
                    "{}: {p}",
                    crate::escape::printable_bytes(&dir.path)
                ));
            }
            if stopped {
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
