//! Orphans as `e2fsck -fn` sees them. A read-only e2fsck does not walk
//! the orphan list (`release_orphan_inodes` runs only when it may write):
//! pass 1 finds each inode whose `i_dtime` is a small number (below the
//! inode count: the next orphan, not a time) and says it "was part of
//! the orphaned inode list" ([`low_dtime`]). The orphan file
//! (`check_init_orphan_file`) must be clean after recovery: each block
//! all zeros, with the tail's magic and checksum; the first block that is
//! not stops the check ("Failed to initialize orphan file"); a clean file
//! with the orphan_present feature set is reported too.
use super::{Checker, Severity};
use crate::fs::ext::checksum::crc32c_raw;
use crate::fs::ext::inode::Inode;
use crate::fs::ext::jbd2::orphan::ORPHAN_BLOCK_MAGIC;
use crate::fs::ext::superblock::{sb, Compat, RoCompat};

/// Whether pass 1 looks at low dtimes: not when a superblock time is
/// itself that low (a filesystem whose clock was never set).
pub(super) fn low_dtime_check(c: &Checker<'_>) -> bool {
    let sb = c.fs.superblock();
    let inodes = sb.get(sb!("s_inodes_count"));
    ![sb!("s_wtime"), sb!("s_mtime"), sb!("s_mkfs_time")]
        .iter()
        .any(|f| {
            let t = sb.get(f);
            t != 0 && t < inodes
        })
}

/// Pass 1 for one inode: a dtime that names the next orphan.
pub(super) fn low_dtime(c: &mut Checker<'_>, inode: &Inode) {
    let inodes = u64::from(c.fs.superblock().inodes_count);
    if inode.dtime != 0 && u64::from(inode.dtime) < inodes && c.low_dtime {
        let ino = inode.ino;
        c.problem(
            Severity::Error,
            "orphan-list-inode",
            format!("inode {ino}"),
            Some(inode.base.saturating_add(0x14)),
            format!(
                "inode {ino} was part of the orphaned inode list (dtime {} names the next)",
                inode.dtime
            ),
        );
    }
}

/// The orphan file.
pub(super) fn file(c: &mut Checker<'_>) {
    let fs = c.fs;
    let sb = fs.superblock();
    if !sb.has_compat(Compat::ORPHAN_FILE) {
        return;
    }
    let ino = sb.get(sb!("s_orphan_file_inum"));
    let Ok(inode) = fs.inode(ino) else {
        return; // pass 1 reports the inode
    };
    let Ok(map) = fs.block_map(&inode) else {
        return;
    };
    let bs = sb.block_size.max(1);
    let blocks = inode.size.checked_div(bs).unwrap_or(0);
    let per_block = usize::try_from(bs.saturating_sub(8) / 4).unwrap_or(0);
    let seed = sb.has_metadata_csum().then_some(sb.csum_seed);
    let fail = |c: &mut Checker<'_>, at: Option<u64>, kind: &'static str, detail: String| {
        c.problem(Severity::Error, kind, format!("inode {ino}"), at, detail);
        c.problem(
            Severity::Error,
            "orphan-file-init",
            "superblock".into(),
            Some(0x400 + 0x280),
            "failed to initialize orphan file".into(),
        );
    };
    for logical in 0..blocks.min(1 << 20) {
        let physical = map
            .runs
            .iter()
            .filter(|r| !r.meta)
            .find(|r| r.logical <= logical && logical < r.logical.saturating_add(r.len))
            .map(|r| r.physical.saturating_add(logical.saturating_sub(r.logical)));
        let Some(physical) = physical else {
            fail(
                c,
                Some(inode.base),
                "orphan-file-hole",
                format!("orphan file (inode {ino}) contains hole at block {logical}"),
            );
            return;
        };
        let Ok(block) = fs.block(physical) else {
            return;
        };
        let words = block.get(..per_block.saturating_mul(4)).unwrap_or_default();
        let tail = usize::try_from(bs.saturating_sub(8)).unwrap_or(0);
        let magic = crate::bytes::le32(&block, tail).unwrap_or(0);
        let stored = crate::bytes::le32(&block, tail.saturating_add(4)).unwrap_or(0);
        let csum_ok = seed.is_none_or(|s| {
            let mut crc = crc32c_raw(s, &u32::try_from(ino).unwrap_or(0).to_le_bytes());
            crc = crc32c_raw(crc, &inode.generation.to_le_bytes());
            crc = crc32c_raw(crc, &physical.to_le_bytes());
            crc32c_raw(crc, words) == stored
        });
        let empty = words.iter().all(|&b| b == 0);
        if !empty || magic != ORPHAN_BLOCK_MAGIC || !csum_ok {
            let why = if !empty {
                "holds orphans"
            } else if magic != ORPHAN_BLOCK_MAGIC {
                "has no magic"
            } else {
                "fails its checksum"
            };
            fail(
                c,
                Some(physical.saturating_mul(bs)),
                "orphan-file-block",
                format!("orphan file (inode {ino}) block {logical} is not clean: it {why}"),
            );
            return;
        }
    }
    if sb.has_ro_compat(RoCompat::ORPHAN_PRESENT) {
        c.problem(
            Severity::Error,
            "orphan-present",
            "superblock".into(),
            Some(0x400 + 0x64),
            "feature orphan_present is set but orphan file is clean".into(),
        );
    }
}
