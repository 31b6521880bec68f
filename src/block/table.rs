//! A table of fixed-width entries in an image file (a VHD or VHDX BAT, a
//! VDI block map, a VMDK grain directory), read in pages on demand and kept
//! in a small LRU cache.
//!
//! Why paged: a table's size comes from the image, so loading it whole
//! would let a header decide how much memory we take. Pages keep memory
//! fixed (at most [`CACHED_PAGES`] pages) whatever the table claims, and
//! a disk that is mostly unread costs nothing.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::image::read_exact;
use crate::block::storage::Storage;
use crate::block::BlockError;
use crate::bytes::u64_of;

/// Bytes per page read from the file.
const PAGE_BYTES: u64 = 64 << 10;
/// Pages kept in memory per table (4 MiB).
const CACHED_PAGES: usize = 64;

/// Byte order and width of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Le32,
    Le64,
    Be32,
}

impl Entry {
    fn width(self) -> u64 {
        match self {
            Entry::Le32 | Entry::Be32 => 4,
            Entry::Le64 => 8,
        }
    }

    fn decode(self, b: &[u8]) -> Option<u64> {
        Some(match self {
            Entry::Le32 => u64::from(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)),
            Entry::Be32 => u64::from(u32::from_be_bytes(b.get(..4)?.try_into().ok()?)),
            Entry::Le64 => u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
        })
    }
}

/// A table of `entries` entries at `offset` of a file.
pub struct Table {
    storage: Arc<dyn Storage>,
    path: String,
    structure: &'static str,
    offset: u64,
    entries: u64,
    entry: Entry,
    pages: Mutex<LruCache<u64, Arc<[u8]>>>,
    /// The last run [`Table::run_end`] found, as `(start, end, value)`:
    /// every entry in `start..end` is `value`, and `end` is the next
    /// other one (or the table's length). A walk or the TUI's hit map
    /// asks the same run again from many points; each is answered from
    /// here, not by scanning the rest of the run again (a VMDK claiming
    /// 8 TiB of empty directory entries took the first frame 11 s so).
    run: Mutex<Option<(u64, u64, u64)>>,
}

impl Table {
    /// A table; checks that it lies inside the file.
    ///
    /// # Errors
    /// `Corrupt` naming `structure` when the table passes the end of the
    /// file.
    pub fn new(
        storage: Arc<dyn Storage>,
        path: &str,
        structure: &'static str,
        offset: u64,
        entries: u64,
        entry: Entry,
    ) -> Result<Table, BlockError> {
        let bytes = entries.checked_mul(entry.width());
        let file_len = storage.len();
        if bytes
            .and_then(|b| offset.checked_add(b))
            .is_none_or(|end| end > file_len)
        {
            return Err(BlockError::corrupt(
                path,
                structure,
                offset,
                format!(
                    "{entries} entries of {} bytes at {offset:#x} pass the end of the file ({file_len} bytes)",
                    entry.width()
                ),
            ));
        }
        Ok(Table {
            storage,
            path: path.to_owned(),
            structure,
            offset,
            entries,
            entry,
            pages: Mutex::new(crate::lazy_lru::bounded(CACHED_PAGES)),
            run: Mutex::new(None),
        })
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// True for a table with no entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Where entry `index` is in the file (for messages).
    pub fn entry_offset(&self, index: u64) -> u64 {
        self.offset
            .saturating_add(index.saturating_mul(self.entry.width()))
    }

    /// Entry `index`, or `None` past the end of the table.
    ///
    /// # Errors
    /// `Io` reading the page.
    pub fn get(&self, index: u64) -> Result<Option<u64>, BlockError> {
        if index >= self.entries {
            return Ok(None);
        }
        let width = self.entry.width();
        let at = index.saturating_mul(width);
        let page = at / PAGE_BYTES;
        let in_page = usize::try_from(at % PAGE_BYTES).unwrap_or(0);
        let data = self.page(page)?;
        Ok(data.get(in_page..).and_then(|b| self.entry.decode(b)))
    }

    /// The index of the first entry at or after `from` that is not 0;
    /// `None` when every entry left is 0. A run of empty entries costs
    /// one compare per page, not one lookup per entry (a VMDK header may
    /// claim 32 Mi directory entries over a file of holes).
    ///
    /// # Errors
    /// As [`Table::get`], for the pages read.
    pub fn next_nonzero(&self, from: u64) -> Result<Option<u64>, BlockError> {
        let end = self.run_end(from, 0)?;
        Ok((end < self.entries).then_some(end))
    }

    /// The index of the first entry at or after `from` that is not
    /// `value` (the table's length when there is none): a run of entries
    /// found a page at a time, not a lookup per entry, and remembered, so
    /// a walk or a hit map asking from inside it again is answered at once
    /// (an empty 8 TiB VDI's 8 Mi free entries took its map 1.2 s so).
    ///
    /// # Errors
    /// As [`Table::get`], for the pages read.
    pub fn run_end(&self, from: u64, value: u64) -> Result<u64, BlockError> {
        static ZERO_PAGE: [u8; 64 << 10] = [0; 64 << 10];
        let known = self.run.lock().ok().and_then(|r| *r);
        if let Some((_, end, _)) = known.filter(|&(a, b, v)| v == value && a <= from && from < b) {
            return Ok(end);
        }
        let width = self.entry.width();
        let step = usize::try_from(width).unwrap_or(8).max(1);
        let total = self.entries.saturating_mul(width);
        let mut at = from.saturating_mul(width);
        let mut end = self.entries;
        'pages: while at < total {
            let page = at / PAGE_BYTES;
            let data = self.page(page)?;
            let in_page = usize::try_from(at % PAGE_BYTES).unwrap_or(0);
            let rest = data.get(in_page..).unwrap_or_default();
            // A page of zeros costs one compare.
            if value != 0 || ZERO_PAGE.get(..rest.len()) != Some(rest) {
                for (i, e) in rest.chunks_exact(step).enumerate() {
                    if self.entry.decode(e) != Some(value) {
                        end = at
                            .saturating_add(u64_of(i.saturating_mul(step)))
                            .checked_div(width)
                            .unwrap_or(from);
                        break 'pages;
                    }
                }
            }
            at = page.saturating_add(1).saturating_mul(PAGE_BYTES);
        }
        if from < end {
            if let Ok(mut run) = self.run.lock() {
                *run = Some((from, end, value));
            }
        }
        Ok(end.max(from))
    }

    fn page(&self, page: u64) -> Result<Arc<[u8]>, BlockError> {
        let mut pages = self.pages.lock().map_err(|_| BlockError::Internal {
            what: "a table cache lock was poisoned".into(),
        })?;
        if let Some(p) = pages.get(&page) {
            return Ok(Arc::clone(p));
        }
        let start = page.saturating_mul(PAGE_BYTES);
        let total = self.entries.saturating_mul(self.entry.width());
        let len = total.saturating_sub(start).min(PAGE_BYTES);
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        read_exact(
            self.storage.as_ref(),
            &self.path,
            self.structure,
            self.offset.saturating_add(start),
            &mut buf,
        )?;
        let data: Arc<[u8]> = buf.into();
        pages.put(page, Arc::clone(&data));
        Ok(data)
    }
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
mod tests {
    use super::*;
    use crate::block::storage::MemStorage;

    #[test]
    fn entries_across_pages_and_bounds() {
        let n = 40_000u64;
        let mut bytes = vec![0u8; 16];
        for i in 0..n {
            bytes.extend_from_slice(&(i as u32 * 3).to_be_bytes());
        }
        let s: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes));
        let t = Table::new(s.clone(), "t", "BAT", 16, n, Entry::Be32).unwrap();
        assert_eq!(t.get(0).unwrap(), Some(0));
        assert_eq!(t.get(16_384).unwrap(), Some(49_152));
        assert_eq!(t.get(n - 1).unwrap(), Some((n - 1) * 3));
        assert_eq!(t.get(n).unwrap(), None);
        let err = Table::new(s, "t", "BAT", 16, n + 1, Entry::Be32)
            .err()
            .unwrap();
        assert!(err.to_string().contains("corrupt BAT"), "{err}");
    }

    #[test]
    fn run_end_agrees_with_every_lookup() {
        for entry in [Entry::Le32, Entry::Be32, Entry::Le64] {
            let n = 100_000u64;
            let w = entry.width() as usize;
            // All 0xff (VDI's free value in 32 bits), with entries that
            // differ in the first page, in their last byte only, past a
            // page boundary, and the last entry.
            let mut bytes = vec![0xffu8; 8 + n as usize * w];
            for (i, b) in [(3u64, 0usize), (5, w - 1), (40_000, 1), (n - 1, 0)] {
                bytes[8 + i as usize * w + b] = 0x7f;
            }
            let s: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes));
            let t = Table::new(s, "t", "BAT", 8, n, entry).unwrap();
            let free = t.get(0).unwrap().unwrap();
            let mut each = n;
            // Backwards and then forwards, so remembered runs are asked
            // from inside, at their start and past their end.
            let mut expected = vec![0; n as usize + 2];
            for from in (0..=n + 1).rev() {
                if from < n && t.get(from).unwrap() != Some(free) {
                    each = from;
                }
                expected[from as usize] = each.max(from);
                assert_eq!(
                    t.run_end(from, free).unwrap(),
                    each.max(from),
                    "{entry:?} from {from}"
                );
            }
            for from in 0..=n + 1 {
                assert_eq!(
                    t.run_end(from, free).unwrap(),
                    expected[from as usize],
                    "{entry:?} from {from}"
                );
            }
            // Another value is not answered from the remembered run.
            assert_eq!(t.run_end(7, 0).unwrap(), 7);
        }
    }

    /// The first non-zero entry at or after an index, across pages and
    /// long runs of zeros, as a lookup of every entry finds it.
    #[test]
    fn next_nonzero_agrees_with_every_lookup() {
        for entry in [Entry::Le32, Entry::Be32, Entry::Le64] {
            let n = 100_000u64;
            let w = entry.width() as usize;
            let mut bytes = vec![0u8; 8 + n as usize * w];
            // Entries set: some in the first page, one whose only set byte
            // is its last, one past a page boundary, the last entry.
            for (i, b) in [(3u64, 0usize), (5, w - 1), (40_000, 1), (n - 1, 0)] {
                bytes[8 + i as usize * w + b] = 0x80;
            }
            let s: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes));
            let t = Table::new(s, "t", "BAT", 8, n, entry).unwrap();
            let mut each = None;
            for from in (0..=n + 1).rev() {
                if from < n && t.get(from).unwrap() != Some(0) {
                    each = Some(from);
                }
                assert_eq!(t.next_nonzero(from).unwrap(), each, "{entry:?} from {from}");
            }
        }
    }
}
