//! A sparse extent: a grain directory (qemu's L1) of grain tables (L2)
//! mapping each grain of the extent to a place in its file, or to nothing
//! (ask the parent), or to zeros.
//!
//! Lookups follow qemu's `get_cluster_offset`; every table and grain is
//! checked against the file before use: a grain table or grain past the end
//! of the file, or a grain inside the metadata before the first grain, is
//! an error naming the entry.
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::image::{read_exact, Piece};
use crate::block::storage::Storage;
use crate::block::table::{Entry, Table};
use crate::block::BlockError;

use super::grain;

/// qemu refuses grains larger than this many sectors (1 GiB).
const MAX_GRAIN_SECTORS: u64 = 0x20_0000;
/// qemu refuses grain directories with more entries.
const MAX_GD_ENTRIES: u64 = 32 * 1024 * 1024;
/// qemu refuses VMDK4 grain tables with more entries.
pub const MAX_GTES: u32 = 512;
/// A VMDK4 grain table entry meaning "zeroed grain" (with the flag).
const GTE_ZEROED: u64 = 1;
/// Grain tables kept in memory per extent.
const GT_CACHE: usize = 256;

/// What kind of sparse extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// VMDK4 (`KDMV`).
    Vmdk4 { version: u32 },
    /// VMDK3 (`COWD`).
    Vmdk3,
    /// ESXi seSparse: 64-bit entries with a type nibble.
    SeSparse {
        tables_offset: u64,
        grains_offset: u64,
    },
}

/// The parameters of a sparse extent, from its header.
#[derive(Clone, Debug)]
pub struct Params {
    pub flavor: Flavor,
    /// Extent size in sectors.
    pub sectors: u64,
    pub grain_sectors: u64,
    pub gtes_per_gt: u64,
    /// Grain directory offset in bytes, and its entry count.
    pub gd_offset: u64,
    pub gd_entries: u64,
    /// Bytes before the first grain (0 when unknown): grains must not
    /// point there.
    pub overhead: u64,
    pub compressed: bool,
    pub has_marker: bool,
    pub zero_grain: bool,
}

/// One sparse extent file.
pub struct SparseExtent {
    pub path: String,
    storage: Arc<dyn Storage>,
    /// Index of the file among the image's files.
    pub file: usize,
    pub params: Params,
    pub grain_bytes: u64,
    gd: Table,
    gt_cache: Mutex<LruCache<u64, Arc<[u8]>>>,
    zcache: Mutex<LruCache<u64, Arc<[u8]>>>,
    /// The last hole of the file the kernel reported, `[start, end)`:
    /// the tables of one empty stretch are looked up with one `lseek`.
    hole: Mutex<Option<(u64, u64)>>,
    /// The last stretch of directory entries `[first, end)` found empty or
    /// with tables in holes: a walk asking again from inside it (a hit map
    /// asks per cell) is answered without stepping the entries again.
    empty_run: Mutex<Option<(u64, u64)>>,
}

impl SparseExtent {
    /// Checks the parameters as qemu's `vmdk_add_extent` does and opens
    /// the grain directory.
    ///
    /// # Errors
    /// `Corrupt` naming the header field.
    pub fn new(
        path: &str,
        storage: Arc<dyn Storage>,
        file: usize,
        params: Params,
    ) -> Result<SparseExtent, BlockError> {
        let bad = |detail: String| BlockError::corrupt(path, "VMDK sparse header", 0, detail);
        if params.grain_sectors == 0 || params.gtes_per_gt == 0 {
            return Err(bad(format!(
                "grain size {} sectors, {} entries per grain table: L1 entry size is invalid",
                params.grain_sectors, params.gtes_per_gt
            )));
        }
        if params.grain_sectors > MAX_GRAIN_SECTORS {
            return Err(bad(format!(
                "grain size {} sectors is more than 1 GiB (invalid granularity)",
                params.grain_sectors
            )));
        }
        if params.gd_entries > MAX_GD_ENTRIES {
            return Err(bad(format!(
                "grain directory of {} entries (L1 size too big)",
                params.gd_entries
            )));
        }
        let per_gd = params
            .grain_sectors
            .checked_mul(params.gtes_per_gt)
            .ok_or_else(|| bad("grain directory entry span overflows".into()))?;
        let needed = params.sectors.div_ceil(per_gd);
        if params.gd_entries < needed {
            return Err(bad(format!(
                "grain directory of {} entries cannot map {} sectors (needs {needed})",
                params.gd_entries, params.sectors
            )));
        }
        let width = match params.flavor {
            Flavor::SeSparse { .. } => Entry::Le64,
            _ => Entry::Le32,
        };
        let gd = Table::new(
            Arc::clone(&storage),
            path,
            "VMDK grain directory",
            params.gd_offset,
            params.gd_entries,
            width,
        )?;
        let grain_bytes = params.grain_sectors.saturating_mul(512);
        Ok(SparseExtent {
            path: path.to_owned(),
            storage,
            file,
            grain_bytes,
            gd,
            gt_cache: Mutex::new(crate::lazy_lru::bounded(GT_CACHE)),
            zcache: Mutex::new(crate::lazy_lru::bounded(4)),
            hole: Mutex::new(None),
            empty_run: Mutex::new(None),
            params,
        })
    }

    /// The extent's file.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Bytes one grain directory entry maps (one grain table's span).
    fn table_span(&self) -> u64 {
        self.grain_bytes.saturating_mul(self.params.gtes_per_gt)
    }

    /// Where the run of empty grain directory entries holding `rel` ends
    /// (their whole span unallocated), when the entry holding `rel` is 0;
    /// else None. Lets a walk step over empty tables at once, not grain by
    /// grain (a header claiming 1 TiB of empty entries took 18 s so) nor
    /// entry by entry (22 million entries of holes took seconds).
    pub fn unallocated_span_end(&self, rel: u64) -> Result<Option<u64>, BlockError> {
        let span = self.table_span();
        let gd_index = rel.checked_div(span).unwrap_or(0);
        if self.gd.get(gd_index)? != Some(0) {
            return Ok(None);
        }
        let next = self.gd.next_nonzero(gd_index)?.unwrap_or(self.gd.len());
        Ok(Some(next.saturating_mul(span)))
    }

    /// Bytes of the extent's first `len` its grains hold (data, zeroed or
    /// compressed: all but unallocated), as a walk of every grain would
    /// count them, at a cost that follows the grain tables in the file:
    /// an empty directory entry is skipped, and a table several entries
    /// share is read once.
    ///
    /// # Errors
    /// As [`SparseExtent::grain`], for the grains of the tables read.
    pub fn held(&self, len: u64) -> Result<u64, BlockError> {
        let span = self.table_span().max(1);
        let mut by_entry: std::collections::HashMap<u64, u64> = Default::default();
        let mut held = 0u64;
        let (mut start, mut gd_index) = (0u64, 0u64);
        while start < len {
            let end = start.saturating_add(span).min(len);
            // None (past the directory): `grain` reports it.
            let entry = self.gd.get(gd_index)?;
            if entry == Some(0) {
                // A run of empty entries holds nothing: stepped over at
                // once, at a cost of a compare per page of the directory.
                gd_index = self.gd.next_nonzero(gd_index)?.unwrap_or(self.gd.len());
                start = gd_index.saturating_mul(span);
                continue;
            }
            let whole = end.saturating_sub(start) == span;
            let known = entry
                .filter(|_| whole)
                .and_then(|e| by_entry.get(&e).copied());
            let bytes = match known {
                Some(b) => b,
                None => {
                    let mut b = 0u64;
                    // An empty entry is unallocated, unchecked (as
                    // `grain` says); the others are checked there.
                    let offset = match entry {
                        Some(e) => self.table_offset(gd_index, e)?,
                        None => None,
                    };
                    // A table in a hole of the file maps nothing: its
                    // grains are not walked (an empty 8 TiB VMDK has
                    // 512 MiB of such tables).
                    if offset.is_some_and(|off| self.in_hole(off).is_some()) {
                        start = end;
                        gd_index = gd_index.saturating_add(1);
                        continue;
                    }
                    let table = match offset {
                        Some(off) => Some(self.table(off, gd_index)?),
                        None => None,
                    };
                    let width = usize::try_from(self.entry_width()).unwrap_or(usize::MAX);
                    let mut at = start;
                    let mut gt_at = 0usize;
                    while at < end {
                        let empty =
                            table.as_deref().and_then(|t| self.table_entry(t, gt_at)) == Some(0);
                        if !empty && self.grain(at)? != Piece::Unallocated {
                            b = b.saturating_add(self.grain_bytes.min(end.saturating_sub(at)));
                        }
                        at = at.saturating_add(self.grain_bytes.max(1));
                        gt_at = gt_at.saturating_add(width);
                    }
                    if let Some(e) = entry.filter(|_| whole) {
                        by_entry.insert(e, b);
                    }
                    b
                }
            };
            held = held.saturating_add(bytes);
            start = end;
            gd_index = gd_index.saturating_add(1);
        }
        Ok(held)
    }

    /// Bytes of one grain table in the file.
    fn table_bytes(&self) -> u64 {
        self.params.gtes_per_gt.saturating_mul(self.entry_width())
    }

    /// Where the hole of the file holding the whole grain table at
    /// `offset` ends, when the kernel knows one holds it (SEEK_DATA): such
    /// a table is all zero entries, all unallocated, and need not be read.
    /// qemu-img leaves the tables it preallocates unwritten, so an empty
    /// 8 TiB VMDK's 512 MiB of tables cost the first frame 1.5 s of
    /// reading zeros. None when the storage cannot tell, the table holds
    /// data, or it passes the end of the file (`table` reports that).
    fn in_hole(&self, offset: u64) -> Option<u64> {
        let end = offset.checked_add(self.table_bytes())?;
        if end > self.storage.len() {
            return None;
        }
        let known = self.hole.lock().ok().and_then(|h| *h);
        if let Some((_, hole_end)) = known.filter(|&(a, b)| a <= offset && end <= b) {
            return Some(hole_end);
        }
        match self.storage.next_run(offset) {
            Ok(Some((false, hole_end))) if hole_end >= end => {
                if let Ok(mut h) = self.hole.lock() {
                    *h = Some((offset, hole_end));
                }
                Some(hole_end)
            }
            // Data, no answer, or an error the real read will report.
            _ => None,
        }
    }

    fn entry_width(&self) -> u64 {
        match self.params.flavor {
            Flavor::SeSparse { .. } => 8,
            _ => 4,
        }
    }

    /// The grain table at `offset` (bytes), loaded and cached.
    fn table(&self, offset: u64, gd_index: u64) -> Result<Arc<[u8]>, BlockError> {
        let mut cache = self.gt_cache.lock().map_err(|_| poisoned())?;
        if let Some(t) = cache.get(&offset) {
            return Ok(Arc::clone(t));
        }
        let bytes = self.params.gtes_per_gt.saturating_mul(self.entry_width());
        let file_len = self.storage.len();
        if offset.checked_add(bytes).is_none_or(|e| e > file_len) {
            return Err(BlockError::corrupt(
                &self.path,
                "VMDK grain directory entry",
                self.gd.entry_offset(gd_index),
                format!(
                    "grain table {gd_index} at {offset:#x} ({bytes} bytes) passes the end of the file ({file_len} bytes)"
                ),
            ));
        }
        let mut raw = vec![0u8; usize::try_from(bytes).unwrap_or(0)];
        read_exact(
            self.storage.as_ref(),
            &self.path,
            "VMDK grain table",
            offset,
            &mut raw,
        )?;
        let t: Arc<[u8]> = raw.into();
        cache.put(offset, Arc::clone(&t));
        Ok(t)
    }

    /// Where the run of zero grain table entries holding `rel` ends (the
    /// next grain its table maps, or the table's span end), when the
    /// grain at `rel` has a table and its entry is 0 (unallocated, in
    /// both flavors); else None. Lets a walk step over the empty part of
    /// a table with one scan of its bytes, not a lookup per grain:
    /// qemu-img preallocates every grain table, so an empty 8 TiB VMDK is
    /// 128 Mi zero entries (its map took 24 s, the TUI's first frame 50).
    ///
    /// # Errors
    /// As [`SparseExtent::grain`].
    pub fn unallocated_in_table_end(&self, rel: u64) -> Result<Option<u64>, BlockError> {
        let (gd_index, gt_index) = self.locate(rel);
        let Some(gd_entry) = self.gd.get(gd_index)? else {
            return Ok(None);
        };
        let Some(gt_offset) = self.table_offset(gd_index, gd_entry)? else {
            return Ok(None);
        };
        if self.in_hole(gt_offset).is_some() {
            return self.unallocated_past_hole(gd_index).map(Some);
        }
        let table = self.table(gt_offset, gd_index)?;
        let width = usize::try_from(self.entry_width()).unwrap_or(4).max(1);
        let at = usize::try_from(gt_index)
            .unwrap_or(usize::MAX)
            .saturating_mul(width);
        let rest = table.get(at..).unwrap_or_default();
        let zeros = rest
            .chunks_exact(width)
            .take_while(|e| e.iter().all(|&b| b == 0))
            .count();
        let zeros = u64::try_from(zeros).unwrap_or(0);
        if zeros == 0 {
            return Ok(None);
        }
        // Grains are counted from the table's first: its span starts at
        // gd_index whole tables.
        let end_grain = gd_index
            .saturating_mul(self.params.gtes_per_gt)
            .saturating_add(gt_index)
            .saturating_add(zeros);
        Ok(Some(end_grain.saturating_mul(self.grain_bytes)))
    }

    /// Where the unallocated stretch starting with directory entry
    /// `gd_index`, whose table lies in a hole of the file, ends: on through
    /// the following entries that are empty or whose tables lie in a hole
    /// too, at an `lseek` per hole, not a read per table.
    ///
    /// # Errors
    /// `Io` reading the grain directory.
    fn unallocated_past_hole(&self, gd_index: u64) -> Result<u64, BlockError> {
        let known = self.empty_run.lock().ok().and_then(|r| *r);
        if let Some((_, end)) = known.filter(|&(a, b)| a <= gd_index && gd_index < b) {
            return Ok(end.saturating_mul(self.table_span()));
        }
        let mut next = gd_index.saturating_add(1);
        loop {
            // Empty entries are skipped a page of the directory at a time:
            // a directory of zeros (a hostile capacity over a hole) took
            // seconds a lookup per entry.
            next = self.gd.run_end(next, 0)?;
            let Some(entry) = self.gd.get(next)? else {
                break;
            };
            let in_hole = self
                .table_offset(next, entry)
                .ok()
                .flatten()
                .is_some_and(|off| self.in_hole(off).is_some());
            if !in_hole {
                break;
            }
            next = next.saturating_add(1);
        }
        if let Ok(mut run) = self.empty_run.lock() {
            *run = Some((gd_index, next));
        }
        Ok(next.saturating_mul(self.table_span()))
    }

    /// The grain directory entry and the grain table entry of the grain
    /// holding byte `rel` of the extent.
    fn locate(&self, rel: u64) -> (u64, u64) {
        let sector = rel / 512;
        let per_gd = self
            .params
            .grain_sectors
            .saturating_mul(self.params.gtes_per_gt);
        let gd_index = sector.checked_div(per_gd).unwrap_or(0);
        let gt_index = sector
            .checked_div(self.params.grain_sectors)
            .and_then(|g| g.checked_rem(self.params.gtes_per_gt))
            .unwrap_or(0);
        (gd_index, gt_index)
    }

    /// What the grain holding byte `rel` of the extent maps to, and the
    /// file offset of its grain table entry (for messages).
    pub fn grain(&self, rel: u64) -> Result<Piece, BlockError> {
        let (gd_index, gt_index) = self.locate(rel);
        let Some(gd_entry) = self.gd.get(gd_index)? else {
            return Err(BlockError::corrupt(
                &self.path,
                "VMDK grain directory",
                self.gd.entry_offset(gd_index),
                format!("offset {rel:#x} needs entry {gd_index}, past the end of the directory"),
            ));
        };
        let Some(gt_offset) = self.table_offset(gd_index, gd_entry)? else {
            return Ok(Piece::Unallocated);
        };
        let table = self.table(gt_offset, gd_index)?;
        let width = self.entry_width();
        let at = usize::try_from(gt_index.saturating_mul(width)).unwrap_or(usize::MAX);
        let entry_at = gt_offset.saturating_add(gt_index.saturating_mul(width));
        let entry = self
            .table_entry(&table, at)
            .ok_or_else(|| BlockError::Internal {
                what: format!(
                    "{}: grain table entry {gt_index} outside its table",
                    self.path
                ),
            })?;
        self.piece(entry, entry_at, rel)
    }

    /// The entry at byte `at` of a grain table.
    fn table_entry(&self, table: &[u8], at: usize) -> Option<u64> {
        match self.params.flavor {
            Flavor::SeSparse { .. } => crate::block::image::le64(table, at),
            _ => crate::block::image::le32(table, at).map(u64::from),
        }
    }

    /// Where the grain table of directory entry `gd_index` (holding
    /// `gd_entry`) starts in the file; None for an empty entry.
    fn table_offset(&self, gd_index: u64, gd_entry: u64) -> Result<Option<u64>, BlockError> {
        Ok(Some(match self.params.flavor {
            Flavor::SeSparse { tables_offset, .. } => {
                if gd_entry == 0 {
                    return Ok(None);
                }
                if gd_entry & 0xffff_ffff_0000_0000 != 0x1000_0000_0000_0000 {
                    return Err(BlockError::corrupt(
                        &self.path,
                        "seSparse grain directory entry",
                        self.gd.entry_offset(gd_index),
                        format!("{gd_entry:#018x}: not an allocated grain table"),
                    ));
                }
                let table_sectors = self.params.gtes_per_gt.saturating_mul(8) / 512;
                let sectors = tables_offset
                    .checked_add((gd_entry & 0xffff_ffff).saturating_mul(table_sectors))
                    .filter(|&s| s <= u64::from(u32::MAX))
                    .ok_or_else(|| {
                        BlockError::corrupt(
                            &self.path,
                            "seSparse grain directory entry",
                            self.gd.entry_offset(gd_index),
                            format!("{gd_entry:#018x}: grain table offset overflows"),
                        )
                    })?;
                sectors.saturating_mul(512)
            }
            _ => {
                if gd_entry == 0 {
                    return Ok(None);
                }
                gd_entry.saturating_mul(512)
            }
        }))
    }

    /// What grain table entry `entry` (at `entry_at` in the file) maps
    /// the grain holding `rel` to.
    fn piece(&self, entry: u64, entry_at: u64, rel: u64) -> Result<Piece, BlockError> {
        let host = match self.params.flavor {
            Flavor::SeSparse { grains_offset, .. } => match entry >> 60 {
                0 if entry == 0 => return Ok(Piece::Unallocated),
                1 | 2 => return Ok(Piece::Zero),
                3 => {
                    let index = ((entry & 0x0fff_0000_0000_0000) >> 48)
                        | ((entry & 0x0000_ffff_ffff_ffff) << 12);
                    index
                        .checked_mul(self.params.grain_sectors)
                        .and_then(|s| s.checked_add(grains_offset))
                        .and_then(|s| s.checked_mul(512))
                        .ok_or_else(|| {
                            BlockError::corrupt(
                                &self.path,
                                "seSparse grain table entry",
                                entry_at,
                                format!("{entry:#018x}: grain offset overflows"),
                            )
                        })?
                }
                _ => {
                    return Err(BlockError::corrupt(
                        &self.path,
                        "seSparse grain table entry",
                        entry_at,
                        format!("{entry:#018x}: unknown grain type"),
                    ))
                }
            },
            _ => {
                if entry == 0 {
                    return Ok(Piece::Unallocated);
                }
                if self.params.zero_grain && entry == GTE_ZEROED {
                    return Ok(Piece::Zero);
                }
                entry.saturating_mul(512)
            }
        };
        self.check_grain(host, rel, entry_at)?;
        Ok(if self.params.compressed {
            Piece::Compressed {
                file: self.file,
                host,
            }
        } else {
            Piece::Data {
                file: self.file,
                host: host.saturating_add(rel.checked_rem(self.grain_bytes).unwrap_or(0)),
            }
        })
    }

    /// A grain must start after the metadata and inside the file.
    fn check_grain(&self, host: u64, rel: u64, entry_at: u64) -> Result<(), BlockError> {
        let file_len = self.storage.len();
        if host < self.params.overhead {
            return Err(BlockError::corrupt(
                &self.path,
                "VMDK grain table entry",
                entry_at,
                format!(
                    "grain for offset {rel:#x} at {host:#x} points into the metadata (the first grain starts at {:#x})",
                    self.params.overhead
                ),
            ));
        }
        if host >= file_len {
            return Err(BlockError::corrupt(
                &self.path,
                "VMDK grain table entry",
                entry_at,
                format!(
                    "grain for offset {rel:#x} at {host:#x} is past the end of the file ({file_len} bytes)"
                ),
            ));
        }
        Ok(())
    }

    /// The decompressed grain stored at `host` that holds byte `rel`.
    ///
    /// # Errors
    /// `Corrupt` for a bad marker or stream (see [`grain::inflate`]).
    pub fn decompressed(&self, host: u64, rel: u64) -> Result<Arc<[u8]>, BlockError> {
        if let Some(g) = self.zcache.lock().map_err(|_| poisoned())?.get(&host) {
            return Ok(Arc::clone(g));
        }
        let grain_start = rel.saturating_sub(rel.checked_rem(self.grain_bytes).unwrap_or(0));
        // The last grain of an extent may be short.
        let extent_bytes = self.params.sectors.saturating_mul(512);
        let want = self
            .grain_bytes
            .min(extent_bytes.saturating_sub(grain_start));
        let out = grain::read_compressed(
            self.storage.as_ref(),
            &self.path,
            host,
            self.grain_bytes,
            want,
            self.params.has_marker.then_some(grain_start / 512),
        )?;
        let out: Arc<[u8]> = out.into();
        self.zcache
            .lock()
            .map_err(|_| poisoned())?
            .put(host, Arc::clone(&out));
        Ok(out)
    }
}

fn poisoned() -> BlockError {
    BlockError::Internal {
        what: "a VMDK cache lock was poisoned".into(),
    }
}
