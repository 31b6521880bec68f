//! Fetching ahead over a remote disk: what listing directories will read
//! (their inodes, then their directory blocks), each step one batch of
//! requests in flight together into the filesystem's bounded page store
//! (see [`crate::block::cache::BlockCache::prefetch`]).
use std::ops::ControlFlow;

use super::bmbt::Mapping;
use super::dinode::{Fork, Format};
use super::Xfs;
use crate::block::BlockSource;
use crate::fs::FsError;

impl Xfs {
    /// Fetches the inodes `nodes` in one batch when the disk is remote;
    /// false, having done nothing, for a local disk.
    ///
    /// # Errors
    /// I/O errors of the batch.
    pub fn prefetch_inodes(&self, nodes: &[u64]) -> Result<bool, FsError> {
        if !self.disk().remote() {
            return Ok(false);
        }
        let size = u64::from(self.superblock().inodesize);
        let wanted: Vec<(u64, u64)> = nodes
            .iter()
            .filter_map(|&ino| self.inode_offset(ino).ok().map(|at| (at, size)))
            .collect();
        self.disk().prefetch(&wanted)?;
        Ok(true)
    }

    /// Fetches ahead what listing the directories `dirs` will read, when
    /// the disk is remote: their inodes in one batch, then the blocks of
    /// their data space (below the leaf space, which a listing does not
    /// read) in a second. A short-form directory is all in its inode. A
    /// directory whose map is a B+tree is left to its listing (its map
    /// blocks would cost rounds of their own). Returns false, having done
    /// nothing, for a local disk. Damage is not reported here: the listing
    /// itself meets it.
    ///
    /// # Errors
    /// I/O errors of the batches.
    pub fn prefetch_dirs(&self, dirs: &[u64]) -> Result<bool, FsError> {
        if !self.prefetch_inodes(dirs)? {
            return Ok(false);
        }
        let leaf = self.leaf_fsb();
        let bs = self.block_bytes();
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        for &ino in dirs {
            let Ok(inode) = self.inode(ino) else {
                continue;
            };
            if !inode.is_dir() || inode.format != Format::Extents {
                continue;
            }
            // An extents fork is read from the inode: no I/O here.
            let mut problems = Vec::new();
            let _ = self.walk_fork(&inode, Fork::Data, 0, &mut problems, &mut |m| {
                let Mapping::Extent(e) = m else {
                    return ControlFlow::Continue(());
                };
                if e.startoff >= leaf {
                    return ControlFlow::Break(());
                }
                let n = e.end().min(leaf).saturating_sub(e.startoff);
                if !e.unwritten && n > 0 {
                    if let Ok(at) = self.fsb_offset(e.startblock) {
                        blocks.push((at, n.saturating_mul(bs)));
                    }
                }
                ControlFlow::Continue(())
            });
        }
        self.disk().prefetch(&blocks)?;
        Ok(true)
    }
}
