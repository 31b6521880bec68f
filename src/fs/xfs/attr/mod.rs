//! Extended attributes: the attribute fork in short form ([`sf`]), or in
//! blocks: one leaf ([`leaf`]), or leaves under da btree nodes
//! ([`super::da`]), with values too large for a leaf in remote blocks
//! (v5: each with a header, magic "XARM", CRC, owner).
//!
//! Names get their namespace prefix from the entry's flags (`trusted.`,
//! `security.`, else `user.`); entries still being created
//! (`XFS_ATTR_INCOMPLETE`) are left out, as the kernel does.
use std::collections::HashSet;

use super::be::{u16_at, u32_at, u64_at, us};
use super::crc;
use super::da::{Node, MAX_DEPTH};
use super::dinode::{Dinode, Fork, Format};
use super::Xfs;
use crate::fs::FsError;

pub mod leaf;
pub mod sf;

const ROOT: u8 = 0x2;
const SECURE: u8 = 0x4;
const INCOMPLETE: u8 = 0x80;
/// `rm_magic`: "XARM".
const RMT_MAGIC: u32 = 0x5841_524d;
const RMT_HEADER: usize = 56;
/// The largest value (`XFS_XATTR_SIZE_MAX`).
const MAX_VALUE: u32 = 1 << 16;

/// One attribute as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Namespace flags.
    pub flags: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Disk offset of the entry.
    pub at: u64,
}

impl Attr {
    /// The name with its namespace prefix, as `getfattr` shows it.
    pub fn full_name(&self) -> Vec<u8> {
        let prefix: &[u8] = if self.flags & ROOT != 0 {
            b"trusted."
        } else if self.flags & SECURE != 0 {
            b"security."
        } else {
            b"user."
        };
        let mut n = prefix.to_vec();
        n.extend_from_slice(&self.name);
        n
    }
}

impl Xfs {
    /// The attributes of `inode`; damage that leaves the rest readable
    /// goes to `problems`.
    ///
    /// # Errors
    /// A fork offset past the inode; an unreadable root block.
    pub fn attrs(&self, inode: &Dinode, problems: &mut Vec<FsError>) -> Result<Vec<Attr>, FsError> {
        let Some((fork, at, format)) = inode.fork(Fork::Attr)? else {
            return Ok(Vec::new());
        };
        let mut out = match format {
            Format::Local => sf::decode(fork, at, inode.ino, problems),
            Format::Extents | Format::Btree => self.attr_blocks(inode, problems)?,
            f => {
                return Err(FsError::corrupt(
                    "inode",
                    "di_aformat",
                    inode.offset.saturating_add(0x53),
                    format!("inode {}: a {} attribute fork", inode.ino, f.name()),
                ))
            }
        };
        out.retain(|a| a.flags & INCOMPLETE == 0);
        Ok(out)
    }

    /// Walks the attribute da btree from block 0 down to its leaves, in
    /// hash order, each block at most once.
    fn attr_blocks(
        &self,
        inode: &Dinode,
        problems: &mut Vec<FsError>,
    ) -> Result<Vec<Attr>, FsError> {
        let v5 = self.superblock().is_v5();
        let uuid = self.superblock().meta_uuid;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<(u32, u16)> = vec![(0, MAX_DEPTH)];
        let mut root = true;
        while let Some((blk, max_level)) = stack.pop() {
            if !seen.insert(blk) {
                problems.push(FsError::corrupt(
                    "attribute B+tree",
                    "before",
                    inode.offset,
                    format!(
                        "inode {}: block {blk} is reached twice; not followed again",
                        inode.ino
                    ),
                ));
                continue;
            }
            let read = self.read_fork_blocks(
                inode,
                Fork::Attr,
                blk.into(),
                1,
                "attribute block",
                problems,
            );
            let (block, at) = match read {
                Ok(b) => b,
                Err(e) if root => return Err(e),
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            root = false;
            let magic = u16_at(&block, 8).unwrap_or(0);
            let info = super::da::BlkInfo::decode(&block, v5);
            for p in info.problems("attribute block", at, inode.ino, &uuid, &block) {
                problems.push(FsError::corrupt("attribute block", "header", at, p));
            }
            if magic == leaf::MAGIC || magic == leaf::MAGIC3 {
                let l = match leaf::Leaf::decode(&block, v5, at, inode.ino, problems) {
                    Ok(l) => l,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                for e in l.entries {
                    let value = match e.value {
                        leaf::Value::Local(v) => v,
                        leaf::Value::Remote { block, len } => {
                            match self.remote_value(inode, block, len, problems) {
                                Ok(v) => v,
                                Err(err) => {
                                    problems.push(err);
                                    continue;
                                }
                            }
                        }
                    };
                    out.push(Attr {
                        flags: e.flags,
                        name: e.name,
                        value,
                        at: e.at,
                    });
                }
                continue;
            }
            let node = match Node::decode(&block, v5, at) {
                Ok(n) => n,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if node.level >= max_level {
                problems.push(FsError::corrupt(
                    "attribute B+tree",
                    "level",
                    at,
                    format!(
                        "inode {}: level {} under a node of level {max_level}",
                        inode.ino, node.level
                    ),
                ));
                continue;
            }
            for &(_, child) in node.entries.iter().rev() {
                stack.push((child, node.level));
            }
        }
        Ok(out)
    }

    /// A remote value: `len` bytes from attribute-fork block `first`, each
    /// block (v5) with a header saying which bytes it holds.
    fn remote_value(
        &self,
        inode: &Dinode,
        first: u32,
        len: u32,
        problems: &mut Vec<FsError>,
    ) -> Result<Vec<u8>, FsError> {
        if len > MAX_VALUE {
            return Err(FsError::corrupt(
                "remote attribute value",
                "valuelen",
                inode.offset,
                format!("inode {}: {len} bytes, at most {MAX_VALUE}", inode.ino),
            ));
        }
        let v5 = self.superblock().is_v5();
        let bs = us(self.block_bytes());
        let room = if v5 {
            bs.saturating_sub(RMT_HEADER)
        } else {
            bs
        };
        let len = us(len);
        let blocks = len.div_ceil(room.max(1));
        let mut out = Vec::with_capacity(len);
        for b in 0..blocks {
            let blk = u64::from(first).saturating_add(super::be::u64_of(b));
            let (block, at) = self.read_fork_blocks(
                inode,
                Fork::Attr,
                blk,
                1,
                "remote attribute value",
                problems,
            )?;
            let want = len.saturating_sub(out.len()).min(room);
            let data = if v5 {
                let magic = u32_at(&block, 0).unwrap_or(0);
                if magic != RMT_MAGIC {
                    return Err(FsError::corrupt(
                        "remote attribute value",
                        "rm_magic",
                        at,
                        format!(
                            "inode {}: {magic:#010x}, expected {RMT_MAGIC:#010x} (XARM)",
                            inode.ino
                        ),
                    ));
                }
                if let Some(c) = crc::check(&block, 12).filter(|c| !c.ok()) {
                    problems.push(FsError::checksum(
                        "remote attribute value",
                        "rm_crc",
                        at.saturating_add(12),
                        c.stored,
                        c.computed,
                    ));
                }
                if u64_at(&block, 32) != Some(inode.ino) {
                    problems.push(FsError::corrupt(
                        "remote attribute value",
                        "rm_owner",
                        at.saturating_add(32),
                        format!(
                            "inode {}: owned by inode {}",
                            inode.ino,
                            u64_at(&block, 32).unwrap_or(0)
                        ),
                    ));
                }
                block.get(RMT_HEADER..RMT_HEADER.saturating_add(want))
            } else {
                block.get(..want)
            };
            out.extend_from_slice(data.unwrap_or_default());
        }
        Ok(out)
    }
}
