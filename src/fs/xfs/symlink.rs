//! Symbolic links: the target in the inode's data fork (local format) or,
//! when it does not fit, in up to three blocks (remote). On v5 each remote
//! block starts with a header (`struct xfs_dsymlink_hdr`: magic "XSLM",
//! the target bytes it holds and where, CRC, UUID, owner, own address).
use super::be::{u32_at, u64_at, u64_of, us};
use super::crc;
use super::dinode::{Dinode, Fork, Format};
use super::Xfs;
use crate::fs::FsError;

/// `sl_magic`: "XSLM".
pub const MAGIC: u32 = 0x5853_4c4d;
const HEADER: usize = 56;
/// The longest target (`XFS_SYMLINK_MAXLEN`).
pub const MAX_LEN: u64 = 1024;

impl Xfs {
    /// The target of symlink `inode`, raw bytes; damage in remote blocks
    /// (bad magic, CRC, owner) goes to `problems` while the bytes are
    /// still returned where they can be found.
    ///
    /// # Errors
    /// `Corrupt` for a size past the longest target or the fork; map and
    /// read errors.
    pub fn symlink_target(
        &self,
        inode: &Dinode,
        problems: &mut Vec<FsError>,
    ) -> Result<Vec<u8>, FsError> {
        let size = inode.size;
        if size == 0 || size > MAX_LEN {
            return Err(FsError::corrupt(
                "symlink",
                "di_size",
                inode.offset.saturating_add(0x38),
                format!(
                    "inode {}: a target of {size} bytes (1 to {MAX_LEN})",
                    inode.ino
                ),
            ));
        }
        let len = us(size);
        match inode.format {
            Format::Local => {
                let Some((fork, at, _)) = inode.fork(Fork::Data)? else {
                    return Ok(Vec::new());
                };
                fork.get(..len).map(<[u8]>::to_vec).ok_or_else(|| {
                    FsError::corrupt(
                        "symlink",
                        "di_size",
                        at,
                        format!(
                            "inode {}: {len} bytes do not fit the {}-byte fork",
                            inode.ino,
                            fork.len()
                        ),
                    )
                })
            }
            Format::Extents | Format::Btree => {
                let sb = self.superblock();
                let v5 = sb.is_v5();
                let bs = self.block_bytes();
                let room = if v5 {
                    bs.saturating_sub(u64_of(HEADER))
                } else {
                    bs
                };
                let blocks = size.div_ceil(room.max(1));
                let mut out = Vec::with_capacity(len);
                for b in 0..blocks {
                    let (block, at) =
                        self.read_fork_blocks(inode, Fork::Data, b, 1, "symlink block", problems)?;
                    let want = len.saturating_sub(out.len()).min(us(room));
                    let data = if v5 {
                        let magic = u32_at(&block, 0).unwrap_or(0);
                        if magic != MAGIC {
                            return Err(FsError::corrupt(
                                "symlink block",
                                "sl_magic",
                                at,
                                format!(
                                    "inode {}: {magic:#010x}, expected {MAGIC:#010x} (XSLM)",
                                    inode.ino
                                ),
                            ));
                        }
                        if let Some(c) = crc::check(&block, 12).filter(|c| !c.ok()) {
                            problems.push(FsError::checksum(
                                "symlink block",
                                "sl_crc",
                                at.saturating_add(12),
                                c.stored,
                                c.computed,
                            ));
                        }
                        if u64_at(&block, 32) != Some(inode.ino) {
                            problems.push(FsError::corrupt(
                                "symlink block",
                                "sl_owner",
                                at.saturating_add(32),
                                format!(
                                    "inode {}: owned by inode {}",
                                    inode.ino,
                                    u64_at(&block, 32).unwrap_or(0)
                                ),
                            ));
                        }
                        let off = us(u32_at(&block, 4).unwrap_or(0));
                        let n = us(u32_at(&block, 8).unwrap_or(0));
                        if off != out.len() || n != want {
                            problems.push(FsError::corrupt(
                                "symlink block",
                                "sl_bytes",
                                at.saturating_add(4),
                                format!(
                                    "inode {}: holds {n} bytes at {off}, expected {want} at {}",
                                    inode.ino,
                                    out.len()
                                ),
                            ));
                        }
                        block.get(HEADER..HEADER.saturating_add(want))
                    } else {
                        block.get(..want)
                    };
                    out.extend_from_slice(data.unwrap_or_default());
                }
                Ok(out)
            }
            f => Err(FsError::corrupt(
                "inode",
                "di_format",
                inode.offset.saturating_add(5),
                format!("symlink inode {}: a {} data fork", inode.ino, f.name()),
            )),
        }
    }
}
