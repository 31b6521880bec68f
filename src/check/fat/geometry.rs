//! The boot sector and the geometry fsck.fat refuses before it reads the
//! FAT.
use super::{Checker, Severity, MAX_CLUSTERS};
use crate::block::BlockSource;
use crate::fs::fat::boot::{FatType, MAX_FAT16_CLUSTERS};

/// Whether the FAT the boot sector places fits what the volume holds
/// and what fsck.fat checks; if not, the finding that says why is
/// reported and the check goes no further.
pub(super) fn fits(c: &mut Checker<'_>) -> bool {
    let fat = c.fat;
    let boot = fat.boot();
    let raw = c.sector0;
    let field = |at: usize| {
        raw.get(at..at.saturating_add(2))
            .and_then(|b| crate::bytes::le16(b, 0))
            .map_or(0, u64::from)
    };
    // Geometry fsck.fat refuses and stops at (`read_boot`), in its order:
    // "only 1 or 2 FATs are supported", "Failed to read sector N" (the
    // boot sector's last even sector), "Too many clusters for FAT16
    // filesystem", "Filesystem has N clusters but only space for M FAT
    // entries" and "Root directory (N entries) doesn't span an integral
    // number of sectors": the check reports the same and nothing further.
    // Where the second FAT lies and every count after follow from that
    // geometry, so further findings would be its echoes (and a FAT16 read
    // as 16 million entries cost seconds); `ls` and the other views still
    // show what the FAT describes.
    if !(1..=2).contains(&boot.num_fats) {
        c.problem(
            Severity::Error,
            "fat-count",
            "boot sector".into(),
            Some(0x10),
            format!(
                "{} FATs (fsck.fat checks 1 or 2, and refuses the volume): not checked further",
                boot.num_fats
            ),
        );
        return false;
    }
    let volume = crate::fs::Filesystem::source(fat).len();
    let bps = boot.bytes_per_sector;
    let last_even = boot.total_sectors & !1;
    if last_even.saturating_mul(bps) > volume {
        // BPB_TotSec16, or BPB_TotSec32 where it is 0.
        let at = if field(0x13) != 0 { 0x13 } else { 0x20 };
        c.problem(
            Severity::Error,
            "fat-volume-short",
            "boot sector".into(),
            Some(at),
            format!(
                "the boot sector gives {} sectors; sector {} lies past the end of the volume ({volume} bytes; fsck.fat fails to read it and refuses the volume): not checked further",
                boot.total_sectors,
                last_even.saturating_sub(1)
            ),
        );
        return false;
    }
    // Only what the volume holds: the first FAT must lie within it (its
    // entries are what the check reads and keeps, one word per cluster),
    // and no more clusters are checked than it has entries for. A boot
    // sector claiming 32 million clusters on an 84-byte volume would
    // otherwise cost 256 MB and seconds of reading zeros.
    let fat_bytes = boot.fat_sectors.saturating_mul(bps);
    let fat_end = boot.fat_offset.saturating_add(fat_bytes);
    if fat_end > volume {
        c.problem(
            Severity::Error,
            "fat-past-volume",
            "FAT".into(),
            Some(boot.fat_offset),
            format!(
                "the first FAT (bytes {:#x}-{:#x}) lies past the end of the volume ({volume} bytes): not checked",
                boot.fat_offset,
                fat_end.saturating_sub(1)
            ),
        );
        return false;
    }
    // A FAT32 root is a chain; without one, and without an old-style
    // root directory, fsck.fat gives up ("No root directory!"). Then it
    // compares the boot sector with its backup, before the counts below.
    if boot.fat_type == FatType::Fat32 {
        if boot.root_cluster == 0 && field(0x11) == 0 {
            c.problem(
                Severity::Error,
                "fat-no-root",
                "boot sector".into(),
                Some(0x2c),
                "BPB_RootClus is 0 and there is no root directory area (fsck.fat gives up: \"No root directory!\"): not checked further".into(),
            );
            return false;
        }
        backup_boot(c);
        // Then `read_fsinfo`: a sector whose signatures are wrong is
        // re-created ("FSINFO sector has bad magic number(s)"), its free
        // count unknown.
        if let Some((_, at)) = fat.fsinfo().filter(|(info, _)| !info.valid) {
            c.problem(
                Severity::Error,
                "fat-fsinfo-magic",
                "FSInfo".into(),
                Some(at),
                "the FSInfo sector's signatures (0x41615252, 0x61417272, 0xaa550000) are wrong: its free count is not used".into(),
            );
        }
    }
    let entries = fat_bytes
        .saturating_mul(8)
        .checked_div(boot.fat_type.bits())
        .unwrap_or(0);
    let held = entries.saturating_sub(2);
    // The decode has limited `cluster_count` to what the FAT takes: the
    // geometry's own count is what fsck.fat judges.
    let claimed = boot.data_clusters.max(boot.cluster_count);
    if boot.fat_type == FatType::Fat16 && claimed > MAX_FAT16_CLUSTERS {
        c.problem(
            Severity::Error,
            "fat-too-many-clusters",
            "boot sector".into(),
            None,
            format!(
                "too many clusters ({claimed}) for a FAT16 filesystem (at most {MAX_FAT16_CLUSTERS}; fsck.fat refuses it, the kernel will not mount it): not checked further"
            ),
        );
        return false;
    }
    if claimed > held {
        c.problem(
            Severity::Error,
            "fat-too-small",
            "FAT".into(),
            Some(boot.fat_offset),
            format!(
                "{claimed} clusters, but the FAT ({fat_bytes} bytes) has entries for {held} (fsck.fat refuses it): not checked further"
            ),
        );
        return false;
    }
    // BPB_RootEntCnt as stored (the decode takes 0 on FAT32, where the
    // root directory is a chain): fsck.fat wants whole 512-byte sectors
    // of 32-byte entries on every type, and the kernel refuses the
    // volume too ("bogus number of directory entries").
    let root_entries = field(0x11);
    if root_entries % 16 != 0 {
        c.problem(
            Severity::Error,
            "fat-root-entries",
            "boot sector".into(),
            Some(0x11),
            format!(
                "the root directory's {root_entries} entries do not fill whole sectors (fsck.fat refuses the volume): not checked further"
            ),
        );
        return false;
    }
    if boot.cluster_count > MAX_CLUSTERS {
        c.problem(
            Severity::Leak,
            "fat-not-checked",
            "FAT".into(),
            None,
            format!(
                "{} clusters: more than the {MAX_CLUSTERS} this check holds in memory; not checked",
                boot.cluster_count
            ),
        );
        return false;
    }
    true
}

/// The boot sector against its backup (FAT32), as fsck.fat's `read_boot`
/// compares them.
fn backup_boot(c: &mut Checker<'_>) {
    let boot = c.fat.boot();
    if boot.fat_type != FatType::Fat32 || boot.backup_boot_sector == 0 {
        return;
    }
    let first = c.sector0;
    let at = boot
        .backup_boot_sector
        .saturating_mul(boot.bytes_per_sector);
    let mut backup = vec![0u8; 512];
    if c.fat.disk().read_at(at, &mut backup).is_ok() && backup != first.as_slice() {
        let diff = first
            .iter()
            .zip(&backup)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        c.problem(
            Severity::Leak,
            "fat-boot-backup",
            "boot sector".into(),
            Some(at.saturating_add(u64::try_from(diff).unwrap_or(0))),
            format!("the boot sector and its backup differ (first at byte {diff})"),
        );
    }
}

/// fsck.fat's `check_dirty_bits`, after the files: the boot sector's
/// dirty flag (bit 0 of BS_Reserved1, on every FAT type), or on FAT16 and
/// FAT32 the clean-shutdown bit of the FAT's second entry clear (the
/// kernel clears it while mounted on FAT32; Windows on both).
pub(super) fn dirty(c: &mut Checker<'_>) {
    let boot = c.fat.boot();
    let first = c.sector0;
    let (flag_at, clean_bit) = match boot.fat_type {
        FatType::Fat32 => (0x41usize, Some(0x0800_0000u32)),
        FatType::Fat16 => (0x25, Some(0x8000)),
        FatType::Fat12 => (0x25, None),
    };
    if first.get(flag_at).is_some_and(|b| b & 1 != 0) {
        c.problem(
            Severity::Error,
            "fat-dirty",
            "boot sector".into(),
            Some(u64::try_from(flag_at).unwrap_or(0)),
            "dirty bit is set: the filesystem was not properly unmounted".into(),
        );
    } else if let Some(bit) = clean_bit.filter(|&bit| c.get(1) & bit == 0) {
        c.problem(
            Severity::Error,
            "fat-dirty",
            "FAT".into(),
            Some(c.entry_offset(1)),
            format!(
                "the clean-shutdown bit ({bit:#x}) of the FAT's second entry is clear: the filesystem was not properly unmounted"
            ),
        );
    }
}
