//! Pass 5 of the ext check: the bitmaps and counts the filesystem stores
//! against what passes 1 to 4 found in use, in e2fsck's words ("Block
//! bitmap differences: -(1234--1240)", "Free blocks count wrong for group
//! #0 (X, counted=Y)").
//!
//! The superblock's free counts are a hint the kernel keeps loosely (it
//! sums the groups' at mount): a wrong one is reported as a [`Leak`],
//! which e2fsck fixes without calling the filesystem damaged (exit 0).
//!
//! [`Leak`]: super::Severity::Leak
//!
//! A group whose block bitmap the kernel never initialized
//! (`BLOCK_UNINIT`) reads as its own metadata in use and nothing else; one
//! whose inode bitmap is uninitialized reads as all free.
use crate::fs::ext::superblock::sb;
use std::collections::HashMap;

use super::super::bits::{range_text, ranges};
use super::{Checker, Progress, Severity};

/// Differences named per group, at most (the rest are counted).
const MAX_SHOWN: usize = 2000;

/// One bitmap compared: differences (`+`: in use but marked free, `-`:
/// marked in use but free) and how many are in use as found.
#[derive(Default)]
struct Compared {
    plus: Vec<u64>,
    minus: Vec<u64>,
    more: u64,
    used: u64,
    /// In use as the bitmap says (e2fsck -n counts free entries from the
    /// bitmap it was not allowed to fix).
    stored_used: u64,
}

impl Compared {
    fn note(&mut self, found: bool, stored: bool, what: u64) {
        if found {
            self.used = self.used.saturating_add(1);
        }
        if stored {
            self.stored_used = self.stored_used.saturating_add(1);
        }
        if found == stored {
            return;
        }
        let list = if found {
            &mut self.plus
        } else {
            &mut self.minus
        };
        if list.len() < MAX_SHOWN {
            list.push(what);
        } else {
            self.more = self.more.saturating_add(1);
        }
    }

    fn text(&self) -> String {
        let mut all: Vec<String> = ranges(&self.minus)
            .into_iter()
            .map(|r| range_text('-', r))
            .collect();
        all.extend(ranges(&self.plus).into_iter().map(|r| range_text('+', r)));
        if self.more > 0 {
            all.push(format!("and {} more", self.more));
        }
        all.join(" ")
    }

    fn differs(&self) -> bool {
        !self.plus.is_empty() || !self.minus.is_empty()
    }
}

fn bit(bitmap: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|b| bitmap.get(b))
        .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
}

pub(super) fn run(c: &mut Checker<'_>, progress: &dyn Progress) {
    let fs = c.fs;
    let sb = fs.superblock();
    let groups = sb.group_count();
    let ipg = u64::from(sb.inodes_per_group);
    let cpg = u64::from(sb.clusters_per_group);
    let total_clusters = sb.blocks_count.div_ceil(c.ratio);
    // Inodes in use and directories, per group.
    let mut per_group: HashMap<u64, (u64, u64)> = HashMap::new();
    for (&ino, u) in &c.inodes {
        let g = u64::from(ino)
            .saturating_sub(1)
            .checked_div(ipg.max(1))
            .unwrap_or(0);
        let e = per_group.entry(g).or_default();
        e.0 = e.0.saturating_add(1);
        if u.is_dir {
            e.1 = e.1.saturating_add(1);
        }
    }
    // The inodes in use, sorted: each group's are found by bisection, so
    // the bitmap pass costs a scan of the bitmaps plus the inodes in use
    // (a lookup per inode number made a fuzzer's 16.7-million-inode
    // filesystem take a second).
    let mut in_use: Vec<u64> = c.inodes.keys().map(|&n| u64::from(n)).collect();
    in_use.sort_unstable();
    let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
    let mut block_diffs = Compared::default();
    let mut inode_diffs = Compared::default();
    let mut block_bitmap_groups = Vec::new();
    let mut inode_bitmap_groups = Vec::new();
    let mut all_groups = true;
    let mut blocks_used_found = 0u64;
    progress.stage("bitmaps", groups);
    for g in 0..groups {
        progress.advance(1);
        let Ok(d) = fs.group(g) else {
            all_groups = false;
            continue; // reported in pass 1
        };
        let field = |n: &str| d.fields().iter().find(|f| f.name == n).map(|f| f.offset);
        // Blocks.
        let first_block = u64::from(sb.first_data_block)
            .saturating_add(g.saturating_mul(u64::from(sb.blocks_per_group)));
        let first = first_block.checked_div(c.ratio).unwrap_or(first_block);
        let end = first.saturating_add(cpg).min(total_clusters);
        let uninit = d.flags_apply
            && d.flags
                .contains(crate::fs::ext::group_desc::BgFlags::BLOCK_UNINIT);
        let stored = if uninit {
            None
        } else {
            match fs.block(d.block_bitmap) {
                Ok(b) => Some(b),
                Err(e) => {
                    c.decoder(
                        "block-bitmap-checksum",
                        "block-bitmap",
                        format!("group {g}"),
                        &e,
                    );
                    all_groups = false;
                    continue;
                }
            }
        };
        let mut cmp = Compared::default();
        for cl in first..end {
            let found = c.used.get(cl);
            let on_disk = match &stored {
                Some(b) => bit(b, cl.saturating_sub(first)),
                None => c.meta.get(cl),
            };
            cmp.note(found, on_disk, cl.saturating_mul(c.ratio));
        }
        // The counts are compared with the bitmap as stored, as e2fsck -n
        // does: a bitmap that is wrong is its own problem above.
        let free = (end.saturating_sub(first)).saturating_sub(cmp.stored_used);
        blocks_used_found = blocks_used_found.saturating_add(cmp.used);
        free_blocks = free_blocks.saturating_add(free);
        if cmp.differs() {
            block_bitmap_groups.push(g);
        }
        block_diffs.plus.extend(
            cmp.plus
                .iter()
                .take(MAX_SHOWN.saturating_sub(block_diffs.plus.len())),
        );
        block_diffs.minus.extend(
            cmp.minus
                .iter()
                .take(MAX_SHOWN.saturating_sub(block_diffs.minus.len())),
        );
        block_diffs.more = block_diffs.more.saturating_add(cmp.more);
        if free != d.free_blocks {
            c.problem(
                Severity::Error,
                "group-free-blocks",
                format!("group {g}"),
                field("bg_free_blocks_count_lo"),
                format!(
                    "free blocks count wrong for group #{g} ({}, counted={free})",
                    d.free_blocks
                ),
            );
        }
        // Inodes.
        let uninit = d.flags_apply
            && d.flags
                .contains(crate::fs::ext::group_desc::BgFlags::INODE_UNINIT);
        let stored = if uninit {
            None
        } else {
            match fs.block(d.inode_bitmap) {
                Ok(b) => Some(b),
                Err(e) => {
                    c.decoder(
                        "inode-bitmap-checksum",
                        "inode-bitmap",
                        format!("group {g}"),
                        &e,
                    );
                    all_groups = false;
                    continue;
                }
            }
        };
        let first_ino = g.saturating_mul(ipg).saturating_add(1);
        let count = ipg.min(
            u64::from(sb.inodes_count)
                .saturating_add(1)
                .saturating_sub(first_ino),
        );
        let cmp = compare_inodes(stored.as_deref(), first_ino, count, &in_use);
        let free = ipg.saturating_sub(cmp.stored_used);
        free_inodes = free_inodes.saturating_add(free);
        if cmp.differs() {
            inode_bitmap_groups.push(g);
        }
        inode_diffs.plus.extend(
            cmp.plus
                .iter()
                .take(MAX_SHOWN.saturating_sub(inode_diffs.plus.len())),
        );
        inode_diffs.minus.extend(
            cmp.minus
                .iter()
                .take(MAX_SHOWN.saturating_sub(inode_diffs.minus.len())),
        );
        inode_diffs.more = inode_diffs.more.saturating_add(cmp.more);
        if free != d.free_inodes {
            c.problem(
                Severity::Error,
                "group-free-inodes",
                format!("group {g}"),
                field("bg_free_inodes_count_lo"),
                format!(
                    "free inodes count wrong for group #{g} ({}, counted={free})",
                    d.free_inodes
                ),
            );
        }
        let dirs = per_group.get(&g).map_or(0, |e| e.1);
        if dirs != d.used_dirs {
            c.problem(
                Severity::Error,
                "group-directories",
                format!("group {g}"),
                field("bg_used_dirs_count_lo"),
                format!(
                    "directories count wrong for group #{g} ({}, counted={dirs})",
                    d.used_dirs
                ),
            );
        }
    }
    if block_diffs.differs() {
        let at = block_bitmap_groups
            .first()
            .and_then(|&g| fs.group(g).ok())
            .map(|d| d.block_bitmap.saturating_mul(sb.block_size));
        c.problem(
            Severity::Error,
            "block-bitmap",
            format!("groups {}", list(&block_bitmap_groups)),
            at,
            format!("block bitmap differences: {}", block_diffs.text()),
        );
    }
    if inode_diffs.differs() {
        let at = inode_bitmap_groups
            .first()
            .and_then(|&g| fs.group(g).ok())
            .map(|d| d.inode_bitmap.saturating_mul(sb.block_size));
        c.problem(
            Severity::Error,
            "inode-bitmap",
            format!("groups {}", list(&inode_bitmap_groups)),
            at,
            format!("inode bitmap differences: {}", inode_diffs.text()),
        );
    }
    c.summary.blocks_used = blocks_used_found.saturating_mul(c.ratio);
    if !all_groups {
        return;
    }
    let stored_blocks = sb.get(sb!("s_free_blocks_count_lo"))
        | if sb.is_64bit() {
            sb.get(sb!("s_free_blocks_count_hi")) << 32
        } else {
            0
        };
    if stored_blocks != free_blocks {
        c.problem(
            Severity::Leak,
            "free-blocks",
            "superblock".into(),
            Some(0x400 + 0xc),
            format!("free blocks count wrong ({stored_blocks}, counted={free_blocks})"),
        );
    }
    let stored_inodes = sb.get(sb!("s_free_inodes_count"));
    if stored_inodes != free_inodes {
        c.problem(
            Severity::Leak,
            "free-inodes",
            "superblock".into(),
            Some(0x400 + 0x10),
            format!("free inodes count wrong ({stored_inodes}, counted={free_inodes})"),
        );
    }
}

/// One group's inode bitmap (`None`: uninitialized, all free) against
/// the inodes found in use (`in_use`, sorted, all groups'), for the
/// `count` inodes from `first_ino`. Bytes of the bitmap that are zero
/// where no inode was found are stepped over whole.
fn compare_inodes(stored: Option<&[u8]>, first_ino: u64, count: u64, in_use: &[u64]) -> Compared {
    let end_ino = first_ino.saturating_add(count);
    let lo = in_use.partition_point(|&n| n < first_ino);
    let hi = in_use.partition_point(|&n| n < end_ino);
    let found = in_use.get(lo..hi).unwrap_or(&[]);
    let mut cursor = 0usize;
    let mut cmp = Compared::default();
    let mut i = 0u64;
    while i < count {
        let ino = first_ino.saturating_add(i);
        let byte = stored
            .and_then(|b| usize::try_from(i / 8).ok().and_then(|at| b.get(at)))
            .copied()
            .unwrap_or(0);
        let next_found = found.get(cursor).copied().unwrap_or(u64::MAX);
        if i % 8 == 0 && byte == 0 && next_found >= ino.saturating_add(8) {
            i = i.saturating_add(8);
            continue;
        }
        let is_found = next_found == ino;
        if is_found {
            cursor = cursor.saturating_add(1);
        }
        cmp.note(is_found, byte & (1 << (i % 8)) != 0, ino);
        i = i.saturating_add(1);
    }
    cmp
}

fn list(groups: &[u64]) -> String {
    let shown: Vec<String> = groups.iter().take(20).map(u64::to_string).collect();
    let more = groups.len().saturating_sub(20);
    if more > 0 {
        format!("{} and {more} more", shown.join(","))
    } else {
        shown.join(",")
    }
}
