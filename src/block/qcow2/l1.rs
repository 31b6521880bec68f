//! The L1 table, read a slice at a time as lookups reach it.
//!
//! A 16 TiB disk's table is 256 KiB per layer; a diff of a small overlay
//! looks at a few of its entries. Slices are read when first asked for
//! and kept in a bounded cache, so what a command reads of the table
//! follows the guest offsets it looks at, not the disk's size.
//!
//! The table's place and size were checked by the header decoder (inside
//! the file, at most qemu's 32 MiB); a slice that cannot be read is an
//! I/O error of the lookup that needed it.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::storage::Storage;
use crate::block::BlockError;
use crate::bytes::us;

/// Entries in one slice read from a local file: 4 KiB, a page.
const LOCAL_SLICE: u64 = 512;
/// Entries in one slice read from remote storage: 64 KiB, so a walk of a
/// large table costs few round trips.
const REMOTE_SLICE: u64 = 8192;
/// Bytes of decoded slices each layer keeps.
const CACHE_BYTES: u64 = 1 << 20;
/// Most bytes of the table one read fetches when lookups walk it in
/// order: a 16 TiB disk's 256 KiB table in a few reads, not 64.
const AHEAD_BYTES: u64 = 64 << 10;

/// An L1 table of `entries` entries at `offset` in `storage`.
pub(super) struct L1 {
    storage: Arc<dyn Storage>,
    path: String,
    offset: u64,
    entries: u64,
    /// Entries per slice.
    slice: u64,
    action: &'static str,
    cache: Mutex<Slices>,
}

/// The decoded slices held, and what the next read of the table reuses.
struct Slices {
    held: LruCache<u64, Arc<[u64]>>,
    /// The slice after the last ones read, and how many were read then:
    /// a walk reads the table in order, so a miss there reads twice as
    /// many slices at once (up to [`AHEAD_BYTES`]), as one request.
    next: u64,
    run: u64,
    /// The raw bytes of the last read, kept for the next one.
    raw: Vec<u8>,
    /// One all-zero slice shared by every such slice (most of a large
    /// sparse disk's table): no memory of their own.
    zero: Option<Arc<[u64]>>,
}

impl L1 {
    /// The table of `entries` entries at `offset` (checked by the caller
    /// against the file and qemu's cap); nothing is read yet. `action`
    /// names the table in I/O errors ("reading the L1 table").
    pub(super) fn new(
        path: &str,
        storage: Arc<dyn Storage>,
        offset: u64,
        entries: u32,
        action: &'static str,
    ) -> L1 {
        let slice = if storage.remote() {
            REMOTE_SLICE
        } else {
            LOCAL_SLICE
        };
        let slices = us(CACHE_BYTES
            .checked_div(slice.saturating_mul(8))
            .unwrap_or(2)
            .max(2));
        L1 {
            storage,
            path: path.to_owned(),
            offset,
            entries: u64::from(entries),
            slice,
            action,
            cache: Mutex::new(Slices {
                held: crate::lazy_lru::bounded(slices),
                next: u64::MAX,
                run: 0,
                raw: Vec::new(),
                zero: None,
            }),
        }
    }

    /// Entries in the table.
    pub(super) fn len(&self) -> u64 {
        self.entries
    }

    /// Entry `index` (0, an empty entry, past the table's end).
    ///
    /// # Errors
    /// The slice holding it could not be read.
    pub(super) fn get(&self, index: u64) -> Result<u64, BlockError> {
        if index >= self.entries {
            return Ok(0);
        }
        let s = self.slice_of(index)?;
        Ok(s.get(us(index.checked_rem(self.slice).unwrap_or(0)))
            .copied()
            .unwrap_or(0))
    }

    /// Entry `index` when the slice holding it is held, without reading
    /// (`None` when it would have to be read).
    pub(super) fn peek(&self, index: u64) -> Option<u64> {
        if index >= self.entries {
            return Some(0);
        }
        let n = index.checked_div(self.slice)?;
        let cache = self.cache.lock().ok()?;
        let s = cache.held.peek(&n)?;
        s.get(us(index.checked_rem(self.slice).unwrap_or(0)))
            .copied()
    }

    /// The entries from `index` to the end of its slice (empty past the
    /// table's end): a walk goes a slice at a time.
    ///
    /// # Errors
    /// The slice could not be read.
    pub(super) fn rest_of_slice(&self, index: u64) -> Result<RestOfSlice, BlockError> {
        if index >= self.entries {
            return Ok(RestOfSlice {
                slice: Arc::from(Vec::new()),
                from: 0,
            });
        }
        Ok(RestOfSlice {
            slice: self.slice_of(index)?,
            from: us(index.checked_rem(self.slice).unwrap_or(0)),
        })
    }

    /// The decoded slice holding entry `index` (below `entries`).
    fn slice_of(&self, index: u64) -> Result<Arc<[u64]>, BlockError> {
        let n = index.checked_div(self.slice).unwrap_or(0);
        let mut cache = self.cache.lock().map_err(|_| super::poisoned())?;
        if let Some(s) = cache.held.get(&n) {
            return Ok(Arc::clone(s));
        }
        // In order after the last read: twice as many slices as then.
        let most = AHEAD_BYTES
            .checked_div(self.slice.saturating_mul(8))
            .unwrap_or(1)
            .max(1);
        let run = if n == cache.next {
            cache.run.saturating_mul(2).clamp(1, most)
        } else {
            1
        };
        // The slices' entries: the last one may be short. `index` is below
        // `entries` (at most 2^22), so nothing here saturates.
        let first = n.saturating_mul(self.slice);
        let count = self
            .slice
            .saturating_mul(run)
            .min(self.entries.saturating_sub(first));
        let at = self.offset.saturating_add(first.saturating_mul(8));
        let mut raw = std::mem::take(&mut cache.raw);
        raw.resize(us(count.saturating_mul(8)), 0);
        self.storage
            .read_exact_at(at, &mut raw)
            .map_err(|e| BlockError::io(&self.path, self.action, at, e))?;
        let mut wanted = None;
        for (i, piece) in (n..).zip(raw.chunks(us(self.slice.saturating_mul(8)))) {
            // A sparse disk's table is mostly zero slices: found by a
            // word-wide scan (a byte at a time cost a 16 TiB disk's quick
            // diff ~0.2 ms for its 256 KiB table).
            let decoded = if piece.len() == us(self.slice.saturating_mul(8))
                && super::zero_prefix(piece) == piece.len()
            {
                let slice = us(self.slice);
                Arc::clone(
                    cache
                        .zero
                        .get_or_insert_with(|| Arc::from(vec![0u64; slice])),
                )
            } else {
                piece
                    .chunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            };
            if i == n {
                wanted = Some(Arc::clone(&decoded));
            }
            // A slice already held (read ahead before) stays as it is.
            if i == n || !cache.held.contains(&i) {
                cache.held.put(i, decoded);
            }
        }
        cache.next = n.saturating_add(run);
        cache.run = run;
        cache.raw = raw;
        wanted.ok_or_else(|| BlockError::Internal {
            what: format!("{}: L1 slice {n} was not read", self.path),
        })
    }

    /// Where entry `index` lies in the file (for messages).
    pub(super) fn entry_at(&self, index: u64) -> u64 {
        index.saturating_mul(8).saturating_add(self.offset)
    }

    /// Entries in one slice.
    #[cfg(test)]
    pub(super) fn slice_entries(&self) -> u64 {
        self.slice
    }
}

/// Entries from one up to the end of its slice.
pub(super) struct RestOfSlice {
    slice: Arc<[u64]>,
    from: usize,
}

impl RestOfSlice {
    /// The entries.
    pub(super) fn entries(&self) -> &[u64] {
        self.slice.get(self.from..).unwrap_or_default()
    }

    /// How many entries from the first have no bit of `mask` set: a
    /// block's worth at a time (the empty run of a sparse table is
    /// thousands of entries long).
    pub(super) fn empty_prefix(&self, mask: u64) -> usize {
        let mut n = 0usize;
        for c in self.entries().chunks(64) {
            if c.iter().fold(0u64, |a, &e| a | (e & mask)) != 0 {
                return n.saturating_add(c.iter().position(|&e| e & mask != 0).unwrap_or(0));
            }
            n = n.saturating_add(c.len());
        }
        n
    }
}

/// Reads all of an L1 table's entries (a test's and a check's view).
#[cfg(test)]
pub(super) fn all(l1: &L1) -> Result<Vec<u64>, BlockError> {
    (0..l1.len()).map(|i| l1.get(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::storage::MemStorage;

    fn table(entries: u32) -> (Vec<u64>, Arc<dyn Storage>) {
        let values: Vec<u64> = (0..u64::from(entries))
            .map(|i| if i % 3 == 0 { 0 } else { (i + 1) << 16 })
            .collect();
        let mut bytes = vec![0u8; 4096];
        for v in &values {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        (values, Arc::new(MemStorage::new(bytes)))
    }

    #[test]
    fn entries_read_slice_by_slice_equal_the_table() {
        // Three slices and a short fourth.
        let (values, storage) = table(3 * 512 + 7);
        let l1 = L1::new("t", storage, 4096, 3 * 512 + 7, "reading the L1 table");
        assert_eq!(l1.slice_entries(), 512);
        assert_eq!(all(&l1).unwrap(), values);
        assert_eq!(l1.get(3 * 512 + 7).unwrap(), 0);
        assert_eq!(l1.rest_of_slice(510).unwrap().entries(), &values[510..512]);
        assert_eq!(
            l1.rest_of_slice(3 * 512).unwrap().entries(),
            &values[1536..]
        );
        assert!(l1.rest_of_slice(9999).unwrap().entries().is_empty());
    }

    #[test]
    fn empty_prefixes_count_entries_without_the_masked_bits() {
        // Entries with only bits outside the mask set count as empty.
        let mut values = vec![0u64; 512];
        values[200] = 1; // a flag bit outside the offset mask
        values[300] = 5 << 16;
        let mut bytes = vec![0u8; 4096];
        for v in &values {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        let l1 = L1::new("t", Arc::new(MemStorage::new(bytes)), 4096, 512, "l1");
        let mask = 0x00ff_ffff_ffff_fe00;
        for from in [0u64, 63, 64, 200, 299, 300, 301, 511] {
            let rest = l1.rest_of_slice(from).unwrap();
            let want = rest
                .entries()
                .iter()
                .take_while(|&&e| e & mask == 0)
                .count();
            assert_eq!(rest.empty_prefix(mask), want, "from {from}");
        }
        assert_eq!(l1.rest_of_slice(301).unwrap().empty_prefix(mask), 211);
        assert_eq!(l1.rest_of_slice(0).unwrap().empty_prefix(mask), 300);
    }

    #[test]
    fn slices_evicted_from_the_cache_are_read_again() {
        // 300 slices: more than the 256 a 1 MiB cache holds.
        let n = 300 * 512;
        let (values, storage) = table(n);
        let l1 = L1::new("t", storage, 4096, n, "reading the L1 table");
        assert_eq!(all(&l1).unwrap(), values);
        for i in [0u64, 511, 512, 1000, u64::from(n) - 1] {
            assert_eq!(l1.get(i).unwrap(), values[i as usize]);
        }
    }

    #[test]
    fn zero_slices_and_reads_ahead_give_the_table() {
        // 40 slices, most of them all zero (a large sparse disk's table),
        // a short last one; walked in order (reads ahead), then backwards
        // and from the middle (single slices).
        let n: u32 = 40 * 512 + 100;
        let values: Vec<u64> = (0..u64::from(n))
            .map(|i| {
                if i % 4096 == 7 || i + 1 == u64::from(n) {
                    (i + 1) << 16
                } else {
                    0
                }
            })
            .collect();
        let mut bytes = vec![0u8; 4096];
        for v in &values {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes));
        let l1 = L1::new("t", Arc::clone(&storage), 4096, n, "reading the L1 table");
        assert_eq!(all(&l1).unwrap(), values);
        let l1 = L1::new("t", storage, 4096, n, "reading the L1 table");
        for i in (0..u64::from(n))
            .rev()
            .step_by(97)
            .chain([20_000, 7, 20_479])
        {
            assert_eq!(l1.get(i).unwrap(), values[i as usize], "entry {i}");
        }
    }

    #[test]
    fn a_table_past_the_storage_is_an_error_of_the_lookup() {
        let (_, storage) = table(16);
        // Claims more entries than the storage holds: the slice read fails.
        let l1 = L1::new("t", storage, 4096, 600, "reading the L1 table");
        assert!(l1.get(0).is_err());
    }
}
