//! A tree walk over any [`Filesystem`], for the commands that visit every
//! file (`path`, `owner`, `timeline`, `find`, `grep`, `extract`): depth
//! first, one directory listing held at a time per level, each directory
//! entered once (a damaged filesystem whose directories link in a loop
//! cannot make it run forever), damage reported and the walk continued.
use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::fs::{DirEntry, FileType, Filesystem, NodeId};

/// One entry met by the walk.
pub(super) struct Visit<'a> {
    /// The full path, raw bytes (`/a/b`).
    pub path: &'a [u8],
    pub entry: &'a DirEntry,
    /// The entry's type (read from the node when the entry records none).
    #[allow(dead_code)] // for find's --type, next
    pub file_type: FileType,
}

/// The type of `e`: the entry's own, or its node's.
pub(super) fn type_of(fs: &dyn Filesystem, e: &DirEntry) -> FileType {
    e.file_type
        .or_else(|| fs.metadata(e.node).ok().map(|m| m.file_type))
        .unwrap_or(FileType::Unknown)
}

/// Most directories fetched ahead at once: their inodes and blocks fit
/// the filesystem's prefetch store (32 MiB) with room to spare.
const MAX_AHEAD_DIRS: usize = 4096;

/// Fetching ahead for a depth-first walk over a remote disk: before a
/// directory that was not fetched ahead is listed, it and the directories
/// waiting to be listed are fetched with the trees under them, a level at
/// a time ([`crate::fs::prefetch_tree`]), so a walk pays a few round trips
/// per level of the tree instead of a few per directory. Off after the
/// first attempt on a local disk.
pub(super) struct Ahead {
    /// Fetched ahead and not listed yet.
    warm: HashSet<NodeId>,
    on: bool,
}

impl Ahead {
    pub(super) fn new() -> Ahead {
        Ahead {
            warm: HashSet::new(),
            on: true,
        }
    }

    /// Called once before a walk from `start`: when that is the root,
    /// the filesystem fetches every directory ahead where it can find
    /// them without walking ([`Filesystem::prefetch_all_dirs`]); those
    /// it holds then are listed without looking ahead again (which
    /// listed every directory of the tree a second time to find the
    /// levels below it).
    pub(super) fn whole_tree(&mut self, fs: &dyn Filesystem, start: NodeId) {
        if self.on && start == fs.root() {
            self.warm.extend(fs.prefetch_all_dirs());
        }
    }

    /// Called before `dir` is listed; `waiting` are the directories still
    /// to list, the next one last.
    pub(super) fn before(
        &mut self,
        fs: &dyn Filesystem,
        dir: NodeId,
        waiting: impl DoubleEndedIterator<Item = NodeId>,
    ) {
        if self.warm.remove(&dir) || !self.on {
            return;
        }
        let mut dirs = vec![dir];
        dirs.extend(
            waiting
                .rev()
                .filter(|d| *d != dir && !self.warm.contains(d))
                .take(MAX_AHEAD_DIRS),
        );
        let got = crate::fs::prefetch_tree(fs, &dirs, MAX_AHEAD_DIRS);
        if got.is_empty() {
            self.on = false;
        }
        self.warm.extend(got);
        self.warm.remove(&dir);
    }
}

/// Marks a command that walks a whole tree (`ls -R`, `find`, `grep`,
/// `path`, `owner`, `timeline`, `extract`), so that over NBD the
/// connections its batches spread over start opening with the first
/// round ([`super::RemoteArgs::walk`]).
pub(super) fn mark_tree_walk(command: &mut super::Command) {
    use super::Command as C;
    let remote = match command {
        C::Ls(a) => {
            let recursive = a.recursive;
            a.fs.image.remote.walk = recursive;
            return;
        }
        C::Find(a) => &mut a.fs.image.remote,
        C::Grep(a) => &mut a.fs.image.remote,
        C::Path(a) => &mut a.fs.image.remote,
        C::Owner(a) => &mut a.fs.image.remote,
        C::Timeline(a) => &mut a.fs.image.remote,
        C::Extract(a) => &mut a.fs.image.remote,
        _ => return,
    };
    remote.walk = true;
}

/// `base` + `/` + `name`.
pub(super) fn join(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Walks the tree under directory `start` (named `start_path`), calling
/// `each` for every entry but `.` and `..`, parents before children, until
/// it breaks. Damage (a directory that cannot be read, a bad block) goes
/// to `warn` and the walk goes on.
pub(super) fn walk(
    fs: &dyn Filesystem,
    start: NodeId,
    start_path: &[u8],
    each: &mut dyn FnMut(&Visit<'_>) -> ControlFlow<()>,
    warn: &mut dyn FnMut(String),
) {
    let mut seen: HashSet<NodeId> = HashSet::new();
    seen.insert(start);
    let mut stack: Vec<(NodeId, Vec<u8>)> = vec![(start, start_path.to_vec())];
    let mut ahead = Ahead::new();
    ahead.whole_tree(fs, start);
    while let Some((dir, path)) = stack.pop() {
        ahead.before(fs, dir, stack.iter().map(|(n, _)| *n));
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        if let Err(e) = fs.read_dir(dir, &mut problems, &mut |e| {
            if !e.is_dot_or_dotdot() {
                entries.push(e);
            }
            ControlFlow::Continue(())
        }) {
            warn(format!("{}: {e}", crate::escape::printable_bytes(&path)));
        }
        for p in problems {
            warn(format!("{}: {p}", crate::escape::printable_bytes(&path)));
        }
        let mut subdirs = Vec::new();
        for e in &entries {
            let file_type = type_of(fs, e);
            let child = join(&path, &e.name);
            let v = Visit {
                path: &child,
                entry: e,
                file_type,
            };
            if each(&v).is_break() {
                return;
            }
            if file_type == FileType::Directory {
                if seen.insert(e.node) {
                    subdirs.push((e.node, child));
                } else {
                    warn(format!(
                        "{}: directory {} met twice (a loop or a hard-linked directory); not entered again",
                        crate::escape::printable_bytes(&child),
                        fs.node_name(e.node)
                    ));
                }
            }
        }
        // Reversed, so that the first subdirectory is walked first.
        stack.extend(subdirs.into_iter().rev());
    }
}

/// One path met by [`walk_views`], as each view sees it.
pub(super) struct ViewsVisit<'a> {
    /// The full path, raw bytes.
    pub path: &'a [u8],
    /// 1 for the entries of the start directory, 2 below them, …
    pub depth: usize,
    /// Per view (in the order given): the entry and its type, where the
    /// path exists in that view.
    pub found: &'a [Option<(DirEntry, FileType)>],
}

/// Walks the union of the trees of several views of one filesystem (the
/// chain as of each layer; or one view alone) under the directory
/// `start_path`, which is `starts[k]` in view `k` (absent where `None`).
/// Each directory's entries are met in name order, each path once with
/// what every view holds there: `find` and `grep --all-layers` say in
/// which layers a match exists without keeping the tree. Memory: one
/// directory's entries (all views) at a time, plus the directories still
/// to visit and those already entered (each entered once per view, so a
/// loop in a damaged tree cannot make it run forever). Entries deeper
/// than `max_depth` are not visited. Damage goes to `warn`.
pub(super) fn walk_views(
    views: &[Option<&dyn Filesystem>],
    starts: &[Option<NodeId>],
    start_path: &[u8],
    max_depth: Option<usize>,
    each: &mut dyn FnMut(&ViewsVisit<'_>) -> ControlFlow<()>,
    warn: &mut dyn FnMut(String),
) {
    use std::collections::BTreeMap;
    type Found = Vec<Option<(DirEntry, FileType)>>;
    let mut seen: Vec<HashSet<NodeId>> =
        starts.iter().map(|s| s.iter().copied().collect()).collect();
    let mut stack: Vec<(Vec<Option<NodeId>>, Vec<u8>, usize)> =
        vec![(starts.to_vec(), start_path.to_vec(), 0)];
    // Over a remote disk, each view fetches ahead as `walk` does (the
    // whole tree at once from the root, else a level at a time under the
    // directories waiting); not for a walk bounded in depth, which would
    // fetch what it never lists.
    let mut aheads: Vec<Ahead> = views.iter().map(|_| Ahead::new()).collect();
    if max_depth.is_none() {
        for ((fs, start), ahead) in views.iter().zip(starts).zip(&mut aheads) {
            if let (Some(fs), Some(start)) = (*fs, *start) {
                ahead.whole_tree(fs, start);
            }
        }
    } else {
        for ahead in &mut aheads {
            ahead.on = false;
        }
    }
    while let Some((dirs, path, depth)) = stack.pop() {
        if max_depth.is_some_and(|m| depth >= m) {
            continue;
        }
        let mut names: BTreeMap<Vec<u8>, Found> = BTreeMap::new();
        for (k, (fs, dir)) in views.iter().zip(&dirs).enumerate() {
            let (Some(fs), Some(dir)) = (*fs, *dir) else {
                continue;
            };
            if let Some(ahead) = aheads.get_mut(k) {
                let waiting = stack
                    .iter()
                    .filter_map(|(d, _, _)| d.get(k).copied().flatten());
                ahead.before(fs, dir, waiting);
            }
            let mut problems = Vec::new();
            let shown = || {
                let p = crate::escape::printable_bytes(&path);
                if views.len() > 1 {
                    format!("{p} (layer {k})")
                } else {
                    p
                }
            };
            if let Err(e) = fs.read_dir(dir, &mut problems, &mut |e| {
                if e.is_dot_or_dotdot() {
                    return ControlFlow::Continue(());
                }
                let slot = names
                    .entry(e.name.clone())
                    .or_insert_with(|| vec![None; views.len()]);
                if let Some(s) = slot.get_mut(k) {
                    if s.is_none() {
                        let t = type_of(fs, &e);
                        *s = Some((e, t));
                    }
                }
                ControlFlow::Continue(())
            }) {
                warn(format!("{}: {e}", shown()));
            }
            for p in problems {
                warn(format!("{}: {p}", shown()));
            }
        }
        let mut subdirs = Vec::new();
        for (name, found) in &names {
            let child = join(&path, name);
            let v = ViewsVisit {
                path: &child,
                depth: depth.saturating_add(1),
                found,
            };
            if each(&v).is_break() {
                return;
            }
            let mut next: Vec<Option<NodeId>> = vec![None; views.len()];
            for (k, f) in found.iter().enumerate() {
                let Some((e, FileType::Directory)) = f else {
                    continue;
                };
                let (Some(s), Some(n)) = (seen.get_mut(k), next.get_mut(k)) else {
                    continue;
                };
                if s.insert(e.node) {
                    *n = Some(e.node);
                } else {
                    warn(format!(
                        "{}: directory {} met twice (a loop or a hard-linked directory); not entered again",
                        crate::escape::printable_bytes(&child),
                        views
                            .get(k)
                            .copied()
                            .flatten()
                            .map_or_else(String::new, |fs| fs.node_name(e.node))
                    ));
                }
            }
            if next.iter().any(Option::is_some) {
                subdirs.push((next, child, depth.saturating_add(1)));
            }
        }
        // Reversed, so that the first subdirectory is walked first.
        stack.extend(subdirs.into_iter().rev());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// Whether `args` (a command line) marks its NBD connections for a
    /// walk.
    fn walks(args: &[&str]) -> bool {
        let cli = super::super::Cli::try_parse_from(
            std::iter::once("layerscope").chain(args.iter().copied()),
        )
        .unwrap();
        let mut command = cli.command.unwrap();
        super::mark_tree_walk(&mut command);
        let remote = match &command {
            super::super::Command::Ls(a) => &a.fs.image.remote,
            super::super::Command::Find(a) => &a.fs.image.remote,
            super::super::Command::Grep(a) => &a.fs.image.remote,
            super::super::Command::Stat(a) => &a.fs.image.remote,
            super::super::Command::Timeline(a) => &a.fs.image.remote,
            other => panic!("not covered here: {other:?}"),
        };
        remote.nbd_options().walk_ahead
    }

    #[test]
    fn tree_walks_open_their_nbd_connections_with_the_first_round() {
        let u = "nbd://localhost/x";
        assert!(walks(&["ls", "-R", u]));
        assert!(!walks(&["ls", u]));
        assert!(walks(&["find", u]));
        assert!(walks(&["grep", u, "x"]));
        assert!(walks(&["timeline", u]));
        assert!(!walks(&["stat", u, "/etc"]));
    }
}
