//! Both views' inodes, as an ext diff asks about them. What assembling
//! the changes needs of an inode (its type, its link count, whether it is
//! the same file in both views) is remembered in a few bytes; whole
//! inodes are read when they are compared or their blocks explained, and
//! then dropped. (Decoded inodes were kept before: 32,000 of them, 20 MB,
//! for a diff of 16,000 changed files.)
use std::collections::HashMap;

use crate::block::BlockSource;
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
    /// The blocks whose bytes the two views were compared in and found
    /// different (the quick diff's): an inode outside them and inside
    /// what was compared has the same bytes in both views, and is read
    /// once.
    changed: Option<&'a BlockSet>,
}

impl<'a> Pair<'a> {
    pub(super) fn new(old: &'a Ext4, new: &'a Ext4) -> Pair<'a> {
        Pair {
            old,
            new,
            briefs: HashMap::new(),
            changed: None,
        }
    }

    /// [`Pair::new`] for a diff that compared the blocks the overlays
    /// hold ([`super::blocks::changed_blocks`]): `changed` is what it
    /// found different.
    pub(super) fn with_changed(old: &'a Ext4, new: &'a Ext4, changed: &'a BlockSet) -> Pair<'a> {
        Pair {
            changed: Some(changed),
            ..Pair::new(old, new)
        }
    }

    /// Inode `ino` as of both views, read now (its briefs are kept).
    pub(super) fn read(&mut self, ino: u64) -> (Option<Inode>, Option<Inode>) {
        let n = self.new.inode(ino).ok();
        // The old view's bytes are the new view's where the diff saw no
        // change: decoded (and checked) by the old view, not read again.
        let o = match n.as_ref().filter(|n| self.same_bytes(ino, n)) {
            Some(n) => self.old.inode_from_raw(ino, n.raw()).ok(),
            None => self.old.inode(ino).ok(),
        };
        if self.briefs.len() >= MAX_BRIEFS {
            // A cache: a brief dropped is read again when asked for.
            self.briefs.clear();
        }
        self.briefs
            .insert(ino, (o.as_ref().map(Brief::of), n.as_ref().map(Brief::of)));
        (o, n)
    }

    /// Whether inode `ino` has the same bytes in the old view as `n`, its
    /// decoding in the new one: both views put it at the same place, its
    /// blocks were inside what the diff compared (below the new view's
    /// block count and disk end: blocks the overlays hold were compared
    /// there, and blocks they do not hold are served by the same layers
    /// in both views), and none of them was found changed.
    fn same_bytes(&self, ino: u64, n: &Inode) -> bool {
        let Some(changed) = self.changed else {
            return false;
        };
        let (os, ns) = (self.old.superblock(), self.new.superblock());
        if os.block_size != ns.block_size || os.inode_size != ns.inode_size {
            return false;
        }
        let bs = ns.block_size;
        let size = u64::from(ns.inode_size);
        let (Some(first), Some(last)) = (
            n.base.checked_div(bs),
            n.base
                .checked_add(size)
                .and_then(|e| e.checked_sub(1))
                .and_then(|e| e.checked_div(bs)),
        ) else {
            return false;
        };
        let inside = last < ns.blocks_count
            && last
                .checked_add(1)
                .and_then(|b| b.checked_mul(bs))
                .is_some_and(|e| e <= self.new.disk().len());
        inside
            && self.old.inode_offset(ino).ok() == Some(n.base)
            && !changed.overlaps(first, last.saturating_sub(first).saturating_add(1))
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
