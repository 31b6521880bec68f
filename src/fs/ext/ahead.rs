//! Fetching ahead over a remote disk: what listing directories will read
//! (their inodes, map blocks and directory blocks), in batches of
//! requests in flight together, and at the first such batch the in-use
//! parts of every inode table, so the inodes of the levels below cost no
//! round trip of their own.
use std::sync::atomic::Ordering;

use super::error::FsError;
use super::group_desc::BgFlags;
use super::Ext4;
use crate::block::cache::AHEAD;

/// Extent tree levels below the root ([`Ext4::prefetch_dirs`] fetches one
/// level of map blocks per round): the kernel's limit.
const MAP_LEVELS: usize = 5;

/// Most bytes of inode tables fetched at the first batch; a filesystem
/// with more in use fetches the inodes it lists as it goes.
const ITABLES_AHEAD: u64 = 8 << 20;

/// Most groups whose descriptors are read to find the tables' in-use
/// parts (1024 descriptors: 64 KiB at most).
const ITABLE_GROUPS: u64 = 1024;
/// Bytes of an inode table [`Ext4::live_dirs`] looks at at once: a
/// window this size stays in the CPU's cache, where a whole table (2 MiB
/// on the bench chain) cost a page fault per 4 KiB to hold (3-5 ms for
/// the bench chain's 6 MiB).
const TABLE_WINDOW: u64 = 64 << 10;

/// Bytes a list of ranges covers.
fn total(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().fold(0u64, |t, r| t.saturating_add(r.1))
}

impl Ext4 {
    /// The in-use part of each group's inode table (disk offset, bytes):
    /// with descriptor checksums (metadata_csum or uninit_bg), the table
    /// up to `bg_itable_unused` from its end, none for a group flagged
    /// INODE_UNINIT; without them, the whole table. Empty when the tables
    /// total more than [`ITABLES_AHEAD`] or the groups more than
    /// [`ITABLE_GROUPS`]. A descriptor that cannot be read is passed
    /// over: this is a hint, the reads that follow meet the damage.
    pub fn itables_in_use(&self) -> Vec<(u64, u64)> {
        self.itables_by_group()
            .into_iter()
            .map(|(_, at, len)| (at, len))
            .collect()
    }

    /// [`Ext4::itables_in_use`] with each table's group: (group, disk
    /// offset, bytes).
    fn itables_by_group(&self) -> Vec<(u64, u64, u64)> {
        let sb = &self.sb;
        let groups = sb.group_count();
        if groups > ITABLE_GROUPS {
            return Vec::new();
        }
        let ipg = u64::from(sb.inodes_per_group);
        let isize = u64::from(sb.inode_size);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for g in 0..groups {
            let Ok(d) = self.group(g) else {
                continue;
            };
            let used = if !d.flags_apply {
                ipg
            } else if d.flags.contains(BgFlags::INODE_UNINIT) {
                0
            } else {
                ipg.saturating_sub(d.itable_unused)
            };
            let len = used.saturating_mul(isize);
            let Some(at) = d.inode_table.checked_mul(sb.block_size) else {
                continue;
            };
            if len > 0 && d.inode_table < sb.blocks_count {
                out.push((g, at, len));
                bytes = bytes.saturating_add(len);
            }
            if bytes > ITABLES_AHEAD {
                return Vec::new();
            }
        }
        out
    }

    /// The inode tables' in-use parts the first time a batch is fetched
    /// ahead ([`Ext4::itables_in_use`]), nothing after.
    pub(super) fn itables_once(&self) -> Vec<(u64, u64)> {
        if self.itables_ahead.swap(true, Ordering::Relaxed) {
            return Vec::new();
        }
        self.itables_in_use()
    }

    /// `ranges` and, at the first batch, the in-use inode tables when
    /// both fit in one batch ([`AHEAD`]).
    pub(super) fn with_itables(&self, mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        let itables = self.itables_once();
        if total(&itables).saturating_add(total(&ranges)) <= AHEAD {
            ranges.extend(itables);
        }
        ranges
    }

    /// Fetches ahead every directory of the filesystem, for a walk of
    /// the whole tree over a remote disk: the in-use inode tables in one
    /// batch, then, for every inode there that is a live directory, what
    /// listing it reads ([`Ext4::prefetch_dirs`]: map blocks, then all
    /// the directory blocks in one batch). A walk then pays the round
    /// trips of three batches, not a few per level of the tree. Returns
    /// the directories whose listing is now held (inode, map and blocks):
    /// listing them costs no request, and the walk need not look ahead
    /// under them again. Empty, having done nothing, for a local disk or
    /// when the tables are too large to fetch ahead
    /// ([`Ext4::itables_in_use`]); the walk then fetches level by level.
    /// Directory blocks past one batch's bound are left for the walk.
    /// Inodes are taken as they are on the disk: a damaged one is passed
    /// over here and met by the listing.
    ///
    /// # Errors
    /// I/O errors of the batches.
    pub fn prefetch_all_dirs(&self) -> Result<Vec<u64>, FsError> {
        use crate::block::BlockSource;
        if !self.disk.remote() {
            return Ok(Vec::new());
        }
        let tables = self.itables_by_group();
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        self.itables_ahead.store(true, Ordering::Relaxed);
        let ranges: Vec<(u64, u64)> = tables.iter().map(|&(_, at, len)| (at, len)).collect();
        self.disk.prefetch(&ranges)?;
        let dirs = self.live_dirs(&tables)?;
        Ok(self.prefetch_dirs(&dirs)?.unwrap_or_default())
    }

    /// The live directories among the in-use inodes of `tables` (group,
    /// disk offset, bytes), read from what is held: [`TABLE_WINDOW`] of
    /// a table at a time (one copy, not one lookup per inode), an inode
    /// at a time where a window is not all held.
    fn live_dirs(&self, tables: &[(u64, u64, u64)]) -> Result<Vec<u64>, FsError> {
        let isize = u64::from(self.sb.inode_size).max(1);
        let ipg = u64::from(self.sb.inodes_per_group);
        let per = TABLE_WINDOW.checked_div(isize).unwrap_or(1).max(1);
        let mut window = vec![0u8; crate::bytes::us(per.saturating_mul(isize))];
        let mut raw = vec![0u8; crate::bytes::us(isize)];
        let mut dirs = Vec::new();
        for &(g, at, len) in tables {
            let slots = len.checked_div(isize).unwrap_or(0);
            let mut first = 0u64;
            while first < slots {
                let n = per.min(slots.saturating_sub(first));
                let here = at.saturating_add(first.saturating_mul(isize));
                let win = window
                    .get_mut(..crate::bytes::us(n.saturating_mul(isize)))
                    .unwrap_or_default();
                let whole = self.disk.peek(here, win)?;
                for (k, slot) in (0..n).zip(win.chunks_exact(crate::bytes::us(isize))) {
                    let i = first.saturating_add(k);
                    let Some(ino) = g
                        .checked_mul(ipg)
                        .and_then(|n| n.checked_add(i))
                        .and_then(|n| n.checked_add(1))
                    else {
                        continue;
                    };
                    let live = if whole {
                        live_dir(slot)
                    } else {
                        let at = here.saturating_add(k.saturating_mul(isize));
                        self.disk.peek(at, &mut raw)? && live_dir(&raw)
                    };
                    if live {
                        dirs.push(ino);
                    }
                }
                first = first.saturating_add(n);
            }
        }
        Ok(dirs)
    }

    /// Fetches ahead what listing the directories `dirs` will read, when
    /// the disk is remote: their inodes, then the blocks of their maps
    /// (extent tree nodes or indirect blocks), level by level, each
    /// directory's blocks with the first batch after its map is held
    /// (a directory whose map is all in its inode: with the first); each
    /// step one batch of requests in flight (see
    /// [`crate::block::cache::BlockCache::prefetch`], which bounds the
    /// bytes), a step with nothing to fetch costing no round trip. The
    /// first batch also fetches the in-use inode tables
    /// ([`Ext4::with_itables`]): the inodes of the levels below are then
    /// held. Returns the directories whose listing is then held (their
    /// inode, map and blocks; see [`Ext4::prefetch_all_dirs`]); `None`,
    /// having done nothing, for a local disk. Damage is not reported
    /// here: the listing itself meets it.
    ///
    /// # Errors
    /// I/O errors of the batches.
    pub fn prefetch_dirs(&self, dirs: &[u64]) -> Result<Option<Vec<u64>>, FsError> {
        use crate::block::BlockSource;
        if !self.disk.remote() {
            return Ok(None);
        }
        let isize = u64::from(self.sb.inode_size);
        let wanted: Vec<(u64, u64)> = dirs
            .iter()
            .filter_map(|&ino| self.inode_offset(ino).ok().map(|at| (at, isize)))
            .collect();
        self.disk.prefetch(&wanted)?;
        let inodes: Vec<_> = dirs
            .iter()
            .filter_map(|&ino| self.inode(ino).ok())
            .filter(|i| i.is_dir() && !i.has_inline_data())
            .collect();
        let bs = self.sb.block_size;
        // Map blocks: each round walks the maps not complete yet with
        // what is held, a block not held yet reading as zeros (a node
        // that does not decode: the walk skips it) and noted. The noted
        // ones are fetched together with the directory blocks of the
        // maps that were complete (those go out a round early), and the
        // next round goes one level deeper. A map still incomplete after
        // the last round is left for the listing.
        let mut left: Vec<&super::inode::Inode> = inodes.iter().collect();
        // Each directory whose map was complete, with where its blocks
        // start in `planned`: what is checked for being held at the end.
        let mut mapped: Vec<(u64, u64, usize)> = Vec::new();
        let mut planned: Vec<(u64, u64)> = Vec::new();
        for _ in 0..=MAP_LEVELS {
            let mut missing: Vec<(u64, u64)> = Vec::new();
            let mut blocks: Vec<(u64, u64)> = Vec::new();
            let mut incomplete = Vec::new();
            for inode in left {
                let before = missing.len();
                if !self.has_no_map(inode) {
                    let geo = self.geometry(inode);
                    let mut read = |b: u64| -> Result<Vec<u8>, FsError> {
                        let at = self.block_offset(b)?;
                        let mut buf = vec![0u8; crate::bytes::us(bs)];
                        if !self.disk.peek(at, &mut buf)? {
                            missing.push((at, bs));
                            buf.fill(0);
                        }
                        Ok(buf)
                    };
                    let root_at = inode.base.saturating_add(0x28);
                    let _ = if inode.flags & super::inode::EXTENTS_FL != 0 {
                        super::extent::walk(inode.ino, &inode.block, root_at, &geo, &mut read)
                    } else {
                        super::indirect::walk(inode.ino, &inode.block, root_at, &geo, &mut read)
                    };
                }
                if missing.len() == before {
                    let from = blocks.len();
                    self.dir_blocks(inode, &mut blocks);
                    mapped.push((inode.ino, inode.base, planned.len()));
                    planned.extend(blocks.get(from..).unwrap_or_default());
                } else {
                    incomplete.push(inode);
                }
            }
            left = incomplete;
            let maps = missing.len();
            missing.extend(blocks);
            if missing.is_empty() {
                break;
            }
            // The tables go with the first batch: the first listing's
            // inode (the root's) is held since the open, so that is the
            // first batch to go to the disk.
            let fetched = self.disk.prefetch(&self.with_itables(missing))?;
            if left.is_empty() || maps == 0 || fetched == 0 {
                break;
            }
        }
        self.held_dirs(&mapped, &planned).map(Some)
    }

    /// The directories of `mapped` (inode number, inode's disk offset,
    /// start of its blocks in `planned`) whose inode and every block are
    /// held, block by block as the listing reads them.
    fn held_dirs(
        &self,
        mapped: &[(u64, u64, usize)],
        planned: &[(u64, u64)],
    ) -> Result<Vec<u64>, FsError> {
        let bs = self.sb.block_size;
        let isize = u64::from(self.sb.inode_size);
        let mut held = Vec::with_capacity(mapped.len());
        let ends = mapped
            .iter()
            .skip(1)
            .map(|m| m.2)
            .chain(std::iter::once(planned.len()));
        'dirs: for (&(ino, base, from), to) in mapped.iter().zip(ends) {
            if !self.disk.holds(base, isize)? {
                continue;
            }
            for &(at, len) in planned.get(from..to).unwrap_or_default() {
                let mut pos = at;
                let end = at.saturating_add(len);
                while pos < end {
                    if !self.disk.holds(pos, bs.min(end.saturating_sub(pos)))? {
                        continue 'dirs;
                    }
                    pos = pos.saturating_add(bs.max(1));
                }
            }
            held.push(ino);
        }
        Ok(held)
    }
}

impl Ext4 {
    /// The disk ranges of directory `inode`'s blocks (its map read from
    /// what is held or the disk), up to its size, added to `out`.
    fn dir_blocks(&self, inode: &super::inode::Inode, out: &mut Vec<(u64, u64)>) {
        let bs = self.sb.block_size;
        let Ok(map) = self.block_map(inode) else {
            return;
        };
        let size_blocks = inode.size.div_ceil(bs.max(1));
        for r in map.runs.iter().filter(|r| !r.meta && !r.uninit) {
            let len = r.len.min(size_blocks.saturating_sub(r.logical));
            if len > 0 {
                if let Ok(at) = self.block_offset(r.physical) {
                    out.push((at, len.saturating_mul(bs)));
                }
            }
        }
    }
}

/// Whether raw inode bytes are a directory in use: the mode's type a
/// directory, links left and no deletion time.
fn live_dir(raw: &[u8]) -> bool {
    let mode = crate::bytes::le16(raw, 0).unwrap_or(0);
    let dtime = crate::bytes::le32(raw, 0x14).unwrap_or(1);
    let links = crate::bytes::le16(raw, 0x1a).unwrap_or(0);
    mode & 0xf000 == 0x4000 && links > 0 && dtime == 0
}
