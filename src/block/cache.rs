//! A bounded block cache in front of any [`BlockSource`], shared by every
//! reader of a disk, with sequential read-ahead.
//!
//! Filesystem decoding reads many small, nearby pieces (inodes, directory
//! blocks); the cache turns them into whole chunks read once. When reads go
//! forward chunk after chunk, each miss fetches a growing window in one
//! request. Large reads pass straight through, so streaming a disk does not
//! flush what the UI is looking at.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::{check_range, BlockError, BlockSource, Extent};
use crate::bytes::{u64_of, us};

/// Reads at least this large bypass the cache.
const BYPASS: u64 = 256 << 10;
/// Bytes per cached chunk.
pub const CHUNK: u64 = 64 << 10;
/// Largest read-ahead window, in chunks (512 KiB): metadata walks read
/// mostly nearby blocks; larger windows mostly fetched unused inode table.
const MAX_WINDOW: u64 = 8;

type Chunks = LruCache<u64, Arc<[u8]>>;

/// Cache statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub readahead_chunks: u64,
}

/// A caching wrapper around a block source.
pub struct BlockCache {
    inner: Arc<dyn BlockSource>,
    chunks: Mutex<Chunks>,
    capacity_bytes: u64,
    /// Chunk index after the last miss, and the current window.
    next_expected: AtomicU64,
    window: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    readahead: AtomicU64,
}

impl BlockCache {
    /// Wraps `inner` with a cache of at most `capacity_bytes`.
    pub fn new(inner: Arc<dyn BlockSource>, capacity_bytes: u64) -> Self {
        let slots = us((capacity_bytes / CHUNK).max(MAX_WINDOW * 2));
        BlockCache {
            inner,
            chunks: Mutex::new(LruCache::new(
                NonZeroUsize::new(slots).unwrap_or(NonZeroUsize::MIN),
            )),
            capacity_bytes: u64_of(slots).saturating_mul(CHUNK),
            next_expected: AtomicU64::new(u64::MAX),
            window: AtomicU64::new(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            readahead: AtomicU64::new(0),
        }
    }

    /// The wrapped source.
    pub fn inner(&self) -> &Arc<dyn BlockSource> {
        &self.inner
    }

    /// Hits, misses and read-ahead so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            readahead_chunks: self.readahead.load(Ordering::Relaxed),
        }
    }

    fn cached(&self, index: u64) -> Result<Option<Arc<[u8]>>, BlockError> {
        Ok(self.lock()?.get(&index).cloned())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Chunks>, BlockError> {
        self.chunks.lock().map_err(|_| BlockError::Internal {
            what: "the block cache lock was poisoned".into(),
        })
    }

    /// Fetches chunk `index` (and, when reads are sequential, the chunks
    /// after it) from the inner source.
    fn fetch(&self, index: u64) -> Result<Arc<[u8]>, BlockError> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let sequential = self.next_expected.load(Ordering::Relaxed) == index;
        let window = if sequential {
            self.window
                .load(Ordering::Relaxed)
                .saturating_mul(2)
                .min(MAX_WINDOW)
        } else {
            1
        };
        // `index` comes from an offset inside the disk (read_at checked
        // it), so `start` is inside too and nothing here saturates.
        let size = self.inner.len();
        let start = index.saturating_mul(CHUNK);
        let end = start.saturating_add(window.saturating_mul(CHUNK)).min(size);
        let mut buf = crate::block::buffer::AlignedBuf::new(us(end.saturating_sub(start)));
        self.inner.read_at(start, &mut buf)?;
        let fetched = end.saturating_sub(start).div_ceil(CHUNK);
        self.window.store(window, Ordering::Relaxed);
        self.next_expected
            .store(index.saturating_add(fetched), Ordering::Relaxed);
        self.readahead
            .fetch_add(fetched.saturating_sub(1), Ordering::Relaxed);
        let mut first = None;
        let mut cache = self.lock()?;
        for (i, piece) in buf.chunks(us(CHUNK)).enumerate() {
            let chunk: Arc<[u8]> = piece.into();
            if i == 0 {
                first = Some(Arc::clone(&chunk));
            }
            cache.put(index.saturating_add(u64_of(i)), chunk);
        }
        first.ok_or_else(|| BlockError::Internal {
            what: format!("cache fetch of chunk {index} returned nothing"),
        })
    }
}

impl BlockSource for BlockCache {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let len = u64_of(buf.len());
        check_range(self.inner.name(), self.inner.len(), offset, len)?;
        // Bulk reads (file contents, streaming) go straight through: they
        // gain nothing from chunking and would evict the metadata.
        if len >= BYPASS.min(self.capacity_bytes / 4) {
            return self.inner.read_at(offset, buf);
        }
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let index = pos / CHUNK;
            let chunk = match self.cached(index)? {
                Some(c) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    c
                }
                None => self.fetch(index)?,
            };
            // What the chunk has from `pos` on, and no more than is wanted.
            let from = chunk.get(us(pos % CHUNK)..).unwrap_or_default();
            let from = from.get(..rest.len()).unwrap_or(from);
            if from.is_empty() {
                return Err(BlockError::Internal {
                    what: format!(
                        "{}: cached chunk {index} has no bytes at {pos:#x}",
                        self.inner.name()
                    ),
                });
            }
            // from.len() <= rest.len(): the line above.
            let (piece, tail) = rest.split_at_mut(from.len());
            piece.copy_from_slice(from);
            rest = tail;
            pos = pos.saturating_add(u64_of(from.len()));
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        self.inner.block_status(offset, len)
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        self.inner.locate(offset, len)
    }

    fn locate_exact(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        self.inner.locate_exact(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::raw::RawFile;
    use crate::block::storage::MemStorage;

    fn source(len: usize) -> (Arc<dyn BlockSource>, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        let raw = RawFile::new("mem", Arc::new(MemStorage::new(bytes.clone())));
        (Arc::new(raw), bytes)
    }

    #[test]
    fn reads_match_the_source_and_sequential_reads_fetch_ahead() {
        let (src, bytes) = source(5 * 1024 * 1024 + 123);
        let cache = BlockCache::new(src, 8 << 20);
        let mut buf = vec![0u8; 4096];
        let mut pos = 0u64;
        while pos + 4096 <= bytes.len() as u64 {
            cache.read_at(pos, &mut buf).unwrap();
            assert_eq!(&buf[..], &bytes[pos as usize..pos as usize + 4096]);
            pos += 4096;
        }
        let s = cache.stats();
        assert!(s.readahead_chunks > 0, "{s:?}");
        assert!(s.misses < bytes.len() as u64 / CHUNK / 4, "{s:?}");
        // An unaligned read across chunk boundaries, and the ragged end.
        let mut odd = vec![0u8; 200_000];
        cache.read_at(65_000, &mut odd).unwrap();
        assert_eq!(&odd[..], &bytes[65_000..265_000]);
        let mut tail = vec![0u8; 123];
        cache.read_at(bytes.len() as u64 - 123, &mut tail).unwrap();
        assert_eq!(&tail[..], &bytes[bytes.len() - 123..]);
        // A raw disk ends at a whole sector, as in qemu: zeros past the
        // file's last byte, then the end.
        let disk = bytes.len().div_ceil(512) * 512;
        let mut pad = vec![1u8; disk - bytes.len()];
        cache.read_at(bytes.len() as u64, &mut pad).unwrap();
        assert!(pad.iter().all(|&b| b == 0));
        assert!(cache.read_at(disk as u64 - 1, &mut tail).is_err());
    }
}
