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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::buffer::{AlignedBuf, FetchBuf};
use crate::block::page_store::PageStore;
use crate::block::{check_range, BlockError, BlockSource, Extent};
use crate::bytes::{u64_of, us};

/// Reads at least this large bypass the cache.
const BYPASS: u64 = 256 << 10;
/// Bytes per cached chunk.
pub const CHUNK: u64 = 64 << 10;
/// Largest read-ahead window, in chunks (512 KiB): metadata walks read
/// mostly nearby blocks; larger windows mostly fetched unused inode table.
const MAX_WINDOW: u64 = 8;
/// Chunks a cache over a local source holds at first (1 MiB); it grows a
/// chunk each [`GROW_EVERY`] misses on chunks it pushed out (see
/// [`Limit`]), up to its capacity.
const START_CHUNKS: u64 = 2 * MAX_WINDOW;
/// Misses on chunks pushed out that grow the limit by one: a chunk more
/// costs a fresh buffer once (~70 µs), a chunk read again ~8 µs.
const GROW_EVERY: u64 = 8;

/// Cached chunks: page-aligned buffers the source reads into directly.
type Held = LruCache<u64, Arc<AlignedBuf>>;

/// Bytes per page of the prefetch store: scattered metadata (inodes,
/// directory blocks) is fetched ahead in pages, not whole chunks.
pub use crate::block::page_store::PAGE;
/// Bytes the prefetch store keeps (32 MiB), least recently used first out.
const PAGE_STORE: u64 = 32 << 20;
/// Most bytes one [`BlockCache::prefetch`] fetches (16 MiB): what is
/// fetched ahead stays well inside the store until it is used.
pub const AHEAD: u64 = 16 << 20;
/// Wanted pages this close (in pages) are fetched as one request, the
/// gap with them: a request costs a round trip, a page only its bytes.
const MERGE_GAP: u64 = 4;

/// Cache statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub readahead_chunks: u64,
}

/// Bytes held in one cached chunk, shared with the cache (no copy).
pub struct Shared {
    chunk: Arc<AlignedBuf>,
    start: usize,
    len: usize,
}

impl std::ops::Deref for Shared {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let end = self.start.saturating_add(self.len);
        self.chunk.get(self.start..end).unwrap_or_default()
    }
}

/// A caching wrapper around a block source.
pub struct BlockCache {
    inner: Arc<dyn BlockSource>,
    chunks: Mutex<Held>,
    /// Buffers of evicted chunks, reused by the next fetches (at most a
    /// window's): no fresh memory to fault in and zero per miss.
    spare: Mutex<Vec<AlignedBuf>>,
    capacity_bytes: u64,
    /// How many chunks are held now, and the chunks pushed out lately.
    limit: Mutex<Limit>,
    /// Chunk index after the last miss, and the current window.
    next_expected: AtomicU64,
    window: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    readahead: AtomicU64,
    /// Pages fetched ahead ([`BlockCache::prefetch`]), by page index.
    pages: Mutex<PageStore>,
    /// Whether `pages` may hold anything (reads skip its lock until then).
    has_pages: std::sync::atomic::AtomicBool,
    prefetched: AtomicU64,
}

/// How many chunks a [`BlockCache`] holds: over a local source it starts
/// small and grows only when that is too small, as an adaptive cache's
/// ghost list tells (ARC's: the keys of what was pushed out lately, a
/// miss on one of them is a hit a larger cache would have had).
///
/// Why not fill the capacity at once: every chunk held is a fresh 64 KiB
/// buffer, 16 pages the kernel faults in and zeroes (4-5 µs each on the
/// project's machine: ~70 µs a chunk), while reading a chunk again from
/// the page cache into a buffer used before costs ~8 µs. A one-pass walk
/// (`blame -R` of 20,000 files: the inode tables of its two views)
/// filled 144 chunks of a capacity it never needed; 2,300 of its 3,000
/// page faults were theirs. Its walk reads the inode tables twice, up
/// then down (the root's entries, then each directory's, last first):
/// a limit grown on every miss on a chunk pushed out would have grown
/// to the whole table on the way down, each chunk held once more and
/// never read again; grown every [`GROW_EVERY`] misses, a pattern that
/// comes round again and again (a working set larger than the limit)
/// still comes to fit.
struct Limit {
    /// Chunks held at most now.
    now: u64,
    /// The capacity, in chunks.
    most: u64,
    /// Chunks pushed out lately (up to `most` of them).
    ghosts: LruCache<u64, ()>,
    /// Misses on them since the limit last grew.
    credit: u64,
}

impl Limit {
    /// A miss on chunk `index`: one pushed out lately grows the limit.
    fn missed(&mut self, index: u64) {
        if self.ghosts.pop(&index).is_some() {
            self.credit = self.credit.saturating_add(1);
            if self.credit >= GROW_EVERY {
                self.credit = 0;
                self.now = self.now.saturating_add(1).min(self.most);
            }
        }
    }
}

impl BlockCache {
    /// Wraps `inner` with a cache of at most `capacity_bytes`.
    pub fn new(inner: Arc<dyn BlockSource>, capacity_bytes: u64) -> Self {
        let slots = us((capacity_bytes / CHUNK).max(MAX_WINDOW * 2));
        let most = u64_of(slots);
        // Over a remote source a chunk read again costs a round trip: the
        // whole capacity from the start.
        let now = if inner.remote() {
            most
        } else {
            START_CHUNKS.min(most)
        };
        BlockCache {
            limit: Mutex::new(Limit {
                now,
                most,
                ghosts: crate::lazy_lru::bounded(slots),
                credit: 0,
            }),
            inner,
            chunks: Mutex::new(crate::lazy_lru::bounded(slots)),
            spare: Mutex::new(Vec::new()),
            capacity_bytes: u64_of(slots).saturating_mul(CHUNK),
            next_expected: AtomicU64::new(u64::MAX),
            window: AtomicU64::new(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            readahead: AtomicU64::new(0),
            pages: Mutex::new(PageStore::new(PAGE_STORE)),
            has_pages: std::sync::atomic::AtomicBool::new(false),
            prefetched: AtomicU64::new(0),
        }
    }

    /// Pages fetched ahead so far.
    pub fn prefetched_pages(&self) -> u64 {
        self.prefetched.load(Ordering::Relaxed)
    }

    fn lock_pages(&self) -> Result<std::sync::MutexGuard<'_, PageStore>, BlockError> {
        self.pages.lock().map_err(|_| BlockError::Internal {
            what: "the page store lock was poisoned".into(),
        })
    }

    /// Serves `[offset, offset + buf.len())` from the page store when
    /// every page of it is there; false (and `buf` untouched or partly
    /// written) otherwise.
    fn serve_pages(&self, offset: u64, buf: &mut [u8]) -> Result<bool, BlockError> {
        if !self.has_pages.load(Ordering::Relaxed) || buf.is_empty() {
            return Ok(false);
        }
        Ok(self.lock_pages()?.serve(offset, buf))
    }

    /// Fills `buf` from what is held (the page store, or one cached
    /// chunk) without asking the source; false when it is not all there.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn peek(&self, offset: u64, buf: &mut [u8]) -> Result<bool, BlockError> {
        if self.serve_pages(offset, buf)? {
            return Ok(true);
        }
        let end = offset.saturating_add(u64_of(buf.len()));
        let index = offset / CHUNK;
        if buf.is_empty() || end.saturating_sub(1) / CHUNK != index {
            return Ok(false);
        }
        let Some(chunk) = self.lock()?.peek(&index).cloned() else {
            return Ok(false);
        };
        match chunk
            .get(us(offset % CHUNK)..)
            .and_then(|c| c.get(..buf.len()))
        {
            Some(from) => {
                buf.copy_from_slice(from);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `[offset, offset + len)` when one cached chunk holds all of it,
    /// shared without a copy or a read (the chunks' order is left as it
    /// is); `None` otherwise.
    pub fn shared(&self, offset: u64, len: usize) -> Option<Shared> {
        let index = offset / CHUNK;
        let end = offset.checked_add(u64_of(len))?;
        if len == 0 || end.saturating_sub(1) / CHUNK != index {
            return None;
        }
        let chunk = self.lock().ok()?.peek(&index).cloned()?;
        let start = us(offset % CHUNK);
        // A short chunk (the disk's end) may not hold all of it.
        if start.checked_add(len)? > chunk.len() {
            return None;
        }
        Some(Shared { chunk, start, len })
    }

    /// Whether [`BlockCache::peek`] would fill `[offset, offset + len)`
    /// from what is held (the page store, or one cached chunk), without
    /// copying it: reading it costs no request.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn holds(&self, offset: u64, len: u64) -> Result<bool, BlockError> {
        if len == 0 {
            return Ok(true);
        }
        let Some(last) = offset.checked_add(len).and_then(|e| e.checked_sub(1)) else {
            return Ok(false);
        };
        if self.has_pages.load(Ordering::Relaxed) && self.lock_pages()?.holds(offset, len) {
            return Ok(true);
        }
        let index = offset / CHUNK;
        Ok(last / CHUNK == index && self.lock()?.contains(&index))
    }

    /// Reads `[offset, offset + buf.len())` from what is held (the page
    /// store, or a cached chunk that holds all of it), else straight
    /// from the source without caching it (what a one-off block read
    /// such as a directory block wants). A page [`BlockCache::prefetch`]
    /// passed over because its chunk was cached is then not asked again.
    ///
    /// # Errors
    /// As [`BlockSource::read_at`].
    pub fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(
            self.inner.name(),
            self.inner.len(),
            offset,
            u64_of(buf.len()),
        )?;
        if self.peek(offset, buf)? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner.read_at(offset, buf)
    }

    /// Fetches the pages of `ranges` that are not held yet into the page
    /// store, all in one [`BlockSource::read_many`] (requests in flight
    /// together over a remote source), at most [`AHEAD`] bytes; returns
    /// the bytes fetched. Does nothing for a source that is not remote:
    /// a local read costs no round trip to save.
    ///
    /// # Errors
    /// As [`BlockSource::read_many`].
    pub fn prefetch(&self, ranges: &[(u64, u64)]) -> Result<u64, BlockError> {
        if !self.inner.remote() {
            return Ok(0);
        }
        let size = self.inner.len();
        let limit = AHEAD / PAGE;
        let mut wanted = std::collections::BTreeSet::new();
        {
            let pages = self.lock_pages()?;
            let chunks = self.lock()?;
            'ranges: for &(offset, len) in ranges {
                let end = offset.saturating_add(len).min(size);
                if end <= offset {
                    continue;
                }
                for i in offset / PAGE..=end.saturating_sub(1) / PAGE {
                    if u64_of(wanted.len()) >= limit {
                        break 'ranges;
                    }
                    let chunk = i.saturating_mul(PAGE) / CHUNK;
                    if !pages.contains(i) && !chunks.contains(&chunk) {
                        wanted.insert(i);
                    }
                }
            }
        }
        // Runs of pages, each one request; near runs join (the gap is
        // fetched too, and counts toward the bound).
        let mut spans: Vec<(u64, u64)> = Vec::new();
        let mut total = 0u64;
        for i in wanted {
            match spans.last_mut() {
                Some((_, last)) if i.saturating_sub(*last) <= MERGE_GAP => {
                    total = total.saturating_add(i.saturating_sub(*last));
                    *last = i;
                }
                _ => {
                    total = total.saturating_add(1);
                    spans.push((i, i));
                }
            }
            if total >= limit {
                break;
            }
        }
        if spans.is_empty() {
            return Ok(0);
        }
        // What the source already holds (the probe's head of the disk)
        // is shared whole pages at a time, not copied into a fresh
        // buffer; the rest of each span is read. The store counts such a
        // piece by its own length, while the buffer it shares lives as
        // long as any page of it is kept: beyond the budget, at most the
        // one buffer the source handed out whole (the head, 8 MiB).
        let mut shared: Vec<(u64, bytes::Bytes)> = Vec::new();
        // The rest to read: (offset, bytes).
        let mut rest: Vec<(u64, usize)> = Vec::new();
        for &(first, last) in &spans {
            let end = last.saturating_add(1).saturating_mul(PAGE).min(size);
            let mut pos = first.saturating_mul(PAGE);
            while pos < end {
                let Some(b) = self.inner.held(pos, end.saturating_sub(pos)) else {
                    break;
                };
                let n = u64_of(b.len()).min(end.saturating_sub(pos));
                // Whole pages, but for the disk's short last one.
                let take = if pos.saturating_add(n) == end {
                    n
                } else {
                    (n / PAGE).saturating_mul(PAGE)
                };
                if take == 0 {
                    break;
                }
                shared.push((pos, b.slice(..us(take))));
                pos = pos.saturating_add(take);
            }
            if pos < end {
                rest.push((pos, us(end.saturating_sub(pos))));
            }
        }
        // The rest is read into one buffer (one allocation, huge pages
        // for a walk's batch: 2,003 small ones, 8 MiB, cost 5-8 ms of
        // page faults), whose pieces the store keeps as one, counted as
        // the memory the buffer takes (a mapping in whole huge pages).
        let total = rest.iter().fold(0usize, |n, r| n.saturating_add(r.1));
        let mut buf = FetchBuf::zeroed(total);
        let footprint = buf.footprint();
        let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(rest.len());
        let mut free: &mut [u8] = &mut buf;
        for &(pos, n) in &rest {
            let k = n.min(free.len());
            let (piece, after) = std::mem::take(&mut free).split_at_mut(k);
            reqs.push((pos, piece));
            free = after;
        }
        if !reqs.is_empty() {
            self.inner.read_many(&mut reqs)?;
        }
        drop(reqs);
        let bytes = buf.into_bytes();
        let mut read = Vec::with_capacity(rest.len());
        let mut at = 0usize;
        for &(pos, n) in &rest {
            let to = at.saturating_add(n).min(bytes.len());
            read.push((pos / PAGE, bytes.slice(at..to)));
            at = to;
        }
        let mut fetched = 0u64;
        let mut pages = self.lock_pages()?;
        // Each held piece kept as it is, its pages sharing its buffer,
        // and the pieces read as one buffer: no copy.
        for (start, bytes) in shared {
            fetched = fetched.saturating_add(pages.insert(start / PAGE, bytes));
        }
        fetched = fetched.saturating_add(pages.insert_pieces(&read, footprint));
        self.has_pages.store(true, Ordering::Relaxed);
        self.prefetched.fetch_add(fetched / PAGE, Ordering::Relaxed);
        Ok(fetched)
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

    fn cached(&self, index: u64) -> Result<Option<Arc<AlignedBuf>>, BlockError> {
        let mut chunks = self.lock()?;
        // The most recently used chunk (nodes read one after another lie
        // in the same one): no lookup, and the order stays as it is.
        if let Some((&i, c)) = chunks.iter().next() {
            if i == index {
                return Ok(Some(Arc::clone(c)));
            }
        }
        Ok(chunks.get(&index).cloned())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Held>, BlockError> {
        self.chunks.lock().map_err(|_| BlockError::Internal {
            what: "the block cache lock was poisoned".into(),
        })
    }

    /// Fetches chunk `index` (and, when reads are sequential, the chunks
    /// after it) from the inner source.
    fn fetch(&self, index: u64) -> Result<Arc<AlignedBuf>, BlockError> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut limit = self.limit.lock().map_err(|_| BlockError::Internal {
            what: "the block cache's limit lock was poisoned".into(),
        })?;
        limit.missed(index);
        drop(limit);
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
        // Each chunk read straight into its own buffer (an evicted one's
        // when there is one), the window's requests together.
        let mut spare = std::mem::take(&mut *self.lock_spare()?);
        let mut bufs: Vec<(u64, AlignedBuf)> = Vec::new();
        let mut at = start;
        while at < end {
            let len = us(end.saturating_sub(at).min(CHUNK));
            let buf = match spare.pop() {
                Some(b) if b.len() == len => b,
                _ => AlignedBuf::new(len),
            };
            bufs.push((at, buf));
            at = at.saturating_add(CHUNK);
        }
        if self.inner.remote() {
            // Remote storage pays per request (a server's time, a log
            // line): the window goes as one request, copied into the
            // chunks, as one request it was before chunks had buffers.
            let mut one = AlignedBuf::new(us(end.saturating_sub(start)));
            self.inner.read_at(start, &mut one)?;
            for ((_, b), piece) in bufs.iter_mut().zip(one.chunks(us(CHUNK))) {
                if let Some(dst) = b.get_mut(..piece.len()) {
                    dst.copy_from_slice(piece);
                }
            }
        } else {
            let mut reqs: Vec<(u64, &mut [u8])> =
                bufs.iter_mut().map(|(at, b)| (*at, &mut **b)).collect();
            self.inner.read_many(&mut reqs)?;
        }
        let fetched = u64_of(bufs.len());
        self.window.store(window, Ordering::Relaxed);
        self.next_expected
            .store(index.saturating_add(fetched), Ordering::Relaxed);
        self.readahead
            .fetch_add(fetched.saturating_sub(1), Ordering::Relaxed);
        let mut first = None;
        let mut cache = self.lock()?;
        for (i, (_, buf)) in bufs.into_iter().enumerate() {
            let chunk = Arc::new(buf);
            if i == 0 {
                first = Some(Arc::clone(&chunk));
            }
            // What the chunk pushes out, when no reader holds it any more,
            // is the next fetch's buffer.
            if let Some((_, old)) = cache.push(index.saturating_add(u64_of(i)), chunk) {
                keep_spare(&mut spare, old);
            }
        }
        // Down to the limit, least recently used first; what goes is
        // remembered (a miss on it grows the limit).
        if let Ok(mut limit) = self.limit.lock() {
            while u64_of(cache.len()) > limit.now {
                let Some((i, old)) = cache.pop_lru() else {
                    break;
                };
                limit.ghosts.put(i, ());
                keep_spare(&mut spare, old);
            }
        }
        drop(cache);
        if let Ok(mut s) = self.spare.lock() {
            *s = spare;
        }
        first.ok_or_else(|| BlockError::Internal {
            what: format!("cache fetch of chunk {index} returned nothing"),
        })
    }

    fn lock_spare(&self) -> Result<std::sync::MutexGuard<'_, Vec<AlignedBuf>>, BlockError> {
        self.spare.lock().map_err(|_| BlockError::Internal {
            what: "the block cache's spare buffers lock was poisoned".into(),
        })
    }
}

/// Keeps the buffer of chunk `old`, pushed out of the cache, for the next
/// fetch, when no reader holds it and fewer than a window's are kept.
fn keep_spare(spare: &mut Vec<AlignedBuf>, old: Arc<AlignedBuf>) {
    if let Ok(b) = Arc::try_unwrap(old) {
        if u64_of(b.len()) == CHUNK && u64_of(spare.len()) < MAX_WINDOW {
            spare.push(b);
        }
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
        if self.serve_pages(offset, buf)? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
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

    fn remote(&self) -> bool {
        self.inner.remote()
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

    #[test]
    fn a_local_cache_holds_little_until_it_misses_what_it_pushed_out() {
        let (src, bytes) = source(6 << 20);
        let cache = BlockCache::new(src, 16 << 20);
        let held = || cache.lock().unwrap().len() as u64;
        let mut buf = vec![0u8; 256];
        // One pass over 4 MiB (64 chunks): what it read once is not kept.
        let mut pos = 0u64;
        while pos + 256 <= 4 << 20 {
            cache.read_at(pos, &mut buf).unwrap();
            assert_eq!(&buf[..], &bytes[pos as usize..pos as usize + 256]);
            pos += 256;
        }
        assert_eq!(held(), START_CHUNKS);
        // Again and again over 40 chunks (out of order: no read-ahead):
        // the misses on chunks pushed out grow it until they all stay.
        let order: Vec<u64> = (0..40u64).map(|i| i * 7 % 40).collect();
        for _ in 0..12 {
            for &c in &order {
                cache.read_at(c * CHUNK + 9, &mut buf).unwrap();
                assert_eq!(
                    &buf[..],
                    &bytes[(c * CHUNK) as usize + 9..(c * CHUNK) as usize + 265]
                );
            }
        }
        let misses = cache.stats().misses;
        for &c in &order {
            cache.read_at(c * CHUNK + 9, &mut buf).unwrap();
        }
        assert_eq!(
            cache.stats().misses,
            misses,
            "a pass missed once it had grown"
        );
        assert!((0..40u64).all(|c| cache.holds(c * CHUNK, 1).unwrap()));
        // Not all it ever read (64 chunks), nor its capacity (256).
        assert!(held() < 64, "{} chunks held", held());
    }

    /// A source that pays a round trip per call, and counts them.
    struct Remote {
        bytes: Vec<u8>,
        calls: AtomicU64,
        ranges: AtomicU64,
        /// Pieces it holds in memory ([`BlockSource::held`]).
        held: Vec<(u64, bytes::Bytes)>,
    }

    impl BlockSource for Remote {
        fn name(&self) -> &str {
            "remote"
        }
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            check_range("remote", self.len(), offset, buf.len() as u64)?;
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.ranges.fetch_add(1, Ordering::Relaxed);
            buf.copy_from_slice(&self.bytes[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            for (o, b) in reqs.iter_mut() {
                check_range("remote", self.len(), *o, b.len() as u64)?;
                self.ranges.fetch_add(1, Ordering::Relaxed);
                b.copy_from_slice(&self.bytes[*o as usize..*o as usize + b.len()]);
            }
            Ok(())
        }
        fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
            Ok(vec![Extent {
                offset,
                len,
                status: crate::block::Status::Data,
                compressed: false,
                host_offset: None,
                reads_zero: false,
            }])
        }
        fn remote(&self) -> bool {
            true
        }
        fn held(&self, offset: u64, max: u64) -> Option<bytes::Bytes> {
            let (at, b) = self
                .held
                .iter()
                .find(|(at, b)| (*at..*at + b.len() as u64).contains(&offset))?;
            let from = (offset - at) as usize;
            Some(b.slice(from..b.len().min(from + max as usize)))
        }
    }

    #[test]
    fn prefetched_pages_serve_later_reads_in_one_batch() {
        let len = 40 << 20;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        let src = Arc::new(Remote {
            bytes: bytes.clone(),
            calls: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            held: Vec::new(),
        });
        let cache = BlockCache::new(src.clone(), 8 << 20);
        // Scattered blocks, two of them near (one request), one at the
        // ragged end, one past it (clamped).
        let wanted: Vec<(u64, u64)> = (0..300u64)
            .map(|i| (i * 131_072 + 4096, 4096))
            .chain([(1 << 20, 256), (len as u64 - 100, 100), (len as u64, 10)])
            .collect();
        let got = cache.prefetch(&wanted).unwrap();
        assert!(got >= 300 * 4096, "{got}");
        assert_eq!(src.calls.load(Ordering::Relaxed), 1);
        let before = src.ranges.load(Ordering::Relaxed);
        for &(o, n) in wanted.iter().filter(|&&(o, _)| o < len as u64) {
            let mut b = vec![0u8; n as usize];
            cache.read_direct(o, &mut b).unwrap();
            assert_eq!(&b[..], &bytes[o as usize..(o + n) as usize]);
            let mut c = vec![0u8; n as usize];
            cache.read_at(o, &mut c).unwrap();
            assert_eq!(b, c);
            assert!(cache.peek(o, &mut c).unwrap());
        }
        assert_eq!(
            src.ranges.load(Ordering::Relaxed),
            before,
            "a prefetched read hit the source"
        );
        // What was fetched is not fetched again; the bound holds.
        assert_eq!(cache.prefetch(&wanted).unwrap(), 0);
        let huge = [(0u64, 64u64 << 20)];
        assert!(cache.prefetch(&huge).unwrap() <= AHEAD);
        // A local source is not fetched ahead.
        let (local, _) = source(1 << 20);
        assert_eq!(
            BlockCache::new(local, 8 << 20).prefetch(&wanted).unwrap(),
            0
        );
    }

    #[test]
    fn bytes_the_source_holds_are_kept_without_a_read() {
        let len = 4usize << 20;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        let head = bytes::Bytes::copy_from_slice(&bytes[..512 << 10]);
        let src = Arc::new(Remote {
            bytes: bytes.clone(),
            calls: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            // Two pieces of one buffer, and a piece ending mid-page.
            held: vec![
                (0, head.slice(..256 << 10)),
                (256 << 10, head.slice(256 << 10..)),
                (
                    1 << 20,
                    bytes::Bytes::copy_from_slice(&bytes[1 << 20..(1 << 20) + 6000]),
                ),
            ],
        });
        let cache = BlockCache::new(src.clone(), 8 << 20);
        let wanted = [(0u64, 600u64 << 10), (1 << 20, 8192)];
        assert_eq!(cache.prefetch(&wanted).unwrap(), (600 << 10) + 8192);
        // One batch, for what was not held: the pages past the held
        // 512 KiB, and the page the mid-page piece did not fill.
        assert_eq!(src.calls.load(Ordering::Relaxed), 1);
        assert_eq!(src.ranges.load(Ordering::Relaxed), 2);
        for &(o, n) in &wanted {
            let mut b = vec![0u8; n as usize];
            assert!(cache.peek(o, &mut b).unwrap());
            assert_eq!(&b[..], &bytes[o as usize..(o + n) as usize]);
        }
    }
}
