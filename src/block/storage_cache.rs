//! A bounded chunk cache under the format readers, for storage that pays a
//! round trip per request (files over ssh): within one session, the same
//! bytes are fetched once while they fit.
//!
//! It sits below qcow2 and raw, so header, L1/L2 tables, refcounts and
//! data clusters of every layer share one bound. Reads of a chunk's worth
//! or less are served in whole chunks (the missing chunks of a read fetched
//! in one request, which the storage pipelines); bulk reads pass straight
//! through so streaming a disk does not evict the metadata.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::storage::Storage;

/// Bytes per cached chunk.
pub const CHUNK: u64 = 64 << 10;
/// Reads at least this large bypass the cache.
const BYPASS: usize = 512 << 10;

/// Chunks keyed by (file, chunk index).
type Chunks = LruCache<(u64, u64), Arc<[u8]>>;

/// Chunks of many files under one bound.
pub struct ChunkCache {
    chunks: Mutex<Chunks>,
    /// How many chunks fit.
    slots: usize,
    next_file: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ChunkCache {
    /// A cache of at most `bytes` (at least 16 chunks).
    pub fn new(bytes: u64) -> ChunkCache {
        let slots = usize::try_from((bytes / CHUNK).max(16)).unwrap_or(16);
        ChunkCache {
            chunks: Mutex::new(crate::lazy_lru::bounded(slots)),
            slots,
            next_file: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// (hits, misses) in chunks so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// A file read through a [`ChunkCache`].
pub struct CachedStorage {
    inner: Arc<dyn Storage>,
    cache: Arc<ChunkCache>,
    file: u64,
}

impl CachedStorage {
    /// Wraps `inner`; its chunks share `cache`'s bound with other files.
    pub fn new(inner: Arc<dyn Storage>, cache: Arc<ChunkCache>) -> CachedStorage {
        let file = cache.next_file.fetch_add(1, Ordering::Relaxed);
        CachedStorage { inner, cache, file }
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Chunks>> {
        self.cache
            .chunks
            .lock()
            .map_err(|_| io::Error::other("chunk cache lock poisoned"))
    }

    /// Fetches chunks `[first, last]` from the inner storage in one read
    /// and caches them.
    fn fetch(&self, first: u64, last: u64) -> io::Result<Vec<Arc<[u8]>>> {
        let len = self.inner.len();
        let start = first.saturating_mul(CHUNK);
        let end = last.saturating_add(1).saturating_mul(CHUNK).min(len);
        let n =
            usize::try_from(end.saturating_sub(start)).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut buf = vec![0u8; n];
        self.inner.read_exact_at(start, &mut buf)?;
        let chunk = usize::try_from(CHUNK).unwrap_or(usize::MAX);
        let pieces: Vec<Arc<[u8]>> = buf.chunks(chunk).map(Arc::from).collect();
        let got = u64::try_from(pieces.len()).unwrap_or(0);
        self.cache.misses.fetch_add(got, Ordering::Relaxed);
        let mut cache = self.lock()?;
        for (i, p) in (first..).zip(&pieces) {
            cache.put((self.file, i), Arc::clone(p));
        }
        Ok(pieces)
    }
}

impl CachedStorage {
    /// Fetches the chunks of `ranges` that are not cached, all in one
    /// [`Storage::read_many`] (one round trip for a remote file), at most
    /// half the cache's worth.
    fn fetch_missing(&self, ranges: &[(u64, u64)]) -> io::Result<()> {
        let len = self.inner.len();
        let limit = self.cache.slots / 2;
        let mut wanted = std::collections::BTreeSet::new();
        'ranges: for &(offset, n) in ranges {
            let end = offset.saturating_add(n).min(len);
            if end <= offset {
                continue;
            }
            for i in offset / CHUNK..=end.saturating_sub(1) / CHUNK {
                if wanted.len() >= limit {
                    break 'ranges;
                }
                wanted.insert(i);
            }
        }
        {
            let cache = self.lock()?;
            wanted.retain(|&i| !cache.contains(&(self.file, i)));
        }
        // Runs of consecutive chunks, each one request.
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for i in wanted {
            match spans.last_mut() {
                Some((_, last)) if last.checked_add(1) == Some(i) => *last = i,
                _ => spans.push((i, i)),
            }
        }
        if spans.is_empty() {
            return Ok(());
        }
        let mut bufs: Vec<Vec<u8>> = spans
            .iter()
            .map(|&(first, last)| {
                let start = first.saturating_mul(CHUNK);
                let end = last.saturating_add(1).saturating_mul(CHUNK).min(len);
                vec![0u8; usize::try_from(end.saturating_sub(start)).unwrap_or(0)]
            })
            .collect();
        let mut reqs: Vec<(u64, &mut [u8])> = spans
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(first, _), b)| (first.saturating_mul(CHUNK), b.as_mut_slice()))
            .collect();
        self.inner.read_many(&mut reqs)?;
        let chunk = usize::try_from(CHUNK).unwrap_or(usize::MAX);
        let mut cache = self.lock()?;
        for (&(first, _), buf) in spans.iter().zip(&bufs) {
            for (i, piece) in (first..).zip(buf.chunks(chunk)) {
                self.cache.misses.fetch_add(1, Ordering::Relaxed);
                cache.put((self.file, i), Arc::from(piece));
            }
        }
        Ok(())
    }
}

impl CachedStorage {
    /// Fills `buf` from cached chunks when every chunk it needs is held;
    /// false (nothing counted) otherwise.
    fn serve_cached(&self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let Some(end) = u64::try_from(buf.len())
            .ok()
            .and_then(|n| offset.checked_add(n))
            .filter(|&e| e <= self.inner.len() && e > offset)
        else {
            return Ok(buf.is_empty());
        };
        let first = offset / CHUNK;
        let last = end.saturating_sub(1) / CHUNK;
        let mut cache = self.lock()?;
        if !(first..=last).all(|i| cache.contains(&(self.file, i))) {
            return Ok(false);
        }
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let index = pos / CHUNK;
            let Some(chunk) = cache.get(&(self.file, index)) else {
                return Ok(false);
            };
            let at = usize::try_from(pos.saturating_sub(index.saturating_mul(CHUNK)))
                .map_err(|_| io::ErrorKind::InvalidInput)?;
            let from = chunk.get(at..).unwrap_or_default();
            let from = from.get(..rest.len()).unwrap_or(from);
            if from.is_empty() {
                return Ok(false);
            }
            let (piece, tail) = rest.split_at_mut(from.len());
            piece.copy_from_slice(from);
            rest = tail;
            pos = pos.saturating_add(u64::try_from(from.len()).unwrap_or(u64::MAX));
        }
        self.cache.hits.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

impl Storage for CachedStorage {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() >= BYPASS || buf.is_empty() {
            return self.inner.read_exact_at(offset, buf);
        }
        let n = u64::try_from(buf.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= self.inner.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let first = offset / CHUNK;
        let last = end.saturating_sub(1) / CHUNK;
        // What is cached now; the gaps are fetched, each in one read.
        let mut have: Vec<Option<Arc<[u8]>>> = {
            let mut cache = self.lock()?;
            (first..=last)
                .map(|i| cache.get(&(self.file, i)).cloned())
                .collect()
        };
        let mut i = 0usize;
        while i < have.len() {
            if have.get(i).is_some_and(Option::is_some) {
                self.cache.hits.fetch_add(1, Ordering::Relaxed);
                i = i.saturating_add(1);
                continue;
            }
            let gap_end = (i..have.len())
                .find(|&j| have.get(j).is_some_and(Option::is_some))
                .unwrap_or(have.len());
            let base = first.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
            let upto = first.saturating_add(u64::try_from(gap_end).unwrap_or(u64::MAX));
            let fetched = self.fetch(base, upto.saturating_sub(1))?;
            for (slot, piece) in have.iter_mut().skip(i).zip(fetched) {
                *slot = Some(piece);
            }
            i = gap_end;
        }
        let mut pos = offset;
        let mut out = 0usize;
        for (idx, chunk) in (first..).zip(&have) {
            let chunk = chunk
                .as_ref()
                .ok_or_else(|| io::Error::other("chunk cache: a chunk went missing"))?;
            let at = usize::try_from(pos.saturating_sub(idx.saturating_mul(CHUNK)))
                .map_err(|_| io::ErrorKind::InvalidInput)?;
            let take = chunk
                .len()
                .saturating_sub(at)
                .min(buf.len().saturating_sub(out));
            let src = chunk
                .get(at..at.saturating_add(take))
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.get_mut(out..out.saturating_add(take))
                .ok_or(io::ErrorKind::UnexpectedEof)?
                .copy_from_slice(src);
            out = out.saturating_add(take);
            pos = pos.saturating_add(u64::try_from(take).unwrap_or(0));
        }
        if out != buf.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Ranges whose chunks are all cached are served from the cache; the
    /// rest are read as asked, all in one [`Storage::read_many`] (in
    /// flight together): a batch is what a reader above fetches ahead
    /// into its own store, so rounding each range up to whole chunks
    /// would fetch 16 times the bytes and evict the tables.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> io::Result<()> {
        let mut rest: Vec<(u64, &mut [u8])> = Vec::new();
        for (offset, buf) in reqs.iter_mut() {
            if !self.serve_cached(*offset, buf)? {
                rest.push((*offset, &mut **buf));
            }
        }
        match rest.as_mut_slice() {
            [] => Ok(()),
            [(offset, buf)] => self.read_exact_at(*offset, buf),
            many => self.inner.read_many(many),
        }
    }

    fn prefetch(&self, ranges: &[(u64, u64)]) {
        if let Err(e) = self.fetch_missing(ranges) {
            tracing::debug!("prefetch: {e}");
        }
    }

    fn next_run(&self, offset: u64) -> io::Result<Option<(bool, u64)>> {
        self.inner.next_run(offset)
    }

    fn allocated_size(&self) -> Option<u64> {
        self.inner.allocated_size()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn ssh_session(&self) -> Option<Arc<crate::block::ssh::Session>> {
        self.inner.ssh_session()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::storage::MemStorage;

    /// Counts the reads that reach the storage below.
    struct Counting {
        inner: MemStorage,
        reads: AtomicU64,
    }

    impl Storage for Counting {
        fn len(&self) -> u64 {
            self.inner.len()
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.read_exact_at(offset, buf)
        }
        fn next_run(&self, _offset: u64) -> io::Result<Option<(bool, u64)>> {
            Ok(None)
        }
        fn allocated_size(&self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn the_same_bytes_are_fetched_once_and_reads_match() {
        let bytes: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let inner = Arc::new(Counting {
            inner: MemStorage::new(bytes.clone()),
            reads: AtomicU64::new(0),
        });
        let cached = CachedStorage::new(inner.clone(), Arc::new(ChunkCache::new(8 << 20)));
        let cases = [
            (0u64, 100usize),
            (65_000, 2_000),
            (130_000, 200_000),
            (999_000, 1_003),
        ];
        for (off, n) in cases {
            let mut b = vec![0u8; n];
            cached.read_exact_at(off, &mut b).unwrap();
            assert_eq!(&b[..], &bytes[off as usize..off as usize + n]);
        }
        let before = inner.reads.load(Ordering::Relaxed);
        for (off, n) in cases {
            let mut b = vec![0u8; n];
            cached.read_exact_at(off, &mut b).unwrap();
            assert_eq!(&b[..], &bytes[off as usize..off as usize + n]);
        }
        assert_eq!(
            inner.reads.load(Ordering::Relaxed),
            before,
            "second pass hit the storage"
        );
        let mut b = vec![0u8; 10];
        assert!(cached.read_exact_at(999_999, &mut b).is_err());
        // A read with a cached chunk in the middle fetches the two gaps.
        let fresh = CachedStorage::new(inner.clone(), Arc::new(ChunkCache::new(8 << 20)));
        let mut mid = vec![0u8; 10];
        fresh.read_exact_at(CHUNK + 5, &mut mid).unwrap();
        let r0 = inner.reads.load(Ordering::Relaxed);
        let mut wide = vec![0u8; 3 * CHUNK as usize];
        fresh.read_exact_at(0, &mut wide).unwrap();
        assert_eq!(&wide[..], &bytes[..3 * CHUNK as usize]);
        assert_eq!(inner.reads.load(Ordering::Relaxed) - r0, 2);
        // A prefetch of scattered ranges: later reads of them are hits.
        let warm = CachedStorage::new(inner.clone(), Arc::new(ChunkCache::new(8 << 20)));
        let ranges = [(0u64, 4096u64), (5 * CHUNK, CHUNK), (9 * CHUNK + 7, 10)];
        warm.prefetch(&ranges);
        let r1 = inner.reads.load(Ordering::Relaxed);
        for (off, n) in ranges {
            let mut b = vec![0u8; n as usize];
            warm.read_exact_at(off, &mut b).unwrap();
            assert_eq!(&b[..], &bytes[off as usize..(off + n) as usize]);
        }
        assert_eq!(inner.reads.load(Ordering::Relaxed), r1);
    }
}
