//! Where the filesystem keeps its own metadata (inode tables, bitmaps,
//! superblock and descriptor copies), read from the group descriptors
//! only near the blocks asked about, and each view's block bitmaps, read
//! only for the groups asked about: a quick diff of a small overlay on a
//! disk of millions of groups reads a few descriptor blocks, not all.
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::fs::ext::group_desc::{placement, BgFlags};
use crate::fs::ext::superblock::{sb, Incompat, RoCompat, Superblock};
use crate::fs::ext::{Ext4, FsError};

use crate::bytes::us;

/// Groups in a flex group (1 without flex_bg), at most the group count.
pub(super) fn flex_size(sb: &Superblock) -> u64 {
    if sb.has_incompat(Incompat::FLEX_BG) {
        (1u64 << sb.get(sb!("s_log_groups_per_flex")).min(31)).min(sb.group_count().max(1))
    } else {
        1
    }
}

/// The group holding block `blk` (the last group for a block past the
/// end).
pub(super) fn group_of(sb: &Superblock, blk: u64) -> u64 {
    let bpg = u64::from(sb.blocks_per_group).max(1);
    blk.saturating_sub(u64::from(sb.first_data_block))
        .checked_div(bpg)
        .unwrap_or(0)
        .min(sb.group_count().saturating_sub(1))
}

/// The metadata of the groups read so far.
pub(super) struct Layout<'a> {
    fs: &'a Ext4,
    /// Inode tables: first block -> (blocks, group).
    itables: BTreeMap<u64, (u64, u64)>,
    /// Block and inode bitmaps, and superblock/descriptor copies: first
    /// block -> (blocks, what).
    meta: BTreeMap<u64, (u64, &'static str)>,
    /// Groups whose descriptors (tables, bitmaps) are in.
    described: HashSet<u64>,
    /// Groups whose superblock and descriptor copies are in.
    placed: HashSet<u64>,
    /// Every group is in.
    whole: bool,
}

impl<'a> Layout<'a> {
    /// Nothing read yet: [`Layout::near`] reads what a block needs.
    pub(super) fn lazy(fs: &'a Ext4) -> Layout<'a> {
        Layout {
            fs,
            itables: BTreeMap::new(),
            meta: BTreeMap::new(),
            described: HashSet::new(),
            placed: HashSet::new(),
            whole: false,
        }
    }

    /// Every group read.
    pub(super) fn is_whole(&self) -> bool {
        self.whole
    }

    /// Reads the metadata that can lie at block `blk` as mke2fs and the
    /// kernel place it: the descriptors of the groups of `blk`'s flex
    /// group and the one before (their tables and bitmaps are packed at
    /// the start of the flex group and may spill over), and the
    /// superblock and descriptor copies of `blk`'s group and of the groups
    /// just before whose copies may reach it. Metadata placed anywhere
    /// else is found by [`Layout::read_all`].
    ///
    /// # Errors
    /// Read errors of those descriptors.
    pub(super) fn near(&mut self, blk: u64) -> Result<(), FsError> {
        if self.whole {
            return Ok(());
        }
        let sb = self.fs.superblock();
        let groups = sb.group_count();
        let g = group_of(sb, blk);
        let flex = flex_size(sb);
        let this = g.checked_div(flex).unwrap_or(0);
        let from = this.saturating_sub(1).saturating_mul(flex);
        let to = this.saturating_add(1).saturating_mul(flex).min(groups);
        for x in from..to {
            self.describe(x)?;
        }
        // A copy of the descriptor table (and its reserved blocks) may be
        // longer than a group (1 KiB blocks, millions of groups).
        let per_block = sb
            .block_size
            .checked_div(u64::from(sb.desc_size.max(32)))
            .unwrap_or(1)
            .max(1);
        let copy = groups
            .div_ceil(per_block)
            .saturating_add(sb.get(sb!("s_reserved_gdt_blocks")))
            .saturating_add(1);
        let back = copy
            .checked_div(u64::from(sb.blocks_per_group).max(1))
            .unwrap_or(0)
            .saturating_add(1);
        for x in g.saturating_sub(back)..=g {
            self.place(x);
        }
        Ok(())
    }

    /// Reads every group's metadata.
    ///
    /// # Errors
    /// Read errors of the descriptors.
    pub(super) fn read_all(&mut self) -> Result<(), FsError> {
        if self.whole {
            return Ok(());
        }
        for g in 0..self.fs.superblock().group_count() {
            self.describe(g)?;
            self.place(g);
        }
        self.whole = true;
        Ok(())
    }

    /// Group `g`'s inode table and bitmaps, from its descriptor.
    fn describe(&mut self, g: u64) -> Result<(), FsError> {
        if !self.described.insert(g) {
            return Ok(());
        }
        let sb = self.fs.superblock();
        let itb = u64::from(sb.inodes_per_group)
            .saturating_mul(u64::from(sb.inode_size).max(128))
            .div_ceil(sb.block_size.max(1));
        let d = self.fs.group(g)?;
        self.itables.insert(d.inode_table, (itb, g));
        self.meta.insert(d.block_bitmap, (1, "block bitmap"));
        self.meta.insert(d.inode_bitmap, (1, "inode bitmap"));
        Ok(())
    }

    /// Group `g`'s superblock and descriptor copies (no reads: they lie
    /// where the superblock's geometry puts them).
    fn place(&mut self, g: u64) {
        if !self.placed.insert(g) {
            return;
        }
        let p = placement(self.fs.superblock(), g);
        if let Some(s) = p.superblock {
            self.meta.insert(s, (1, "superblock"));
        }
        for (range, what) in [
            (p.descriptors, "group descriptors"),
            (p.reserved_gdt, "reserved descriptor blocks"),
        ] {
            if let Some((a, b)) = range {
                self.meta
                    .insert(a, (b.saturating_sub(a).saturating_add(1), what));
            }
        }
        if let Some(m) = p.meta_descriptor {
            self.meta.insert(m, (1, "group descriptors"));
        }
    }

    /// The group and first block of the inode table holding `blk`, among
    /// the groups read.
    pub(super) fn itable(&self, blk: u64) -> Option<(u64, u64)> {
        let (&start, &(len, g)) = self.itables.range(..=blk).next_back()?;
        (blk < start.saturating_add(len)).then_some((g, start))
    }

    /// What metadata `blk` is, among the groups read.
    pub(super) fn metadata(&self, blk: u64) -> Option<&'static str> {
        match self.meta.range(..=blk).next_back() {
            Some((&start, &(len, what))) if blk < start.saturating_add(len) => Some(what),
            // Block 0: the boot block (1 KiB blocks) or the superblock.
            _ if blk == 0 => Some("superblock"),
            _ => None,
        }
    }
}

/// One view's block bitmaps, each group's read once.
pub(super) struct Bitmaps<'a> {
    fs: &'a Ext4,
    /// Group -> its bitmap (`None`: uninitialized, all free).
    groups: HashMap<u64, Option<Vec<u8>>>,
}

impl<'a> Bitmaps<'a> {
    pub(super) fn new(fs: &'a Ext4) -> Bitmaps<'a> {
        Bitmaps {
            fs,
            groups: HashMap::new(),
        }
    }

    /// Whether `blk` is free in the block bitmap.
    pub(super) fn free(&mut self, blk: u64) -> Result<bool, FsError> {
        let fs = self.fs;
        let sb = fs.superblock();
        let first = u64::from(sb.first_data_block);
        let bpg = u64::from(sb.blocks_per_group).max(1);
        if blk < first || blk >= sb.blocks_count {
            return Ok(false);
        }
        let g = (blk.saturating_sub(first)).checked_div(bpg).unwrap_or(0);
        let bitmap = match self.groups.get(&g) {
            Some(b) => b,
            None => {
                let d = fs.group(g)?;
                let uninit = d.flags.contains(BgFlags::BLOCK_UNINIT)
                    && (sb.has_ro_compat(RoCompat::UNINIT_BG)
                        || sb.has_ro_compat(RoCompat::METADATA_CSUM));
                let b = if uninit {
                    None
                } else {
                    Some(fs.block(d.block_bitmap)?)
                };
                self.groups.entry(g).or_insert(b)
            }
        };
        let Some(bitmap) = bitmap else {
            return Ok(true);
        };
        let ratio = bpg
            .checked_div(u64::from(sb.clusters_per_group).max(1))
            .unwrap_or(1)
            .max(1);
        let bit = blk
            .saturating_sub(first)
            .checked_rem(bpg)
            .unwrap_or(0)
            .checked_div(ratio)
            .unwrap_or(0);
        Ok(bitmap
            .get(us(bit / 8))
            .is_some_and(|byte| byte & (1 << (bit % 8)) == 0))
    }
}
