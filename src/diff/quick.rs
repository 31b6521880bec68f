//! The quick diff, handed over in parts so that memory need not follow
//! the number of changes (issue 19): files changed in place (their names
//! the same in both views: what a `chmod -R`, a package upgrade writing
//! in place or a log rotation mostly makes) are compared, named and
//! handed over a batch of inodes at a time; the names of files created or
//! deleted (a mass create, a tree removed) go through temporary files and
//! are handed over a batch at a time too. What pairs names across the
//! tree stays whole: the names of files that persist which directories
//! lost or gained (moves, hard links), the changed directories, the list
//! of changed inode numbers and the fingerprints of the created and
//! deleted paths (8 bytes each).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::bytes::u64_of;
use crate::fs::ext::superblock::sb;
use crate::fs::ext::Ext4;

use super::compare::{compare, same_file, Delta};
use super::index::{self, Paths};
use super::layout::{Bitmaps, Layout};
use super::name_spill::NameSpill;
use super::pair::{Brief, Pair};
use super::{
    after_moves, assemble_names, blocks, dir_moves_of, explain, explain_reserved, in_place, join,
    near_groups, walk_each, Change, Diff, DiffError, Kind, Name, Progress, Sorted, MAX_NAMES,
};

/// What [`diff_each`] hands over.
pub enum Part {
    /// The changes of the files whose names changed (added, deleted,
    /// moved; hard links made or removed) and of changed directories:
    /// all of them, once, before any [`Part::InPlace`]. Sorted by path
    /// and kind.
    Names(Vec<Change>),
    /// Names of files new in the newer view (added paths that pair with
    /// no other change: not a move, a hard link or a replaced path): one
    /// batch, after [`Part::Names`] and before any [`Part::InPlace`], in
    /// no order. A name found twice (listed with its directory and walked
    /// with a new tree) may come twice.
    Added(Vec<Change>),
    /// Names of files gone from the older view (deleted paths that pair
    /// with no other change), as [`Part::Added`]: one batch, after the
    /// added names and before any [`Part::InPlace`], in no order, maybe
    /// twice.
    Deleted(Vec<Change>),
    /// Files changed in place: one batch, in inode order.
    InPlace(Vec<Change>),
}

/// Names of new (or deleted) files kept in memory, per inode of a batch,
/// before they go to a temporary file ([`NameSpill`]).
const NAMES_PER_BATCH: usize = 16;

/// The quick diff ([`super::diff`]), handing the changes to `each` as
/// they are made: [`Part::Names`] once, then the names of new files and
/// of deleted files `batch` at a time ([`Part::Added`], [`Part::Deleted`];
/// up to `batch` × 16 of each are kept in memory, the rest in temporary
/// files), then files changed in place `batch` inodes at a time. The
/// [`Diff`] returned has the stats and the notes, and no changes.
///
/// # Errors
/// `Cancelled`; read errors of the changed blocks; what `each` returns.
pub fn diff_each(
    old: &Ext4,
    new: &Ext4,
    held: &[(u64, u64)],
    progress: &dyn Progress,
    batch: usize,
    each: &mut dyn FnMut(Part) -> Result<(), DiffError>,
) -> Result<Diff, DiffError> {
    let mut d = Diff::default();
    let changed = blocks::changed_blocks(old, new, held, progress)?;
    d.stats.held_bytes = changed.held_bytes;
    d.stats.changed_blocks = changed.blocks.count();
    d.stats.copied_up_blocks = changed.same;
    if changed.blocks.is_empty() {
        return Ok(d);
    }
    let mut layout = Layout::lazy(new);
    // Changed blocks -> inode slots, filesystem metadata, the rest.
    let mut sorted = Sorted::default();
    sorted.add(old, new, &mut layout, changed.blocks.blocks())?;
    // Blocks of the changed inodes (as of either layer) are explained.
    let first_ino = new.superblock().get(sb!("s_first_ino")).max(11);
    let mut pair = Pair::with_changed(old, new, &changed.blocks);
    let mut loose = std::mem::take(&mut sorted.loose);
    for &ino in &sorted.inodes {
        explain(&mut pair, ino, &mut loose);
    }
    // The resize and journal inodes: their blocks are filesystem
    // metadata, not file data; changed ones are counted as such (the
    // owner search below skips these inodes).
    for (ino, what) in [(7, "resize inode"), (8, "journal")] {
        let n = explain_reserved(&mut pair, ino, &mut loose);
        if n > 0 {
            let m = sorted.meta.entry(what).or_default();
            *m = m.saturating_add(n);
        }
    }
    // Blocks free in both views belong to nothing.
    let mut free = Vec::new();
    let (mut old_bitmaps, mut new_bitmaps) = (Bitmaps::new(old), Bitmaps::new(new));
    for blk in loose.blocks() {
        if old_bitmaps.free(blk)? && new_bitmaps.free(blk)? {
            free.push(blk);
        }
    }
    for blk in &free {
        loose.remove(*blk, 1);
    }
    let mut owned_by_none = None;
    if !loose.is_empty() {
        let mut rest = loose;
        // Owners are searched first where the allocator puts them: the
        // groups of the inodes that changed, and the flex groups of the
        // blocks (a file's blocks go to its inode's flex group).
        let near = near_groups(new, &sorted.inodes, &rest);
        let mut found = index::owners_in(new, &mut rest, near.iter().copied())?;
        if !rest.is_empty() {
            found.extend(index::owners_in(old, &mut rest, near.iter().copied())?);
        }
        let mut searched = !found.is_empty();
        sorted.inodes.extend(found);
        if !rest.is_empty() && !layout.is_whole() {
            // Blocks no file near them owns may be the tables or bitmaps
            // of a group whose metadata lies far from it: every
            // descriptor is read, and they are sorted again.
            layout.read_all()?;
            let blocks: Vec<u64> = rest.blocks().collect();
            let mut again = Sorted::default();
            again.add(old, new, &mut layout, blocks.into_iter())?;
            rest = std::mem::take(&mut again.loose);
            for &ino in &again.inodes {
                explain(&mut pair, ino, &mut rest);
            }
            sorted.inodes.extend(again.inodes);
            for (what, n) in again.meta {
                let m = sorted.meta.entry(what).or_default();
                *m = m.saturating_add(n);
            }
        }
        if !rest.is_empty() {
            searched = true;
            let all = new.superblock().group_count();
            let done: HashSet<u64> = near.iter().copied().collect();
            let far = || (0..all).filter(|g| !done.contains(g));
            sorted
                .inodes
                .extend(index::owners_in(new, &mut rest, far())?);
            if !rest.is_empty() {
                sorted
                    .inodes
                    .extend(index::owners_in(old, &mut rest, far())?);
            }
        }
        d.stats.inode_tables_searched = searched;
        if !rest.is_empty() {
            owned_by_none = Some(format!(
                "{} changed block(s) in use but owned by no file (from block {})",
                rest.count(),
                rest.runs().first().map_or(0, |r| r.0)
            ));
        }
    }
    for (what, n) in &sorted.meta {
        d.notes.push(format!("{what}: {n} block(s) changed"));
    }
    d.notes.extend(owned_by_none);
    let mut inodes = sorted.inodes;
    inodes.sort_unstable();
    inodes.dedup();
    let counted = |ino: u64| ino >= first_ino || ino == 2;
    // Notes of the inodes compared, in inode order whichever pass wrote
    // them (as one pass over the inodes wrote them).
    let mut inode_notes: Vec<(u64, String)> = Vec::new();
    // Inodes -> the directories whose entries to compare (and their
    // deltas).
    let mut dirs = Vec::new();
    let mut modified: BTreeMap<u64, Delta> = BTreeMap::new();
    let total = u64_of(inodes.len());
    for (k, &ino) in (0u64..).zip(&inodes) {
        if !progress.step("comparing inodes", k, total) {
            return Err(DiffError::Cancelled);
        }
        if !counted(ino) {
            inode_notes.push((ino, format!("reserved inode {ino} changed")));
            continue;
        }
        let (Some(o), Some(n)) = pair.read(ino) else {
            continue;
        };
        if !same_file(&o, &n) {
            continue;
        }
        d.stats.inodes_compared = d.stats.inodes_compared.saturating_add(1);
        if n.is_dir() {
            dirs.push(ino);
            match compare(old, &o, new, &n, Some(&changed.blocks)) {
                Ok(delta) if !delta.is_empty() => {
                    modified.insert(ino, delta);
                }
                Ok(_) => {}
                Err(e) => inode_notes.push((ino, format!("inode {ino}: {e}"))),
            }
        }
    }
    let mut later = Vec::new();
    // Directories -> names removed and added.
    let (mut opaths, mut npaths) = (Paths::new(old), Paths::new(new));
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    // Names of files new in the newer view and of files gone from the
    // older one, and the directories among them, whose trees are walked
    // below.
    let keep = batch.max(1).saturating_mul(NAMES_PER_BATCH);
    let (mut plain, mut plain_gone) = (NameSpill::new(keep), NameSpill::new(keep));
    let mut new_dirs: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut gone_dirs: Vec<(u64, Vec<u8>)> = Vec::new();
    // Their inodes, as runs (a mass create's are mostly consecutive).
    let mut plain_inos: Vec<(u64, u64)> = Vec::new();
    for &dir in &dirs {
        let listed = |fs: &Ext4, notes: &mut Vec<String>| match index::entries(fs, dir) {
            Ok((entries, problems)) => {
                notes.extend(problems.iter().map(|p| format!("directory {dir}: {p}")));
                entries
            }
            Err(e) => {
                notes.push(format!("directory {dir} cannot be listed: {e}"));
                BTreeMap::new()
            }
        };
        let (eo, en) = (listed(old, &mut later), listed(new, &mut later));
        d.stats.directories_listed = d.stats.directories_listed.saturating_add(2);
        let from = removed.len();
        // Names in one listing and not (for the same file) in the other.
        for (mine, other, paths, out, old_side) in [
            (&eo, &en, &mut opaths, &mut removed, true),
            (&en, &eo, &mut npaths, &mut added, false),
        ] {
            for (name, &ino) in mine {
                if other.get(name) != Some(&ino) || !pair.persists(ino) {
                    let base = paths
                        .dir_path(dir)
                        .unwrap_or_else(|| format!("<{dir}>").into_bytes());
                    let (o, n) = pair.get(ino);
                    let inode = if old_side { o } else { n };
                    out.push(Name::of(join(&base, name), ino, inode));
                }
            }
        }
        // The names of files that came or went go their own way (the
        // lists of names removed and added hold those of files that
        // persist: moves and hard links).
        for n in removed.split_off(from) {
            if pair.persists(n.ino) {
                removed.push(n);
            } else {
                if n.dir {
                    gone_dirs.push((n.ino, n.path.clone()));
                }
                add_run(&mut plain_inos, n.ino);
                plain_gone.push(n)?;
            }
        }
        let mut kept = Vec::new();
        for n in added.drain(..) {
            if pair.persists(n.ino) {
                kept.push(n);
            } else {
                if n.dir {
                    new_dirs.push((n.ino, n.path.clone()));
                }
                add_run(&mut plain_inos, n.ino);
                plain.push(n)?;
            }
        }
        added = kept;
    }
    // A directory that came or went brings or takes its whole tree (the
    // names gone share one bound, as one walk's).
    let mut gone_left = MAX_NAMES;
    for (ino, path) in std::mem::take(&mut gone_dirs) {
        walk_each(old, ino, &path, gone_left, &mut later, &mut |n| {
            gone_left = gone_left.saturating_sub(1);
            if pair.persists(n.ino) {
                removed.push(n);
            } else {
                add_run(&mut plain_inos, n.ino);
                plain_gone.push(n)?;
            }
            Ok::<(), DiffError>(())
        })?;
    }
    for (ino, path) in std::mem::take(&mut new_dirs) {
        walk_each(new, ino, &path, MAX_NAMES, &mut later, &mut |n| {
            if pair.persists(n.ino) {
                added.push(n);
            } else {
                add_run(&mut plain_inos, n.ino);
                plain.push(n)?;
            }
            Ok::<(), DiffError>(())
        })?;
    }
    let mut plain_inos = blocks::BlockSet::from_runs(plain_inos);
    // A new file's name at a path that lost another file's name is one
    // replaced path ([`super::paths`]): both names join those that pair.
    // The names that came and went are matched by their paths'
    // fingerprints (8 bytes a name, not the names; a fingerprint shared
    // by chance only brings a name back to be paired, which changes
    // nothing), the names that persist by their paths.
    let mut taken: Vec<u64> = Vec::new();
    let lost_any = !removed.is_empty() || !plain_gone.is_empty();
    if !plain.is_empty() && lost_any {
        let back;
        (taken, back) = pull_back(&mut plain, &removed, &mut plain_gone)?;
        for n in &back {
            plain_inos.remove(n.ino, 1);
        }
        added.extend(back);
    }
    let mut taken_gone: Vec<u64> = Vec::new();
    let gained_any = !added.is_empty() || !plain.is_empty();
    if !plain_gone.is_empty() && gained_any {
        let back;
        (taken_gone, back) = pull_back(&mut plain_gone, &added, &mut plain)?;
        removed.extend(back);
    }
    // Files whose names changed are assembled with the directories.
    let renamed: BTreeSet<u64> = removed.iter().chain(&added).map(|n| n.ino).collect();
    for &ino in &renamed {
        if counted(ino) && inodes.binary_search(&ino).is_ok() {
            in_place_delta(
                &mut pair,
                ino,
                &changed.blocks,
                &mut modified,
                &mut inode_notes,
            );
        }
    }
    let names = with_names(&mut pair, &mut npaths, modified)?;
    let mut first = assemble_names(&mut pair, removed, added, names);
    let dir_moves = dir_moves_of(&first);
    after_moves(&mut pair, &mut first, &dir_moves);
    first.sort_by(|a, b| a.raw_path.cmp(&b.raw_path).then(a.change.cmp(&b.change)));
    each(Part::Names(first))?;
    // The names of files that came and went, a batch at a time.
    for (spill, skip, kind) in [
        (&mut plain, &taken, Kind::Added),
        (&mut plain_gone, &taken_gone, Kind::Deleted),
    ] {
        let mut changes = Vec::new();
        let mut skip = skip.iter().peekable();
        let total = spill.len();
        let (what, part): (&str, fn(Vec<Change>) -> Part) = if kind == Kind::Added {
            ("naming new files", Part::Added)
        } else {
            ("naming deleted files", Part::Deleted)
        };
        spill.for_each(&mut |k, n| {
            if skip.next_if_eq(&&k).is_some() {
                return Ok(());
            }
            let c = super::change(kind, &n, None, Delta::default());
            if !super::carried_along(&c, &dir_moves, old, new) {
                changes.push(c);
            }
            if changes.len() >= batch.max(1) {
                if !progress.step(what, k, total) {
                    return Err(DiffError::Cancelled);
                }
                each(part(std::mem::take(&mut changes)))?;
            }
            Ok(())
        })?;
        if !changes.is_empty() {
            each(part(changes))?;
        }
    }
    // The other changed files, a batch at a time.
    for part in inodes.chunks(batch.max(1)) {
        let mut modified = BTreeMap::new();
        for &ino in part {
            if counted(ino) && !renamed.contains(&ino) && !plain_inos.contains(ino) {
                in_place_delta(
                    &mut pair,
                    ino,
                    &changed.blocks,
                    &mut modified,
                    &mut inode_notes,
                );
            }
        }
        if modified.is_empty() {
            continue;
        }
        let names = with_names(&mut pair, &mut npaths, modified)?;
        let mut changes = Vec::new();
        in_place(&mut pair, names, &mut changes);
        after_moves(&mut pair, &mut changes, &dir_moves);
        each(Part::InPlace(changes))?;
    }
    d.stats.directories_listed = d
        .stats
        .directories_listed
        .saturating_add(opaths.listed)
        .saturating_add(npaths.listed);
    inode_notes.sort_by_key(|(ino, _)| *ino);
    d.notes.extend(inode_notes.into_iter().map(|(_, n)| n));
    d.notes.extend(later);
    d.notes.dedup();
    Ok(d)
}

/// A path's fingerprint: where two names' paths may be equal.
fn fingerprint(path: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// The names of `spill` at a path of `kept` (by path) or of `other`
/// (by fingerprint): their places in `spill` and the names, which go
/// back to be paired (a replaced path).
///
/// # Errors
/// Reading the temporary files.
fn pull_back(
    spill: &mut NameSpill,
    kept: &[Name],
    other: &mut NameSpill,
) -> Result<(Vec<u64>, Vec<Name>), DiffError> {
    let mut prints = HashSet::new();
    other.for_each(&mut |_, n| {
        prints.insert(fingerprint(&n.path));
        Ok::<(), DiffError>(())
    })?;
    let exact: HashSet<&[u8]> = kept.iter().map(|n| n.path.as_slice()).collect();
    let (mut taken, mut back) = (Vec::new(), Vec::new());
    spill.for_each(&mut |k, n| {
        if exact.contains(n.path.as_slice()) || prints.contains(&fingerprint(&n.path)) {
            taken.push(k);
            back.push(n);
        }
        Ok::<(), DiffError>(())
    })?;
    Ok((taken, back))
}

/// Adds `ino` to `runs`, extending the last run when it follows it.
fn add_run(runs: &mut Vec<(u64, u64)>, ino: u64) {
    match runs.last_mut() {
        Some((s, l)) if s.saturating_add(*l) == ino => *l = l.saturating_add(1),
        _ => runs.push((ino, 1)),
    }
}

/// How file `ino` changed in place, into `modified` (nothing when it did
/// not, or when it became another file or is a directory: the names and
/// directories say those); a file that cannot be compared gets a note.
fn in_place_delta(
    pair: &mut Pair,
    ino: u64,
    changed: &blocks::BlockSet,
    modified: &mut BTreeMap<u64, Delta>,
    notes: &mut Vec<(u64, String)>,
) {
    let (Some(o), Some(n)) = pair.read(ino) else {
        return;
    };
    if !same_file(&o, &n) || n.is_dir() {
        return;
    }
    match compare(pair.old, &o, pair.new, &n, Some(changed)) {
        Ok(delta) if !delta.is_empty() => {
            modified.insert(ino, delta);
        }
        Ok(_) => {}
        Err(e) => notes.push((ino, format!("inode {ino}: {e}"))),
    }
}

/// Modified files -> their names as of the newer layer.
fn with_names(
    pair: &mut Pair,
    npaths: &mut Paths,
    modified: BTreeMap<u64, Delta>,
) -> Result<BTreeMap<u64, (Delta, Vec<Name>)>, DiffError> {
    let mut targets = HashMap::new();
    let mut with_names: BTreeMap<u64, (Delta, Vec<Name>)> = BTreeMap::new();
    for (ino, delta) in modified {
        let n = pair.get(ino).1;
        let mut names = Vec::new();
        if n.is_some_and(Brief::is_dir) {
            if let Some(p) = npaths.dir_path(ino) {
                names.push(Name::of(p, ino, n));
            }
        } else if let Some(b) = n {
            targets.insert(ino, b.links);
        }
        with_names.insert(ino, (delta, names));
    }
    if !targets.is_empty() {
        let found = npaths.names(&targets)?;
        for (ino, paths) in found {
            if let Some((_, names)) = with_names.get_mut(&ino) {
                let n = pair.get(ino).1;
                names.extend(paths.into_iter().map(|path| Name::of(path, ino, n)));
            }
        }
    }
    Ok(with_names)
}
