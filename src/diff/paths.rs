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

use crate::escape::printable_bytes;
use crate::fs::ext::Ext4;

use super::compare::{compare, Delta};
use super::moves::DirMoves;
use super::{Change, Diff, Kind};

/// Most paths one moved directory expands to (a damaged or enormous tree
/// cannot grow the list without end).
const MAX_EXPANDED: usize = 1_000_000;

/// Rewrites `diff`'s changes in path terms (see the module doc).
pub fn path_level(diff: &mut Diff, old: &Ext4, new: &Ext4, expand: bool) {
    let changes = std::mem::take(&mut diff.changes);
    let (_, mut items) = Level::names(changes, old, new, expand, &mut diff.notes);
    items.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out = Vec::new();
    let mut group: Vec<Item> = Vec::new();
    for item in items {
        if group.first().is_some_and(|g| g.key.path != item.key.path) {
            let classes: Vec<Class> = group.iter().map(|g| g.key.class).collect();
            let kept = keep(&classes);
            out.extend(
                group
                    .drain(..)
                    .zip(kept)
                    .filter(|(_, k)| *k)
                    .map(|(g, _)| g.change),
            );
        }
        group.push(item);
    }
    let classes: Vec<Class> = group.iter().map(|g| g.key.class).collect();
    let kept = keep(&classes);
    out.extend(
        group
            .into_iter()
            .zip(kept)
            .filter(|(_, k)| *k)
            .map(|(g, _)| g.change),
    );
    diff.changes = out;
}

/// Why a change is in the list, for the order of changes at one path
/// and for which of them are kept ([`keep`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A path deleted and added again, as one `M` ([`replaced`]).
    Replaced,
    /// A change as the diff found it.
    Found,
    /// A change dropped as having only moved with its directory: not
    /// listed, but its path counted as listed for [`Class::OtherName`].
    Dropped,
    /// A modified file's other name ([`other_names`]): listed unless its
    /// path has a change.
    OtherName,
    /// A path under a moved directory ([`moved_trees`]): listed unless its
    /// path has a change.
    Expanded,
}

/// Where a change goes in the list: by path, kind, then why and in
/// what order it was found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub class: Class,
    /// 0: found with the names; 1: a file changed in place, in a batch;
    /// 2: a new or deleted file's name ([`super::quick::Part::Added`],
    /// [`super::quick::Part::Deleted`]).
    pub src: u8,
    pub seq: u64,
}

/// A change and its place.
#[derive(Clone, Debug)]
pub struct Item {
    pub key: Key,
    pub change: Change,
}

impl Item {
    pub fn new(change: Change, class: Class, src: u8, seq: u64) -> Item {
        Item {
            key: Key {
                path: change.raw_path.clone(),
                kind: change.change,
                class,
                src,
                seq,
            },
            change,
        }
    }
}

/// Of the changes at one path, in [`Key`] order (their classes), which
/// are listed: every one found; the first other name of a modified file
/// when no change (not even one dropped) is at the path; the first path
/// under a moved directory when nothing else is listed there.
pub fn keep(classes: &[Class]) -> Vec<bool> {
    let found = classes
        .iter()
        .any(|c| matches!(c, Class::Replaced | Class::Found));
    let dropped = classes.contains(&Class::Dropped);
    let mut other = !found && !dropped;
    let mut expanded = !found;
    classes
        .iter()
        .map(|c| match c {
            Class::Replaced | Class::Found => true,
            Class::Dropped => false,
            Class::OtherName => {
                let k = other;
                if k {
                    other = false;
                    expanded = false;
                }
                k
            }
            Class::Expanded => {
                let k = expanded;
                expanded = false;
                k
            }
        })
        .collect()
}

/// Path terms applied a part at a time: [`Level::names`] takes the
/// changes found with the names (all of them: every added, deleted and
/// moved name), [`Level::in_place`] then takes files changed in place, a
/// batch at a time. The items, sorted by [`Key`] and filtered by
/// [`keep`] per path, are the changes in path terms.
pub struct Level<'a> {
    new: &'a Ext4,
    /// Moved directories (old path, new path, inode), outermost first.
    dirs: DirMoves,
    /// Items made so far of files changed in place, and of other names.
    seq: u64,
}

impl<'a> Level<'a> {
    /// The items of `changes` (every change but files changed in place:
    /// those may come here too, or later through [`Level::in_place`]).
    pub fn names(
        changes: Vec<Change>,
        old: &'a Ext4,
        new: &'a Ext4,
        expand: bool,
        notes: &mut Vec<String>,
    ) -> (Level<'a>, Vec<Item>) {
        let changes = replaced(changes, old, new, notes);
        let extras = other_names(&changes);
        let mut level = Level {
            new,
            dirs: super::dir_moves_of(&changes),
            seq: 0,
        };
        // One pass, into a list of the right size: a mass create's or
        // delete's changes are held once here, not twice.
        let mut items = Vec::with_capacity(changes.len().saturating_add(extras.len()));
        for (mut c, seq) in changes.into_iter().zip(0u64..) {
            let class = if c.replaced {
                Class::Replaced
            } else {
                Class::Found
            };
            if level.only_moved_with_directory(&c) {
                items.push(Item::new(c, Class::Dropped, 0, seq));
            } else {
                level.moved_under(&mut c);
                items.push(Item::new(c, class, 0, seq));
            }
        }
        for mut c in extras {
            level.moved_under(&mut c);
            items.push(Item::new(c, Class::OtherName, 0, level.next()));
        }
        if expand {
            items.extend(level.expanded(notes));
        }
        (level, items)
    }

    /// The items of files changed in place.
    pub fn in_place(&mut self, changes: Vec<Change>) -> Vec<Item> {
        let extras = other_names(&changes);
        let mut items = Vec::new();
        for mut c in changes {
            self.moved_under(&mut c);
            let seq = self.next();
            items.push(Item::new(c, Class::Found, 1, seq));
        }
        for mut c in extras {
            self.moved_under(&mut c);
            let seq = self.next();
            items.push(Item::new(c, Class::OtherName, 1, seq));
        }
        items
    }

    fn next(&mut self) -> u64 {
        self.seq = self.seq.saturating_add(1);
        self.seq
    }

    /// A path under a moved directory that only moved with it (the full
    /// diff sees it move): dropped, it comes back expanded.
    fn only_moved_with_directory(&self, c: &Change) -> bool {
        if self.dirs.is_empty()
            || c.change != Kind::Moved
            || !c.delta.is_empty()
            || c.moved_with.is_some()
        {
            return false;
        }
        let Some(from) = c.raw_from.as_deref() else {
            return false;
        };
        self.dirs.holding_old(from).any(|(f, t, _)| {
            matches!((below(from, f), below(&c.raw_path, t)), (Some(a), Some(b)) if !a.is_empty() && a == b)
        })
    }

    /// A path that changed in place under a moved directory moved too.
    fn moved_under(&self, c: &mut Change) {
        if c.change != Kind::Modified || c.replaced {
            return;
        }
        if let Some((f, t, _)) = self
            .dirs
            .holding_new(&c.raw_path)
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

    /// The paths under the moved directories, as moves.
    fn expanded(&mut self, notes: &mut Vec<String>) -> Vec<Item> {
        let mut items = Vec::new();
        for (_, t, ino) in self.dirs.list() {
            let mut names = Vec::new();
            super::walk(self.new, *ino, t, &mut names, notes);
            for n in names.into_iter().take(MAX_EXPANDED) {
                // The innermost moved directory holding the path says
                // where it was (a directory moved inside a moved one came
                // from its own old place, not from under the outer one's).
                let Some((f, t, rel)) = self
                    .dirs
                    .holding_new(&n.path)
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
                self.seq = self.seq.saturating_add(1);
                items.push(Item::new(c, Class::Expanded, 0, self.seq));
            }
        }
        items
    }
}

/// A path deleted and added again (a different inode now) becomes one
/// `M`, replaced, with what differs between the two files.
fn replaced(
    mut changes: Vec<Change>,
    old: &Ext4,
    new: &Ext4,
    notes: &mut Vec<String>,
) -> Vec<Change> {
    // The added and deleted names, sorted by path (indices, not copies of
    // the paths: a mass create has hundreds of thousands); a path with one
    // of each is a pair (deleted, added).
    let pairs: Vec<(usize, usize)> = {
        let path_of = |i: &usize| changes.get(*i).map(|c| c.raw_path.as_slice());
        let kind_of = |i: usize| changes.get(i).map(|c| c.change);
        let mut named: Vec<usize> = (0..changes.len())
            .filter(|&i| matches!(kind_of(i), Some(Kind::Deleted | Kind::Added)))
            .collect();
        named.sort_by(|a, b| path_of(a).cmp(&path_of(b)).then(a.cmp(b)));
        named
            .chunk_by(|x, y| path_of(x) == path_of(y))
            .filter_map(|group| {
                let of = |k: Kind| group.iter().filter(move |&&i| kind_of(i) == Some(k));
                match (of(Kind::Deleted).count(), of(Kind::Added).count()) {
                    (1, 1) => Some((*of(Kind::Deleted).next()?, *of(Kind::Added).next()?)),
                    _ => None,
                }
            })
            .collect()
    };
    let mut gone: Vec<bool> = Vec::new();
    for (d, a) in pairs {
        let Some(d_inode) = changes.get(d).map(|c| c.inode) else {
            continue;
        };
        let Some(c) = changes.get_mut(a) else {
            continue;
        };
        c.change = Kind::Modified;
        c.replaced = true;
        c.old_inode = Some(d_inode);
        c.hard_link = false;
        c.link_path = None;
        c.delta = match (old.inode(d_inode), new.inode(c.inode)) {
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
        if gone.is_empty() {
            gone = vec![false; changes.len()];
        }
        if let Some(g) = gone.get_mut(d) {
            *g = true;
        }
    }
    // The merged changes first, in path order, then the rest in their
    // order (the order breaks ties in `Key::seq`), rearranged in place: a
    // stable partition moves the rest forward, the merged and the deleted
    // halves of each pair (the latter dropped) stay behind it.
    let mut kept = 0usize;
    for i in 0..changes.len() {
        let done =
            gone.get(i).copied().unwrap_or(false) || changes.get(i).is_some_and(|c| c.replaced);
        if !done {
            changes.swap(kept, i);
            kept = kept.saturating_add(1);
        }
    }
    let mut i = 0usize;
    changes.retain(|c| {
        let keep = i < kept || c.replaced;
        i = i.saturating_add(1);
        keep
    });
    if let Some(tail) = changes.get_mut(kept..) {
        tail.sort_unstable_by(|a, b| a.raw_path.cmp(&b.raw_path));
    }
    let kept = kept.min(changes.len());
    changes.rotate_left(kept);
    changes
}

/// A modified file with several names (hard links) changed at each of
/// its paths: one `M` per other name (kept by [`keep`] where no change
/// is listed).
fn other_names(changes: &[Change]) -> Vec<Change> {
    let mut extra = Vec::new();
    for c in changes
        .iter()
        .filter(|c| c.change == Kind::Modified && !c.raw_other_names.is_empty())
    {
        for name in &c.raw_other_names {
            let mut o = c.clone();
            o.path = printable_bytes(name);
            o.raw_path = name.clone();
            o.raw_other_names = Vec::new();
            extra.push(o);
        }
    }
    extra
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
