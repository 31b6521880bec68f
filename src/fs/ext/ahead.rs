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
        let sb = &self.sb;
        let groups = sb.group_count();
        if groups > ITABLE_GROUPS {
            return Vec::new();
        }
        let ipg = u64::from(sb.inodes_per_group);
        let isize = u64::from(sb.inode_size);
        let mut out = Vec::new();
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
                out.push((at, len));
            }
            if total(&out) > ITABLES_AHEAD {
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

    /// Fetches ahead what listing the directories `dirs` will read, when
    /// the disk is remote: their inodes, then the blocks of their maps
    /// (extent tree nodes or indirect blocks), level by level, then their
    /// directory blocks; each step one batch of requests in flight (see
    /// [`crate::block::cache::BlockCache::prefetch`], which bounds the
    /// bytes), a step with nothing to fetch costing no round trip. The
    /// first batch also fetches the in-use inode tables
    /// ([`Ext4::with_itables`]): the inodes of the levels below are then
    /// held. Returns false, having done nothing, for a local disk.
    /// Damage is not reported here: the listing itself meets it.
    ///
    /// # Errors
    /// I/O errors of the batches.
    pub fn prefetch_dirs(&self, dirs: &[u64]) -> Result<bool, FsError> {
        use crate::block::BlockSource;
        if !self.disk.remote() {
            return Ok(false);
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
        // Map blocks: each round walks every map with what is held, a
        // block not held yet reading as zeros (a node that does not
        // decode: the walk skips it) and noted; the noted ones are
        // fetched together, and the next round goes one level deeper.
        for _ in 0..=MAP_LEVELS {
            let mut missing: Vec<(u64, u64)> = Vec::new();
            for inode in &inodes {
                if self.has_no_map(inode) {
                    continue;
                }
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
            if missing.is_empty() || self.disk.prefetch(&missing)? == 0 {
                break;
            }
        }
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        for inode in &inodes {
            let Ok(map) = self.block_map(inode) else {
                continue;
            };
            let size_blocks = inode.size.div_ceil(bs.max(1));
            for r in map.runs.iter().filter(|r| !r.meta && !r.uninit) {
                let len = r.len.min(size_blocks.saturating_sub(r.logical));
                if len > 0 {
                    if let Ok(at) = self.block_offset(r.physical) {
                        blocks.push((at, len.saturating_mul(bs)));
                    }
                }
            }
        }
        // The tables go with the first call's blocks: the first listing's
        // inode (the root's) is held since the open, so that is the
        // first batch to go to the disk.
        self.disk.prefetch(&self.with_itables(blocks))?;
        Ok(true)
    }
}
