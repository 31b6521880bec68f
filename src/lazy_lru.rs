//! Bounded LRU caches that allocate as they fill.
//!
//! `LruCache::new(cap)` reserves a hash table for `cap` entries up front:
//! the block cache's page store alone reserved 8,192 (a 272 KiB mapping,
//! its control bytes written and page-faulted in). Every image opened
//! builds several such caches, and a short command (a quick diff, a
//! `stat`) fills few of them: their up-front tables were a sizeable part
//! of its page faults. The same bound, reached by growing, is what these
//! caches use instead.
use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;

/// An LRU cache holding at most `cap` entries (at least one), whose table
/// grows with what it holds.
pub fn bounded<K: Hash + Eq, V>(cap: usize) -> LruCache<K, V> {
    let mut cache = LruCache::unbounded();
    // Empty: resizing only sets the bound (and allocates nothing).
    cache.resize(NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN));
    cache
}

#[cfg(test)]
mod tests {
    #[test]
    fn holds_at_most_its_bound() {
        let mut c = super::bounded::<u64, u64>(3);
        assert_eq!(c.cap().get(), 3);
        for i in 0..10 {
            c.put(i, i);
        }
        assert_eq!(c.len(), 3);
        assert!(c.contains(&9) && c.contains(&7) && !c.contains(&6));
        assert_eq!(super::bounded::<u64, u64>(0).cap().get(), 1);
    }
}
