//! ext2, ext3 and ext4, decoded from the bytes of a [`BlockSource`].
//!
//! Decoders are pure functions over bytes ([`superblock`], [`group_desc`]);
//! [`Ext4`] reads through a bounded [`BlockCache`] and hands the bytes to
//! them. Every structure keeps its fields' disk offsets for the hex view.
//! Nothing here refuses an unknown feature: it is shown, by name or bit.
use std::sync::Arc;

use crate::block::cache::BlockCache;
use crate::block::BlockSource;

pub mod checksum;
pub mod error;
pub mod group_desc;
pub mod superblock;

pub use error::FsError;
use group_desc::{desc_block, GroupDesc};
use superblock::Superblock;

/// Cache for filesystem metadata reads.
const CACHE_BYTES: u64 = 32 << 20;

/// An opened ext2/3/4 filesystem.
pub struct Ext4 {
    disk: BlockCache,
    sb: Superblock,
}

impl Ext4 {
    /// Opens the filesystem at the start of `source`.
    ///
    /// # Errors
    /// `NotExt` without a superblock; `Corrupt` for impossible geometry.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Ext4, FsError> {
        let disk = BlockCache::new(source, CACHE_BYTES);
        let size = disk.len();
        if size < superblock::OFFSET + superblock::SIZE as u64 {
            return Err(FsError::NotExt {
                detail: format!("the disk has only {size} bytes"),
            });
        }
        let mut raw = vec![0u8; superblock::SIZE];
        disk.read_at(superblock::OFFSET, &mut raw)?;
        let sb = Superblock::decode(&raw, superblock::OFFSET)?;
        Ok(Ext4 { disk, sb })
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The disk the filesystem is read from.
    pub fn disk(&self) -> &BlockCache {
        &self.disk
    }

    /// Descriptor `group`.
    ///
    /// # Errors
    /// `Corrupt` when the descriptor lies outside the disk; read errors.
    pub fn group(&self, group: u64) -> Result<GroupDesc, FsError> {
        let sb = &self.sb;
        let desc_size = u64::from(sb.desc_size);
        if !(32..=1024).contains(&desc_size)
            || !desc_size.is_power_of_two()
            || desc_size > sb.block_size
        {
            return Err(FsError::corrupt(
                "superblock",
                "s_desc_size",
                superblock::OFFSET + 0xfe,
                format!("{desc_size}: expected a power of two from 32 to 1024"),
            ));
        }
        let per_block = sb.block_size / desc_size;
        let block = desc_block(sb, group / per_block);
        let offset = block
            .checked_mul(sb.block_size)
            .and_then(|b| b.checked_add((group % per_block) * desc_size))
            .filter(|o| o + desc_size <= self.disk.len())
            .ok_or_else(|| {
                FsError::corrupt(
                    "group descriptor table",
                    "location",
                    block.saturating_mul(sb.block_size),
                    format!("descriptor of group {group} (block {block}) is outside the disk"),
                )
            })?;
        let mut raw = vec![0u8; desc_size as usize];
        self.disk.read_at(offset, &mut raw)?;
        Ok(GroupDesc::decode(sb, group, &raw, offset))
    }

    /// The range of blocks of `group`: (first, last).
    pub fn group_blocks(&self, group: u64) -> (u64, u64) {
        let sb = &self.sb;
        let first = u64::from(sb.first_data_block) + group * u64::from(sb.blocks_per_group);
        let last = (first + u64::from(sb.blocks_per_group))
            .min(sb.blocks_count)
            .saturating_sub(1);
        (first, last)
    }
}
