//! Extent trees (ext4): a 12-byte header, then 12-byte entries, index
//! entries in inner nodes and extents in leaves; the root lives in the
//! inode's `i_block`, other nodes in whole blocks ending with a crc32c
//! (metadata_csum). Depth is at most 5 (the kernel's limit).
use std::collections::{BTreeMap, HashSet};

use crate::layout::Field;

use super::blockmap::{BlockMap, Geometry, ReadBlock, Run};
use super::checksum::{crc32c_raw, Check};
use super::error::FsError;

/// `struct ext4_extent_header`.
pub const HEADER: &[Field] = &[
    Field::new("eh_magic", 0x0, 2, "0xF30A"),
    Field::new("eh_entries", 0x2, 2, "entries in use"),
    Field::new("eh_max", 0x4, 2, "entries that fit"),
    Field::new("eh_depth", 0x6, 2, "0 for a leaf, else levels below"),
    Field::new("eh_generation", 0x8, 4, "generation (unused)"),
];
/// `struct ext4_extent` (a leaf entry).
pub const LEAF: &[Field] = &[
    Field::new("ee_block", 0x0, 4, "first logical block"),
    Field::new(
        "ee_len",
        0x4,
        2,
        "blocks; over 32768: uninitialized, len - 32768",
    ),
    Field::new("ee_start_hi", 0x6, 2, "physical block (high)"),
    Field::new("ee_start_lo", 0x8, 4, "physical block (low)"),
];
/// `struct ext4_extent_idx` (an inner entry).
pub const INDEX: &[Field] = &[
    Field::new("ei_block", 0x0, 4, "first logical block covered"),
    Field::new("ei_leaf_lo", 0x4, 4, "child node block (low)"),
    Field::new("ei_leaf_hi", 0x8, 2, "child node block (high)"),
    Field::new("ei_unused", 0xa, 2, "unused"),
];

/// Fields of the tables, found when compiling.
macro_rules! hd {
    ($name:literal) => {
        $crate::layout::field!(HEADER, $name)
    };
}
macro_rules! lf {
    ($name:literal) => {
        $crate::layout::field!(LEAF, $name)
    };
}
macro_rules! ix {
    ($name:literal) => {
        $crate::layout::field!(INDEX, $name)
    };
}

/// `eh_magic`.
pub const MAGIC: u16 = 0xf30a;
/// The kernel's limit on tree depth.
pub const MAX_DEPTH: u16 = 5;
/// Extents longer than this are uninitialized (they read as zeros).
const INIT_MAX_LEN: u16 = 32768;

/// One entry of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    Leaf {
        logical: u32,
        len: u16,
        uninit: bool,
        physical: u64,
    },
    Index {
        logical: u32,
        child: u64,
    },
}

/// A decoded node: the header's fields the walk needs, and its entries
/// (the header's table is [`HEADER`]).
#[derive(Clone, Debug)]
pub struct Node {
    pub depth: u16,
    pub max: u16,
    pub entries: Vec<Entry>,
    /// The node's disk offset (entry `i` is at `base + 12 + 12 i`).
    pub base: u64,
}

impl Node {
    /// Decodes a node from its bytes (60 for the root in `i_block`, a
    /// block otherwise) at disk offset `base`.
    ///
    /// # Errors
    /// `Corrupt` for a bad magic, a depth over 5, or entries that do not
    /// fit in the node.
    pub fn decode(bytes: &[u8], base: u64) -> Result<Node, FsError> {
        if bytes.len() < 12 {
            return Err(FsError::corrupt(
                "extent node",
                "eh_magic",
                base,
                format!("{} bytes, too short for a header", bytes.len()),
            ));
        }
        let h = |f: &Field| u16::try_from(f.le(bytes).unwrap_or(0)).unwrap_or(0);
        let magic = h(hd!("eh_magic"));
        if magic != MAGIC {
            return Err(FsError::corrupt(
                "extent node",
                "eh_magic",
                base,
                format!("{magic:#06x}, expected {MAGIC:#06x}"),
            ));
        }
        let (entries, max, depth) = (h(hd!("eh_entries")), h(hd!("eh_max")), h(hd!("eh_depth")));
        if depth > MAX_DEPTH {
            return Err(FsError::corrupt(
                "extent node",
                "eh_depth",
                base.saturating_add(6),
                format!("{depth}, expected at most {MAX_DEPTH}"),
            ));
        }
        // bytes.len() >= 12, checked above.
        let room = bytes.len().saturating_sub(12) / 12;
        if usize::from(max) > room || entries > max {
            return Err(FsError::corrupt(
                "extent node",
                "eh_entries",
                base.saturating_add(2),
                format!(
                    "{entries} entries of at most {max}, expected at most {room} in {} bytes",
                    bytes.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(usize::from(entries));
        // entries <= max <= room: every slot is inside `bytes`.
        let slots = bytes.get(12..).unwrap_or_default().chunks_exact(12);
        for e in slots.take(usize::from(entries)) {
            let u = |f: &Field| f.le(e).unwrap_or(0);
            let word = |f: &Field| u32::try_from(u(f)).unwrap_or(0);
            out.push(if depth == 0 {
                let raw_len = u16::try_from(u(lf!("ee_len"))).unwrap_or(0);
                let uninit = raw_len > INIT_MAX_LEN;
                Entry::Leaf {
                    logical: word(lf!("ee_block")),
                    len: if uninit {
                        raw_len.saturating_sub(INIT_MAX_LEN)
                    } else {
                        raw_len
                    },
                    uninit,
                    physical: hi_lo(u(lf!("ee_start_hi")), u(lf!("ee_start_lo"))),
                }
            } else {
                Entry::Index {
                    logical: word(ix!("ei_block")),
                    child: hi_lo(u(ix!("ei_leaf_hi")), u(ix!("ei_leaf_lo"))),
                }
            });
        }
        Ok(Node {
            depth,
            max,
            entries: out,
            base,
        })
    }

    /// The checksum of a non-root node (the kernel's
    /// `ext4_extent_block_csum`): crc32c from the inode's seed over the
    /// header and all `eh_max` entry slots, stored right after them.
    /// `None` when the block has no room for it.
    pub fn checksum(&self, block: &[u8], inode_seed: u32) -> Option<Check> {
        let tail = usize::from(self.max).checked_mul(12)?.checked_add(12)?;
        Some(Check {
            stored: crate::bytes::le32(block, tail)?,
            computed: crc32c_raw(inode_seed, block.get(..tail)?),
        })
    }
}

/// A 48-bit block number from its 16-bit high and 32-bit low halves (the
/// fields are that wide, so the shift loses nothing).
fn hi_lo(hi: u64, lo: u64) -> u64 {
    (hi & 0xffff).checked_shl(32).unwrap_or(0) | (lo & 0xffff_ffff)
}

/// Walks the tree rooted in `root` (the inode's `i_block`, at disk offset
/// `root_offset`) of inode `ino`.
///
/// # Errors
/// `Corrupt` when the root itself is not a valid node; I/O errors.
/// Problems below the root are in the map's `skipped` and
/// `warnings`.
pub fn walk(
    ino: u64,
    root: &[u8],
    root_offset: u64,
    geo: &Geometry,
    read: &mut ReadBlock,
) -> Result<BlockMap, FsError> {
    let node = Node::decode(root, root_offset)?;
    let mut w = Walker {
        ino,
        geo,
        read,
        map: BlockMap::default(),
        seen: HashSet::new(),
        covered: None,
        end: 0,
        last: None,
    };
    w.node(&node, 0)?;
    Ok(w.map)
}

struct Walker<'a, 'r> {
    ino: u64,
    geo: &'a Geometry,
    read: &'a mut ReadBlock<'r>,
    map: BlockMap,
    /// Node blocks visited: a second visit is a cycle.
    seen: HashSet<u64>,
    /// Logical ranges mapped so far (start -> end): extents must not
    /// overlap (out of order is shown, overlapping is skipped: a block
    /// cannot hold two places of the file). Built only when an extent
    /// comes out of order: while they ascend, `end` alone tells.
    covered: Option<BTreeMap<u64, u64>>,
    /// The end of the furthest extent so far.
    end: u64,
    /// The start of the last extent kept.
    last: Option<u64>,
}

impl Walker<'_, '_> {
    /// An earlier extent overlapping `[logical, logical + len)`.
    fn overlap(&mut self, logical: u64, len: u64) -> Option<(u64, u64)> {
        if self.covered.is_none() && logical >= self.end {
            // Ascending so far, and this one starts after all of them.
            return None;
        }
        let runs = &self.map.runs;
        let covered = self.covered.get_or_insert_with(|| {
            runs.iter()
                .filter(|r| !r.meta)
                .map(|r| (r.logical, r.logical.saturating_add(r.len)))
                .collect()
        });
        let end = logical.saturating_add(len);
        let before = covered.range(..=logical).next_back();
        let after = covered.range(logical..end).next();
        before
            .filter(|(_, &e)| e > logical)
            .or(after)
            .map(|(&s, &e)| (s, e))
    }

    fn skip(&mut self, field: &'static str, offset: u64, detail: String) {
        self.map.skip(FsError::corrupt(
            "extent tree",
            field,
            offset,
            format!("inode {}: {detail}", self.ino),
        ));
    }

    fn node(&mut self, node: &Node, level: u8) -> Result<(), FsError> {
        let offsets = (12u64..).step_by(12).map(|at| node.base.saturating_add(at));
        for (entry, at) in node.entries.iter().zip(offsets) {
            match *entry {
                Entry::Leaf {
                    logical,
                    len,
                    uninit,
                    physical,
                } => {
                    let (logical, len) = (u64::from(logical), u64::from(len));
                    if len == 0 {
                        continue;
                    }
                    if !self.map.room(self.ino, at) {
                        return Ok(());
                    }
                    if !self.geo.contains(physical, len) {
                        self.skip(
                            "ee_start_lo",
                            at.saturating_add(8),
                            format!("extent of logical block {logical} is at blocks {physical}+{len}, expected inside {}..{}", self.geo.first_data_block, self.geo.blocks_count),
                        );
                        continue;
                    }
                    if let Some((start, end)) = self.overlap(logical, len) {
                        self.skip(
                            "ee_block",
                            at,
                            format!("extent of logical blocks {logical}+{len} overlaps an earlier one ({start}..{end}); expected disjoint extents"),
                        );
                        continue;
                    }
                    if let Some(last) = self.last.filter(|&l| l > logical) {
                        self.map.warn(FsError::corrupt(
                            "extent tree",
                            "ee_block",
                            at,
                            format!("inode {}: extent of logical block {logical} follows one at {last}; expected ascending order (the kernel would not find it)", self.ino),
                        ));
                    }
                    // Both are u32 and u16 values: the sum fits.
                    let end = logical.saturating_add(len);
                    if let Some(c) = &mut self.covered {
                        c.insert(logical, end);
                    }
                    self.end = self.end.max(end);
                    self.last = Some(self.last.map_or(logical, |l| l.max(logical)));
                    self.map.runs.push(Run {
                        logical,
                        physical,
                        len,
                        uninit,
                        meta: false,
                        level: 0,
                    });
                }
                Entry::Index { logical, child } => {
                    if !self.map.room(self.ino, at) {
                        return Ok(());
                    }
                    if !self.geo.contains(child, 1) {
                        self.map.skipped_map_blocks = self.map.skipped_map_blocks.saturating_add(1);
                        self.skip(
                            "ei_leaf_lo",
                            at.saturating_add(4),
                            format!(
                                "index points to block {child}, expected inside {}..{}",
                                self.geo.first_data_block, self.geo.blocks_count
                            ),
                        );
                        continue;
                    }
                    if !self.seen.insert(child) {
                        self.map.skipped_map_blocks = self.map.skipped_map_blocks.saturating_add(1);
                        self.skip(
                            "ei_leaf_lo",
                            at.saturating_add(4),
                            format!("block {child} appears twice in the tree (a cycle)"),
                        );
                        continue;
                    }
                    self.map.runs.push(Run {
                        logical: u64::from(logical),
                        physical: child,
                        len: 1,
                        uninit: false,
                        meta: true,
                        level,
                    });
                    let block = (self.read)(child)?;
                    let base = child.saturating_mul(self.geo.block_size);
                    let sub = match Node::decode(&block, base) {
                        Ok(n) => n,
                        Err(e) => {
                            self.map.skipped_map_blocks =
                                self.map.skipped_map_blocks.saturating_add(1);
                            self.map.skip(e);
                            continue;
                        }
                    };
                    if sub.depth.checked_add(1) != Some(node.depth) {
                        self.map.skipped_map_blocks = self.map.skipped_map_blocks.saturating_add(1);
                        self.skip(
                            "eh_depth",
                            base.saturating_add(6),
                            format!(
                                "node at block {child} has depth {}, expected {}",
                                sub.depth,
                                node.depth.saturating_sub(1)
                            ),
                        );
                        continue;
                    }
                    if let Some(seed) = self.geo.csum_seed {
                        if let Some(c) = sub.checksum(&block, seed).filter(|c| !c.ok()) {
                            let tail = base
                                .saturating_add(12)
                                .saturating_add(u64::from(sub.max).saturating_mul(12));
                            self.map.warn(FsError::checksum(
                                "extent node",
                                "et_checksum",
                                tail,
                                c.stored,
                                c.computed,
                            ));
                        }
                    }
                    self.node(&sub, level.saturating_add(1))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(entries: u16, max: u16, depth: u16) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [MAGIC, entries, max, depth] {
            b.extend(v.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes());
        b
    }

    fn leaf(logical: u32, len: u16, physical: u32) -> Vec<u8> {
        let mut b = logical.to_le_bytes().to_vec();
        b.extend(len.to_le_bytes());
        b.extend(0u16.to_le_bytes());
        b.extend(physical.to_le_bytes());
        b
    }

    fn index(logical: u32, child: u32) -> Vec<u8> {
        let mut b = logical.to_le_bytes().to_vec();
        b.extend(child.to_le_bytes());
        b.extend([0u8; 4]);
        b
    }

    fn block(mut b: Vec<u8>) -> Vec<u8> {
        b.resize(1024, 0);
        b
    }

    const GEO: Geometry = Geometry {
        block_size: 1024,
        first_data_block: 1,
        blocks_count: 1000,
        csum_seed: None,
    };

    #[test]
    fn a_two_level_tree_with_an_uninitialized_extent() {
        let mut root = header(1, 4, 1);
        root.extend(index(0, 50));
        root.resize(60, 0);
        let mut leafb = header(2, 84, 0);
        leafb.extend(leaf(0, 4, 100));
        leafb.extend(leaf(10, 32768 + 2, 200));
        let leafb = block(leafb);
        let mut read = |b: u64| {
            assert_eq!(b, 50);
            Ok(leafb.clone())
        };
        let map = walk(12, &root, 0x4028, &GEO, &mut read).unwrap();
        assert!(map.is_clean(), "{map:?}");
        let r: Vec<(u64, u64, u64, bool, bool)> = map
            .runs
            .iter()
            .map(|r| (r.logical, r.physical, r.len, r.uninit, r.meta))
            .collect();
        assert_eq!(
            r,
            [
                (0, 50, 1, false, true),
                (0, 100, 4, false, false),
                (10, 200, 2, true, false)
            ]
        );
    }

    #[test]
    fn cycles_bad_pointers_and_overlaps_are_skipped_and_named() {
        // The leaf points back to itself as an index node would.
        let mut root = header(2, 4, 1);
        root.extend(index(0, 50));
        root.extend(index(100, 5000));
        root.resize(60, 0);
        let mut node = header(1, 84, 1);
        node.extend(index(0, 50));
        let node = block(node);
        let mut read = |_: u64| Ok(node.clone());
        let map = walk(12, &root, 0x4028, &GEO, &mut read).unwrap();
        let msgs: Vec<String> = map.skipped.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        // depth mismatch (the node says 1, expected 0)
        assert!(msgs[0].contains("eh_depth") && msgs[0].contains("expected 0"));
        assert!(
            msgs[1].contains("0x4044")
                && msgs[1].contains("block 5000")
                && msgs[1].contains("expected inside 1..1000"),
            "{}",
            msgs[1]
        );
        // Overlapping extents in a leaf root.
        let mut root = header(3, 4, 0);
        root.extend(leaf(0, 10, 100));
        root.extend(leaf(5, 10, 300));
        root.extend(leaf(10, 1, 400));
        root.resize(60, 0);
        let map = walk(12, &root, 0, &GEO, &mut |_| unreachable!()).unwrap();
        assert_eq!(map.runs.len(), 2);
        assert!(map.skipped[0]
            .to_string()
            .contains("overlaps an earlier one (0..10)"));
        // Out of order but disjoint is kept, in map order.
        let mut root = header(2, 4, 0);
        root.extend(leaf(12, 4, 300));
        root.extend(leaf(0, 12, 100));
        root.resize(60, 0);
        let map = walk(12, &root, 0, &GEO, &mut |_| unreachable!()).unwrap();
        assert!(map.skipped.is_empty());
        assert!(map.warnings[0]
            .to_string()
            .contains("expected ascending order"));
        assert_eq!((map.runs[0].logical, map.runs[1].logical), (12, 0));
        // A self-reference is a cycle.
        let mut root = header(1, 4, 2);
        root.extend(index(0, 60));
        root.resize(60, 0);
        let mut selfref = header(1, 84, 1);
        selfref.extend(index(0, 60));
        let selfref = block(selfref);
        let mut read = |_: u64| Ok(selfref.clone());
        let map = walk(12, &root, 0, &GEO, &mut read).unwrap();
        assert!(map.skipped[0].to_string().contains("cycle"), "{map:?}");
    }

    #[test]
    fn bad_roots_are_errors_naming_the_field() {
        let e = Node::decode(&[0u8; 60], 0x4028).unwrap_err().to_string();
        assert_eq!(
            e,
            "corrupt extent node at 0x4028: eh_magic: 0x0000, expected 0xf30a"
        );
        let mut root = header(5, 5, 0);
        root.resize(60, 0);
        let e = Node::decode(&root, 0).unwrap_err().to_string();
        assert!(e.contains("eh_entries") && e.contains("at most 4"), "{e}");
        let mut root = header(0, 4, 9);
        root.resize(60, 0);
        let e = Node::decode(&root, 0).unwrap_err().to_string();
        assert!(e.contains("eh_depth") && e.contains("at most 5"), "{e}");
    }

    #[test]
    fn checksums_are_checked_but_not_fatal() {
        let mut root = header(1, 4, 1);
        root.extend(index(0, 50));
        root.resize(60, 0);
        let mut leafb = header(1, 84, 0);
        leafb.extend(leaf(0, 1, 100));
        let mut leafb = block(leafb);
        let seed = 0xdead_beef;
        let good = crc32c_raw(seed, &leafb[..12 + 84 * 12]);
        leafb[1020..1024].copy_from_slice(&good.to_le_bytes());
        let geo = Geometry {
            csum_seed: Some(seed),
            ..GEO
        };
        let ok = leafb.clone();
        let map = walk(12, &root, 0, &geo, &mut |_| Ok(ok.clone())).unwrap();
        assert!(map.is_clean());
        leafb[1020] ^= 0xff;
        let map = walk(12, &root, 0, &geo, &mut |_| Ok(leafb.clone())).unwrap();
        assert_eq!(map.runs.len(), 2);
        assert!(map.skipped.is_empty());
        assert!(map.warnings[0].to_string().contains("et_checksum"));
    }
}
