//! The diff of filesystems without a quick one: both trees walked and
//! compared through [`Filesystem`] alone. Files are matched by node and
//! path; metadata, symlink targets and attributes are compared as the
//! trait gives them, and content by runs, then bytes: a range both views
//! map to the same place on the volume, which no layer between them
//! holds, is equal without reading it.
//!
//! It reports in the terms of the quick diff (the same [`Change`]s and
//! assembly), and says in its [`Stats`] that it compared trees.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;

use crate::fs::{FileType, Filesystem, FsError, Metadata, NodeId, Problem, Run, RunKind};

use super::compare::Delta;
use super::{assemble, join, Diff, DiffError, Name, PairView, Progress};
use crate::bytes::u64_of;

/// Most names a walk collects (a damaged directory cannot grow it
/// without end).
const MAX_NAMES: usize = 50_000_000;
/// Bytes compared at a time.
const CHUNK: u64 = 1 << 20;

/// The names under directory `dir` (at `path`), depth first, each
/// directory once; damage goes to `notes`.
fn walk(
    fs: &dyn Filesystem,
    dir: NodeId,
    path: &[u8],
    out: &mut Vec<Name>,
    notes: &mut Vec<String>,
) {
    let mut stack = vec![(dir, path.to_vec())];
    let mut seen = HashSet::from([dir]);
    while let Some((dir, dpath)) = stack.pop() {
        let mut problems: Vec<Problem> = Vec::new();
        let mut entries = Vec::new();
        let listed = fs.read_dir(dir, &mut problems, &mut |e| {
            if !e.is_dot_or_dotdot() && out.len().saturating_add(entries.len()) < MAX_NAMES {
                entries.push(e);
            }
            ControlFlow::Continue(())
        });
        let shown = crate::escape::printable_bytes(&dpath);
        if let Err(e) = listed {
            notes.push(format!("{shown}: {e}"));
            continue;
        }
        notes.extend(problems.iter().map(|p| format!("{shown}: {p}")));
        for e in entries {
            let path = join(&dpath, &e.name);
            let Ok(m) = fs.metadata(e.node) else {
                notes.push(format!(
                    "{}: {} cannot be read",
                    crate::escape::printable_bytes(&path),
                    fs.node_name(e.node)
                ));
                continue;
            };
            let dir = m.file_type == FileType::Directory;
            out.push(Name {
                path: path.clone(),
                ino: e.node,
                dir,
                file_type: m.file_type.name(),
            });
            if dir && seen.insert(e.node) {
                stack.push((e.node, path));
            }
        }
    }
}

/// Every name under directory `dir` (at `path`) with its node, depth
/// first, each directory once (for `blame -R`).
pub fn walk_paths(fs: &dyn Filesystem, dir: NodeId, path: &[u8], out: &mut Vec<(Vec<u8>, NodeId)>) {
    let mut names = Vec::new();
    walk(fs, dir, path, &mut names, &mut Vec::new());
    out.extend(names.into_iter().map(|n| (n.path, n.ino)));
}

/// Whether a node holds a file: a known type, and linked.
pub fn in_use(m: &Metadata) -> bool {
    m.file_type != FileType::Unknown && m.links > 0
}

/// Whether two views' metadata are of the same file: in use in both,
/// the same type and generation (where the filesystem records one).
pub fn same_file(o: &Metadata, n: &Metadata) -> bool {
    in_use(o) && in_use(n) && o.file_type == n.file_type && o.generation == n.generation
}

/// Both views' metadata, read once per node.
pub struct Pair<'a> {
    pub old: &'a dyn Filesystem,
    pub new: &'a dyn Filesystem,
    cache: HashMap<NodeId, (Option<Metadata>, Option<Metadata>)>,
}

impl<'a> Pair<'a> {
    pub fn new(old: &'a dyn Filesystem, new: &'a dyn Filesystem) -> Pair<'a> {
        Pair {
            old,
            new,
            cache: HashMap::new(),
        }
    }

    /// The node's metadata as of both views (`None` where unreadable).
    pub fn get(&mut self, node: NodeId) -> &(Option<Metadata>, Option<Metadata>) {
        let (old, new) = (self.old, self.new);
        self.cache
            .entry(node)
            .or_insert_with(|| (old.metadata(node).ok(), new.metadata(node).ok()))
    }
}

impl PairView for Pair<'_> {
    fn persists(&mut self, node: u64) -> bool {
        matches!(self.get(node), (Some(o), Some(n)) if same_file(o, n))
    }

    fn new_type(&mut self, node: u64) -> &'static str {
        self.get(node)
            .1
            .as_ref()
            .map_or("unknown", |m| m.file_type.name())
    }

    fn views(&self) -> (&dyn Filesystem, &dyn Filesystem) {
        (self.old, self.new)
    }
}

/// Sorted, merged byte ranges of the volume that the layers between the
/// two views hold: bytes outside them are the same in both.
pub type Held<'a> = &'a [(u64, u64)];

/// Whether any of `held` overlaps `[start, start + len)`.
fn held_overlaps(held: Held, start: u64, len: u64) -> bool {
    let end = start.saturating_add(len);
    let i = held.partition_point(|&(s, l)| s.saturating_add(l) <= start);
    held.get(i).is_some_and(|&(s, _)| s < end)
}

/// How file `node` differs between `old` (`o`) and `new` (`n`): its
/// content (bytes, symlink target) and the metadata fields named. Access
/// times are not changes; a write's `mtime` and `ctime` are part of the
/// content change; a directory's times, size and links follow its
/// entries, which are reported as entries (the quick diff's rules).
///
/// # Errors
/// Read errors.
pub fn compare(
    old: &dyn Filesystem,
    o: &Metadata,
    new: &dyn Filesystem,
    n: &Metadata,
    held: Option<Held>,
) -> Result<Delta, FsError> {
    let mut d = Delta::default();
    let dir = n.file_type == FileType::Directory;
    match n.file_type {
        FileType::Regular => {
            d.content = o.size != n.size || content_differs(old, new, o.node, n.size, held)?;
        }
        FileType::Symlink => d.content = old.read_link(o.node)? != new.read_link(n.node)?,
        _ => {}
    }
    let mut field = |name: &'static str, differs: bool| {
        if differs {
            d.metadata.push(name);
        }
    };
    field("mode", o.mode != n.mode);
    field("uid", o.uid != n.uid);
    field("gid", o.gid != n.gid);
    field("flags", o.flags != n.flags);
    if !dir {
        field("links", o.links != n.links);
    }
    field("crtime", o.crtime != n.crtime);
    field("rdev", o.rdev != n.rdev);
    field("xattrs", xattrs(old, o.node)? != xattrs(new, n.node)?);
    if !dir && !d.content {
        field("mtime", o.mtime != n.mtime);
        field("ctime", o.ctime != n.ctime);
    }
    Ok(d)
}

/// An attribute: name, value.
type Attr = (Vec<u8>, Vec<u8>);

/// The attributes, sorted (the order they are stored in is not a
/// change).
fn xattrs(fs: &dyn Filesystem, node: NodeId) -> Result<Vec<Attr>, FsError> {
    let mut v: Vec<_> = fs
        .xattrs(node, &mut Vec::new())?
        .into_iter()
        .map(|x| (x.name, x.value))
        .collect();
    v.sort();
    Ok(v)
}

/// The content runs of `node`, sorted by logical offset.
fn data_runs(fs: &dyn Filesystem, node: NodeId) -> Result<Vec<Run>, FsError> {
    let mut runs = Vec::new();
    fs.runs(node, &mut Vec::new(), &mut |r| {
        if r.kind.is_content() {
            runs.push(r);
        }
        ControlFlow::Continue(())
    })?;
    runs.sort_by_key(|r| r.logical);
    Ok(runs)
}

/// Where byte `at` of a file is: (volume offset, unwritten), and how many
/// bytes the answer holds for; `None` for a hole.
fn mapping(runs: &[Run], at: u64) -> (Option<(u64, bool)>, u64) {
    let i = runs.partition_point(|r| r.logical.saturating_add(r.len) <= at);
    match runs.get(i) {
        Some(r) if r.logical <= at => (
            Some((
                r.physical.saturating_add(at.saturating_sub(r.logical)),
                r.kind == RunKind::Unwritten,
            )),
            r.logical.saturating_add(r.len).saturating_sub(at),
        ),
        Some(r) => (None, r.logical.saturating_sub(at)),
        None => (None, u64::MAX),
    }
}

/// Whether file `node` (of `size` bytes in both views) has different
/// bytes. With `held`, ranges mapped to the same unheld place in both
/// views are equal without reading.
fn content_differs(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    node: NodeId,
    size: u64,
    held: Option<Held>,
) -> Result<bool, FsError> {
    if size == 0 {
        return Ok(false);
    }
    let (ro, rn) = (data_runs(old, node)?, data_runs(new, node)?);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut at = 0u64;
    while at < size {
        let (mo, lo) = mapping(&ro, at);
        let (mn, ln) = mapping(&rn, at);
        let span = lo.min(ln).min(size.saturating_sub(at)).clamp(1, CHUNK);
        let equal_without_reading = match (mo, mn, held) {
            (Some(x), Some(y), Some(h)) => x == y && (x.1 || !held_overlaps(h, x.0, span)),
            // No runs at all in either view (inline or resident data)
            // say nothing: read.
            (None, None, _) => !ro.is_empty() && !rn.is_empty(),
            _ => false,
        };
        if !equal_without_reading {
            let len = usize::try_from(span).unwrap_or(usize::MAX);
            a.resize(len, 0);
            b.resize(len, 0);
            let na = old.read_file(node, at, &mut a)?;
            let nb = new.read_file(node, at, &mut b)?;
            if na != nb || a.get(..na) != b.get(..nb) {
                return Ok(true);
            }
        }
        at = at.saturating_add(span);
    }
    Ok(false)
}

/// The diff of two views through the trait: both trees walked, every
/// file in both compared (content by runs, then bytes).
///
/// # Errors
/// `Cancelled`.
pub fn diff_trees(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    held: Option<Held>,
    progress: &dyn Progress,
) -> Result<Diff, DiffError> {
    let mut d = Diff::default();
    d.stats.trees_compared = true;
    let mut pair = Pair::new(old, new);
    let (mut on, mut nn) = (Vec::new(), Vec::new());
    walk(old, old.root(), b"/", &mut on, &mut d.notes);
    walk(new, new.root(), b"/", &mut nn, &mut d.notes);
    for (fs, names) in [(old, &mut on), (new, &mut nn)] {
        names.push(Name {
            path: b"/".to_vec(),
            ino: fs.root(),
            dir: true,
            file_type: FileType::Directory.name(),
        });
    }
    d.stats.directories_listed = u64_of(on.iter().chain(&nn).filter(|n| n.dir).count());
    let omap: HashMap<&[u8], u64> = on.iter().map(|n| (n.path.as_slice(), n.ino)).collect();
    let nmap: HashMap<&[u8], u64> = nn.iter().map(|n| (n.path.as_slice(), n.ino)).collect();
    let mut nodes: Vec<u64> = on.iter().chain(&nn).map(|n| n.ino).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let keep: HashSet<u64> = nodes
        .iter()
        .copied()
        .filter(|&n| pair.persists(n))
        .collect();
    let removed: Vec<Name> = on
        .iter()
        .filter(|n| nmap.get(n.path.as_slice()) != Some(&n.ino) || !keep.contains(&n.ino))
        .cloned()
        .collect();
    let added: Vec<Name> = nn
        .iter()
        .filter(|n| omap.get(n.path.as_slice()) != Some(&n.ino) || !keep.contains(&n.ino))
        .cloned()
        .collect();
    let in_old: HashSet<u64> = on.iter().map(|n| n.ino).collect();
    let candidates: Vec<u64> = nodes
        .iter()
        .copied()
        .filter(|n| keep.contains(n) && in_old.contains(n))
        .collect();
    let total = u64_of(candidates.len());
    let mut modified = BTreeMap::new();
    for (k, &node) in (0u64..).zip(&candidates) {
        if !progress.step("comparing files", k, total) {
            return Err(DiffError::Cancelled);
        }
        d.stats.inodes_compared = d.stats.inodes_compared.saturating_add(1);
        let delta = match pair.get(node) {
            (Some(o), Some(n)) => {
                let (o, n) = (o.clone(), n.clone());
                compare(old, &o, new, &n, held)
            }
            _ => Ok(Delta::default()),
        };
        match delta {
            Ok(delta) if !delta.is_empty() => {
                let names = nn.iter().filter(|n| n.ino == node).cloned().collect();
                modified.insert(node, (delta, names));
            }
            Ok(_) => {}
            Err(e) => d.notes.push(format!("{}: {e}", new.node_name(node))),
        }
    }
    d.changes = assemble(&mut pair, removed, added, modified);
    Ok(d)
}
