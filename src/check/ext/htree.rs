//! Hashed directory indexes as `e2fsck -fn` checks them: the root in
//! pass 1 (`handle_htree`: the root info, the hash version, the flags,
//! the depth), then in pass 2 every block of an indexed directory
//! (`check_dir_block` and `parse_int_node`: the root's and inner nodes'
//! checksums, limits, counts, block numbers and hash order; each leaf's
//! names hashed), then the whole index (`e2fsck_pass2`'s last loop): each
//! block's hashes within the range its parent gives it (bad min/max
//! hash), its depth, referenced once. Each finding has the kind of
//! e2fsck's message, in e2fsck's order and with its quirks (a block read
//! under a count past the limit, a leaf's range from the next entry), so
//! that the same damage gives the same findings.
use super::{Checker, Severity};
use crate::fs::ext::blockmap::Run;
use crate::fs::ext::checksum::crc32c_raw;
use crate::fs::ext::dirhash;
use crate::fs::ext::inode::{Inode, ENCRYPT_FL, EXTENTS_FL};
use crate::fs::ext::superblock::{sb, Compat, Incompat, Superblock};

/// `dx_dirblock_info.type`.
const ROOT: u8 = 1;
const LEAF: u8 = 2;
const NODE: u8 = 3;
/// `dx_dirblock_info.flags`.
const FIRST: u8 = 1;
const LAST: u8 = 2;
const REFERENCED: u8 = 4;
const DUP_REF: u8 = 8;
/// `EXT4_DX_BLOCK_MASK`.
const BLOCK_MASK: u32 = 0x0fff_ffff;
/// `EXT4_CASEFOLD_FL`.
const CASEFOLD_FL: u32 = 0x4000_0000;
/// The deepest index (`EXT4_HTREE_LEVEL`), and without large_dir.
const LEVEL: u8 = 3;
const LEVEL_COMPAT: u8 = 2;
/// Blocks of one index followed at most (a directory of 2^22 blocks is
/// past any the kernel makes).
const MAX_BLOCKS: u64 = 1 << 22;

/// e2fsck's `dx_dirblock_info`.
#[derive(Clone, Copy, Default)]
struct Dx {
    kind: u8,
    flags: u8,
    parent: usize,
    previous: usize,
    min_hash: u32,
    max_hash: u32,
    node_min_hash: u32,
    node_max_hash: u32,
}

/// The blocks of one index by logical number, `len` of them (e2fsck's
/// `dx_block` array): only those mapped or named by an index entry are
/// stored. A directory's holes are not: an extent at logical block 2^21
/// of a 2 MiB filesystem made the dense table 2M entries (111 MB, 0.56 s),
/// a cost that followed what the map claimed, not what it held.
struct Blocks {
    len: usize,
    map: std::collections::BTreeMap<usize, Dx>,
}

impl Blocks {
    fn len(&self) -> usize {
        self.len
    }

    /// Block `b` (a hole's is the default), `None` past the end.
    fn get(&self, b: usize) -> Option<Dx> {
        (b < self.len).then(|| self.map.get(&b).copied().unwrap_or_default())
    }

    /// Block `b`, stored from here on; `None` past the end.
    fn get_mut(&mut self, b: usize) -> Option<&mut Dx> {
        if b < self.len {
            Some(self.map.entry(b).or_default())
        } else {
            None
        }
    }

    /// The stored blocks' numbers, in order.
    fn stored(&self) -> Vec<usize> {
        self.map.keys().copied().collect()
    }
}

/// A little-endian field of a block (0 past its end).
fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(crate::bytes::le16(b, at).unwrap_or(0))
}
fn le32(b: &[u8], at: usize) -> u32 {
    crate::bytes::le32(b, at).unwrap_or(0)
}
fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}
fn us(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// One indexed directory being checked.
struct Index<'c, 'a> {
    c: &'c mut Checker<'a>,
    ino: u64,
    bs: usize,
    csum_size: usize,
    seed: Option<u32>,
    dx: Blocks,
    /// The index problems found (for "Invalid HTREE directory").
    bad: bool,
}

impl Index<'_, '_> {
    fn report(&mut self, kind: &'static str, offset: Option<u64>, detail: String) {
        self.c.problem(
            Severity::Error,
            kind,
            format!("inode {}", self.ino),
            offset,
            format!("HTREE directory inode {}: {detail}", self.ino),
        );
    }

    /// e2fsprogs' `ext2fs_dir_block_csum_verify` for an index block: the
    /// count/limit header found as `__get_dx_countlimit` finds it, room
    /// for the tail, and the tail's crc32c.
    fn dx_csum_ok(&self, block: &[u8]) -> bool {
        let Some(seed) = self.seed else {
            return true;
        };
        let bs = self.bs;
        let rec_len = rec_len(block, 0, bs);
        let count_offset = if rec_len == bs && byte(block, 6) == 0 {
            8
        } else if rec_len == 12 {
            if rec_len_at(block, 12, bs) != bs.saturating_sub(12) || byte(block, 18) != 2 {
                return false;
            }
            if le32(block, 24) != 0 || byte(block, 0x1d) != 8 {
                return false;
            }
            32
        } else {
            return false;
        };
        let sane = bs.saturating_sub(count_offset) / 8;
        let limit = us(u64::from(le16(block, count_offset)));
        let count = us(u64::from(le16(block, count_offset.saturating_add(2))));
        if limit > sane || count > sane {
            return false;
        }
        let tail = count_offset.saturating_add(limit.saturating_mul(8));
        if tail > bs.saturating_sub(8) {
            return false;
        }
        let size = count_offset.saturating_add(count.saturating_mul(8));
        let (Some(head), Some(t)) = (block.get(..size), block.get(tail..tail.saturating_add(8)))
        else {
            return false;
        };
        let mut crc = crc32c_raw(seed, head);
        crc = crc32c_raw(crc, t.get(..4).unwrap_or_default());
        crc = crc32c_raw(crc, &[0; 4]);
        le32(t, 4) == crc
    }

    /// `parse_int_node`: an index block's entries give their children
    /// their ranges and parents.
    fn parse_int_node(&mut self, b: usize, block: &[u8], at: u64, failed_csum: bool) {
        let root = b == 0;
        if failed_csum {
            let (kind, what) = if root {
                ("htree-root-checksum", "root node fails checksum")
            } else {
                ("htree-node-checksum", "internal node fails checksum")
            };
            self.report(kind, Some(at), what.into());
        }
        let ent = if root {
            24usize.saturating_add(usize::from(byte(block, 0x1d)))
        } else {
            8
        };
        let limit = le16(block, ent);
        let mut count = us(u64::from(le16(block, ent.saturating_add(2))));
        let expect = self.bs.saturating_sub(self.csum_size.saturating_add(ent)) / 8;
        let off = |o: usize| Some(at.saturating_add(crate::bytes::u64_of(o)));
        if us(u64::from(limit)) != expect {
            self.report(
                "htree-limit",
                off(ent),
                format!("block #{b} has invalid limit ({limit}), expected {expect}"),
            );
        }
        if count > expect {
            self.report(
                "htree-count",
                off(ent.saturating_add(2)),
                format!("block #{b} has invalid count ({count}), at most {expect}"),
            );
            count = expect;
        }
        let entry = |i: usize| ent.saturating_add(i.saturating_mul(8));
        let (mut min_hash, mut max_hash) = (u32::MAX, 0u32);
        let mut hash = 0u32;
        let n = self.dx.len();
        for i in 0..count {
            let prev_hash = hash;
            hash = if i == 0 {
                0
            } else {
                le32(block, entry(i)) & !1
            };
            let blk = us(u64::from(
                le32(block, entry(i).saturating_add(4)) & BLOCK_MASK,
            ));
            if blk >= n {
                self.report(
                    "htree-bad-block",
                    off(entry(i).saturating_add(4)),
                    format!("block #{b}: bad block number {blk}"),
                );
                continue;
            }
            if hash < prev_hash {
                self.report(
                    "htree-hash-order",
                    off(entry(i)),
                    format!("block #{b} has an unordered hash table"),
                );
            }
            let next_hash = if i.saturating_add(1) < count {
                Some(le32(block, entry(i.saturating_add(1))) & !1)
            } else {
                None
            };
            let previous = if i == 0 {
                0
            } else {
                us(u64::from(
                    le32(block, entry(i.saturating_sub(1)).saturating_add(4)) & BLOCK_MASK,
                ))
            };
            min_hash = min_hash.min(hash);
            max_hash = max_hash.max(hash);
            if let Some(d) = self.dx.get_mut(blk) {
                if d.flags & REFERENCED != 0 {
                    d.flags |= DUP_REF;
                } else {
                    d.flags |= REFERENCED;
                    d.parent = b;
                }
                d.previous = previous;
                d.node_min_hash = hash;
                match next_hash {
                    Some(h) => d.node_max_hash = h,
                    None => {
                        d.node_max_hash = 0xffff_fffe;
                        d.flags |= LAST;
                    }
                }
                if i == 0 {
                    d.flags |= FIRST;
                }
            }
        }
        if let Some(d) = self.dx.get_mut(b) {
            d.min_hash = min_hash;
            d.max_hash = max_hash;
        }
    }
}

/// A directory entry's `rec_len` at `at` as e2fsprogs decodes it.
fn rec_len_at(block: &[u8], at: usize, bs: usize) -> usize {
    let len = us(u64::from(le16(block, at.saturating_add(4))));
    if bs < 65536 {
        len
    } else if len == 65535 || len == 0 {
        bs
    } else {
        (len & 65532) | ((len & 3) << 16)
    }
}

fn rec_len(block: &[u8], at: usize, bs: usize) -> usize {
    rec_len_at(block, at, bs)
}

/// Pass 1's root checks and pass 2's index checks of one directory with
/// the index flag.
pub(super) fn check(c: &mut Checker<'_>, inode: &Inode) {
    let fs = c.fs;
    let sb = fs.superblock();
    if !sb.has_compat(Compat::DIR_INDEX) {
        return;
    }
    let ino = inode.ino;
    let Ok(map) = fs.block_map(inode) else {
        return; // reported in pass 1
    };
    let mut blocks: Vec<(u64, u64)> = Vec::new(); // (logical, physical)
    let mut numblocks = 0u64;
    for r in map.runs.iter().filter(|r| !r.meta) {
        let len = dir_run_len(sb, inode, r);
        if len == 0 {
            continue;
        }
        numblocks = numblocks.max(r.logical.saturating_add(len));
        for i in 0..len {
            if blocks.len() >= us(MAX_BLOCKS) {
                break;
            }
            blocks.push((r.logical.saturating_add(i), r.physical.saturating_add(i)));
        }
    }
    if numblocks > MAX_BLOCKS {
        return;
    }
    blocks.sort_unstable();
    let bs = sb.block_size;
    let Some(&(0, root_phys)) = blocks.first() else {
        c.problem(
            Severity::Error,
            "htree-bad-root",
            format!("inode {ino}"),
            Some(inode.base),
            format!("HTREE directory inode {ino} has an invalid root node (no block 0)"),
        );
        return;
    };
    let Ok(root) = fs.block(root_phys) else {
        return;
    };
    let root_at = root_phys.saturating_mul(bs);
    let at = |o: u64| Some(root_at.saturating_add(o));
    // Pass 1 (handle_htree).
    let reserved_zero = le32(&root, 24);
    let version = byte(&root, 0x1c);
    let info_length = byte(&root, 0x1d);
    let levels = byte(&root, 0x1e);
    let flags = byte(&root, 0x1f);
    let largedir = sb.has_incompat(Incompat::LARGE_DIR);
    let mut pass1 = |kind: &'static str, off: u64, detail: String| {
        c.problem(
            Severity::Error,
            kind,
            format!("inode {ino}"),
            at(off),
            format!("HTREE directory inode {ino} {detail}"),
        );
    };
    if reserved_zero != 0 || info_length < 8 {
        pass1(
            "htree-bad-root",
            0x18,
            format!(
                "has an invalid root node (reserved {reserved_zero:#x}, info length {info_length})"
            ),
        );
    }
    if ![dirhash::LEGACY, dirhash::HALF_MD4, dirhash::TEA, 6].contains(&version) {
        pass1(
            "htree-hash-version",
            0x1c,
            format!("has an unsupported hash version ({version})"),
        );
    }
    let in_dirent = inode.flags & ENCRYPT_FL != 0 && inode.flags & CASEFOLD_FL != 0;
    if in_dirent && version != 6 {
        pass1("htree-siphash", 0x1c, "needs the siphash hash".into());
    } else if !in_dirent && version == 6 {
        pass1("htree-siphash", 0x1c, "cannot use the siphash hash".into());
    }
    if flags & 1 != 0 {
        pass1(
            "htree-incompat",
            0x1f,
            "uses an incompatible htree root node flag".into(),
        );
    }
    if levels > LEVEL {
        pass1(
            "htree-depth",
            0x1e,
            format!("has a tree depth ({levels}) which is too big"),
        );
    }
    let level = if largedir { LEVEL } else { LEVEL_COMPAT };
    if levels > level && !largedir {
        // Unless as big as a full two-level tree could be.
        let bits = bs.trailing_zeros();
        let idx = u128::from(bs / 8);
        let full = idx.saturating_sub(1).saturating_mul(idx.saturating_sub(2));
        if u128::from(inode.size) < full << bits
            && u128::from(inode.blocks) < full << bits.saturating_sub(9)
        {
            pass1(
                "htree-depth",
                0x1e,
                format!("has a tree depth ({levels}) which is too big"),
            );
        }
    }
    if levels > LEVEL_COMPAT && !largedir && !c.large_dirs {
        c.large_dirs = true;
        c.problem(
            Severity::Error,
            "large-dir-feature",
            "superblock".into(),
            Some(0x400 + 0x60),
            "filesystem has large directories, but lacks the large_dir feature".into(),
        );
    }
    // Pass 2 (check_dir_block, parse_int_node).
    let csum_size = if sb.has_metadata_csum() { 8 } else { 0 };
    let mut hash_version = version;
    if hash_version <= dirhash::TEA && sb.get(sb!("s_flags")) & 2 != 0 {
        hash_version = hash_version.saturating_add(dirhash::UNSIGNED);
    }
    let seed = fs.hash_seed();
    let depth = usize::from(levels).saturating_add(1);
    let mut x = Index {
        seed: fs.inode_seed(inode),
        c,
        ino,
        bs: us(bs),
        csum_size,
        dx: Blocks {
            len: us(numblocks),
            map: std::collections::BTreeMap::new(),
        },
        bad: false,
    };
    for &(logical, physical) in &blocks {
        let b = us(logical);
        let Ok(block) = (if b == 0 {
            Ok(root.clone())
        } else {
            fs.block(physical)
        }) else {
            continue;
        };
        let base = physical.saturating_mul(bs);
        let Some(d) = x.dx.get_mut(b) else {
            continue;
        };
        d.kind = LEAF;
        d.min_hash = u32::MAX;
        d.max_hash = 0;
        if b == 0 {
            d.kind = ROOT;
            d.flags |= FIRST | LAST;
            if reserved_zero != 0 || info_length < 8 || levels >= level {
                // e2fsck names inode 0 here (its context has no inode yet).
                x.c.problem(
                    Severity::Error,
                    "htree-root-invalid",
                    format!("inode {ino}"),
                    Some(base.saturating_add(0x18)),
                    format!("HTREE directory inode {ino}: root node is invalid"),
                );
            }
        } else if le32(&block, 0) == 0
            && rec_len(&block, 0, x.bs) == x.bs
            && byte(&block, 6) == 0
            && us(u64::from(le16(&block, 8)))
                == x.bs.saturating_sub(csum_size.saturating_add(8)) / 8
        {
            d.kind = NODE;
        }
        let kind = d.kind;
        if kind == LEAF
            && csum_size > 0
            && crate::fs::ext::htree::is_node(&block)
            && !x.dx_csum_ok(&block)
        {
            // Read as an index node by the listing, as a leaf by e2fsck
            // (its limit is not a node's): a leaf without its checksum.
            x.c.problem(
                Severity::Error,
                "directory-checksum",
                format!("inode {ino}"),
                Some(base),
                format!(
                    "directory inode {ino}, block #{b}: directory passes checks but fails checksum"
                ),
            );
        }
        if kind == LEAF && inode.flags & CASEFOLD_FL == 0 {
            // (Casefolded names hash folded: not computed here.)
            let entries = crate::fs::ext::dir::decode_block(&block, base).entries;
            let (mut lo, mut hi) = (u32::MAX, 0u32);
            for e in entries.iter().filter(|e| e.inode != 0) {
                // A version e2fsprogs does not know hashes to 0 there
                // (ext2fs_dirhash answers 0 with its error).
                let h = if hash_version > 5 && hash_version != 6 {
                    Some(0)
                } else {
                    dirhash::hash(&e.name, hash_version, seed)
                };
                if let Some(h) = h {
                    lo = lo.min(h);
                    hi = hi.max(h);
                }
            }
            if let Some(d) = x.dx.get_mut(b) {
                d.min_hash = lo;
                d.max_hash = hi;
            }
        } else {
            let failed = !x.dx_csum_ok(&block);
            x.parse_int_node(b, &block, base, failed);
        }
    }
    // The last loop of pass 2.
    if let Some(r) = x.dx.get_mut(0) {
        if r.flags & REFERENCED != 0 {
            r.flags |= DUP_REF;
        } else {
            r.flags |= REFERENCED;
        }
    }
    update_parents(&mut x.dx, LEAF);
    update_parents(&mut x.dx, NODE);
    // Holes between the stored blocks are blocks no entry references:
    // one finding per run of them.
    let mut next = 0usize;
    for b in x.dx.stored().into_iter().chain(std::iter::once(x.dx.len())) {
        if b > next {
            unreferenced_run(&mut x, next, b);
        }
        next = b.saturating_add(1);
        let Some(d) = x.dx.get(b) else {
            break;
        };
        if d.flags & FIRST == 0 && d.min_hash < d.node_min_hash {
            x.report(
                "htree-min-hash",
                None,
                format!(
                    "block #{b} has bad min hash ({:#010x}, below the index's {:#010x})",
                    d.min_hash, d.node_min_hash
                ),
            );
            x.bad = true;
        }
        if d.kind == LEAF {
            let mut at = d;
            let mut n = 0usize;
            while at.kind != ROOT && n < 32_000 {
                at = x.dx.get(at.parent).unwrap_or_default();
                n = n.saturating_add(1);
            }
            if n != depth {
                x.report(
                    "htree-bad-depth",
                    None,
                    format!("block #{b} has invalid depth ({depth}), it is at depth {n}"),
                );
                x.bad = true;
            }
        }
        if b > 0 && d.max_hash > d.node_max_hash {
            x.report(
                "htree-max-hash",
                None,
                format!(
                    "block #{b} has bad max hash ({:#010x}, above the index's {:#010x})",
                    d.max_hash, d.node_max_hash
                ),
            );
            x.bad = true;
        }
        if d.flags & REFERENCED == 0 {
            x.report(
                "htree-not-referenced",
                None,
                format!("block #{b} not referenced"),
            );
            x.bad = true;
        } else if d.flags & DUP_REF != 0 {
            x.report(
                "htree-referenced-twice",
                None,
                format!("block #{b} referenced twice"),
            );
            x.bad = true;
        }
    }
    if x.bad {
        x.report(
            "htree-invalid",
            Some(inode.base),
            "invalid HTREE directory".into(),
        );
    }
}

/// How much of data run `r` of directory `inode` is the directory's, by
/// e2fsck's PR_1_TOOBIG_DIR: without large_dir (and with a size below
/// 4 GiB) a directory's blocks past 2^(21 - log block size) (2 GiB) are
/// not its own: an extent reaching past that is left out whole, a
/// block-mapped directory's blocks past it one by one (`blockcnt >`).
pub(super) fn dir_run_len(sb: &Superblock, inode: &Inode, r: &Run) -> u64 {
    if sb.has_incompat(Incompat::LARGE_DIR) || inode.size >> 32 != 0 {
        return r.len;
    }
    let log = sb.block_size.trailing_zeros().saturating_sub(10);
    let limit = 1u64
        .checked_shl(21u32.saturating_sub(log))
        .unwrap_or(u64::MAX);
    if inode.flags & EXTENTS_FL != 0 {
        if r.logical.saturating_add(r.len) > limit {
            0
        } else {
            r.len
        }
    } else {
        r.len.min(limit.saturating_add(1).saturating_sub(r.logical))
    }
}

/// e2fsck's `update_parents`: the first and last children of each index
/// block of `kind`'s parents give the parent its hash range.
fn update_parents(dx: &mut Blocks, kind: u8) {
    for b in dx.stored() {
        let Some(d) = dx.get(b) else {
            break;
        };
        if d.kind != kind {
            continue;
        }
        let p = d.parent;
        if d.flags & FIRST != 0 {
            let prev = dx.get(p).map(|q| (q.previous, q.max_hash));
            if let Some(q) = dx.get_mut(p) {
                q.min_hash = d.min_hash;
            }
            if let Some((previous, max)) = prev {
                if previous != 0 {
                    if let Some(q) = dx.get_mut(previous) {
                        q.node_max_hash = max;
                    }
                }
            }
        }
        if d.flags & LAST != 0 {
            if let Some(q) = dx.get_mut(p) {
                q.max_hash = d.max_hash;
            }
        }
    }
}

/// Blocks `from..to` of the index, all holes no entry named: e2fsck's
/// "block #b not referenced" for each, said once for the run.
fn unreferenced_run(x: &mut Index<'_, '_>, from: usize, to: usize) {
    let detail = if to.saturating_sub(from) == 1 {
        format!("block #{from} not referenced")
    } else {
        format!(
            "blocks #{from} to #{} not referenced (a hole of {} blocks in the directory)",
            to.saturating_sub(1),
            to.saturating_sub(from)
        )
    };
    x.report("htree-not-referenced", None, detail);
    x.bad = true;
}
