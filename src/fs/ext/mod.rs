//! ext2, ext3 and ext4, decoded from the bytes of a [`BlockSource`].
//!
//! Decoders are pure functions over bytes, one module per on-disk
//! structure ([`superblock`], [`group_desc`], [`inode`], [`extent`],
//! [`indirect`], [`dir`], [`htree`], [`xattr`], [`journal`]), each with one
//! field table that drives decoding, the text and JSON output and the hex
//! view's highlight. [`Ext4`] reads through a bounded [`BlockCache`] and
//! hands the bytes to them; its file and directory operations live in
//! [`file`] and [`tree`].
//!
//! Nothing here refuses an unknown feature: it is shown, by name or bit.
//! Nothing trusts the disk: every block number is checked against the
//! filesystem before it is read, every walk is bounded, and a bad checksum
//! or a damaged part of a structure is reported while the rest is still
//! decoded.
//!
//! Not here yet: the journal's transactions, orphan file contents, quota
//! files, casefolded and encrypted name lookups.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use superblock::{sb, Compat, Incompat};

use crate::block::cache::BlockCache;
use crate::block::{BlockError, BlockSource};
use crate::bytes::{u64_of, us};

pub mod ahead;
pub mod blockmap;
pub mod checksum;
pub mod dir;
pub mod dirhash;
pub mod error;
pub mod extent;
pub mod file;
pub mod filesystem;
pub mod group_desc;
pub mod htree;
pub mod indirect;
pub mod inode;
pub mod jbd2;
pub mod journal;
pub mod superblock;
pub mod tree;
pub mod xattr;

use checksum::Check;
pub use error::FsError;
use group_desc::{desc_block, GroupDesc};
use inode::Inode;
use superblock::Superblock;

/// Cache for filesystem metadata reads (16 MiB: a walk of 200,000 files
/// reads each inode table block once; a larger cache only held more of
/// what was already used, and made the RSS of `ls -R` 41 MiB).
const CACHE_BYTES: u64 = 16 << 20;

/// Inode table block of each group seen so far, with the disk offset
/// of the descriptor field naming it; the last one asked apart.
#[derive(Default)]
struct ITables {
    all: HashMap<u64, (u64, u64)>,
    last: Option<(u64, (u64, u64))>,
}

/// An opened ext2/3/4 filesystem.
pub struct Ext4 {
    disk: BlockCache,
    sb: Superblock,
    /// Inode table block of each group seen so far, with the disk offset
    /// of the descriptor field naming it (a walk looks the same groups up
    /// again and again).
    itables: Mutex<ITables>,
    /// The journal replayed in memory under this view (see
    /// [`jbd2::mount`]), and what it did.
    replayed: Option<Arc<jbd2::ReplayedSource>>,
    replay_info: Option<Arc<jbd2::ReplayInfo>>,
    /// The filesystem needed recovery but its journal could not be read.
    replay_failed: Option<String>,
    /// The map of the inode last read through the trait (see
    /// [`Ext4::data_runs_cached`]).
    last_runs: Mutex<Option<(u64, Arc<[blockmap::Run]>)>>,
    /// Directories already found by path (`a/b` without slashes at the
    /// ends), the most recently used [`DIR_MEMO`]: a lookup of each file
    /// of a tree (blame) finds its parent here instead of searching every
    /// directory from the root again.
    dir_memo: Mutex<lru::LruCache<Vec<u8>, u64>>,
    /// Whether the in-use inode tables were fetched ahead (see
    /// [`Ext4::itables_in_use`]): once per filesystem.
    itables_ahead: std::sync::atomic::AtomicBool,
    /// The block buffer [`Ext4::for_each_entry`] lists directories with,
    /// kept for the next listing (a diff's name search lists hundreds of
    /// directories; each allocated and zeroed a fresh one).
    dir_block: Mutex<crate::block::buffer::AlignedBuf>,
}

/// Directory paths [`Ext4`] remembers.
const DIR_MEMO: usize = 1024;

impl Ext4 {
    /// Opens the filesystem at the start of `source` as the kernel would
    /// mount it: a journal that needs recovery is replayed in memory (see
    /// [`Ext4::open_with`] for the on-disk view).
    ///
    /// # Errors
    /// `NotExt` without a superblock; `Corrupt` for impossible geometry.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Ext4, FsError> {
        Ext4::open_with(source, &jbd2::mount::Mount::default())
    }

    /// Opens the filesystem as it is on disk, journal or not.
    ///
    /// # Errors
    /// As [`Ext4::open`].
    pub fn open_on_disk(source: Arc<dyn BlockSource>) -> Result<Ext4, FsError> {
        let disk = BlockCache::new(source, CACHE_BYTES);
        let size = disk.len();
        if size < superblock::OFFSET.saturating_add(u64_of(superblock::SIZE)) {
            return Err(FsError::NotExt {
                detail: format!("the disk has only {size} bytes"),
            });
        }
        let mut raw = vec![0u8; superblock::SIZE];
        disk.read_at(superblock::OFFSET, &mut raw)?;
        let sb = Superblock::decode(&raw, superblock::OFFSET)?;
        // More groups than the disk can hold: every group has a descriptor
        // on the disk, so a table larger than the disk is a count no real
        // filesystem has (and would cost a walk of billions of groups).
        let table = sb
            .group_count()
            .checked_mul(u64::from(sb.desc_size.max(32)));
        if table.is_none_or(|t| t > size) {
            return Err(FsError::corrupt(
                "superblock",
                "s_blocks_count_lo",
                Superblock::offset_of(sb!("s_blocks_count_lo")),
                format!(
                    "{} blocks in groups of {} make {} groups, whose descriptors alone need more than the disk's {size} bytes",
                    sb.blocks_count,
                    sb.blocks_per_group,
                    sb.group_count()
                ),
            ));
        }
        Ok(Ext4 {
            disk,
            sb,
            itables: Mutex::default(),
            replayed: None,
            replay_info: None,
            replay_failed: None,
            last_runs: Mutex::default(),
            dir_memo: Mutex::new(crate::lazy_lru::bounded(DIR_MEMO)),
            itables_ahead: std::sync::atomic::AtomicBool::new(false),
            dir_block: Mutex::default(),
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
                Superblock::offset_of(sb!("s_desc_size")),
                format!("{desc_size}: expected a power of two from 32 to 1024"),
            ));
        }
        if group >= sb.group_count() {
            return Err(FsError::corrupt(
                "group descriptor table",
                "group",
                0,
                format!("group {group} does not exist ({} groups)", sb.group_count()),
            ));
        }
        // desc_size >= 32 and block_size >= 1024 (the superblock checks
        // both): per_block >= 1.
        let per_block = sb.block_size.checked_div(desc_size).unwrap_or(0).max(1);
        let block = desc_block(sb, group.checked_div(per_block).unwrap_or(0));
        let index = group.checked_rem(per_block).unwrap_or(0);
        let offset = block
            .checked_mul(sb.block_size)
            .and_then(|b| b.checked_add(index.saturating_mul(desc_size)))
            .filter(|o| o.saturating_add(desc_size) <= self.disk.len())
            .ok_or_else(|| {
                FsError::corrupt(
                    "group descriptor table",
                    "location",
                    block.saturating_mul(sb.block_size),
                    format!("descriptor of group {group} (block {block}) is outside the disk"),
                )
            })?;
        let mut raw = vec![0u8; us(desc_size)];
        self.disk.read_at(offset, &mut raw)?;
        Ok(GroupDesc::decode(sb, group, &raw, offset))
    }

    /// The disk offset of filesystem block `block`.
    ///
    /// # Errors
    /// `Corrupt` for a block past the end of the filesystem or the disk.
    pub fn block_offset(&self, block: u64) -> Result<u64, FsError> {
        let bs = self.sb.block_size;
        block
            .checked_mul(bs)
            .filter(|&o| block < self.sb.blocks_count && o.saturating_add(bs) <= self.disk.len())
            .ok_or_else(|| {
                FsError::corrupt(
                    "block",
                    "number",
                    block.saturating_mul(bs),
                    format!(
                        "block {block} is outside the filesystem ({} blocks) or the disk ({} bytes)",
                        self.sb.blocks_count,
                        self.disk.len()
                    ),
                )
            })
    }

    /// Reads filesystem block `block`.
    ///
    /// # Errors
    /// `Corrupt` for a block past the end of the filesystem or disk.
    pub fn block(&self, block: u64) -> Result<Vec<u8>, FsError> {
        let at = self.block_offset(block)?;
        let mut buf = vec![0; us(self.sb.block_size)];
        self.disk.read_direct(at, &mut buf)?;
        Ok(buf)
    }

    /// [`Ext4::block`], read into a page-aligned buffer kept between
    /// blocks (made a block long): a walk reads every directory's blocks.
    ///
    /// # Errors
    /// As [`Ext4::block`].
    pub fn block_into_aligned(
        &self,
        block: u64,
        buf: &mut crate::block::buffer::AlignedBuf,
    ) -> Result<(), FsError> {
        let at = self.block_offset(block)?;
        let size = us(self.sb.block_size);
        if buf.len() != size {
            *buf = crate::block::buffer::AlignedBuf::new(size);
        }
        self.disk.read_direct(at, buf)?;
        Ok(())
    }

    /// The inode table of `group` and the disk offset of the descriptor
    /// field that names it.
    fn inode_table(&self, group: u64) -> Result<(u64, u64), FsError> {
        if let Some(t) = self.itables.lock().ok().and_then(|mut m| {
            // The group of the last inode asked, mostly (a directory's
            // files lie together): no hashing.
            if let Some((g, t)) = m.last {
                if g == group {
                    return Some(t);
                }
            }
            let t = m.all.get(&group).copied()?;
            m.last = Some((group, t));
            Some(t)
        }) {
            return Ok(t);
        }
        let d = self.group(group)?;
        let field = d
            .base
            .saturating_add(u64_of(group_desc::gd!("bg_inode_table_lo").offset));
        let t = (d.inode_table, field);
        if let Ok(mut m) = self.itables.lock() {
            m.all.insert(group, t);
            m.last = Some((group, t));
        }
        Ok(t)
    }

    /// That inode number `ino` exists (1 to `s_inodes_count`), without
    /// reading it.
    ///
    /// # Errors
    /// `Corrupt` naming the superblock's inode count.
    pub fn check_inode_number(&self, ino: u64) -> Result<(), FsError> {
        if ino == 0 || ino > u64::from(self.sb.inodes_count) {
            return Err(FsError::corrupt(
                "inode",
                "number",
                Superblock::offset_of(sb!("s_inodes_count")),
                format!(
                    "inode {ino} does not exist (expected 1 to {})",
                    self.sb.inodes_count
                ),
            ));
        }
        Ok(())
    }

    /// Inode `ino` (1-based). With metadata_csum, its checksum is
    /// verified: a mismatch is one of the inode's `problems`, not an error.
    ///
    /// # Errors
    /// `Corrupt` for an inode number out of range or an inode table outside
    /// the disk.
    pub fn inode(&self, ino: u64) -> Result<Inode, FsError> {
        let inode = self.inode_unchecked(ino)?;
        Ok(self.checked(inode))
    }

    /// Inode `ino` decoded from `raw`, its `s_inode_size` bytes as read
    /// elsewhere (another view of the same disk where the caller knows them
    /// to be the same), with [`Ext4::inode`]'s checks: what
    /// [`Ext4::inode`] returns, without reading.
    ///
    /// # Errors
    /// As [`Ext4::inode`]; `Io(Internal)` when `raw` is not an inode's size.
    pub fn inode_from_raw(&self, ino: u64, raw: &[u8]) -> Result<Inode, FsError> {
        let offset = self.inode_offset(ino)?;
        if u64_of(raw.len()) != u64::from(self.sb.inode_size) {
            return Err(FsError::Io(BlockError::Internal {
                what: format!("inode {ino}: {} bytes given", raw.len()),
            }));
        }
        Ok(self.checked(Inode::decode(ino, raw, offset)?))
    }

    /// [`Ext4::inode`]'s checks of a decoded inode (flags, checksum).
    fn checked(&self, mut inode: Inode) -> Inode {
        let sb = &self.sb;
        let offset = inode.base;
        self.check_flags(&mut inode);
        // An inode never written is all zeros and has no checksum to
        // match: libext2fs (ext2fs_inode_csum_verify) takes one whose
        // first 128 bytes are zeros as valid, and so does e2fsck. Without
        // this, a large inode table of zeros is millions of "problems"
        // (and their cost) e2fsck does not see.
        let never_written = || {
            inode
                .raw()
                .get(..128)
                .is_some_and(|b| b.iter().all(|&x| x == 0))
        };
        if sb.has_metadata_csum() && !never_written() {
            let c = inode.compute_checksum(sb.csum_seed);
            if !c.ok() {
                inode.problems.push(FsError::checksum(
                    "inode",
                    "i_checksum_lo",
                    offset.saturating_add(0x7c),
                    c.stored,
                    c.computed,
                ));
            }
            inode.checksum = Some(c);
        }
        inode
    }

    /// Inode `ino` as [`Ext4::inode`] decodes it, without its checks
    /// (checksum, flags): for callers that keep none of its problems.
    ///
    /// # Errors
    /// As [`Ext4::inode`].
    pub fn inode_unchecked(&self, ino: u64) -> Result<Inode, FsError> {
        let offset = self.inode_offset(ino)?;
        let size = us(u64::from(self.sb.inode_size));
        // Most inodes are 256 bytes: read on the stack (no larger, or
        // zeroing it costs more than the read).
        let mut small = [0u8; 256];
        let mut large = Vec::new();
        let raw = match small.get_mut(..size) {
            Some(r) => r,
            None => {
                large.resize(size, 0);
                large.as_mut_slice()
            }
        };
        self.disk.read_at(offset, raw)?;
        Inode::decode(ino, raw, offset)
    }

    /// Where inode `ino` is on the disk.
    ///
    /// # Errors
    /// As [`Ext4::inode`].
    pub fn inode_offset(&self, ino: u64) -> Result<u64, FsError> {
        let sb = &self.sb;
        self.check_inode_number(ino)?;
        let ipg = u64::from(sb.inodes_per_group);
        // ino >= 1 (checked above), ipg >= 1 (the superblock checks it).
        let index = ino.saturating_sub(1);
        let group = index.checked_div(ipg).unwrap_or(0);
        let (itable, field) = self.inode_table(group)?;
        let size = u64::from(sb.inode_size);
        let offset = itable
            .checked_mul(sb.block_size)
            .and_then(|t| t.checked_add(index.checked_rem(ipg)?.saturating_mul(size)))
            .filter(|o| itable < sb.blocks_count && o.saturating_add(size) <= self.disk.len())
            .ok_or_else(|| {
                FsError::corrupt(
                    "group descriptor",
                    "bg_inode_table",
                    field,
                    format!(
                        "inode table of group {group} at block {itable} is outside the filesystem or disk (reading inode {ino})"
                    ),
                )
            })?;
        Ok(offset)
    }

    /// Flags that contradict each other or the filesystem's features,
    /// added to the inode's problems (it is still decoded as the kernel
    /// would read it).
    fn check_flags(&self, inode: &mut Inode) {
        use inode::{EXTENTS_FL, INLINE_DATA_FL};
        let at = inode.base.saturating_add(0x20);
        let mut flag = |detail: String| {
            inode
                .problems
                .push(FsError::corrupt("inode", "i_flags", at, detail))
        };
        let (ino, flags) = (inode.ino, inode.flags);
        if flags & EXTENTS_FL != 0 && flags & INLINE_DATA_FL != 0 {
            flag(format!(
                "inode {ino}: both extents and inline_data; read as inline data"
            ));
        }
        if flags & INLINE_DATA_FL != 0 && !self.sb.has_incompat(Incompat::INLINE_DATA) {
            flag(format!(
                "inode {ino}: inline_data, but the filesystem lacks the inline_data feature"
            ));
        }
        if flags & EXTENTS_FL != 0 && !self.sb.has_incompat(Incompat::EXTENT) {
            flag(format!(
                "inode {ino}: extents, but the filesystem lacks the extent feature"
            ));
        }
        if inode.is_symlink() && !inode.has_inline_data() {
            // The kernel goes by the block count, e2fsprogs by the size.
            let by_blocks = self.fast_symlink(inode);
            let by_size = inode.size > 0 && inode.size < 60;
            if by_blocks != by_size {
                inode.problems.push(FsError::corrupt(
                    "inode",
                    "i_size_lo",
                    inode.base.saturating_add(4),
                    format!(
                        "symlink inode {ino}: {} bytes, but {} blocks; expected a target under 60 bytes in i_block, or blocks holding a longer one",
                        inode.size, inode.blocks
                    ),
                ));
            }
        }
    }

    /// The seed of `inode`'s metadata checksums, with metadata_csum.
    pub fn inode_seed(&self, inode: &Inode) -> Option<u32> {
        self.sb.has_metadata_csum().then(|| {
            checksum::inode_seed(self.sb.csum_seed, inode::lo32(inode.ino), inode.generation)
        })
    }

    /// The checksums of group `d`'s block and inode bitmaps (metadata_csum
    /// only; `None` for a bitmap the group marks uninitialized, or outside
    /// the filesystem).
    ///
    /// # Errors
    /// Read errors.
    pub fn bitmap_checksums(
        &self,
        d: &GroupDesc,
    ) -> Result<(Option<Check>, Option<Check>), FsError> {
        let sb = &self.sb;
        if !sb.has_metadata_csum() {
            return Ok((None, None));
        }
        let check = |block: u64, bytes: u64, stored: u32| -> Result<Option<Check>, FsError> {
            if bytes == 0 || bytes > sb.block_size || self.block_offset(block).is_err() {
                return Ok(None);
            }
            let data = self.block(block)?;
            let c = checksum::crc32c_raw(sb.csum_seed, data.get(..us(bytes)).unwrap_or(&data));
            Ok(Some(Check {
                stored,
                computed: if d.bitmap_csum_hi { c } else { c & 0xffff },
            }))
        };
        let blocks = if !d.flags.contains(group_desc::BgFlags::BLOCK_UNINIT) {
            check(
                d.block_bitmap,
                u64::from(sb.clusters_per_group) / 8,
                d.block_bitmap_csum,
            )?
        } else {
            None
        };
        let inodes = if !d.flags.contains(group_desc::BgFlags::INODE_UNINIT) {
            check(
                d.inode_bitmap,
                u64::from(sb.inodes_per_group) / 8,
                d.inode_bitmap_csum,
            )?
        } else {
            None
        };
        Ok((blocks, inodes))
    }

    /// The journal superblock: of the internal journal, or of this
    /// filesystem when it is an external journal device (`None` without
    /// one, or when it cannot be read).
    pub fn journal(&self) -> Option<journal::JournalSb> {
        if self.sb.has_incompat(Incompat::JOURNAL_DEV) {
            // A journal device: the journal superblock follows the
            // filesystem superblock's block.
            let block = u64::from(self.sb.first_data_block) + 1;
            let at = self.block_offset(block).ok()?;
            let mut raw = vec![0u8; 1024];
            self.disk.read_at(at, &mut raw).ok()?;
            return journal::JournalSb::decode(&raw, at);
        }
        let ino = self.sb.get(sb!("s_journal_inum"));
        if ino == 0 || !self.sb.has_compat(Compat::HAS_JOURNAL) {
            return None;
        }
        let node = self.inode(ino).ok()?;
        let first = self
            .block_map(&node)
            .ok()?
            .runs
            .into_iter()
            .find(|r| !r.meta && r.logical == 0)?;
        let block = self.block(first.physical).ok()?;
        journal::JournalSb::decode(&block, first.physical.saturating_mul(self.sb.block_size))
    }

    /// The blocks listed in the bad block inode (inode 1), sorted, as
    /// e2fsprogs reads them: data blocks only, those outside the
    /// filesystem ignored.
    ///
    /// # Errors
    /// The inode cannot be read, or its map has a damaged indirect block
    /// (e2fsprogs then refuses the whole list).
    pub fn bad_blocks(&self) -> Result<Vec<u64>, FsError> {
        let node = self.inode(1)?;
        let mut map = self.block_map(&node)?;
        if map.skipped_map_blocks > 0 {
            return Err(map.skipped.swap_remove(0));
        }
        let mut out = std::collections::BTreeSet::new();
        for r in map.runs.iter().filter(|r| !r.meta) {
            for b in r.physical..r.physical.saturating_add(r.len) {
                if out.len() >= 1 << 20 {
                    break;
                }
                out.insert(b);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The range of blocks of `group`: (first, last).
    pub fn group_blocks(&self, group: u64) -> (u64, u64) {
        let sb = &self.sb;
        let first = u64::from(sb.first_data_block)
            .saturating_add(group.saturating_mul(u64::from(sb.blocks_per_group)));
        let last = first
            .saturating_add(u64::from(sb.blocks_per_group))
            .min(sb.blocks_count)
            .saturating_sub(1);
        (first, last)
    }
}
