//! The filesystem side of `check` for ext2/3/4: what `e2fsck -fn` finds
//! that a read-only reader can see, in e2fsck's order and words.
//!
//! - pass 1 ([`Checker::pass1`]): every group descriptor (checksum), its
//!   bitmaps' checksums, every inode in use (checksum, dtime, its block
//!   map: extent and indirect blocks, their checksums, pointers out of the
//!   filesystem; blocks claimed twice), attribute blocks (checksum,
//!   reference counts);
//! - passes 2 to 4 ([`dirs`]): every directory's blocks (checksums,
//!   damaged entries), entries naming unused inodes, `.` and `..`,
//!   directories no path reaches, inodes no entry names, link counts;
//! - pass 5 ([`counts`]): the block and inode bitmaps against what passes
//!   1 to 4 found in use, the free counts and directory counts of each
//!   group and of the superblock.
//!
//! Memory: one bit per block of the disk (not of what the superblock
//! claims) and a small record per inode in use; time: one read of every
//! inode table, map block and directory block, as e2fsck. Only inode
//! tables within the disk and apart from each other are read: what pass 1
//! reads is bounded by the disk's size, however many groups and inodes
//! the superblock and the descriptors claim.
use crate::fs::ext::superblock::sb;
use std::collections::{BTreeMap, HashMap};

use super::bits::Bits;
use super::{Problem, Problems, Progress, Severity};
use crate::block::BlockSource;
use crate::bytes::us;
use crate::fs::ext::group_desc::placement;
use crate::fs::ext::inode::Inode;
use crate::fs::ext::{Ext4, FsError};

mod counts;
mod dirs;
mod htree;
mod journal;
mod orphan;

/// Blocks claimed twice that are named, at most (the rest are counted).
const MAX_DUPS: usize = 10_000;

/// Bytes of an inode table pass 1 reads at a time.
const TABLE_PIECE: u64 = 64 << 10;

/// What an ext check found, besides its problems.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub inodes_used: u64,
    pub inodes_count: u64,
    pub blocks_used: u64,
    pub blocks_count: u64,
    pub directories: u64,
    pub regular_files: u64,
    pub symlinks: u64,
}

/// One inode in use, as passes 2 to 5 need it.
#[derive(Clone, Copy, Debug, Default)]
struct InUse {
    links: u16,
    is_dir: bool,
    /// The directory entry type code its mode calls for (`FT_*`).
    ftype: u8,
    /// An inode holding an attribute's value (ea_inode): named by
    /// attributes, not by directory entries.
    ea_inode: bool,
    size: u64,
    /// Directory entries naming it (`.` and `..` included).
    refs: u32,
    /// The directory holding its (first) entry other than `.`/`..`.
    parent: u32,
    /// A directory's `..`.
    dotdot: u32,
    /// Where the inode lies (for problems' offsets).
    base: u64,
}

/// The directory entry type code (`FT_*`) of a mode, as e2fsck expects
/// it in entries (0 for a mode no type has).
fn ftype(mode: u16) -> u8 {
    match mode & 0o170_000 {
        0o100_000 => 1,
        0o040_000 => 2,
        0o020_000 => 3,
        0o060_000 => 4,
        0o010_000 => 5,
        0o140_000 => 6,
        0o120_000 => 7,
        _ => 0,
    }
}

/// The check's state.
pub(super) struct Checker<'a> {
    fs: &'a Ext4,
    layer_of: &'a dyn Fn(u64) -> Option<usize>,
    out: Problems,
    /// Clusters in use, as found (the disk's clusters at most).
    used: Bits,
    /// Clusters holding group metadata, as found (for groups whose block
    /// bitmap is uninitialized: their bitmap is exactly these).
    meta: Bits,
    /// Who claimed which clusters: start → (length, inode; 0 for group
    /// metadata), to name the first claimant of a block claimed twice.
    claims: BTreeMap<u64, (u64, u64)>,
    /// Inodes claiming blocks that another structure claims too.
    dup_inodes: BTreeMap<u64, Vec<u64>>,
    dups: u64,
    inodes: HashMap<u32, InUse>,
    dirs: Vec<u32>,
    /// Attribute blocks: block → (users, stored reference count).
    xattr_blocks: HashMap<u64, (u32, u32, u64)>,
    summary: Summary,
    /// Blocks per cluster (bigalloc), a power of two.
    ratio: u64,
    /// A directory index deeper than two levels was met (without the
    /// large_dir feature, reported once).
    large_dirs: bool,
    /// Pass 1 takes a small dtime for an orphan list link (see
    /// [`orphan::low_dtime_check`]).
    low_dtime: bool,
    /// The inode tables read so far: first block → end block.
    itables: BTreeMap<u64, u64>,
    /// Blocks of the disk (not of what the superblock claims).
    disk_blocks: u64,
}

/// Checks the filesystem, read-only. `layer_of` tells which chain layer
/// holds the volume's byte at an offset.
pub fn check(
    fs: &Ext4,
    layer_of: &dyn Fn(u64) -> Option<usize>,
    progress: &dyn Progress,
) -> (Problems, Summary) {
    let sb = fs.superblock();
    let ratio = u64::from(sb.blocks_per_group)
        .checked_div(u64::from(sb.clusters_per_group.max(1)))
        .unwrap_or(1)
        .max(1);
    // Only what the disk can hold: a superblock claiming more blocks
    // than the disk has does not get a bigger bitmap.
    let disk_blocks = fs
        .disk()
        .len()
        .checked_div(sb.block_size.max(1))
        .unwrap_or(0);
    let clusters = sb.blocks_count.min(disk_blocks).div_ceil(ratio);
    let mut c = Checker {
        fs,
        layer_of,
        out: Problems::default(),
        used: Bits::new(clusters),
        meta: Bits::new(clusters),
        claims: BTreeMap::new(),
        dup_inodes: BTreeMap::new(),
        dups: 0,
        inodes: HashMap::new(),
        dirs: Vec::new(),
        xattr_blocks: HashMap::new(),
        summary: Summary {
            inodes_count: u64::from(sb.inodes_count),
            blocks_count: sb.blocks_count,
            ..Summary::default()
        },
        ratio,
        large_dirs: false,
        low_dtime: false,
        itables: BTreeMap::new(),
        disk_blocks,
    };
    if !c.superblock() {
        // The group table is a claim nothing confirms (e2fsck stops here
        // too): its groups are not walked.
        return (c.out, c.summary);
    }
    c.low_dtime = orphan::low_dtime_check(&c);
    journal::run(&mut c);
    orphan::file(&mut c);
    c.pass1(progress);
    c.report_dups();
    c.report_xattr_refcounts();
    dirs::run(&mut c, progress);
    counts::run(&mut c, progress);
    (c.out, c.summary)
}

impl Checker<'_> {
    /// Records a problem at volume offset `offset`.
    fn problem(
        &mut self,
        severity: Severity,
        kind: &'static str,
        structure: String,
        offset: Option<u64>,
        detail: String,
    ) {
        self.out.push(Problem::in_volume(
            self.layer_of,
            severity,
            kind,
            structure,
            offset,
            detail,
        ));
    }

    /// Records a decoder's error about `structure`: a checksum mismatch
    /// becomes `csum_kind`, anything else `kind`.
    fn decoder(
        &mut self,
        csum_kind: &'static str,
        kind: &'static str,
        structure: String,
        e: &FsError,
    ) {
        let (offset, is_csum) = match e {
            FsError::Corrupt { offset, detail, .. } => {
                (Some(*offset), detail.starts_with("checksum "))
            }
            _ => (None, false),
        };
        let k = if is_csum { csum_kind } else { kind };
        self.problem(Severity::Error, k, structure, offset, e.to_string());
    }

    /// The superblock's problems; false when its group table cannot be
    /// believed (the groups hold another number of inodes than it
    /// counts, or its first non-reserved inode is not one of them), and
    /// the rest of the check is not done.
    fn superblock(&mut self) -> bool {
        let sb = self.fs.superblock();
        // See Superblock::inodes_in_groups.
        let claimed = sb.inodes_in_groups();
        if claimed != u64::from(sb.inodes_count) {
            self.problem(
                Severity::Error,
                "superblock-inode-count",
                "superblock".into(),
                Some(crate::fs::ext::superblock::Superblock::offset_of(sb!(
                    "s_inodes_count"
                ))),
                format!(
                    "s_inodes_count {}, but {} groups of {} inodes hold {claimed}: the groups are not checked (e2fsck refuses this superblock too)",
                    sb.inodes_count,
                    sb.group_count(),
                    sb.inodes_per_group
                ),
            );
        }
        // e2fsck's check_super_value: a dynamic superblock's first
        // non-reserved inode lies between 11 and the inode count. Past it,
        // every inode would be reserved and kept (a fuzz input's
        // s_first_ino of 1.7 billion over 16.7 million claimed inodes took
        // `check` 57 s and 2.4 GB).
        let first_ino = sb.get(sb!("s_first_ino"));
        let bad_first =
            sb.rev_level >= 1 && !(11..=u64::from(sb.inodes_count)).contains(&first_ino);
        if bad_first {
            self.problem(
                Severity::Error,
                "superblock-first-inode",
                "superblock".into(),
                Some(crate::fs::ext::superblock::Superblock::offset_of(sb!(
                    "s_first_ino"
                ))),
                format!(
                    "s_first_ino {first_ino}: not between 11 and s_inodes_count {}: the groups are not checked (e2fsck finds this superblock corrupt too)",
                    sb.inodes_count
                ),
            );
        }
        if sb.checksum_ok() == Some(false) {
            self.problem(
                Severity::Error,
                "superblock-checksum",
                "superblock".into(),
                Some(0x400 + 0x3fc),
                format!(
                    "s_checksum {:#010x} does not match the superblock",
                    sb.get(sb!("s_checksum"))
                ),
            );
        }
        claimed == u64::from(sb.inodes_count) && !bad_first
    }

    /// Marks blocks `[block, block + len)` in use by `who` (an inode, or 0
    /// for group metadata named `what`); a block already in use is
    /// claimed twice.
    fn claim(&mut self, block: u64, len: u64, who: u64, what: &str) {
        let sb = self.fs.superblock();
        if len == 0 {
            return;
        }
        let end = block.saturating_add(len);
        if block < u64::from(sb.first_data_block) || end > sb.blocks_count {
            self.problem(
                Severity::Error,
                "block-out-of-range",
                what.to_owned(),
                None,
                format!(
                    "blocks {block}-{} are outside the filesystem ({} blocks)",
                    end.saturating_sub(1),
                    sb.blocks_count
                ),
            );
            return;
        }
        let first = block.checked_div(self.ratio).unwrap_or(block);
        let last = end
            .saturating_sub(1)
            .checked_div(self.ratio)
            .unwrap_or(end.saturating_sub(1));
        let mut dup = false;
        for cl in first..=last {
            if who == 0 {
                self.meta.set(cl);
            }
            if self.used.set(cl) == Some(true) {
                // With bigalloc, one inode's neighbouring blocks share a
                // cluster: only another claimant is a duplicate.
                if self.ratio > 1 && self.claimant(cl) == Some(who) {
                    continue;
                }
                dup = true;
                self.dups = self.dups.saturating_add(1);
                if let Some(other) = self.claimant(cl) {
                    if self.dup_inodes.len() < MAX_DUPS {
                        let list = self.dup_inodes.entry(other).or_default();
                        if list.len() < 64 {
                            list.push(cl.saturating_mul(self.ratio));
                        }
                    }
                }
                if self.dup_inodes.len() < MAX_DUPS {
                    let list = self.dup_inodes.entry(who).or_default();
                    if list.len() < 64 {
                        list.push(cl.saturating_mul(self.ratio));
                    }
                }
            }
        }
        let _ = dup;
        self.claims
            .insert(first, (last.saturating_sub(first).saturating_add(1), who));
    }

    /// Who claimed cluster `cl` first (from the claims recorded).
    fn claimant(&self, cl: u64) -> Option<u64> {
        self.claims
            .range(..=cl)
            .next_back()
            .filter(|(s, (n, _))| cl < s.saturating_add(*n))
            .map(|(_, (_, who))| *who)
    }

    /// Whether group `g`'s inode table (`len` blocks at `start`) is
    /// read: only when it lies within the disk and apart from the tables
    /// read before it. Otherwise one problem says why, for the group, and
    /// its inodes are not checked: a hostile descriptor table can point
    /// tens of thousands of groups past a small disk or at one table (a
    /// 2.5 MB image claiming 20 million inodes took 44 s to check, one
    /// problem per inode), and e2fsck does not read such a table either
    /// ("Inode table for group g is not in group", "conflicts with some
    /// other fs block").
    fn table_is_read(&mut self, g: u64, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        let bs = self.fs.superblock().block_size;
        if len == 0 {
            return true;
        }
        if end > self.disk_blocks {
            self.problem(
                Severity::Error,
                "inode-table-past-disk",
                format!("group {g} inode table"),
                None,
                format!(
                    "blocks {start}-{} lie past the end of the disk ({} blocks of {bs} bytes): the group's inodes are not checked",
                    end.saturating_sub(1),
                    self.disk_blocks
                ),
            );
            return false;
        }
        // Within the disk but not within the filesystem: every inode of
        // it fails to read (`Ext4::inode_offset`), one error each (a fuzz
        // input's table of 16.7 million inodes past its filesystem's end
        // cost 17 s of CPU); libext2fs refuses such a descriptor ("bad
        // block for inode table").
        let sb = self.fs.superblock();
        let first = u64::from(sb.first_data_block);
        if start < first || end > sb.blocks_count {
            self.problem(
                Severity::Error,
                "inode-table-outside-filesystem",
                format!("group {g} inode table"),
                None,
                format!(
                    "blocks {start}-{} are not all within the filesystem (blocks {first}-{}): the group's inodes are not checked",
                    end.saturating_sub(1),
                    sb.blocks_count.saturating_sub(1)
                ),
            );
            return false;
        }
        let before = self.itables.range(..end).next_back();
        if let Some((&s, &e)) = before.filter(|&(_, &e)| e > start) {
            self.problem(
                Severity::Error,
                "inode-table-overlap",
                format!("group {g} inode table"),
                None,
                format!(
                    "blocks {start}-{} overlap the inode table of another group (blocks {s}-{}): the group's inodes are not checked again",
                    end.saturating_sub(1),
                    e.saturating_sub(1)
                ),
            );
            return false;
        }
        self.itables.insert(start, end);
        true
    }

    /// Pass 1: groups and inodes.
    fn pass1(&mut self, progress: &dyn Progress) {
        let fs = self.fs;
        let sb = fs.superblock();
        let groups = sb.group_count();
        let ipg = u64::from(sb.inodes_per_group);
        progress.stage("inodes", u64::from(sb.inodes_count));
        let itable_blocks =
            (ipg.saturating_mul(u64::from(sb.inode_size))).div_ceil(sb.block_size.max(1));
        for g in 0..groups {
            let d = match fs.group(g) {
                Ok(d) => d,
                Err(e) => {
                    self.decoder(
                        "group-descriptor-checksum",
                        "group-descriptor",
                        format!("group {g}"),
                        &e,
                    );
                    progress.advance(ipg);
                    continue;
                }
            };
            if d.checksum_ok() == Some(false) {
                let at = d
                    .fields()
                    .iter()
                    .find(|f| f.name == "bg_checksum")
                    .map(|f| f.offset);
                self.problem(
                    Severity::Error,
                    "group-descriptor-checksum",
                    format!("group {g}"),
                    at,
                    format!(
                        "group descriptor {g} checksum is {:#06x}, does not match",
                        d.checksum
                    ),
                );
            }
            let p = placement(sb, g);
            if let Some(s) = p.superblock {
                self.claim(s, 1, 0, &format!("group {g} superblock"));
            }
            if let Some((a, b)) = p.descriptors {
                self.claim(
                    a,
                    b.saturating_sub(a).saturating_add(1),
                    0,
                    &format!("group {g} descriptors"),
                );
            }
            if let Some((a, b)) = p.reserved_gdt {
                self.claim(
                    a,
                    b.saturating_sub(a).saturating_add(1),
                    0,
                    &format!("group {g} reserved descriptors"),
                );
            }
            if let Some(m) = p.meta_descriptor {
                self.claim(m, 1, 0, &format!("group {g} meta_bg descriptor"));
            }
            self.claim(d.block_bitmap, 1, 0, &format!("group {g} block bitmap"));
            self.claim(d.inode_bitmap, 1, 0, &format!("group {g} inode bitmap"));
            self.claim(
                d.inode_table,
                itable_blocks,
                0,
                &format!("group {g} inode table"),
            );
            match fs.bitmap_checksums(&d) {
                Ok((bb, ib)) => {
                    let field = |n: &str| d.fields().iter().find(|f| f.name == n).map(|f| f.offset);
                    if let Some(c) = bb.filter(|c| !c.ok()) {
                        self.problem(
                            Severity::Error,
                            "block-bitmap-checksum",
                            format!("group {g}"),
                            field("bg_block_bitmap_csum_lo"),
                            format!(
                                "block bitmap checksum {:#010x}, computed {:#010x}",
                                c.stored, c.computed
                            ),
                        );
                    }
                    if let Some(c) = ib.filter(|c| !c.ok()) {
                        self.problem(
                            Severity::Error,
                            "inode-bitmap-checksum",
                            format!("group {g}"),
                            field("bg_inode_bitmap_csum_lo"),
                            format!(
                                "inode bitmap checksum {:#010x}, computed {:#010x}",
                                c.stored, c.computed
                            ),
                        );
                    }
                }
                Err(e) => self.decoder("block-bitmap-checksum", "bitmap", format!("group {g}"), &e),
            }
            // Groups the kernel never initialized hold no inodes; the
            // tail a descriptor says is unused is skipped, as e2fsck does.
            let uninit = d.flags_apply
                && d.flags
                    .contains(crate::fs::ext::group_desc::BgFlags::INODE_UNINIT);
            let scan = if uninit {
                0
            } else if d.flags_apply {
                ipg.saturating_sub(d.itable_unused)
            } else {
                ipg
            };
            let scan = if self.table_is_read(g, d.inode_table, itable_blocks) {
                scan
            } else {
                0
            };
            let first = g.saturating_mul(ipg).saturating_add(1);
            let end = first
                .saturating_add(scan)
                .min(u64::from(sb.inodes_count).saturating_add(1));
            self.inodes(first, end);
            progress.advance(ipg);
        }
    }

    /// Pass 1 for inodes `first..end` of one group, their table read
    /// [`TABLE_PIECE`] bytes at a time. A slot that is all zeros past the
    /// reserved inodes was never written: pass 1 has nothing to say of it
    /// (no mode, no links, no dtime, and libext2fs takes its checksum as
    /// valid), so it is passed over without decoding; a table of
    /// millions of them costs a read and a scan, as in e2fsck. A piece
    /// that cannot be read is checked an inode at a time, so each read
    /// error is named by its inode.
    fn inodes(&mut self, first: u64, end: u64) {
        let fs = self.fs;
        let sb = fs.superblock();
        let size = u64::from(sb.inode_size).max(1);
        let first_ino = sb.get(sb!("s_first_ino")).max(11);
        let per_piece = TABLE_PIECE.checked_div(size).unwrap_or(1).max(1);
        let mut buf = Vec::new();
        let mut at = first;
        while at < end {
            if at >= first_ino {
                // Slots the disk holds no data for read as zeros: they
                // are passed over without reading them.
                let skip = self.zero_slots(at, end, size);
                if skip > 0 {
                    at = at.saturating_add(skip);
                    continue;
                }
            }
            let stop = at.saturating_add(per_piece).min(end);
            let bytes = us(stop.saturating_sub(at).saturating_mul(size));
            buf.resize(bytes, 0);
            let read = fs
                .inode_offset(at)
                .ok()
                .and_then(|offset| fs.disk().read_at(offset, &mut buf).ok());
            if read.is_none() {
                for ino in at..stop {
                    self.inode(ino, None);
                }
                at = stop;
                continue;
            }
            for (ino, raw) in (at..stop).zip(buf.chunks_exact(us(size))) {
                if ino >= first_ino && raw.iter().all(|&b| b == 0) {
                    continue;
                }
                self.inode(ino, Some(raw));
            }
            at = stop;
        }
    }

    /// How many whole inode slots from `at` on (before `end`) lie where
    /// the disk holds no data (a hole, a zero cluster, no layer holding
    /// it): they read as zeros. 0 when the status cannot be had.
    fn zero_slots(&self, at: u64, end: u64, size: u64) -> u64 {
        let fs = self.fs;
        let Ok(offset) = fs.inode_offset(at) else {
            return 0;
        };
        let len = end.saturating_sub(at).saturating_mul(size);
        let len = len.min(fs.disk().len().saturating_sub(offset));
        if len == 0 {
            return 0;
        }
        match fs.disk().block_status(offset, len) {
            Ok(extents) => extents
                .first()
                .filter(|e| e.offset == offset && e.status != crate::block::Status::Data)
                .map_or(0, |e| e.len.checked_div(size).unwrap_or(0)),
            Err(_) => 0,
        }
    }

    /// Pass 1 for one inode, from `raw` (its bytes, read with its table)
    /// or read alone.
    fn inode(&mut self, ino: u64, raw: Option<&[u8]>) {
        let fs = self.fs;
        let sb = fs.superblock();
        let got = match raw {
            Some(raw) => fs.inode_from_raw(ino, raw),
            None => fs.inode(ino),
        };
        let inode = match got {
            Ok(i) => i,
            Err(e) => {
                self.decoder("inode-checksum", "inode", format!("inode {ino}"), &e);
                return;
            }
        };
        let first_ino = sb.get(sb!("s_first_ino")).max(11);
        let reserved = ino < first_ino;
        for e in &inode.problems {
            self.decoder("inode-checksum", "inode", format!("inode {ino}"), e);
        }
        if !reserved || ino == 2 {
            orphan::low_dtime(self, &inode);
        }
        if inode.links == 0 && !reserved {
            if inode.dtime == 0 && inode.mode != 0 {
                self.problem(
                    Severity::Error,
                    "deleted-inode-zero-dtime",
                    format!("inode {ino}"),
                    Some(inode.base),
                    format!("deleted inode {ino} has zero dtime"),
                );
            }
            return;
        }
        if !reserved && inode.dtime != 0 {
            self.problem(
                Severity::Error,
                "in-use-inode-dtime",
                format!("inode {ino}"),
                Some(inode.base.saturating_add(0x14)),
                format!("inode {ino} is in use, but has dtime set"),
            );
        }
        let u32ino = u32::try_from(ino).unwrap_or(u32::MAX);
        self.inodes.insert(
            u32ino,
            InUse {
                links: inode.links,
                is_dir: inode.is_dir() && (!reserved || ino == 2),
                ftype: ftype(inode.mode),
                ea_inode: inode.flags & crate::fs::ext::inode::EA_INODE_FL != 0,
                size: inode.size,
                base: inode.base,
                ..InUse::default()
            },
        );
        self.summary.inodes_used = self.summary.inodes_used.saturating_add(1);
        if reserved && ino != 2 && inode.mode == 0 && inode.blocks == 0 {
            return;
        }
        if inode.is_dir() {
            self.summary.directories = self.summary.directories.saturating_add(1);
            if !reserved || ino == 2 {
                self.dirs.push(u32ino);
            }
        } else if inode.is_reg() {
            self.summary.regular_files = self.summary.regular_files.saturating_add(1);
        } else if inode.is_symlink() {
            self.summary.symlinks = self.summary.symlinks.saturating_add(1);
        }
        if ino == 7 {
            // The resize inode maps the reserved descriptor blocks, which
            // pass 1 counts as group metadata: only its double indirect
            // block is its own.
            let dind = u64::from(u32::from_le_bytes(
                inode
                    .block
                    .get(52..56)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 4]),
            ));
            self.claim(dind, u64::from(dind != 0), ino, "inode 7 (resize inode)");
        } else {
            self.map(&inode);
        }
        self.xattr_block(&inode);
    }

    /// An inode's block map: claims its blocks; damage is reported.
    fn map(&mut self, inode: &Inode) {
        let ino = inode.ino;
        let map = match self.fs.block_map(inode) {
            Ok(m) => m,
            Err(e) => {
                self.decoder("extent-checksum", "block-map", format!("inode {ino}"), &e);
                return;
            }
        };
        for e in map.warnings.iter().chain(map.skipped.iter()) {
            self.decoder("extent-checksum", "block-map", format!("inode {ino}"), e);
        }
        let dir = inode.mode & 0xf000 == 0x4000;
        for r in &map.runs {
            let len = if dir && !r.meta {
                htree::dir_run_len(self.fs.superblock(), inode, r)
            } else {
                r.len
            };
            self.claim(r.physical, len, ino, &format!("inode {ino}"));
        }
    }

    /// An inode's attribute block: its checksum, and one more user.
    fn xattr_block(&mut self, inode: &Inode) {
        let ino = inode.ino;
        let block = inode.file_acl;
        if block == 0 {
            return;
        }
        if let Some((users, _, _)) = self.xattr_blocks.get_mut(&block) {
            *users = users.saturating_add(1);
            return;
        }
        let sb = self.fs.superblock();
        let bytes = match self.fs.block(block) {
            Ok(b) => b,
            Err(e) => {
                self.decoder(
                    "xattr-block-checksum",
                    "xattr-block",
                    format!("inode {ino}"),
                    &e,
                );
                return;
            }
        };
        let at = block.saturating_mul(sb.block_size);
        if sb.has_metadata_csum() {
            let c = crate::fs::ext::xattr::XattrBlock::checksum(&bytes, block, sb.csum_seed);
            if !c.ok() {
                self.problem(
                    Severity::Error,
                    "xattr-block-checksum",
                    format!("inode {ino}"),
                    Some(at.saturating_add(0x10)),
                    format!(
                        "extended attribute block {block} checksum {:#010x}, computed {:#010x}",
                        c.stored, c.computed
                    ),
                );
            }
        }
        match crate::fs::ext::xattr::XattrBlock::decode(&bytes, at) {
            Ok(x) => {
                self.xattr_blocks.insert(block, (1, x.refcount, at));
            }
            Err(e) => self.decoder(
                "xattr-block-checksum",
                "xattr-block",
                format!("inode {ino}"),
                &e,
            ),
        }
        self.claim(block, 1, ino, &format!("inode {ino} attribute block"));
    }

    /// Blocks claimed twice, one problem per inode claiming them (as
    /// e2fsck's pass 1B names them).
    fn report_dups(&mut self) {
        let list = std::mem::take(&mut self.dup_inodes);
        // shared_blocks: files may share blocks (e2fsck accepts them).
        if self
            .fs
            .superblock()
            .has_ro_compat(crate::fs::ext::superblock::RoCompat::SHARED_BLOCKS)
        {
            return;
        }
        for (who, blocks) in list {
            let structure = if who == 0 {
                "group metadata".to_owned()
            } else {
                format!("inode {who}")
            };
            let shown: Vec<String> = blocks.iter().map(u64::to_string).collect();
            self.problem(
                Severity::Error,
                "multiply-claimed",
                structure.clone(),
                None,
                format!(
                    "multiply-claimed block(s) in {structure}: {}",
                    shown.join(" ")
                ),
            );
        }
    }

    /// Attribute blocks whose reference count is not their number of
    /// users.
    fn report_xattr_refcounts(&mut self) {
        let mut list: Vec<(u64, (u32, u32, u64))> =
            self.xattr_blocks.iter().map(|(b, v)| (*b, *v)).collect();
        list.sort_unstable();
        for (block, (users, refcount, at)) in list {
            if users != refcount {
                self.problem(
                    Severity::Error,
                    "xattr-refcount",
                    format!("block {block}"),
                    Some(at.saturating_add(4)),
                    format!(
                        "extended attribute block {block} has reference count {refcount}, should be {users}"
                    ),
                );
            }
        }
    }
}
