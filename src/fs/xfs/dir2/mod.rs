//! Directories, version 2 (v4) and 3 (v5), in all their forms:
//! short-form in the inode ([`sf`]); a single block holding entries and
//! their hash index ([`data`]); data blocks with one leaf of hashes
//! ([`leaf`]); data blocks with many leaves under da btree nodes
//! ([`super::da`]) and free-space index blocks; and any of these with the
//! data fork itself a B+tree.
//!
//! Listing reads only the data blocks, in file order: every name lives in
//! one of them whatever the form. Looking a name up follows the hash index
//! (the block's leaf, the single leaf, or the node tree down to a leaf),
//! as the kernel does, and falls back to the listing when the index is
//! damaged.
use std::collections::HashSet;
use std::ops::ControlFlow;

use super::bmbt::Mapping;
use super::da::{hashname, Node, MAX_DEPTH};
use super::dinode::{Dinode, Fork, Format};
use super::Xfs;
use crate::fs::FsError;

pub mod data;
pub mod leaf;
pub mod sf;

/// The start of the leaf space (32 GiB into the directory).
const LEAF_OFFSET: u64 = 1 << 35;

/// One directory entry, raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// The file type byte, with the ftype feature.
    pub ftype: Option<u8>,
    /// Disk offset of the entry.
    pub at: u64,
}

/// Problems one directory's blocks may raise before the rest of its
/// blocks are left unread: a directory that damaged is not listed
/// further, and a hostile one cannot grow the list without end.
const MAX_DIR_PROBLEMS: usize = 4096;

impl Xfs {
    /// Blocks per directory block.
    fn dir_fsbs(&self) -> u64 {
        1u64 << self.superblock().dirblklog.min(7)
    }

    /// The first file block of the leaf space.
    pub(super) fn leaf_fsb(&self) -> u64 {
        LEAF_OFFSET >> self.superblock().blocklog.min(16)
    }

    /// Calls `each` with the entries of directory `dir` (`.` and `..`
    /// first for a short-form one, which does not store them) until it
    /// breaks. Damaged blocks are reported in `problems` and skipped.
    ///
    /// # Errors
    /// A fork that cannot be read at all.
    pub fn list_dir(
        &self,
        dir: &Dinode,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(Entry) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let sb = self.superblock();
        let ftype = sb.has_ftype();
        match dir.format {
            Format::Local => {
                let Some((fork, at, _)) = dir.fork(Fork::Data)? else {
                    return Ok(());
                };
                let s = sf::decode(fork, dir.size, at, ftype, dir.ino, problems);
                let dots = [
                    Entry {
                        name: b".".to_vec(),
                        ino: dir.ino,
                        ftype: Some(2).filter(|_| ftype),
                        at,
                    },
                    Entry {
                        name: b"..".to_vec(),
                        ino: s.parent,
                        ftype: Some(2).filter(|_| ftype),
                        at,
                    },
                ];
                for e in dots.into_iter().chain(s.entries) {
                    if each(e).is_break() {
                        break;
                    }
                }
                Ok(())
            }
            Format::Extents | Format::Btree => {
                let per = self.dir_fsbs();
                let leaf = self.leaf_fsb();
                let mut stop = false;
                // The data-space extents, collected first: the blocks are
                // then read from them, the map walked once.
                let mut extents = Vec::new();
                self.walk_fork(dir, Fork::Data, 0, problems, &mut |m| {
                    let Mapping::Extent(e) = m else {
                        return ControlFlow::Continue(());
                    };
                    if e.startoff >= leaf {
                        return ControlFlow::Break(());
                    }
                    extents.push(e);
                    ControlFlow::Continue(())
                })?;
                // The directory blocks, extent by extent (a range of
                // directory block numbers each). Ranges, not block
                // numbers: a hostile extent of 2^21 blocks costs one entry
                // here.
                let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
                for e in &extents {
                    let first = e.startoff.div_ceil(per);
                    let last = e.end().min(leaf).div_ceil(per);
                    // Overlapping extents: a block is listed once.
                    let first = ranges.last().map_or(first, |r| first.max(r.end));
                    if first < last {
                        ranges.push(first..last);
                    }
                }
                let before = problems.len();
                'ranges: for range in ranges {
                    for db in range {
                        if stop {
                            break 'ranges;
                        }
                        if problems.len().saturating_sub(before) >= MAX_DIR_PROBLEMS {
                            problems.push(FsError::corrupt(
                                "inode",
                                "di_size",
                                dir.offset,
                                format!(
                                    "directory inode {}: {MAX_DIR_PROBLEMS} problems in its blocks; the rest not read",
                                    dir.ino
                                ),
                            ));
                            break 'ranges;
                        }
                        // From the extents walked above: the map's
                        // problems are reported once, by that walk.
                        let (block, at) = match self.read_mapped_blocks(
                            dir,
                            &extents,
                            db.saturating_mul(per),
                            per,
                            "directory data block",
                        ) {
                            Ok(b) => b,
                            Err(e) => {
                                // A block that cannot be read (outside the
                                // filesystem, an I/O error): so are the rest
                                // of its extent. One error for them.
                                problems.push(e);
                                continue 'ranges;
                            }
                        };
                        let h = match data::header(
                            &block,
                            sb.is_v5(),
                            at,
                            dir.ino,
                            &sb.meta_uuid,
                            problems,
                        ) {
                            Ok(h) => h,
                            Err(e) => {
                                problems.push(e);
                                continue;
                            }
                        };
                        let end = data::entries_end(&block, &h, at, dir.ino, problems);
                        stop = !data::walk(
                            &block,
                            h.len,
                            end,
                            at,
                            ftype,
                            dir.ino,
                            problems,
                            &mut |e| each(e).is_continue(),
                        );
                    }
                }
                Ok(())
            }
            f => Err(FsError::corrupt(
                "inode",
                "di_format",
                dir.offset.saturating_add(5),
                format!("directory inode {}: a {} data fork", dir.ino, f.name()),
            )),
        }
    }

    /// The inode `name` names in directory `dir`, through the hash index
    /// where the directory has one; `None` when it has no such entry.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn dir_lookup(&self, dir: &Dinode, name: &[u8]) -> Result<Option<u64>, FsError> {
        if matches!(dir.format, Format::Extents | Format::Btree) && name != b"." && name != b".." {
            if let Ok(found) = self.hash_lookup(dir, name) {
                return Ok(found);
            }
        }
        let mut found = None;
        let mut problems = Vec::new();
        self.list_dir(dir, &mut problems, &mut |e| {
            if e.name == name {
                found = Some(e.ino);
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(found)
    }

    /// Looks `name` up through the hash index: the leaf in a single-block
    /// directory's tail, the one leaf block, or the node tree's leaves.
    fn hash_lookup(&self, dir: &Dinode, name: &[u8]) -> Result<Option<u64>, FsError> {
        let sb = self.superblock();
        let v5 = sb.is_v5();
        let per = self.dir_fsbs();
        let dirblk = sb.dir_block_size();
        let hash = hashname(name);
        let mut problems = Vec::new();
        let mut addresses = Vec::new();
        if dir.size == dirblk {
            // A single block: its leaf is in the tail.
            let (block, at) =
                self.read_fork_blocks(dir, Fork::Data, 0, per, "directory block", &mut problems)?;
            let h = data::header(&block, v5, at, dir.ino, &sb.meta_uuid, &mut problems)?;
            if !h.single {
                return Err(FsError::corrupt(
                    "directory block",
                    "magic",
                    at,
                    "not a single-block directory",
                ));
            }
            let start = data::entries_end(&block, &h, at, dir.ino, &mut problems);
            let tail = block.len().saturating_sub(8);
            let mut off = start;
            while off < tail {
                let hv = super::be::u32_at(&block, off).unwrap_or(0);
                let addr = super::be::u32_at(&block, off.saturating_add(4)).unwrap_or(0);
                if hv == hash && addr != 0 {
                    addresses.push(addr);
                }
                off = off.saturating_add(8);
            }
        } else {
            let mut fsb = self.leaf_fsb();
            let mut seen = HashSet::new();
            let mut depth = 0u16;
            loop {
                if !seen.insert(fsb) || depth > MAX_DEPTH.saturating_add(64) {
                    return Err(FsError::corrupt(
                        "directory leaf",
                        "forw",
                        dir.offset,
                        format!("inode {}: the hash index loops", dir.ino),
                    ));
                }
                depth = depth.saturating_add(1);
                let (block, at) = self.read_fork_blocks(
                    dir,
                    Fork::Data,
                    fsb,
                    per,
                    "directory leaf",
                    &mut problems,
                )?;
                let magic = super::be::u16_at(&block, 8).unwrap_or(0);
                if leaf::is_leaf(magic, v5) {
                    let l = leaf::Leaf::decode(&block, v5, at)?;
                    let (found, to_end) = l.matches(hash);
                    addresses.extend(found);
                    if to_end && l.info.forw != 0 {
                        fsb = u64::from(l.info.forw);
                        continue;
                    }
                    break;
                }
                let node = Node::decode(&block, v5, at)?;
                fsb = u64::from(node.child_for(hash).unwrap_or(0));
            }
        }
        for addr in addresses {
            let byte = u64::from(addr).saturating_mul(8);
            let db = byte.checked_div(dirblk).unwrap_or(0);
            let off = super::be::us(byte.checked_rem(dirblk).unwrap_or(0));
            let (block, at) = self.read_fork_blocks(
                dir,
                Fork::Data,
                db.saturating_mul(per),
                per,
                "directory data block",
                &mut problems,
            )?;
            if let Some(e) = data::entry_at(&block, off, at, sb.has_ftype()) {
                if e.name == name {
                    return Ok(Some(e.ino));
                }
            }
        }
        Ok(None)
    }
}
