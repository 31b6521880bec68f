//! A file's content through its inode: the block map (extents or
//! indirect), inline data (`i_block` then the `system.data` attribute),
//! symlink targets (fast, inline or in a block), extended attributes.
use super::blockmap::{BlockMap, Geometry, Run};
use super::error::FsError;
use super::inode::{Inode, EA_INODE_FL, ENCRYPT_FL, EXTENTS_FL};
use super::superblock::{sb, Compat, Incompat, RoCompat};
use super::xattr::{self, Xattr, XattrBlock};
use super::Ext4;
use std::sync::Arc;

use crate::bytes::{u64_of, us};

use crate::block::BlockSource;

/// Longest symlink target read (the kernel's limit is one page; 64 KiB
/// blocks allow more, nothing sane needs it).
const MAX_LINK: u64 = 65536;

/// Largest attribute value read from an attribute inode (the kernel's
/// limit, `XATTR_SIZE_MAX`).
const MAX_EA_VALUE: u64 = 65536;

/// An inode's extended attributes, and what was wrong reading them.
#[derive(Debug, Default)]
pub struct Xattrs {
    pub attrs: Vec<Xattr>,
    /// The attribute block's header, when there is one.
    pub block: Option<XattrBlock>,
    pub problems: Vec<FsError>,
}

impl Ext4 {
    /// What a block map walk of `inode` needs.
    pub fn geometry(&self, inode: &Inode) -> Geometry {
        Geometry {
            block_size: self.sb.block_size,
            first_data_block: u64::from(self.sb.first_data_block),
            blocks_count: self.sb.blocks_count,
            csum_seed: self.inode_seed(inode),
        }
    }

    /// The runs of `inode`'s map as far as it can be followed (skipped
    /// parts read as zeros), kept for the last inode asked: the trait's
    /// `read_file` is called chunk by chunk, and walking a big extent
    /// tree again for every chunk would cost the whole tree each time.
    ///
    /// # Errors
    /// The extent tree root is unreadable; I/O errors.
    pub fn data_runs_cached(&self, inode: &Inode) -> Result<Arc<[Run]>, FsError> {
        if let Some((ino, runs)) = self.last_runs.lock().ok().and_then(|l| l.clone()) {
            if ino == inode.ino {
                return Ok(runs);
            }
        }
        let runs: Arc<[Run]> = self.block_map(inode)?.runs.into();
        if let Ok(mut l) = self.last_runs.lock() {
            *l = Some((inode.ino, Arc::clone(&runs)));
        }
        Ok(runs)
    }

    /// Whether `inode` keeps no block map: inline data, fast symlinks,
    /// devices (their `i_block` holds the device number).
    pub(super) fn has_no_map(&self, inode: &Inode) -> bool {
        inode.has_inline_data() || self.fast_symlink(inode) || inode.is_device()
    }

    /// The walk of `inode`'s block map: its runs, and the parts that could
    /// not be followed. Empty for inodes without a map.
    ///
    /// # Errors
    /// `Corrupt` when the extent tree root is unreadable; I/O errors.
    pub fn block_map(&self, inode: &Inode) -> Result<BlockMap, FsError> {
        if self.has_no_map(inode) {
            return Ok(BlockMap::default());
        }
        let geo = self.geometry(inode);
        let mut read = |b: u64| self.block(b);
        let root_at = inode.base.saturating_add(0x28);
        if inode.flags & EXTENTS_FL != 0 {
            super::extent::walk(inode.ino, &inode.block, root_at, &geo, &mut read)
        } else {
            super::indirect::walk(inode.ino, &inode.block, root_at, &geo, &mut read)
        }
    }

    /// Where the file's blocks are, when the whole map can be read.
    ///
    /// # Errors
    /// The first part of the map that could not be followed (see
    /// [`Ext4::block_map`] for a partial map).
    pub fn runs(&self, inode: &Inode) -> Result<Vec<Run>, FsError> {
        let mut map = self.block_map(inode)?;
        match map.skipped.is_empty() {
            true => Ok(map.runs),
            false => Err(map.skipped.swap_remove(0)),
        }
    }

    /// A symlink whose target sits in `i_block` (the kernel's
    /// `ext4_inode_is_fast_symlink`: no data blocks besides an attribute
    /// block, no inline data).
    pub fn fast_symlink(&self, inode: &Inode) -> bool {
        if !inode.is_symlink() || inode.has_inline_data() {
            return false;
        }
        if inode.flags & EA_INODE_FL != 0 {
            return inode.size > 0 && inode.size < 60;
        }
        let cluster = if self.sb.has_ro_compat(RoCompat::BIGALLOC) {
            1024u64 << self.sb.get(sb!("s_log_cluster_size")).min(30)
        } else {
            self.sb.block_size
        };
        let ea_sectors = if inode.file_acl != 0 {
            cluster / 512
        } else {
            0
        };
        inode.blocks.saturating_sub(ea_sectors) == 0
    }

    /// The extended attributes of `inode`: in the inode, then in its
    /// attribute block. Problems (a damaged area, a bad block checksum)
    /// are listed; the attributes read before them are kept.
    ///
    /// # Errors
    /// I/O errors.
    pub fn xattrs(&self, inode: &Inode) -> Result<Xattrs, FsError> {
        let mut out = Xattrs::default();
        let sb = &self.sb;
        let (area, base) = inode.xattr_area();
        match xattr::decode_ibody(area, base) {
            Ok(a) => out.attrs = a,
            Err(e) => out.problems.push(e),
        }
        if inode.file_acl != 0 {
            match self.block(inode.file_acl) {
                Ok(bytes) => {
                    let base = inode.file_acl.saturating_mul(self.sb.block_size);
                    if self.sb.has_metadata_csum() {
                        let c = XattrBlock::checksum(&bytes, inode.file_acl, self.sb.csum_seed);
                        if !c.ok() {
                            out.problems.push(FsError::checksum(
                                "extended attribute block",
                                "h_checksum",
                                base.saturating_add(0x10),
                                c.stored,
                                c.computed,
                            ));
                        }
                    }
                    match XattrBlock::decode(&bytes, base) {
                        Ok(b) => {
                            out.attrs.extend(b.attrs.iter().cloned());
                            out.block = Some(b);
                        }
                        Err(e) => out.problems.push(e),
                    }
                }
                Err(FsError::Io(e)) => return Err(FsError::Io(e)),
                Err(_) => out.problems.push(FsError::corrupt(
                    "inode",
                    "i_file_acl_lo",
                    inode.base.saturating_add(0x68),
                    format!(
                        "inode {}: attribute block {} is outside the filesystem",
                        inode.ino, inode.file_acl
                    ),
                )),
            }
        }
        // Attributes the features do not allow are shown, and flagged.
        if !out.attrs.is_empty()
            && !sb.has_compat(Compat::EXT_ATTR)
            && !sb.has_incompat(Incompat::INLINE_DATA)
        {
            out.problems.push(FsError::corrupt(
                "superblock",
                "s_feature_compat",
                super::superblock::Superblock::offset_of(sb!("s_feature_compat")),
                format!(
                    "inode {} has extended attributes, but the filesystem lacks ext_attr",
                    inode.ino
                ),
            ));
        }
        // Values in their own inode (ea_inode): read, bounded.
        for x in out.attrs.iter_mut().filter(|x| x.value_inum != 0) {
            if !sb.has_incompat(Incompat::EA_INODE) {
                out.problems.push(FsError::corrupt(
                    "extended attribute entry",
                    "e_value_inum",
                    x.offset.saturating_add(4),
                    format!(
                        "inode {}: value in inode {}, but the filesystem lacks ea_inode",
                        inode.ino, x.value_inum
                    ),
                ));
                continue;
            }
            match self.ea_inode_value(inode.ino, x) {
                Ok(v) => x.value = v,
                Err(e @ FsError::Io(_)) => return Err(e),
                Err(e) => out.problems.push(e),
            }
        }
        // Entry hashes, where set.
        for x in out.attrs.iter().filter(|x| x.hash != 0) {
            let holder = if x.value_inum != 0 {
                match self.inode(u64::from(x.value_inum)) {
                    Ok(i) => Some(i),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let (unsigned, signed) = xattr::entry_hash(x, holder.as_ref().map(|i| i.atime.raw));
            // An old Lustre-style reference: the value inode names its
            // owner in i_mtime instead (accepted by e2fsprogs).
            let lustre = holder.as_ref().is_some_and(|h| {
                u64::from(h.mtime.raw) == inode.ino && h.generation == inode.generation
            });
            if x.hash != unsigned && x.hash != signed && !lustre {
                out.problems.push(FsError::corrupt(
                    "extended attribute entry",
                    "e_hash",
                    x.offset.saturating_add(12),
                    format!(
                        "inode {}: {}: hash {:#010x}, computed {unsigned:#010x}",
                        inode.ino,
                        x.display_name(),
                        x.hash
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// The value of attribute `x` of inode `owner`, stored in inode
    /// `x.value_inum`.
    fn ea_inode_value(&self, owner: u64, x: &Xattr) -> Result<Vec<u8>, FsError> {
        let holder = self.inode(u64::from(x.value_inum))?;
        if holder.flags & EA_INODE_FL == 0
            || x.value_size == 0
            || u64::from(x.value_size) > MAX_EA_VALUE
            || u64::from(x.value_size) > holder.size
        {
            return Err(FsError::corrupt(
                "extended attribute entry",
                "e_value_inum",
                x.offset.saturating_add(4),
                format!(
                    "inode {owner}: value of {} bytes in inode {}; expected an attribute inode of 1 to {MAX_EA_VALUE} bytes holding it",
                    x.value_size, x.value_inum
                ),
            ));
        }
        let mut buf = vec![0u8; us(x.value_size)];
        let runs = self.runs(&holder)?;
        self.read_file(&holder, &runs, 0, &mut buf)?;
        Ok(buf)
    }

    /// The whole inline data of `inode`: the 60 bytes of `i_block`, then
    /// the `system.data` attribute's value.
    ///
    /// # Errors
    /// A damaged in-inode attribute area.
    pub fn inline_data(&self, inode: &Inode) -> Result<Vec<u8>, FsError> {
        let mut data = inode.block.to_vec();
        let (area, base) = inode.xattr_area();
        if let Some(x) = xattr::decode_ibody(area, base)?
            .into_iter()
            .find(|x| x.name == b"system.data")
        {
            data.extend_from_slice(&x.value);
        }
        Ok(data)
    }

    /// The target of a symlink, raw bytes.
    ///
    /// # Errors
    /// `Unsupported` for encrypted targets; a damaged map or block.
    pub fn symlink_target(&self, inode: &Inode) -> Result<Vec<u8>, FsError> {
        if inode.flags & ENCRYPT_FL != 0 {
            return Err(FsError::Unsupported {
                what: format!("inode {}: encrypted symlink target", inode.ino),
            });
        }
        let len = inode.size.min(MAX_LINK);
        let mut buf = vec![0u8; us(len)];
        if self.fast_symlink(inode) {
            let n = buf.len().min(inode.block.len());
            buf.truncate(n);
            buf.copy_from_slice(inode.block.get(..n).unwrap_or_default());
        } else {
            let runs = if inode.has_inline_data() {
                Vec::new()
            } else {
                self.runs(inode)?
            };
            self.read_file(inode, &runs, 0, &mut buf)?;
        }
        Ok(buf)
    }

    /// The whole content of a file, holes and uninitialized extents as
    /// zeros, at most `limit` bytes (callers stream big files with
    /// [`Ext4::read_file`]).
    ///
    /// # Errors
    /// Corrupt block maps; read errors.
    pub fn read_all(&self, inode: &Inode, limit: u64) -> Result<Vec<u8>, FsError> {
        let len = inode.size.min(limit);
        let mut buf = vec![0u8; us(len)];
        self.read_file(inode, &self.runs(inode)?, 0, &mut buf)?;
        Ok(buf)
    }

    /// Reads the file at `offset` into `buf`, given its `runs`, as far as
    /// a read reaches; returns how many bytes of `buf` are the file's (0 at
    /// or past its end). A regular file reads as the kernel reads it:
    /// `i_size`, but nothing at or past `s_maxbytes`
    /// ([`Superblock::max_bytes`]). Any other inode (a directory, a
    /// symlink, a device, an inode of no valid type) is read as `debugfs
    /// dump` reads it, but no further than its map or inline area reaches:
    /// the kernel never read(2)s those, so past what they hold their
    /// `i_size` is only a claim. An `i_size` of 2^63 or more is no size at
    /// all: the kernel's iget refuses the inode ("bad i_size value").
    /// Inline data is decoded once, for both the size and the bytes.
    ///
    /// # Errors
    /// `Corrupt` for such an `i_size`; a damaged inline data area; read
    /// errors.
    ///
    /// [`Superblock::max_bytes`]: super::superblock::Superblock::max_bytes
    pub fn read_at(
        &self,
        inode: &Inode,
        runs: &[Run],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, FsError> {
        let size = self.size_as_read(inode)?;
        let inline = if inode.has_inline_data() {
            Some(self.inline_data(inode)?)
        } else {
            None
        };
        let have = self
            .readable_of(inode, size, runs, inline.as_deref())
            .saturating_sub(offset);
        let n = usize::try_from(have).unwrap_or(usize::MAX).min(buf.len());
        let Some(part) = buf.get_mut(..n) else {
            return Ok(0);
        };
        match inline {
            Some(data) => copy_at(&data, offset, part),
            None => self.read_file(inode, runs, offset, part)?,
        }
        Ok(n)
    }

    /// `i_size` bounded by `s_maxbytes`, or `Corrupt` for 2^63 or more
    /// (see [`Ext4::read_at`]).
    fn size_as_read(&self, inode: &Inode) -> Result<u64, FsError> {
        if i64::try_from(inode.size).is_err() {
            return Err(FsError::corrupt(
                "inode",
                "i_size",
                inode.base.saturating_add(4),
                format!(
                    "inode {}: size {} is negative as the kernel reads it (2^63 or more); it refuses the inode",
                    inode.ino, inode.size
                ),
            ));
        }
        Ok(inode.size.min(self.sb.max_bytes()))
    }

    /// How many bytes of the file a read returns (see [`Ext4::read_at`]),
    /// given `size` ([`Ext4::size_as_read`]) and the inode's decoded inline
    /// data when it has some.
    fn readable_of(&self, inode: &Inode, size: u64, runs: &[Run], inline: Option<&[u8]>) -> u64 {
        if inode.is_reg() {
            return size;
        }
        let held = if inode.has_inline_data() {
            u64_of(inline.map_or(0, <[u8]>::len))
        } else if self.fast_symlink(inode) {
            u64_of(inode.block.len())
        } else {
            runs.iter()
                .filter(|r| !r.meta)
                .map(|r| {
                    r.logical
                        .saturating_add(r.len)
                        .saturating_mul(self.sb.block_size)
                })
                .max()
                .unwrap_or(0)
        };
        size.min(held)
    }

    /// Fills `buf` with the file's bytes at `offset`, given its `runs`
    /// (from [`Ext4::block_map`]); what no run covers reads as zeros.
    ///
    /// # Errors
    /// Read errors; a damaged inline data area.
    pub fn read_file(
        &self,
        inode: &Inode,
        runs: &[Run],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        if inode.has_inline_data() {
            copy_at(&self.inline_data(inode)?, offset, buf);
            return Ok(());
        }
        if self.fast_symlink(inode) {
            copy_at(&inode.block, offset, buf);
            return Ok(());
        }
        let bs = self.sb.block_size;
        let end = offset.saturating_add(u64_of(buf.len()));
        // Only the gaps between the runs read are zeroed (one pass over
        // the buffer, not two), when the runs come in logical order, as
        // block maps give them; otherwise all of it first.
        let data = || runs.iter().filter(|r| !r.uninit && !r.meta);
        let sorted = data()
            .zip(data().skip(1))
            .all(|(a, b)| a.logical.saturating_add(a.len) <= b.logical);
        if !sorted {
            buf.fill(0);
        }
        let mut filled = 0usize; // buf[..filled] is written
        for r in data() {
            let start = r.logical.saturating_mul(bs);
            let stop = r.logical.saturating_add(r.len).saturating_mul(bs);
            let (a, b) = (start.max(offset), stop.min(end));
            if a >= b {
                continue;
            }
            // offset <= a < b <= end = offset + buf.len(): in `buf`.
            let disk_at = self
                .block_offset(r.physical)?
                .saturating_add(a.saturating_sub(start));
            let (from, to) = (us(a.saturating_sub(offset)), us(b.saturating_sub(offset)));
            if sorted {
                if let Some(gap) = buf.get_mut(filled..from) {
                    gap.fill(0);
                }
                filled = filled.max(to);
            }
            if let Some(part) = buf.get_mut(from..to) {
                self.disk.read_at(disk_at, part)?;
            }
        }
        if sorted {
            if let Some(tail) = buf.get_mut(filled..) {
                tail.fill(0);
            }
        }
        Ok(())
    }
}

/// Fills `buf` with `data` from `offset` on, zeros past its end.
fn copy_at(data: &[u8], offset: u64, buf: &mut [u8]) {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let src = data.get(start..).unwrap_or_default();
    let n = src.len().min(buf.len());
    if let (Some((head, tail)), Some(src)) = (buf.split_at_mut_checked(n), src.get(..n)) {
        head.copy_from_slice(src);
        tail.fill(0);
    }
}
