//! Directories through their inodes: listing (linear and htree, in blocks
//! or inline), the checksums of their blocks, the htree index, and path
//! lookup.
use super::superblock::{sb, Compat};
use std::collections::HashSet;
use std::ops::ControlFlow;

use super::dir::{self, Entry};
use super::dirhash;
use super::error::FsError;
use super::htree::{self, DxNode};
use super::inode::{Inode, ENCRYPT_FL, INDEX_FL};
use super::Ext4;
use crate::fs::node::Problem;

/// A directory's entries, and what was wrong reading them.
#[derive(Debug, Default)]
pub struct Listing {
    /// Entries in on-disk order (as `debugfs ls` lists them).
    pub entries: Vec<Entry>,
    /// Damaged blocks and entries (skipped), bad checksums (the entries
    /// are listed all the same), parts of the map that were skipped.
    pub problems: Vec<FsError>,
}

/// An htree index as read: the root, then each inner node with its
/// logical block.
#[derive(Debug, Default, serde::Serialize)]
pub struct Htree {
    pub root: Option<DxNode>,
    pub nodes: Vec<(u32, DxNode)>,
    #[serde(serialize_with = "errors_as_text")]
    pub problems: Vec<FsError>,
}

fn errors_as_text<S: serde::Serializer>(errors: &[FsError], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(errors.iter().map(|e| e.to_string()))
}

/// Most directory entries [`Ext4::list_dir`] collects from one directory
/// (the streaming walk needs no such limit: it holds one block).
pub(crate) const MAX_ENTRIES: usize = 4 << 20;

/// Where a directory walk is, to say it in a problem.
struct DirBlockAt {
    ino: u64,
    physical: u64,
    base: u64,
}

impl Ext4 {
    /// The entries of a directory, every block read linearly (which lists
    /// htree directories too). A damaged block is reported in `errors`
    /// and listing goes on with the next block.
    ///
    /// # Errors
    /// When the inode's map cannot be read at all.
    pub fn read_dir(&self, inode: &Inode, errors: &mut Vec<String>) -> Result<Vec<Entry>, FsError> {
        let listing = self.list_dir(inode)?;
        errors.extend(listing.problems.iter().map(|e| e.to_string()));
        Ok(listing.entries)
    }

    /// The entries of a directory and the problems met (see
    /// [`Listing`]), collected (at most 4 Mi entries; callers that walk
    /// big trees stream with [`Ext4::for_each_entry`]).
    ///
    /// # Errors
    /// When the inode's map cannot be read at all; I/O errors.
    pub fn list_dir(&self, inode: &Inode) -> Result<Listing, FsError> {
        let mut out = Listing::default();
        let mut problems = Vec::new();
        let mut full = false;
        self.for_each_entry(inode, &mut problems, &mut |e| {
            out.entries.push(e);
            if out.entries.len() > MAX_ENTRIES {
                full = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        out.problems = problems.into_iter().map(|p| p.error).collect();
        if full {
            out.problems.push(FsError::corrupt(
                "directory",
                "i_size",
                inode.base,
                format!(
                    "directory inode {}: more than {MAX_ENTRIES} entries; the rest is not listed",
                    inode.ino
                ),
            ));
        }
        Ok(out)
    }

    /// Calls `each` with the entries of a directory in on-disk order,
    /// every block read linearly (which lists htree directories too), one
    /// block in memory at a time, until `each` breaks. With
    /// metadata_csum every block's checksum is checked: leaf tails, the
    /// htree root and inner nodes (a mismatch is a warning; the entries
    /// are listed all the same). A damaged block is a lost part: its
    /// entries from the damage on are not listed, and the walk goes on
    /// with the next block. A physical block the map lists twice is read
    /// once: a damaged map cannot make a small disk list without end.
    ///
    /// # Errors
    /// When the inode's map cannot be read at all; I/O errors.
    pub fn for_each_entry(
        &self,
        inode: &Inode,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Entry) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        if inode.has_inline_data() {
            let mut out = Listing::default();
            self.list_inline(inode, &mut out)?;
            problems.extend(out.problems.into_iter().map(Problem::lost));
            for e in out.entries {
                if each(e).is_break() {
                    break;
                }
            }
            return Ok(());
        }
        let map = self.block_map(inode)?;
        problems.extend(map.skipped.into_iter().map(Problem::lost));
        problems.extend(map.warnings.into_iter().map(Problem::warning));
        // One block in memory at a time, in one page-aligned buffer (the
        // kernel copies into an unaligned one ~3x slower), the one the
        // last listing used (a listing at the same time has its own).
        let mut block = self
            .dir_block
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        let listed = self.list_blocks(inode, &map.runs, problems, each, &mut block);
        if let Ok(mut b) = self.dir_block.lock() {
            *b = block;
        }
        listed
    }

    /// [`Ext4::for_each_entry`]'s walk of the directory's block runs,
    /// read into `block`.
    fn list_blocks(
        &self,
        inode: &Inode,
        runs: &[crate::fs::ext::blockmap::Run],
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Entry) -> ControlFlow<()>,
        block: &mut crate::block::buffer::AlignedBuf,
    ) -> Result<(), FsError> {
        let bs = self.sb.block_size;
        let indexed = inode.flags & INDEX_FL != 0;
        let mut read = HashSet::new();
        for r in runs.iter().filter(|r| !r.meta && !r.uninit) {
            for i in 0..r.len {
                let logical = r.logical.saturating_add(i);
                if logical.saturating_mul(bs) >= inode.size {
                    return Ok(());
                }
                let physical = r.physical.saturating_add(i);
                if !read.insert(physical) {
                    problems.push(Problem::lost(FsError::corrupt(
                        "directory",
                        "block map",
                        physical.saturating_mul(bs),
                        format!(
                            "directory inode {}: block {physical} is mapped again at logical block {logical}; listed once",
                            inode.ino
                        ),
                    )));
                    continue;
                }
                match self.block_into_aligned(physical, block) {
                    Ok(()) => {}
                    Err(e @ FsError::Io(_)) => return Err(e),
                    Err(e) => {
                        problems.push(Problem::lost(e));
                        continue;
                    }
                }
                let at = DirBlockAt {
                    ino: inode.ino,
                    physical,
                    base: physical.saturating_mul(bs),
                };
                let root = indexed && logical == 0;
                if indexed && (root || htree::is_node(block)) {
                    self.check_index_block(inode, block, &at, root, problems);
                    if !root {
                        continue;
                    }
                }
                let d = self.leaf_block(inode, block, &at, root, problems);
                for e in d.entries {
                    if each(e).is_break() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// An htree root or inner node's checksum (metadata_csum).
    fn check_index_block(
        &self,
        inode: &Inode,
        block: &[u8],
        at: &DirBlockAt,
        root: bool,
        problems: &mut Vec<Problem>,
    ) {
        let Some(seed) = self.inode_seed(inode) else {
            return;
        };
        if let Ok(DxNode {
            checksum: Some(c), ..
        }) = htree::decode(block, at.base, root, Some(seed))
        {
            if !c.ok() {
                problems.push(Problem::warning(FsError::checksum(
                    if root { "htree root" } else { "htree node" },
                    "dt_checksum",
                    at.base,
                    c.stored,
                    c.computed,
                )));
            }
        }
    }

    /// The entries of one leaf block (or the htree root's `.` and `..`),
    /// its damage and checksum state added to `problems`.
    fn leaf_block(
        &self,
        inode: &Inode,
        block: &[u8],
        at: &DirBlockAt,
        root: bool,
        problems: &mut Vec<Problem>,
    ) -> dir::DirBlock {
        let bs = self.sb.block_size;
        let mut d = dir::decode_block(block, at.base);
        if let Some(e) = d.error.take() {
            problems.push(Problem::lost(e));
        } else if let (Some(seed), false) = (self.inode_seed(inode), root) {
            match (d.tail, dir::leaf_checksum(block, seed)) {
                (Some(_), Some(c)) if !c.ok() => problems.push(Problem::warning(FsError::checksum(
                    "directory block",
                    "det_checksum",
                    at.base.saturating_add(bs).saturating_sub(4),
                    c.stored,
                    c.computed,
                ))),
                (None, _) => problems.push(Problem::warning(FsError::corrupt(
                    "directory block",
                    "det_checksum",
                    at.base
                        .saturating_add(bs)
                        .saturating_sub(crate::bytes::u64_of(dir::TAIL_SIZE)),
                    format!(
                        "directory inode {}, block {}: no checksum tail, expected one with metadata_csum",
                        at.ino, at.physical
                    ),
                ))),
                _ => {}
            }
        }
        d
    }

    /// An inline directory: the parent's inode number, then entries in
    /// the rest of `i_block` and in the `system.data` attribute.
    fn list_inline(&self, inode: &Inode, out: &mut Listing) -> Result<(), FsError> {
        let parent = u32::from_le_bytes([
            inode.block[0],
            inode.block[1],
            inode.block[2],
            inode.block[3],
        ]);
        // `.` and `..` are not stored: file type 0, as e2fsprogs lists them.
        out.entries.push(Entry {
            inode: super::inode::lo32(inode.ino),
            name: b".".to_vec(),
            file_type: 0,
            offset: 0,
        });
        out.entries.push(Entry {
            inode: parent,
            name: b"..".to_vec(),
            file_type: 0,
            offset: inode.base.saturating_add(0x28),
        });
        let d = dir::decode_block(&inode.block[4..], inode.base.saturating_add(0x2c));
        out.entries.extend(d.entries);
        out.problems.extend(d.error);
        let (area, base) = inode.xattr_area();
        match super::xattr::decode_ibody(area, base) {
            Ok(attrs) => {
                if let Some(x) = attrs.iter().find(|x| x.name == b"system.data") {
                    if !x.value.is_empty() {
                        // The value's disk offset is not kept; entry offsets
                        // are those of the attribute entry.
                        let d = dir::decode_block(&x.value, x.offset);
                        out.entries.extend(d.entries);
                        out.problems.extend(d.error);
                    }
                }
            }
            Err(e) => out.problems.push(e),
        }
        Ok(())
    }

    /// The htree index of an indexed directory: the root and its inner
    /// nodes (leaves are ordinary directory blocks). `None` for other
    /// directories.
    ///
    /// # Errors
    /// I/O errors; damage is in the result's `problems`.
    pub fn htree(&self, inode: &Inode) -> Result<Option<Htree>, FsError> {
        if !inode.is_dir() || inode.flags & INDEX_FL == 0 || inode.has_inline_data() {
            return Ok(None);
        }
        let mut out = Htree::default();
        let map = self.block_map(inode)?;
        let seed = self.inode_seed(inode);
        let physical = |logical: u64| {
            map.runs
                .iter()
                .find(|r| {
                    !r.meta && r.logical <= logical && logical < r.logical.saturating_add(r.len)
                })
                .map(|r| r.physical.saturating_add(logical.saturating_sub(r.logical)))
        };
        let Some(root_block) = physical(0) else {
            out.problems.push(FsError::corrupt(
                "htree root",
                "block 0",
                inode.base,
                format!(
                    "directory inode {}: logical block 0 is not mapped",
                    inode.ino
                ),
            ));
            return Ok(Some(out));
        };
        let bs = self.sb.block_size;
        let root = match htree::decode(
            &self.block(root_block)?,
            root_block.saturating_mul(bs),
            true,
            seed,
        ) {
            Ok(r) => r,
            Err(e) => {
                out.problems.push(e);
                return Ok(Some(out));
            }
        };
        // Breadth first over the inner levels; each level at most one
        // block's worth of entries per node, each node read once.
        let mut level: Vec<u32> = if root.indirect_levels > 0 {
            root.entries.iter().map(|e| e.1).collect()
        } else {
            Vec::new()
        };
        let mut seen = std::collections::HashSet::new();
        for depth in 1..=root.indirect_levels {
            let mut next = Vec::new();
            for logical in level {
                if !seen.insert(logical) {
                    continue;
                }
                let Some(p) = physical(u64::from(logical)) else {
                    out.problems.push(FsError::corrupt(
                        "htree node",
                        "block",
                        root_block.saturating_mul(bs),
                        format!("directory inode {}: index points to logical block {logical}, which is not mapped", inode.ino),
                    ));
                    continue;
                };
                match htree::decode(&self.block(p)?, p.saturating_mul(bs), false, seed) {
                    Ok(n) => {
                        if depth < root.indirect_levels {
                            next.extend(n.entries.iter().map(|e| e.1));
                        }
                        out.nodes.push((logical, n));
                    }
                    Err(e) => out.problems.push(e),
                }
            }
            level = next;
        }
        out.root = Some(root);
        Ok(Some(out))
    }

    /// The inode of an absolute path (symlinks are not followed).
    ///
    /// # Errors
    /// A missing component, a non-directory in the middle.
    pub fn lookup(&self, path: &str) -> Result<u64, FsError> {
        self.lookup_bytes(path.as_bytes())
    }

    /// [`Ext4::lookup`] for a path of raw bytes (names need not be
    /// UTF-8). Each directory is searched through its htree index when it
    /// has one, else listed one block at a time until the name is found.
    ///
    /// # Errors
    /// A missing component, a non-directory in the middle.
    pub fn lookup_bytes(&self, path: &[u8]) -> Result<u64, FsError> {
        let shown = || crate::escape::printable_bytes(path);
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .collect();
        // The parent directory, when an earlier lookup found it: only the
        // last name is searched.
        let dirs = parts.len().saturating_sub(1);
        let parent: Vec<u8> = parts.get(..dirs).unwrap_or_default().join(&b'/');
        let known = if dirs > 0 {
            self.dir_memo
                .lock()
                .ok()
                .and_then(|mut m| m.get(&parent).copied())
        } else {
            None
        };
        let (mut ino, from) = match known {
            Some(dir) => (dir, dirs),
            None => (2u64, 0),
        };
        for (i, part) in parts.iter().enumerate().skip(from) {
            if i == dirs && dirs > 0 && known.is_none() {
                if let Ok(mut m) = self.dir_memo.lock() {
                    m.put(parent.clone(), ino);
                }
            }
            let node = self.inode(ino)?;
            if !node.is_dir() {
                return Err(FsError::NotFound {
                    path: shown(),
                    detail: format!("inode {ino} is not a directory"),
                });
            }
            ino = self
                .find_entry(&node, part)?
                .ok_or_else(|| FsError::NotFound {
                    path: shown(),
                    detail: format!(
                        "no {:?} in directory inode {ino}",
                        crate::escape::printable_bytes(part)
                    ),
                })?;
        }
        Ok(ino)
    }

    /// The inode named `name` in directory `dir`: through the htree index
    /// (a few blocks) when the directory has one the hash can follow,
    /// else (or when the index does not lead to it: a damaged index must
    /// not hide a name debugfs would find) by listing the directory one
    /// block at a time, stopping at the name.
    ///
    /// # Errors
    /// The directory's map cannot be read; I/O errors.
    pub fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<u64>, FsError> {
        if let Some(ino) = self.find_in_htree(dir, name)? {
            return Ok(Some(ino));
        }
        let mut found = None;
        self.for_each_entry(dir, &mut Vec::new(), &mut |e| {
            if e.name == name {
                found = Some(u64::from(e.inode));
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(found)
    }

    /// `name` looked up through `dir`'s htree index (the kernel's
    /// `dx_probe`, then the leaf and the leaves after it that continue
    /// the same hash); `None` when the directory has no usable index or
    /// the index does not lead to the name.
    fn find_in_htree(&self, dir: &Inode, name: &[u8]) -> Result<Option<u64>, FsError> {
        if dir.flags & INDEX_FL == 0 || dir.has_inline_data() || dir.flags & ENCRYPT_FL != 0 {
            return Ok(None);
        }
        let sb = &self.sb;
        if !sb.has_compat(Compat::DIR_INDEX) {
            // dir_index off: the kernel ignores the flag.
            return Ok(None);
        }
        let Ok(map) = self.block_map(dir) else {
            return Ok(None);
        };
        let physical = |logical: u64| {
            let i = map.runs.iter().position(|r| {
                !r.meta && r.logical <= logical && logical < r.logical.saturating_add(r.len)
            })?;
            let r = map.runs.get(i)?;
            Some(r.physical.saturating_add(logical.saturating_sub(r.logical)))
        };
        let bs = sb.block_size;
        let read = |logical: u64| -> Result<Option<(Vec<u8>, u64)>, FsError> {
            let Some(p) = physical(logical) else {
                return Ok(None);
            };
            match self.block(p) {
                Ok(b) => Ok(Some((b, p.saturating_mul(bs)))),
                Err(e @ FsError::Io(_)) => Err(e),
                Err(_) => Ok(None),
            }
        };
        let Some((root_block, root_at)) = read(0)? else {
            return Ok(None);
        };
        let Ok(root) = htree::decode(&root_block, root_at, true, None) else {
            return Ok(None);
        };
        let mut version = root.hash_version;
        if version <= dirhash::TEA && self.sb.get(sb!("s_flags")) & 2 != 0 {
            version = version.saturating_add(dirhash::UNSIGNED);
        }
        let Some(hash) = dirhash::hash(name, version, self.hash_seed()) else {
            return Ok(None);
        };
        // Down the index: at each level the last entry whose hash is at
        // most the name's.
        let mut node = root;
        for _ in 0..node.indirect_levels {
            let Some(&(_, child)) = node.entries.get(pick(&node.entries, hash)) else {
                return Ok(None);
            };
            let Some((b, at)) = read(u64::from(child))? else {
                return Ok(None);
            };
            let Ok(n) = htree::decode(&b, at, false, None) else {
                return Ok(None);
            };
            node = n;
        }
        // The leaf, and the ones after it while the index says the same
        // hash goes on there (the collision bit).
        let start = pick(&node.entries, hash);
        for (k, &(h, leaf)) in node.entries.iter().enumerate().skip(start) {
            if k > start && (h & !1) != hash {
                break;
            }
            let Some((b, at)) = read(u64::from(leaf))? else {
                continue;
            };
            let found = dir::decode_block(&b, at)
                .entries
                .into_iter()
                .find(|e| e.name == name)
                .map(|e| u64::from(e.inode));
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// `s_hash_seed` as the four words the hashes start from.
    pub fn hash_seed(&self) -> [u32; 4] {
        let raw = self.sb.hash_seed;
        let mut seed = [0u32; 4];
        for (w, c) in seed.iter_mut().zip(raw.chunks_exact(4)) {
            *w = crate::bytes::le32(c, 0).unwrap_or(0);
        }
        seed
    }
}

/// The index of the entry to follow for `hash`: the last whose hash is
/// at most it (the first entry's hash is implied 0), as `dx_probe`'s
/// binary search finds it.
fn pick(entries: &[(u32, u32)], hash: u32) -> usize {
    entries
        .get(1..)
        .map_or(0, |rest| rest.partition_point(|e| e.0 <= hash))
}
