//! Layer diff: the files that overlays added, modified, deleted or moved,
//! found from the clusters they hold rather than by walking two trees.
//!
//! The quick diff ([`diff`]) goes from the overlays' clusters to changed
//! filesystem blocks ([`blocks`]), from blocks to the structures that own
//! them (inode table slots; directory, map and data blocks, through
//! [`index`]), from those to inodes and from inodes to names, and compares
//! each inode as of both layers ([`compare`]). What it reads follows what
//! the overlays hold. [`diff_full`] walks and compares both whole trees:
//! the slow reference the quick one is tested against. Both end in the
//! same assembly, so they report in the same terms.
// Disk data must never panic or wrap (issue 11): these lints are denied
// here as in src/fs; an `allow` names the bound that makes it safe.
// Tests may index their fixtures.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::block::{BlockError, BlockSource};
use crate::bytes::{u64_of, us};
use crate::fs::ext::{Ext4, FsError};

mod assemble;
pub mod blame;
pub mod blame_tree;
pub mod blocks;
pub mod compare;
pub mod dirty;
pub mod index;
mod layout;
mod moves;
mod name_spill;
mod pair;
mod pairing;
pub mod paths;
pub mod quick;
pub mod spans;
pub mod spill;
pub mod tree;

use assemble::{
    after_moves, assemble, assemble_names, carried_along, change, dir_moves_of, in_place, under,
    PairView,
};
use blocks::BlockSet;
use compare::{in_use, Delta};
use layout::Layout;
use pair::{Brief, Pair};

/// Why a diff stopped.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("cancelled")]
    Cancelled,
    /// The temporary file a large diff sorts its changes in.
    #[error("temporary file: {0}")]
    Spill(#[from] std::io::Error),
}

/// Told how long work goes; answers whether to go on.
pub trait Progress: Sync {
    /// `done` of `total` units of `phase`; false cancels.
    fn step(&self, phase: &str, done: u64, total: u64) -> bool;
}

/// No progress shown, never cancelled.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str, _: u64, _: u64) -> bool {
        true
    }
}

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Added,
    Deleted,
    Modified,
    Moved,
}

impl Kind {
    /// One letter, as `git diff --name-status` has them.
    pub fn letter(self) -> char {
        match self {
            Kind::Added => 'A',
            Kind::Deleted => 'D',
            Kind::Modified => 'M',
            Kind::Moved => 'R',
        }
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub change: Kind,
    /// The path (as of the newer layer; as of the older for deletions),
    /// escaped for terminals.
    pub path: String,
    /// For moves: the old path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub inode: u64,
    /// `regular`, `directory`, `symlink`, …
    #[serde(rename = "type")]
    pub file_type: &'static str,
    /// For modified and moved files: what differs.
    #[serde(flatten)]
    pub delta: Delta,
    /// The path's raw bytes (names need not be UTF-8).
    #[serde(skip)]
    pub raw_path: Vec<u8>,
    /// The old path's raw bytes, for moves.
    #[serde(skip)]
    pub raw_from: Option<Vec<u8>>,
    /// In path terms ([`paths::path_level`]): the path now holds another
    /// file than before (a new inode, as a rename over it or a delete and
    /// create makes); `old_inode` is the one it replaced, and `delta`
    /// compares the two.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_inode: Option<u64>,
    /// An added or deleted name of a file that has other names before and
    /// after: a hard link made or removed. `link_path` is one of the
    /// file's other names (as of the newer layer).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hard_link: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_path: Option<String>,
    /// A path that moved only because a directory above it moved: that
    /// directory's new path (listed when moves are expanded, so a person
    /// or the TUI can fold them under it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_with: Option<String>,
    /// A modified file's other names as of the newer layer (hard links):
    /// in path terms each of them is a modified path too.
    #[serde(skip)]
    pub raw_other_names: Vec<Vec<u8>>,
}

/// What a diff read, to show that it followed the overlays.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Bytes of the filesystem the overlays hold.
    pub held_bytes: u64,
    /// Blocks whose bytes differ.
    pub changed_blocks: u64,
    /// Blocks held with unchanged bytes (copy-up).
    pub copied_up_blocks: u64,
    /// Inodes compared as of both layers.
    pub inodes_compared: u64,
    /// Directories listed.
    pub directories_listed: u64,
    /// Changed blocks no inode slot explained, so the inode tables were
    /// searched for their owners.
    pub inode_tables_searched: bool,
    /// Both trees were walked and compared through the filesystem trait
    /// ([`tree::diff_trees`]: filesystems without a quick diff).
    pub trees_compared: bool,
}

/// A diff's result.
#[derive(Debug, Default, serde::Serialize)]
pub struct Diff {
    /// Sorted by path.
    pub changes: Vec<Change>,
    pub stats: Stats,
    /// Changes outside files (superblock, bitmaps, journal), blocks no
    /// file owns, and damage met on the way.
    pub notes: Vec<String>,
}

/// A name of an inode in one view.
#[derive(Clone, Debug)]
struct Name {
    path: Vec<u8>,
    ino: u64,
    dir: bool,
    file_type: &'static str,
}

impl Name {
    /// The name `path` of inode `ino`, typed from its inode's brief.
    fn of(path: Vec<u8>, ino: u64, inode: Option<Brief>) -> Name {
        Name {
            path,
            ino,
            dir: inode.is_some_and(Brief::is_dir),
            file_type: inode.map_or("unknown", |b| b.type_name),
        }
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Most names a walk collects (a damaged directory cannot grow it
/// without end).
const MAX_NAMES: usize = 50_000_000;

/// The names under directory `ino` (at `path`), depth first, each
/// directory once.
fn walk(fs: &Ext4, ino: u64, path: &[u8], out: &mut Vec<Name>, notes: &mut Vec<String>) {
    let limit = MAX_NAMES.saturating_sub(out.len());
    let _ = walk_each::<std::convert::Infallible>(fs, ino, path, limit, notes, &mut |n| {
        out.push(n);
        Ok(())
    });
}

/// [`walk`], handing each name to `each` as it is found (at most `limit`
/// of them): memory follows the directories waiting to be listed, not
/// the names.
///
/// # Errors
/// What `each` returns.
fn walk_each<E>(
    fs: &Ext4,
    ino: u64,
    path: &[u8],
    limit: usize,
    notes: &mut Vec<String>,
    each: &mut dyn FnMut(Name) -> Result<(), E>,
) -> Result<(), E> {
    let mut stack = vec![(ino, path.to_vec())];
    let mut seen = HashSet::from([ino]);
    let mut count = 0usize;
    while let Some((dir, dpath)) = stack.pop() {
        let listing = match fs.inode(dir).and_then(|i| fs.list_dir(&i)) {
            Ok(l) => l,
            Err(e) => {
                notes.push(format!("{}: {e}", crate::escape::printable_bytes(&dpath)));
                continue;
            }
        };
        for e in listing.entries {
            if e.is_dot_or_dotdot() || e.inode == 0 || count >= limit {
                continue;
            }
            let ino = u64::from(e.inode);
            let path = join(&dpath, &e.name);
            let Ok(i) = fs.inode(ino) else {
                notes.push(format!(
                    "{}: inode {ino} cannot be read",
                    crate::escape::printable_bytes(&path)
                ));
                continue;
            };
            let dir = i.is_dir();
            count = count.saturating_add(1);
            each(Name {
                path: path.clone(),
                ino,
                dir,
                file_type: i.type_name(),
            })?;
            if dir && seen.insert(ino) {
                stack.push((ino, path));
            }
        }
    }
    Ok(())
}

/// Calls `each` with every name under directory `ino` (at `path`) and its
/// node, as they are listed: a directory's entries in on-disk order, then
/// its subdirectories, each directory once (a damaged tree may loop).
/// Memory follows the directories waiting to be listed, never the number
/// of names (for `blame -R` over a directory of millions of entries).
/// Directories that cannot be listed are passed to `note`.
pub fn walk_tree(
    fs: &dyn crate::fs::Filesystem,
    ino: u64,
    path: &[u8],
    note: &mut dyn FnMut(String),
    each: &mut dyn FnMut(&[u8], u64) -> std::ops::ControlFlow<()>,
) {
    use std::ops::ControlFlow;
    let mut stack = vec![(ino, path.to_vec())];
    let mut seen = HashSet::from([ino]);
    while let Some((dir, dpath)) = stack.pop() {
        let mut subdirs = Vec::new();
        let mut problems = Vec::new();
        let mut stopped = false;
        let listed = fs.read_dir(dir, &mut problems, &mut |e| {
            if e.is_dot_or_dotdot() || e.node == 0 {
                return ControlFlow::Continue(());
            }
            let path = join(&dpath, &e.name);
            if each(&path, e.node).is_break() {
                stopped = true;
                return ControlFlow::Break(());
            }
            let is_dir = fs
                .metadata(e.node)
                .is_ok_and(|m| m.file_type == crate::fs::FileType::Directory);
            if is_dir && seen.insert(e.node) {
                subdirs.push((e.node, path));
            }
            ControlFlow::Continue(())
        });
        if let Err(e) = listed {
            note(format!("{}: {e}", crate::escape::printable_bytes(&dpath)));
        }
        for p in problems {
            note(format!("{}: {p}", crate::escape::printable_bytes(&dpath)));
        }
        if stopped {
            return;
        }
        stack.extend(subdirs);
    }
}

/// The full reference: walks both trees and compares every file that is in
/// both, reading all of its bytes.
///
/// # Errors
/// `Cancelled`; errors reading the roots.
pub fn diff_full(old: &Ext4, new: &Ext4, progress: &dyn Progress) -> Result<Diff, DiffError> {
    let mut d = Diff::default();
    let mut pair = Pair::new(old, new);
    let (mut on, mut nn) = (Vec::new(), Vec::new());
    walk(old, 2, b"/", &mut on, &mut d.notes);
    walk(new, 2, b"/", &mut nn, &mut d.notes);
    let root = |fs: &Ext4| Name {
        path: b"/".to_vec(),
        ino: 2,
        dir: true,
        file_type: fs.inode(2).map_or("directory", |i| i.type_name()),
    };
    on.push(root(old));
    nn.push(root(new));
    let omap: HashMap<&[u8], u64> = on.iter().map(|n| (n.path.as_slice(), n.ino)).collect();
    let nmap: HashMap<&[u8], u64> = nn.iter().map(|n| (n.path.as_slice(), n.ino)).collect();
    let mut inos: Vec<u64> = on.iter().chain(&nn).map(|n| n.ino).collect();
    inos.sort_unstable();
    inos.dedup();
    let mut keep = HashSet::new();
    for &i in &inos {
        if pair.persists(i) {
            keep.insert(i);
        }
    }
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
    let mut modified = BTreeMap::new();
    let in_old: HashSet<u64> = on.iter().map(|n| n.ino).collect();
    let candidates: Vec<u64> = inos
        .iter()
        .copied()
        .filter(|i| keep.contains(i) && in_old.contains(i))
        .collect();
    // The newer tree's names by inode, for the modified files' names
    // (a scan of all names per modified file was quadratic: 42 s for
    // 200,000 files touched).
    let mut by_ino: Vec<usize> = (0..nn.len()).collect();
    by_ino.sort_by_key(|&i| nn.get(i).map(|n| n.ino));
    let names_of = |ino: u64| -> Vec<Name> {
        let ino_at = |i: &usize| nn.get(*i).map(|n| n.ino);
        let start = by_ino.partition_point(|i| ino_at(i) < Some(ino));
        by_ino
            .get(start..)
            .unwrap_or_default()
            .iter()
            .map_while(|&i| nn.get(i).filter(|n| n.ino == ino))
            .cloned()
            .collect()
    };
    let total = u64_of(candidates.len());
    for (k, &ino) in (0u64..).zip(&candidates) {
        if !progress.step("comparing files", k, total) {
            return Err(DiffError::Cancelled);
        }
        d.stats.inodes_compared = d.stats.inodes_compared.saturating_add(1);
        match pair.compare(ino, None) {
            Ok(delta) if !delta.is_empty() => {
                modified.insert(ino, (delta, names_of(ino)));
            }
            Ok(_) => {}
            Err(e) => d.notes.push(format!("inode {ino}: {e}")),
        }
    }
    d.changes = assemble(&mut pair, removed, added, modified);
    Ok(d)
}

/// The quick diff: what changed between `old` and `new`, given the
/// filesystem byte ranges the overlays between them hold (see
/// [`blocks::held_ranges`]). All changes at once ([`quick::diff_each`]
/// hands them over in batches).
///
/// # Errors
/// `Cancelled`; read errors of the changed blocks.
pub fn diff(
    old: &Ext4,
    new: &Ext4,
    held: &[(u64, u64)],
    progress: &dyn Progress,
) -> Result<Diff, DiffError> {
    let mut all = Vec::new();
    let mut d = quick::diff_each(old, new, held, progress, usize::MAX, &mut |part| {
        match part {
            quick::Part::Names(c)
            | quick::Part::Added(c)
            | quick::Part::Deleted(c)
            | quick::Part::InPlace(c) => all.extend(c),
        }
        Ok(())
    })?;
    all.sort_by(|a, b| a.raw_path.cmp(&b.raw_path).then(a.change.cmp(&b.change)));
    // A name found twice (a directory listed and also walked as part of
    // a new tree) is one change.
    all.dedup();
    d.changes = all;
    Ok(d)
}

/// Blocks sorted out by what holds them.
#[derive(Default)]
struct Sorted {
    /// Inodes whose slots differ.
    inodes: Vec<u64>,
    /// Metadata blocks changed, by kind.
    meta: BTreeMap<&'static str, u64>,
    /// Blocks of files (or of nothing).
    loose: BlockSet,
}

impl Sorted {
    /// Sorts changed `blocks` (ascending): the inode slots of inode table
    /// blocks that differ, metadata, and the rest.
    fn add(
        &mut self,
        old: &Ext4,
        new: &Ext4,
        layout: &mut Layout,
        blocks: impl Iterator<Item = u64>,
    ) -> Result<(), DiffError> {
        let sb = new.superblock();
        let bs = sb.block_size;
        let isz = u64::from(sb.inode_size).max(128);
        let ipg = u64::from(sb.inodes_per_group);
        // 1 KiB to 64 KiB (the superblock's check).
        // Page-aligned: the kernel copies into them fastest.
        let (mut a, mut b) = (
            crate::block::buffer::AlignedBuf::new(us(bs)),
            crate::block::buffer::AlignedBuf::new(us(bs)),
        );
        let per_block = bs.checked_div(isz).unwrap_or(0);
        let mut near = None;
        for blk in blocks {
            let g = layout::group_of(sb, blk);
            if near != Some(g) {
                layout.near(blk)?;
                near = Some(g);
            }
            if let Some((group, first)) = layout.itable(blk) {
                // Changed blocks lie on the disk: the offset does not saturate.
                blocks::read_or_zero(old, blk.saturating_mul(bs), &mut a)?;
                new.disk().read_at(blk.saturating_mul(bs), &mut b)?;
                let slot0 = blk.saturating_sub(first).saturating_mul(per_block);
                let slots = a.chunks_exact(us(isz)).zip(b.chunks_exact(us(isz)));
                for (s, (x, y)) in (0u64..).zip(slots) {
                    let row = slot0.saturating_add(s);
                    if x != y && row < ipg {
                        self.inodes.push(
                            group
                                .saturating_mul(ipg)
                                .saturating_add(row)
                                .saturating_add(1),
                        );
                    }
                }
            } else if let Some(what) = layout.metadata(blk) {
                let n = self.meta.entry(what).or_default();
                *n = n.saturating_add(1);
            } else {
                self.loose.push(blk, 1);
            }
        }
        Ok(())
    }
}

/// Removes the blocks inode `ino` owns (as of either view) from `loose`.
/// The resize inode (7) maps the reserved descriptor blocks of group 0 as
/// indirect blocks pointing to their backups: walking that map reads
/// about a thousand blocks on a large disk, and [`Layout`] already sorts
/// every one of them as "reserved descriptor blocks" (a changed block's
/// own group is always placed), so only its double indirect block, which
/// lies elsewhere, is removed. Another map for it (extents: not what
/// mke2fs writes) is walked.
fn explain(pair: &mut Pair, ino: u64, loose: &mut BlockSet) {
    let (old, new) = (pair.old, pair.new);
    let (o, n) = pair.read(ino);
    for (fs, i) in [(old, o), (new, n)] {
        let Some(i) = i.as_ref().filter(|i| in_use(i)) else {
            continue;
        };
        if ino == 7 && i.flags & crate::fs::ext::inode::EXTENTS_FL == 0 {
            if let Some(dind) = crate::bytes::le32(&i.block, 13 * 4).filter(|&b| b != 0) {
                loose.remove(u64::from(dind), 1);
            }
            continue;
        }
        for (s, l) in index::owned_blocks(fs, i) {
            loose.remove(s, l);
        }
    }
}

/// [`explain`] for a reserved inode: how many of `loose` it owned.
fn explain_reserved(pair: &mut Pair, ino: u64, loose: &mut BlockSet) -> u64 {
    let before = loose.count();
    explain(pair, ino, loose);
    before.saturating_sub(loose.count())
}

/// The groups where the owners of `blocks` most likely are, most likely
/// first: those of the changed `inodes`, then the flex groups of the
/// blocks.
fn near_groups(fs: &Ext4, inodes: &[u64], blocks: &BlockSet) -> Vec<u64> {
    let sb = fs.superblock();
    let groups = sb.group_count();
    let ipg = u64::from(sb.inodes_per_group).max(1);
    let flex = layout::flex_size(sb);
    let mut v: Vec<u64> = inodes
        .iter()
        .map(|i| i.saturating_sub(1).checked_div(ipg).unwrap_or(0))
        .filter(|&g| g < groups)
        .collect();
    for &(s, l) in blocks.runs() {
        let last = s.saturating_add(l).saturating_sub(1);
        let (a, b) = (layout::group_of(sb, s), layout::group_of(sb, last));
        let from = a.checked_div(flex).unwrap_or(0).saturating_mul(flex);
        let to = b
            .checked_div(flex)
            .unwrap_or(0)
            .saturating_add(1)
            .saturating_mul(flex)
            .min(groups);
        v.extend(from..to);
    }
    let mut seen = HashSet::new();
    v.retain(|g| seen.insert(*g));
    v
}
