//! The block cache's store of pages fetched ahead over a remote source
//! (`BlockCache::prefetch`): scattered metadata, kept by page, least
//! recently used out first.
//!
//! The pages of one fetched span share its buffer rather than each
//! being copied out of it: a walk's first batch is megabytes of inode
//! tables, and a copy per page cost a fresh page of memory each (faulted
//! in and zeroed), a millisecond per megabyte. The bound is therefore on
//! the buffers kept, not on the pages: a buffer counts whole until its
//! last page goes, and pages go until the buffers kept fit the budget.
//! A batch's spans read into one buffer are one buffer here too.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::HashMap;

use bytes::Bytes;
use lru::LruCache;

use crate::bytes::{u64_of, us};

/// Bytes per page.
pub const PAGE: u64 = 4096;

/// One page: its bytes (a slice of a fetched buffer) and that buffer.
struct Page {
    bytes: Bytes,
    buf: u64,
}

/// Pages fetched ahead, by page index, within a byte budget.
pub struct PageStore {
    pages: LruCache<u64, Page>,
    /// Per buffer kept: its pages in the store, and its bytes.
    bufs: HashMap<u64, (usize, u64)>,
    next_buf: u64,
    /// Bytes of the buffers kept.
    kept: u64,
    budget: u64,
}

impl PageStore {
    /// A store keeping at most `budget` bytes of buffers (after an
    /// insertion returns).
    pub fn new(budget: u64) -> PageStore {
        PageStore {
            pages: LruCache::unbounded(),
            bufs: HashMap::new(),
            next_buf: 0,
            kept: 0,
            budget,
        }
    }

    /// Whether page `index` is held.
    pub fn contains(&self, index: u64) -> bool {
        self.pages.contains(&index)
    }

    /// Whether every page of `[offset, offset + len)` is held.
    pub fn holds(&self, offset: u64, len: u64) -> bool {
        let Some(last) = offset.checked_add(len).and_then(|e| e.checked_sub(1)) else {
            return len == 0;
        };
        (offset / PAGE..=last / PAGE).all(|i| self.pages.contains(&i))
    }

    /// Bytes of the buffers kept.
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// Fills `buf` with the bytes at `offset` when every page of them is
    /// held (those pages become the most recently used); false otherwise,
    /// `buf` then untouched or partly written.
    pub fn serve(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        if buf.is_empty() || !self.holds(offset, u64_of(buf.len())) {
            return false;
        }
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let Some(page) = self.pages.get(&(pos / PAGE)) else {
                return false;
            };
            let from = page.bytes.get(us(pos % PAGE)..).unwrap_or_default();
            let from = from.get(..rest.len()).unwrap_or(from);
            if from.is_empty() {
                // A short page (the end of the disk) that does not hold
                // the bytes.
                return false;
            }
            let (piece, tail) = rest.split_at_mut(from.len());
            piece.copy_from_slice(from);
            rest = tail;
            pos = pos.saturating_add(u64_of(from.len()));
        }
        true
    }

    /// Keeps `bytes`, fetched at page `first`, as its pages (the last may
    /// be short: the end of the disk), sharing it; then drops the least
    /// recently used pages until the buffers kept fit the budget.
    /// Returns the bytes kept.
    pub fn insert(&mut self, first: u64, bytes: Bytes) -> u64 {
        let len = u64_of(bytes.len());
        self.insert_pieces(&[(first, bytes)], len)
    }

    /// Keeps `pieces` (each fetched at its first page) as their pages,
    /// all of them counted as one buffer of `owner` bytes until the last
    /// page of any goes: pieces of one allocation (a batch read into a
    /// single buffer, [`crate::block::buffer::FetchBuf`]) keep all of it
    /// alive. Then drops the least recently used pages until the buffers
    /// kept fit the budget. Returns the bytes of the pieces.
    pub fn insert_pieces(&mut self, pieces: &[(u64, Bytes)], owner: u64) -> u64 {
        let count = pieces.iter().fold(0usize, |n, (_, b)| {
            n.saturating_add(us(u64_of(b.len()).div_ceil(PAGE)))
        });
        if count == 0 {
            return 0;
        }
        let id = self.next_buf;
        self.next_buf = self.next_buf.wrapping_add(1);
        self.bufs.insert(id, (count, owner));
        self.kept = self.kept.saturating_add(owner);
        let mut len = 0u64;
        for (first, bytes) in pieces {
            len = len.saturating_add(u64_of(bytes.len()));
            let mut from = 0usize;
            for index in *first.. {
                if from >= bytes.len() {
                    break;
                }
                let to = from.saturating_add(us(PAGE)).min(bytes.len());
                let page = Page {
                    bytes: bytes.slice(from..to),
                    buf: id,
                };
                if let Some(old) = self.pages.put(index, page) {
                    self.release(old.buf);
                }
                from = to;
            }
        }
        while self.kept > self.budget {
            let Some((_, old)) = self.pages.pop_lru() else {
                break;
            };
            self.release(old.buf);
        }
        len
    }

    /// One page of buffer `id` left the store; the buffer's bytes are no
    /// longer counted once its last page has.
    fn release(&mut self, id: u64) {
        let gone = match self.bufs.get_mut(&id) {
            Some((pages, bytes)) => {
                *pages = pages.saturating_sub(1);
                (*pages == 0).then_some(*bytes)
            }
            None => None,
        };
        if let Some(bytes) = gone {
            self.bufs.remove(&id);
            self.kept = self.kept.saturating_sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn serves_reads_across_the_pages_of_several_buffers() {
        let mut s = PageStore::new(1 << 20);
        let a = pattern(3 * PAGE as usize, 1);
        let b = pattern(2 * PAGE as usize + 100, 2);
        s.insert(10, a.clone());
        s.insert(13, b.clone());
        let mut got = vec![0u8; 2 * PAGE as usize];
        assert!(s.serve(12 * PAGE + 7, &mut got));
        let mut want = a[2 * PAGE as usize + 7..].to_vec();
        want.extend_from_slice(&b[..got.len() - want.len()]);
        assert_eq!(got, want);
        // The short last page holds 100 bytes, no more.
        let mut end = vec![0u8; 100];
        assert!(s.serve(15 * PAGE, &mut end));
        assert_eq!(end[..], b[2 * PAGE as usize..]);
        assert!(!s.serve(15 * PAGE + 50, &mut end), "past the short page");
        assert!(!s.serve(9 * PAGE, &mut end), "a page not held");
        assert!(s.holds(10 * PAGE, 5 * PAGE) && !s.holds(10 * PAGE, 7 * PAGE));
    }

    #[test]
    fn a_buffer_counts_until_its_last_page_goes() {
        // Room for two buffers of 4 pages.
        let mut s = PageStore::new(8 * PAGE);
        s.insert(0, pattern(4 * PAGE as usize, 1));
        s.insert(100, pattern(4 * PAGE as usize, 2));
        assert_eq!(s.kept(), 8 * PAGE);
        // Page 0 used: the first buffer's other pages are older.
        let mut b = [0u8; 8];
        assert!(s.serve(0, &mut b));
        s.insert(200, pattern(4 * PAGE as usize, 3));
        // Pages went oldest first until a whole buffer was freed: the
        // first buffer's pages 1-3, then the second's, whose last page
        // freeing it brought the store back within its budget.
        assert!(s.kept() <= 8 * PAGE, "{}", s.kept());
        assert!(s.contains(0), "the page in use stays");
        assert!(!s.contains(100) && !s.contains(103));
        assert!((200..204).all(|i| s.contains(i)));
        // Putting a page again releases the old one's share.
        s.insert(0, pattern(PAGE as usize, 4));
        assert_eq!(s.kept(), 5 * PAGE);
    }

    #[test]
    fn pieces_of_one_buffer_count_as_it_until_the_last_goes() {
        // Three pieces of a 12-page buffer (the gaps between them never
        // kept): counted as 12 pages while any page of any piece is.
        let mut s = PageStore::new(16 * PAGE);
        let whole = pattern(12 * PAGE as usize, 5);
        let p = PAGE as usize;
        let pieces = [
            (0, whole.slice(..p)),
            (50, whole.slice(p..4 * p)),
            (90, whole.slice(4 * p..5 * p)),
        ];
        assert_eq!(s.insert_pieces(&pieces, 12 * PAGE), 5 * PAGE);
        assert_eq!(s.kept(), 12 * PAGE);
        let mut b = vec![0u8; 2 * p];
        assert!(s.serve(51 * PAGE, &mut b));
        assert_eq!(b[..], whole[2 * p..4 * p]);
        // Another buffer of 8 pages: 20 pages counted, over the budget
        // of 16 although only 13 are held. The group's pages go, oldest
        // first, until its last one (page 90, used last) releases all
        // 12; the new buffer stays whole.
        assert!(s.serve(90 * PAGE, &mut b[..p]));
        s.insert(200, pattern(8 * p, 6));
        assert_eq!(s.kept(), 8 * PAGE);
        assert!([0, 50, 51, 52, 90].iter().all(|&i| !s.contains(i)));
        assert!((200..208).all(|i| s.contains(i)));
        // Nothing left of a group: nothing counted for it.
        let mut e = PageStore::new(PAGE);
        assert_eq!(e.insert_pieces(&[], 12 * PAGE), 0);
        assert_eq!(e.kept(), 0);
    }
}
