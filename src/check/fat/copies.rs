//! The FAT copies: where the second differs from the first, and which of
//! them the check goes on with.
use super::{Checker, Severity, Words};
use crate::block::BlockSource;
use crate::fs::fat::boot::FatType;
use crate::fs::fat::table::FatReader;

/// Where the second FAT first differs from the first, over the bytes
/// that map clusters (fsck.fat compares these two; a volume with more
/// copies is refused before this).
fn second_differs(c: &Checker<'_>) -> Option<u64> {
    let boot = c.fat.boot();
    if boot.num_fats < 2 {
        return None;
    }
    let size = u64::from(c.clusters)
        .saturating_add(2)
        .saturating_mul(boot.fat_type.bits())
        .saturating_add(7)
        / 8;
    let fat_bytes = boot.fat_sectors.saturating_mul(boot.bytes_per_sector);
    let base = boot.fat_offset.saturating_add(fat_bytes);
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut pos = 0u64;
    while pos < size {
        let n = size.saturating_sub(pos).min(1 << 16);
        let len = usize::try_from(n).unwrap_or(0);
        let (Some(x), Some(y)) = (a.get_mut(..len), b.get_mut(..len)) else {
            return None;
        };
        if c.fat
            .disk()
            .read_at(boot.fat_offset.saturating_add(pos), x)
            .is_err()
            || c.fat.disk().read_at(base.saturating_add(pos), y).is_err()
        {
            return None;
        }
        // Equal chunks are the rule: one slice compare (memcmp), and the
        // byte-by-byte scan only for the chunk that differs.
        if x != y {
            let i = x.iter().zip(y.iter()).position(|(p, q)| p != q)?;
            return Some(
                base.saturating_add(pos)
                    .saturating_add(u64::try_from(i).unwrap_or(0)),
            );
        }
        pos = pos.saturating_add(n);
    }
    None
}

/// fsck.fat's choice of FAT (`read_fat`): a copy whose first entry (the
/// media byte and all ones above it) is intact is trusted. Neither copy
/// intact, or a single copy that is not, fsck.fat gives up. Copies that
/// differ: both intact, the first is used; only the second intact, the
/// second is used (the check goes on with it, as fsck.fat copies it over
/// the first). Whether the check goes on.
pub(super) fn choose(c: &mut Checker<'_>, total: usize) -> bool {
    let boot = c.fat.boot();
    // FAT_EXTD: the entry's bits above its low byte (28 bits on FAT32).
    let bits = match c.kind {
        FatType::Fat32 => 28,
        kind => u32::try_from(kind.bits()).unwrap_or(16),
    };
    let extd = 1u32.checked_shl(bits).unwrap_or(0).wrapping_sub(1) & !0xff;
    let intact = |copy: u64| {
        FatReader::new(c.fat.disk(), boot, copy)
            .entry(0)
            .is_ok_and(|v| v & extd == extd)
    };
    let first_ok = intact(0);
    let two = boot.num_fats >= 2;
    let second_ok = two && intact(1);
    if !first_ok && !second_ok {
        let detail = if two {
            "the first entry of both FAT copies is damaged (fsck.fat gives up: \"Both FATs appear to be corrupt\"): not checked further"
        } else {
            "the first entry of the only FAT is damaged (fsck.fat gives up: \"First FAT appears to be corrupt and second FAT does not exist\"): not checked further"
        };
        c.problem(
            Severity::Error,
            "fat-copies-corrupt",
            "FAT".into(),
            Some(boot.fat_offset),
            detail.into(),
        );
        return false;
    }
    let Some(at) = second_differs(c) else {
        return true;
    };
    let which = if first_ok && second_ok {
        "both appear intact: the first is used"
    } else if first_ok {
        "the second's first entry is damaged: the first is used"
    } else {
        "the first's first entry is damaged: the second is used"
    };
    // The finding points into the copy not used: where the damage is.
    let (copy, offset) = if first_ok {
        ("FAT 2", at)
    } else {
        let fat_bytes = boot.fat_sectors.saturating_mul(boot.bytes_per_sector);
        ("FAT 1", at.saturating_sub(fat_bytes))
    };
    c.problem(
        Severity::Error,
        "fat-copies-differ",
        copy.into(),
        Some(offset),
        format!("FAT copy 2 differs from the first (first at {at:#x}); {which}"),
    );
    if !first_ok {
        let mut table = Words::new(total);
        FatReader::new(c.fat.disk(), boot, 1).nonzero_entries(total, |cl, v| table.set(cl, v));
        c.table = table;
    }
    true
}
