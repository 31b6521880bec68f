//! Directories through their inodes: listing (linear and htree, in blocks
//! or inline), the checksums of their blocks, the htree index, and path
//! lookup.
use super::dir::{self, Entry};
use super::error::FsError;
use super::htree::{self, DxNode};
use super::inode::{Inode, INDEX_FL};
use super::Ext4;

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

/// Most directory entries listed from one directory: a damaged directory
/// whose map repeats blocks cannot grow a listing without end.
const MAX_ENTRIES: usize = 4 << 20;

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
    /// [`Listing`]). With metadata_csum every block's checksum is checked:
    /// leaf tails, the htree root and inner nodes.
    ///
    /// # Errors
    /// When the inode's map cannot be read at all; I/O errors.
    pub fn list_dir(&self, inode: &Inode) -> Result<Listing, FsError> {
        let mut out = Listing::default();
        if inode.has_inline_data() {
            self.list_inline(inode, &mut out)?;
            return Ok(out);
        }
        let map = self.block_map(inode)?;
        out.problems.extend(map.skipped);
        out.problems.extend(map.warnings);
        let bs = self.sb.block_size;
        let seed = self.inode_seed(inode);
        let indexed = inode.flags & INDEX_FL != 0;
        'runs: for r in map.runs.iter().filter(|r| !r.meta && !r.uninit) {
            for i in 0..r.len {
                let logical = r.logical + i;
                if logical.saturating_mul(bs) >= inode.size || out.entries.len() > MAX_ENTRIES {
                    break 'runs;
                }
                let physical = r.physical + i;
                let block = match self.block(physical) {
                    Ok(b) => b,
                    Err(e @ FsError::Io(_)) => return Err(e),
                    Err(e) => {
                        out.problems.push(e);
                        continue;
                    }
                };
                let base = physical * bs;
                let root = indexed && logical == 0;
                if indexed && (root || htree::is_node(&block)) {
                    if let Some(seed) = seed {
                        match htree::decode(&block, base, root, Some(seed)) {
                            Ok(DxNode {
                                checksum: Some(c), ..
                            }) if !c.ok() => out.problems.push(FsError::checksum(
                                if root { "htree root" } else { "htree node" },
                                "dt_checksum",
                                base,
                                c.stored,
                                c.computed,
                            )),
                            _ => {}
                        }
                    }
                    if !root {
                        continue;
                    }
                }
                let d = dir::decode_block(&block, base);
                if let Some(e) = d.error {
                    out.problems.push(e);
                } else if let (Some(seed), false) = (seed, root) {
                    match (d.tail, dir::leaf_checksum(&block, seed)) {
                        (Some(_), Some(c)) if !c.ok() => out.problems.push(FsError::checksum(
                            "directory block",
                            "det_checksum",
                            base + bs - 4,
                            c.stored,
                            c.computed,
                        )),
                        (None, _) => out.problems.push(FsError::corrupt(
                            "directory block",
                            "det_checksum",
                            base + bs - dir::TAIL_SIZE as u64,
                            format!(
                                "directory inode {}, block {physical}: no checksum tail, expected one with metadata_csum",
                                inode.ino
                            ),
                        )),
                        _ => {}
                    }
                }
                out.entries.extend(d.entries);
            }
        }
        Ok(out)
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
            inode: inode.ino as u32,
            name: b".".to_vec(),
            file_type: 0,
            offset: 0,
        });
        out.entries.push(Entry {
            inode: parent,
            name: b"..".to_vec(),
            file_type: 0,
            offset: inode.base + 0x28,
        });
        let d = dir::decode_block(&inode.block[4..], inode.base + 0x2c);
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
                .find(|r| !r.meta && r.logical <= logical && logical < r.logical + r.len)
                .map(|r| r.physical + (logical - r.logical))
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
        let root = match htree::decode(&self.block(root_block)?, root_block * bs, true, seed) {
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
                        root_block * bs,
                        format!("directory inode {}: index points to logical block {logical}, which is not mapped", inode.ino),
                    ));
                    continue;
                };
                match htree::decode(&self.block(p)?, p * bs, false, seed) {
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
        let mut ino = 2u64;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let node = self.inode(ino)?;
            if !node.is_dir() {
                return Err(FsError::NotFound {
                    path: path.to_owned(),
                    detail: format!("inode {ino} is not a directory"),
                });
            }
            let entries = self.list_dir(&node)?.entries;
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
}
