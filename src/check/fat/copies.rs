//! The FAT copies: where the second differs from the first, and which of
//! them the check goes on with.
use super::{Checker, Severity, Words};
use crate::block::BlockSource;
use crate::fs::fat::boot::FatType;

/// Where the second FAT first differs from the first, over the bytes
/// that map clusters (fsck.fat compares these two; a volume with more
/// copies is refused before this).
pub(super) fn second_differs(c: &Checker<'_>) -> Option<u64> {
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

/// fsck.fat's choice between two FATs that differ (`read_fat`): a copy
/// whose first entry (the media byte and all ones above it) is intact is
/// trusted; both intact, the first is used; only the second intact, the
/// second is used (and the check goes on with it, as fsck.fat copies it
/// over the first); neither, fsck.fat gives up. `at` is where the second
/// first differs. Whether the check goes on.
pub(super) fn choose_copy(c: &mut Checker<'_>, at: u64, total: usize) -> bool {
    let boot = c.fat.boot();
    // FAT_EXTD: the entry's bits above its low byte (28 bits on FAT32).
    let bits = match c.kind {
        FatType::Fat32 => 28,
        kind => u32::try_from(kind.bits()).unwrap_or(16),
    };
    let extd = 1u32.checked_shl(bits).unwrap_or(0).wrapping_sub(1) & !0xff;
    let first_ok = c.get(0) & extd == extd;
    let mut second = crate::fs::fat::table::FatReader::new(c.fat.disk(), boot, 1);
    let second_ok = second.entry(0).is_ok_and(|v| v & extd == extd);
    let which = match (first_ok, second_ok) {
        (true, true) => "both appear intact: the first is used",
        (true, false) => "the second's first entry is damaged: the first is used",
        (false, true) => "the first's first entry is damaged: the second is used",
        (false, false) => {
            c.problem(
                Severity::Error,
                "fat-copies-corrupt",
                "FAT".into(),
                Some(boot.fat_offset),
                format!(
                    "the FAT copies differ (first at {at:#x}) and the first entry of both is damaged (fsck.fat gives up): not checked further"
                ),
            );
            return false;
        }
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
        second.nonzero_entries(total, |cl, v| table.set(cl, v));
        c.table = table;
    }
    true
}
