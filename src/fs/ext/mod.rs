//! ext2, ext3 and ext4, decoded from the bytes of a [`BlockSource`].
//!
//! Decoders are pure functions over bytes ([`superblock`], [`group_desc`]);
//! [`Ext4`] reads through a bounded [`BlockCache`] and hands the bytes to
//! them. Every structure keeps its fields' disk offsets for the hex view.
//! Nothing here refuses an unknown feature: it is shown, by name or bit.
use std::sync::Arc;

use crate::block::cache::BlockCache;
use crate::block::BlockSource;

pub mod blockmap;
pub mod checksum;
pub mod dir;
pub mod error;
pub mod group_desc;
pub mod inode;
pub mod journal;
pub mod superblock;

use blockmap::Run;
use dir::Entry;
pub use error::FsError;
use group_desc::{desc_block, GroupDesc};
use inode::{Inode, EXTENTS_FL, INLINE_DATA_FL};
use superblock::Superblock;

/// Cache for filesystem metadata reads.
const CACHE_BYTES: u64 = 32 << 20;

/// An opened ext2/3/4 filesystem.
pub struct Ext4 {
    disk: BlockCache,
    sb: Superblock,
    /// Inode table block of each group seen so far (a walk looks the same
    /// groups up again and again).
    itables: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
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
        Ok(Ext4 {
            disk,
            sb,
            itables: Default::default(),
        })
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

    /// Reads filesystem block `block`.
    ///
    /// # Errors
    /// `Corrupt` for a block past the end of the filesystem or disk.
    pub fn block(&self, block: u64) -> Result<Vec<u8>, FsError> {
        let bs = self.sb.block_size;
        let at = block
            .checked_mul(bs)
            .filter(|&o| block < self.sb.blocks_count && o + bs <= self.disk.len())
            .ok_or_else(|| {
                FsError::corrupt(
                    "block",
                    "number",
                    0,
                    format!(
                        "block {block} is outside the filesystem ({} blocks)",
                        self.sb.blocks_count
                    ),
                )
            })?;
        let mut buf = vec![0u8; bs as usize];
        self.disk.read_at(at, &mut buf)?;
        Ok(buf)
    }

    /// Inode `ino` (1-based).
    ///
    /// # Errors
    /// `Corrupt` for an inode number out of range or an inode table outside
    /// the disk.
    pub fn inode(&self, ino: u64) -> Result<Inode, FsError> {
        let sb = &self.sb;
        if ino == 0 || ino > u64::from(sb.inodes_count) {
            return Err(FsError::corrupt(
                "inode",
                "number",
                0,
                format!("inode {ino} does not exist (1 to {})", sb.inodes_count),
            ));
        }
        let ipg = u64::from(sb.inodes_per_group);
        let group = (ino - 1) / ipg;
        let cached = self
            .itables
            .lock()
            .ok()
            .and_then(|m| m.get(&group).copied());
        let itable = match cached {
            Some(t) => t,
            None => {
                let t = self.group(group)?.inode_table;
                if let Ok(mut m) = self.itables.lock() {
                    m.insert(group, t);
                }
                t
            }
        };
        let size = u64::from(sb.inode_size);
        let offset = itable
            .checked_mul(sb.block_size)
            .and_then(|t| t.checked_add((ino - 1) % ipg * size))
            .filter(|o| o + size <= self.disk.len())
            .ok_or_else(|| {
                FsError::corrupt(
                    "group descriptor",
                    "bg_inode_table",
                    0,
                    format!("inode table of group {group} at block {itable} is outside the disk (inode {ino})"),
                )
            })?;
        let mut raw = vec![0u8; size as usize];
        self.disk.read_at(offset, &mut raw)?;
        Ok(Inode::decode(ino, &raw, offset))
    }

    /// Where the file's blocks are. Inline data and fast symlinks have none.
    ///
    /// # Errors
    /// Corrupt block maps (naming the inode).
    pub fn runs(&self, inode: &Inode) -> Result<Vec<Run>, FsError> {
        let sb = &self.sb;
        if inode.flags & INLINE_DATA_FL != 0 || self.fast_symlink(inode) {
            return Ok(Vec::new());
        }
        let mut read = |b: u64| self.block(b);
        if inode.flags & EXTENTS_FL != 0 {
            blockmap::extents(inode.ino, &inode.block, sb.blocks_count, &mut read)
        } else {
            let file_blocks = inode.size.div_ceil(sb.block_size);
            blockmap::indirect(
                inode.ino,
                &inode.block,
                sb.block_size,
                file_blocks,
                sb.blocks_count,
                &mut read,
            )
        }
    }

    /// A symlink whose target sits in the inode itself.
    pub fn fast_symlink(&self, inode: &Inode) -> bool {
        inode.is_symlink()
            && inode.flags & EXTENTS_FL == 0
            && inode.size < 60
            && (inode.blocks == 0 || inode.flags & INLINE_DATA_FL != 0)
    }

    /// The whole content of a file, holes and uninitialized extents as
    /// zeros, at most `limit` bytes (callers stream big files with
    /// [`Ext4::read_file`]).
    ///
    /// # Errors
    /// Corrupt block maps; read errors.
    pub fn read_all(&self, inode: &Inode, limit: u64) -> Result<Vec<u8>, FsError> {
        let len = inode.size.min(limit);
        let mut buf = vec![0u8; len as usize];
        self.read_file(inode, &self.runs(inode)?, 0, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` with the file's bytes at `offset`, given its `runs`.
    ///
    /// # Errors
    /// Read errors.
    pub fn read_file(
        &self,
        inode: &Inode,
        runs: &[Run],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        buf.fill(0);
        if inode.flags & INLINE_DATA_FL != 0 || self.fast_symlink(inode) {
            // The first 60 bytes live in i_block (the rest of larger inline
            // files, in the system.data xattr, is not read yet).
            for (i, b) in buf.iter_mut().enumerate() {
                if let Some(v) = inode.block.get(offset as usize + i) {
                    *b = *v;
                }
            }
            return Ok(());
        }
        let bs = self.sb.block_size;
        let end = offset + buf.len() as u64;
        for r in runs.iter().filter(|r| !r.uninit && !r.meta) {
            let (start, stop) = (r.logical * bs, (r.logical + r.len) * bs);
            let (a, b) = (start.max(offset), stop.min(end));
            if a >= b {
                continue;
            }
            let disk_at = r.physical * bs + (a - start);
            self.disk.read_at(
                disk_at,
                &mut buf[(a - offset) as usize..(b - offset) as usize],
            )?;
        }
        Ok(())
    }

    /// The entries of a directory (all blocks read linearly, which lists
    /// htree directories too). A damaged block is reported in `errors` and
    /// listing goes on with the next block.
    ///
    /// # Errors
    /// When the block map itself cannot be read.
    pub fn read_dir(&self, inode: &Inode, errors: &mut Vec<String>) -> Result<Vec<Entry>, FsError> {
        let mut out = Vec::new();
        if inode.flags & INLINE_DATA_FL != 0 {
            // Inline directory: the parent's inode number, then entries.
            let parent = u32::from_le_bytes([
                inode.block[0],
                inode.block[1],
                inode.block[2],
                inode.block[3],
            ]);
            out.push(Entry {
                inode: inode.ino as u32,
                name: b".".to_vec(),
                file_type: 2,
            });
            out.push(Entry {
                inode: parent,
                name: b"..".to_vec(),
                file_type: 2,
            });
            if let Err(e) = dir::parse_block(&inode.block[4..], 0, &mut out) {
                errors.push(e.to_string());
            }
            return Ok(out);
        }
        let bs = self.sb.block_size;
        for r in self.runs(inode)?.into_iter().filter(|r| !r.meta) {
            for i in 0..r.len {
                if (r.logical + i) * bs >= inode.size {
                    break;
                }
                let block = match self.block(r.physical + i) {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                };
                if let Err(e) = dir::parse_block(&block, (r.physical + i) * bs, &mut out) {
                    errors.push(format!("directory inode {}: {e}", inode.ino));
                }
            }
        }
        Ok(out)
    }

    /// The inode of an absolute path (symlinks are not followed).
    ///
    /// # Errors
    /// A missing component, a non-directory in the middle.
    pub fn lookup(&self, path: &str) -> Result<u64, FsError> {
        let mut ino = 2u64;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let node = self.inode(ino)?;
            if !node.is_dir() {
                return Err(FsError::NotFound {
                    path: path.to_owned(),
                    detail: format!("inode {ino} is not a directory"),
                });
            }
            let entries = self.read_dir(&node, &mut Vec::new())?;
            ino = entries
                .iter()
                .find(|e| e.name == part.as_bytes())
                .map(|e| u64::from(e.inode))
                .ok_or_else(|| FsError::NotFound {
                    path: path.to_owned(),
                    detail: format!("no {part:?} in directory inode {ino}"),
                })?;
        }
        Ok(ino)
    }

    /// The journal superblock of an internal journal (`None` without one,
    /// with an external journal device, or when it cannot be read).
    pub fn journal(&self) -> Option<journal::JournalSb> {
        let ino = self.sb.get("s_journal_inum");
        if ino == 0 || self.sb.has_incompat(0x8) || self.sb.feature_compat & 0x4 == 0 {
            return None;
        }
        let node = self.inode(ino).ok()?;
        let first = self
            .runs(&node)
            .ok()?
            .into_iter()
            .find(|r| !r.meta && r.logical == 0)?;
        let block = self.block(first.physical).ok()?;
        journal::JournalSb::decode(&block, first.physical * self.sb.block_size)
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
