//! Assembling the changes a diff found, whichever diff found them (the
//! quick one from the overlays' clusters, the full one from two walks):
//! names paired into added, modified, deleted and moved files, hard
//! links, directories moved with what they hold.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::BTreeMap;

use super::compare::Delta;
use super::moves::{self, DirMoves};
use super::pairing;
use super::{Change, Kind, Name};

/// What assembling changes needs from the two views, whichever diff
/// found them.
pub(super) trait PairView {
    /// Whether `node` is the same file in both views.
    fn persists(&mut self, node: u64) -> bool;
    /// Its type as of the newer view (`unknown` when unreadable).
    fn new_type(&mut self, node: u64) -> &'static str;
    /// The older and the newer view (paths are looked up in them).
    fn views(&self) -> (&dyn crate::fs::Filesystem, &dyn crate::fs::Filesystem);
}

pub(super) fn change(kind: Kind, n: &Name, from: Option<&Name>, delta: Delta) -> Change {
    Change {
        change: kind,
        path: crate::escape::printable_bytes(&n.path),
        from: from.map(|f| crate::escape::printable_bytes(&f.path)),
        inode: n.ino,
        file_type: n.file_type,
        delta,
        raw_path: n.path.clone(),
        raw_from: from.map(|f| f.path.clone()),
        replaced: false,
        old_inode: None,
        hard_link: false,
        link_path: None,
        moved_with: None,
        raw_other_names: Vec::new(),
    }
}

/// Marks `c` as a hard link added or removed, naming one of the file's
/// names as of the newer layer other than `c`'s own.
fn hard_link(mut c: Change, names: &[Name], new: &[Name]) -> Change {
    c.hard_link = true;
    c.link_path = names
        .iter()
        .chain(new)
        .find(|n| n.path != c.raw_path)
        .map(|n| crate::escape::printable_bytes(&n.path));
    c
}

/// Turns names that went away, names that appeared and modified inodes
/// into changes: the same file losing one name and gaining another was
/// moved; a name of a file that did not persist was deleted or added.
pub(super) fn assemble(
    pair: &mut dyn PairView,
    removed: Vec<Name>,
    added: Vec<Name>,
    modified: BTreeMap<u64, (Delta, Vec<Name>)>,
) -> Vec<Change> {
    let mut out = assemble_names(pair, removed, added, modified);
    let dir_moves = dir_moves_of(&out);
    after_moves(pair, &mut out, &dir_moves);
    out.sort_by(|a, b| a.raw_path.cmp(&b.raw_path).then(a.change.cmp(&b.change)));
    out
}

/// [`assemble`] before the moved directories are applied ([`after_moves`])
/// and the changes sorted.
pub(super) fn assemble_names(
    pair: &mut dyn PairView,
    removed: Vec<Name>,
    added: Vec<Name>,
    mut modified: BTreeMap<u64, (Delta, Vec<Name>)>,
) -> Vec<Change> {
    // A name found twice (a directory listed and also walked as part of
    // a new tree) is one name.
    let (mut removed, mut added) = (removed, added);
    for names in [&mut removed, &mut added] {
        names.sort_by(|a, b| a.path.cmp(&b.path).then(a.ino.cmp(&b.ino)));
        names.dedup_by(|a, b| a.path == b.path && a.ino == b.ino);
    }
    let mut by_ino: BTreeMap<u64, (Vec<Name>, Vec<Name>)> = BTreeMap::new();
    for n in removed {
        by_ino.entry(n.ino).or_default().0.push(n);
    }
    for n in added {
        by_ino.entry(n.ino).or_default().1.push(n);
    }
    // Directories that moved (one name lost, one gained, the same
    // directory): they carry the names under them (see [`pairing`]).
    let mut moved_dirs = Vec::new();
    for (&ino, (gone, new)) in &by_ino {
        if let ([g], [n]) = (gone.as_slice(), new.as_slice()) {
            if g.dir && n.dir && pair.persists(ino) {
                moved_dirs.push((g.path.clone(), n.path.clone(), ino));
            }
        }
    }
    let moved_dirs = DirMoves::new(moved_dirs);
    let mut out = Vec::new();
    for (ino, (mut gone, mut new)) in by_ino {
        gone.sort_by(|a, b| a.path.cmp(&b.path));
        new.sort_by(|a, b| a.path.cmp(&b.path));
        if pair.persists(ino) {
            let (mut delta, names) = modified.remove(&ino).unwrap_or_default();
            if !moved_dirs.is_empty() {
                // A name that only moved with its directory is one the
                // quick diff need not have listed as lost (its directory
                // entry did not change): found here, it pairs with it.
                let old = pair.views().0;
                for n in &new {
                    let Some(was) = pairing::carried_back(&n.path, &moved_dirs) else {
                        continue;
                    };
                    if !gone.iter().any(|g| g.path == was) && ino_at(old, &was) == Some(ino) {
                        let mut g = n.clone();
                        g.path = was;
                        gone.push(g);
                    }
                }
                gone.sort_by(|a, b| a.path.cmp(&b.path));
            }
            let pairs = pairing::pair_names(&gone, &new, &moved_dirs);
            for &(g, n) in &pairs {
                if let (Some(g), Some(n)) = (gone.get(g), new.get(n)) {
                    out.push(change(Kind::Moved, n, Some(g), std::mem::take(&mut delta)));
                }
            }
            // Names the file gained or lost beyond those: hard links.
            for (i, n) in new.iter().enumerate() {
                if !pairs.iter().any(|&(_, p)| p == i) {
                    let c = change(Kind::Added, n, None, Delta::default());
                    out.push(hard_link(c, &names, &new));
                }
            }
            for (i, g) in gone.iter().enumerate() {
                if !pairs.iter().any(|&(p, _)| p == i) {
                    let c = change(Kind::Deleted, g, None, Delta::default());
                    out.push(hard_link(c, &names, &new));
                }
            }
            if !delta.is_empty() {
                // Names only removed or only added, and the file changed
                // too: shown at a name it had before, if it kept one.
                let kept = names
                    .into_iter()
                    .find(|k| !new.iter().any(|n| n.path == k.path));
                match (kept, new.first()) {
                    (Some(k), _) => out.push(change(Kind::Modified, &k, None, delta)),
                    (None, Some(n)) => out.push(change(Kind::Modified, n, None, delta)),
                    (None, None) => {
                        modified.insert(ino, (delta, Vec::new()));
                    }
                }
            }
        } else {
            out.extend(
                gone.iter()
                    .map(|g| change(Kind::Deleted, g, None, Delta::default())),
            );
            out.extend(
                new.iter()
                    .map(|n| change(Kind::Added, n, None, Delta::default())),
            );
        }
    }
    in_place(pair, modified, &mut out);
    out
}

/// Changes of files changed in place (`modified`: their deltas and their
/// names as of the newer layer), pushed to `out`.
pub(super) fn in_place(
    pair: &mut dyn PairView,
    modified: BTreeMap<u64, (Delta, Vec<Name>)>,
    out: &mut Vec<Change>,
) {
    for (ino, (delta, mut names)) in modified {
        names.sort_by(|a, b| a.path.cmp(&b.path));
        let fallback;
        let n = match names.first() {
            Some(n) => n,
            None => {
                let t = pair.new_type(ino);
                fallback = Name {
                    path: format!("<{ino}>").into_bytes(),
                    ino,
                    dir: false,
                    file_type: t,
                };
                &fallback
            }
        };
        let mut c = change(Kind::Modified, n, None, delta);
        c.raw_other_names = names
            .iter()
            .filter(|o| o.path != n.path)
            .map(|o| o.path.clone())
            .collect();
        out.push(c);
    }
}

/// The directories `out` moves (old path, new path, inode), outermost
/// first: the last of a path's moves is its innermost.
pub(super) fn dir_moves_of(out: &[Change]) -> DirMoves {
    // A moved directory moves what is under it: only the directory is a
    // change (a full walk sees every name under it move).
    let mut dir_moves: Vec<moves::DirMove> = out
        .iter()
        .filter(|c| c.change == Kind::Moved && c.file_type == "directory")
        .filter_map(|c| Some((c.raw_from.clone()?, c.raw_path.clone(), c.inode)))
        .collect();
    dir_moves.sort_by_key(|(_, t, _)| t.len());
    DirMoves::new(dir_moves)
}

/// Files under the moved directories `dir_moves` (from
/// [`dir_moves_of`]): changed in place there, they moved too; names that
/// only moved with their directory are not changes.
pub(super) fn after_moves(pair: &mut dyn PairView, out: &mut Vec<Change>, dir_moves: &DirMoves) {
    if !dir_moves.is_empty() {
        let (old, new) = pair.views();
        // A file changed in place under a moved directory: the full walk
        // sees it move (with its change), the quick one only the change.
        for c in out.iter_mut().filter(|c| c.change == Kind::Modified) {
            let from = dir_moves
                .holding_new(&c.raw_path)
                .rev()
                .find_map(|(f, t, _)| {
                    let mut p = f.clone();
                    p.extend_from_slice(under(&c.raw_path, t)?);
                    (ino_at(old, &p) == Some(c.inode)).then_some(p)
                });
            if let Some(from) = from {
                c.change = Kind::Moved;
                c.from = Some(crate::escape::printable_bytes(&from));
                c.raw_from = Some(from);
            }
        }
        out.retain(|c| {
            if carried_along(c, dir_moves, old, new) {
                return false;
            }
            if c.change != Kind::Moved || !c.delta.is_empty() {
                return true;
            }
            let Some(from) = c.raw_from.as_ref() else {
                return true;
            };
            !dir_moves.holding_old(from).any(|(df, dt, _)| {
                matches!((under(from, df), under(&c.raw_path, dt)), (Some(a), Some(b)) if a == b)
            })
        });
    }
}

/// An added or deleted name that only moved with its directory: the
/// quick diff walks a new directory's tree and finds there names of files
/// whose old names, under the moved directory's old path, it never
/// listed: the same file at the same place under the moved directory
/// only moved with it.
pub(super) fn carried_along(
    c: &Change,
    dir_moves: &DirMoves,
    old: &dyn crate::fs::Filesystem,
    new: &dyn crate::fs::Filesystem,
) -> bool {
    let (here, there): (Vec<(&Vec<u8>, &Vec<u8>)>, _) = match c.change {
        Kind::Added => (
            dir_moves
                .holding_new(&c.raw_path)
                .map(|(f, t, _)| (t, f))
                .collect(),
            old,
        ),
        Kind::Deleted => (
            dir_moves
                .holding_old(&c.raw_path)
                .map(|(f, t, _)| (f, t))
                .collect(),
            new,
        ),
        _ => return false,
    };
    here.iter().any(|(at, other)| {
        under(&c.raw_path, at).is_some_and(|rel| {
            let mut p = (*other).clone();
            p.extend_from_slice(rel);
            ino_at(there, &p) == Some(c.inode)
        })
    })
}

/// The part of `path` below directory `dir`, from its `/` on (`None`
/// when `path` is not strictly below `dir`).
pub(super) fn under<'p>(path: &'p [u8], dir: &[u8]) -> Option<&'p [u8]> {
    let rest = path.strip_prefix(dir)?;
    if dir == b"/" {
        return (!rest.is_empty()).then_some(path);
    }
    (rest.first() == Some(&b'/') && rest.len() > 1).then_some(rest)
}

/// The inode at `path` in `fs`, if the path resolves.
fn ino_at(fs: &dyn crate::fs::Filesystem, path: &[u8]) -> Option<u64> {
    fs.lookup(path).ok()
}
