//! Both views' inodes, as an ext diff asks about them. What assembling
//! the changes needs of an inode (its type, its link count, whether it is
//! the same file in both views) is remembered in a few bytes; whole
//! inodes are read when they are compared or their blocks explained, and
//! then dropped. (Decoded inodes were kept before: 32,000 of them, 20 MB,
//! for a diff of 16,000 changed files.)
use std::collections::HashMap;

use crate::fs::ext::inode::Inode;
use crate::fs::ext::{Ext4, FsError};

use super::blocks::BlockSet;
use super::compare::{compare, in_use, Delta};
use super::PairView;

/// Most briefs kept (under 1 MiB): past them the cache starts again, so
/// that memory does not follow the number of changed inodes.
const MAX_BRIEFS: usize = 1 << 13;

/// What a diff remembers of one view's inode.
#[derive(Clone, Copy, Debug)]
pub(super) struct Brief {
    /// [`in_use`].
    used: bool,
    /// The type bits of `i_mode`.
    format: u16,
    generation: u32,
    pub(super) links: u16,
    pub(super) type_name: &'static str,
}

impl Brief {
    pub(super) fn of(i: &Inode) -> Brief {
        Brief {
            used: in_use(i),
            format: i.mode & 0xf000,
            generation: i.generation,
            links: i.links,
            type_name: i.type_name(),
        }
    }

    pub(super) fn is_dir(self) -> bool {
        self.format == 0x4000
    }

    /// [`super::compare::same_file`] of the inodes `self` and `n` were
    /// made from.
    fn same_file(self, n: Brief) -> bool {
        self.used && n.used && self.generation == n.generation && self.format == n.format
    }
}

/// Both views, and the briefs of the inodes asked about.
pub(super) struct Pair<'a> {
    pub(super) old: &'a Ext4,
    pub(super) new: &'a Ext4,
    briefs: HashMap<u64, (Option<Brief>, Option<Brief>)>,
}

impl<'a> Pair<'a> {
    pub(super) fn new(old: &'a Ext4, new: &'a Ext4) -> Pair<'a> {
        Pair {
            old,
            new,
            briefs: HashMap::new(),
        }
    }

    /// Inode `ino` as of both views, read now (its briefs are kept).
    pub(super) fn read(&mut self, ino: u64) -> (Option<Inode>, Option<Inode>) {
        let (o, n) = (self.old.inode(ino).ok(), self.new.inode(ino).ok());
        if self.briefs.len() >= MAX_BRIEFS {
            // A cache: a brief dropped is read again when asked for.
            self.briefs.clear();
        }
        self.briefs
            .insert(ino, (o.as_ref().map(Brief::of), n.as_ref().map(Brief::of)));
        (o, n)
    }

    /// The briefs of inode `ino` as of both views.
    pub(super) fn get(&mut self, ino: u64) -> (Option<Brief>, Option<Brief>) {
        if let Some(&b) = self.briefs.get(&ino) {
            return b;
        }
        let (o, n) = self.read(ino);
        (o.as_ref().map(Brief::of), n.as_ref().map(Brief::of))
    }

    /// The same file in both views.
    pub(super) fn persists(&mut self, ino: u64) -> bool {
        matches!(self.get(ino), (Some(o), Some(n)) if o.same_file(n))
    }

    /// How the file differs ([`compare`]; nothing when either view cannot
    /// read it).
    pub(super) fn compare(
        &mut self,
        ino: u64,
        changed: Option<&BlockSet>,
    ) -> Result<Delta, FsError> {
        match self.read(ino) {
            (Some(o), Some(n)) => compare(self.old, &o, self.new, &n, changed),
            _ => Ok(Delta::default()),
        }
    }
}

impl PairView for Pair<'_> {
    fn persists(&mut self, node: u64) -> bool {
        Pair::persists(self, node)
    }

    fn new_type(&mut self, node: u64) -> &'static str {
        self.get(node).1.map_or("unknown", |b| b.type_name)
    }

    fn views(&self) -> (&dyn crate::fs::Filesystem, &dyn crate::fs::Filesystem) {
        (self.old, self.new)
    }
}
