//! A diff in the words of paths. The diffs find changes per inode (what
//! `--by-inode` prints); a person asks about paths, so:
//!
//! - a path that holds a new file (a package manager's write-and-rename
//!   over it, an editor's save, a delete and create) is one `M` marked
//!   replaced, compared with the file it replaced, not an `A` and a `D`;
//! - a moved directory moves everything under it: each path under it is
//!   listed as moved too (`moved_with` names the directory, so they can be
//!   folded), unless `expand` is off; a path under it that also changed
//!   is a move with that change either way;
//! - hard links added or removed are marked in [`super::assemble`]; a
//!   modified file is listed at each of its names;
//!
//! The same pass runs after the quick diff and the full one, so they stay
//! equal line for line.
use std::collections::{BTreeMap, HashSet};

use crate::escape::printable_bytes;
use crate::fs::ext::Ext4;

use super::compare::{compare, Delta};
use super::{Change, Diff, Kind};

/// Most paths one moved directory expands to (a damaged or enormous tree
/// cannot grow the list without end).
const MAX_EXPANDED: usize = 1_000_000;

/// Rewrites `diff`'s changes in path terms (see the module doc).
pub fn path_level(diff: &mut Diff, old: &Ext4, new: &Ext4, expand: bool) {
    let changes = std::mem::take(&mut diff.changes);
    let changes = replaced(changes, old, new, &mut diff.notes);
    let changes = other_names(changes);
    let mut changes = moved_trees(changes, new, expand, &mut diff.notes);
    changes.sort_by(|a, b| a.raw_path.cmp(&b.raw_path).then(a.change.cmp(&b.change)));
    diff.changes = changes;
}

/// A path deleted and added again (a different inode now) becomes one
/// `M`, replaced, with what differs between the two files.
fn replaced(changes: Vec<Change>, old: &Ext4, new: &Ext4, notes: &mut Vec<String>) -> Vec<Change> {
    let mut by_path: BTreeMap<Vec<u8>, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        match c.change {
            Kind::Deleted => by_path.entry(c.raw_path.clone()).or_default().0.push(i),
            Kind::Added => by_path.entry(c.raw_path.clone()).or_default().1.push(i),
            _ => {}
        }
    }
    let mut merged: HashSet<usize> = HashSet::new();
    let mut out = Vec::new();
    for (_, (gone, came)) in by_path {
        let (&[d], &[a]) = (gone.as_slice(), came.as_slice()) else {
            continue;
        };
        let (Some(dc), Some(ac)) = (changes.get(d), changes.get(a)) else {
            continue;
        };
        let mut c = ac.clone();
        c.change = Kind::Modified;
        c.replaced = true;
        c.old_inode = Some(dc.inode);
        c.hard_link = false;
        c.link_path = None;
        c.delta = match (old.inode(dc.inode), new.inode(ac.inode)) {
            (Ok(o), Ok(n)) if o.mode & 0xf000 == n.mode & 0xf000 => {
                match compare(old, &o, new, &n, None) {
                    Ok(d) => d,
                    Err(e) => {
                        notes.push(format!("{}: {e}", c.path));
                        Delta {
                            content: true,
                            metadata: Vec::new(),
                        }
                    }
                }
            }
            _ => Delta {
                content: true,
                metadata: vec!["type"],
            },
        };
        merged.insert(d);
        merged.insert(a);
        out.push(c);
    }
    out.extend(
        changes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !merged.contains(i))
            .map(|(_, c)| c),
    );
    out
}

/// A modified file with several names (hard links) changed at each of
/// its paths: one `M` per name not already listed.
fn other_names(mut changes: Vec<Change>) -> Vec<Change> {
    let mut present: HashSet<Vec<u8>> = changes.iter().map(|c| c.raw_path.clone()).collect();
    let mut extra = Vec::new();
    for c in changes
        .iter()
        .filter(|c| c.change == Kind::Modified && !c.raw_other_names.is_empty())
    {
        for name in &c.raw_other_names {
            if present.insert(name.clone()) {
                let mut o = c.clone();
                o.path = printable_bytes(name);
                o.raw_path = name.clone();
                o.raw_other_names = Vec::new();
                extra.push(o);
            }
        }
    }
    changes.extend(extra);
    changes
}

/// Whether `path` is `dir` itself or below it; the part below.
fn below<'a>(path: &'a [u8], dir: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(dir)?;
    if dir == b"/" || rest.is_empty() {
        return Some(rest);
    }
    rest.strip_prefix(b"/")
}

fn join(dir: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(rel);
    p
}

/// Moved directories: the paths under each, as moves (with `expand`), and
/// changed paths under them as moves with their change.
fn moved_trees(
    mut changes: Vec<Change>,
    new: &Ext4,
    expand: bool,
    notes: &mut Vec<String>,
) -> Vec<Change> {
    // Outermost first: a directory moved inside a moved one is expanded
    // from its own move.
    let mut dirs: Vec<(Vec<u8>, Vec<u8>, u64)> = changes
        .iter()
        .filter(|c| c.change == Kind::Moved && c.file_type == "directory")
        .filter_map(|c| Some((c.raw_from.clone()?, c.raw_path.clone(), c.inode)))
        .collect();
    if dirs.is_empty() {
        return changes;
    }
    dirs.sort_by_key(|d| d.1.len());
    // Paths under a moved directory that only moved with it (the full
    // diff sees them move) are dropped; they come back below.
    changes.retain(|c| {
        if c.change != Kind::Moved || !c.delta.is_empty() || c.moved_with.is_some() {
            return true;
        }
        let Some(from) = c.raw_from.as_deref() else {
            return true;
        };
        !dirs.iter().any(|(f, t, _)| {
            matches!((below(from, f), below(&c.raw_path, t)), (Some(a), Some(b)) if !a.is_empty() && a == b)
        })
    });
    // A path that changed in place under a moved directory moved too.
    for c in changes
        .iter_mut()
        .filter(|c| c.change == Kind::Modified && !c.replaced)
    {
        if let Some((f, t, _)) = dirs
            .iter()
            .rev()
            .find(|(_, t, _)| below(&c.raw_path, t).is_some_and(|r| !r.is_empty()))
        {
            let rel = below(&c.raw_path, t).unwrap_or_default().to_vec();
            let from = join(f, &rel);
            c.change = Kind::Moved;
            c.from = Some(printable_bytes(&from));
            c.raw_from = Some(from);
            c.moved_with = Some(printable_bytes(t));
        }
    }
    if !expand {
        return changes;
    }
    let mut present: HashSet<Vec<u8>> = changes.iter().map(|c| c.raw_path.clone()).collect();
    let mut extra = Vec::new();
    for (_, t, ino) in &dirs {
        let mut names = Vec::new();
        super::walk(new, *ino, t, &mut names, notes);
        for n in names.into_iter().take(MAX_EXPANDED) {
            if !present.insert(n.path.clone()) {
                continue;
            }
            // The innermost moved directory holding the path says where
            // it was (a directory moved inside a moved one came from its
            // own old place, not from under the outer one's).
            let Some((f, t, rel)) = dirs
                .iter()
                .rev()
                .find_map(|(f, t, _)| below(&n.path, t).map(|r| (f, t, r.to_vec())))
            else {
                continue;
            };
            if rel.is_empty() {
                continue;
            }
            let from = join(f, &rel);
            let mut c = super::change(Kind::Moved, &n, None, Delta::default());
            c.from = Some(printable_bytes(&from));
            c.raw_from = Some(from);
            c.moved_with = Some(printable_bytes(t));
            extra.push(c);
        }
    }
    changes.extend(extra);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_a_directory() {
        assert_eq!(below(b"/a/b/c", b"/a"), Some(&b"b/c"[..]));
        assert_eq!(below(b"/ab/c", b"/a"), None);
        assert_eq!(below(b"/a", b"/a"), Some(&b""[..]));
        assert_eq!(below(b"/x", b"/"), Some(&b"x"[..]));
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b"x/y"), b"/a/x/y");
    }
}
