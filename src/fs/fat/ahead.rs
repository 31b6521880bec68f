//! Fetching ahead over a remote disk: what listing directories will read
//! (the FAT in use once, then the directories' clusters), each step one
//! batch of requests in flight together into the filesystem's bounded
//! page store (see [`crate::block::cache::BlockCache::prefetch`]).
use std::sync::atomic::Ordering;

use super::boot::FatType;
use super::{Fat, ROOT};
use crate::block::BlockSource;
use crate::fs::FsError;

/// Most bytes of the FAT fetched at the first batch (a 2 TiB FAT32 of
/// 32 KiB clusters has 256 MiB of FAT: then its chains are read as they
/// are walked).
const FAT_AHEAD: u64 = 8 << 20;

impl Fat {
    /// The part of the FAT in use that maps the volume's clusters (disk
    /// offset, bytes): empty when it is larger than [`FAT_AHEAD`].
    pub fn fat_in_use(&self) -> Option<(u64, u64)> {
        let b = &self.boot;
        let entries = b.cluster_count.saturating_add(2);
        let bytes = match b.fat_type {
            FatType::Fat32 => entries.saturating_mul(4),
            FatType::Fat16 => entries.saturating_mul(2),
            FatType::Fat12 => entries.saturating_mul(3).div_ceil(2),
        };
        let table = b.fat_sectors.saturating_mul(b.bytes_per_sector);
        let base = b
            .fat_offset
            .saturating_add(b.active_fat().saturating_mul(table));
        let bytes = bytes.min(table);
        (bytes > 0 && bytes <= FAT_AHEAD).then_some((base, bytes))
    }

    /// Fetches ahead what listing the directories `dirs` (entry offsets,
    /// or [`ROOT`]) will read, when the disk is remote: the first time,
    /// the FAT in use ([`Fat::fat_in_use`]) with the directories'
    /// entries (held already when their parent was listed), so that no
    /// chain costs a round trip of its own; then their clusters, as far
    /// as a listing reads them, in a second batch. Returns false, having
    /// done nothing, for a local disk. Damage is left for the listing.
    ///
    /// # Errors
    /// I/O errors of the batches.
    pub fn prefetch_dirs(&self, dirs: &[u64]) -> Result<bool, FsError> {
        if !self.disk.remote() {
            return Ok(false);
        }
        let mut first: Vec<(u64, u64)> = dirs
            .iter()
            .filter(|&&d| d != ROOT)
            .map(|&d| (d, 32))
            .collect();
        if !self.fat_ahead.swap(true, Ordering::Relaxed) {
            first.extend(self.fat_in_use());
        }
        self.disk.prefetch(&first)?;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &dir in dirs {
            let Ok(start) = self.dir_start(dir) else {
                continue;
            };
            if let Ok((r, _)) = self.dir_ranges(start) {
                ranges.extend(r);
            }
        }
        self.disk.prefetch(&ranges)?;
        Ok(true)
    }
}
