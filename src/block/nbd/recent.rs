//! The bytes of recent small reads, kept for the session: a read inside
//! one of them is answered from memory, so a round trip is never paid
//! twice for the same bytes (the export probe, the volume probe and the
//! filesystem's caches all start by reading the first blocks).
//!
//! Bounded: at most [`BUDGET`] bytes, oldest out first; only reads of at
//! most [`MAX_SPAN`] bytes are kept (bulk reads stream past).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::bytes::{u64_of, us};

/// Largest read kept.
pub const MAX_SPAN: u64 = 256 << 10;
/// Bytes kept in all.
const BUDGET: u64 = 16 << 20;

/// Spans read, by start offset.
#[derive(Default)]
pub struct Recent {
    spans: BTreeMap<u64, Arc<[u8]>>,
    /// Insertion order (start, length), for eviction.
    order: VecDeque<(u64, usize)>,
    bytes: u64,
}

impl Recent {
    /// Fills `buf` with the bytes at `offset` when one kept span holds
    /// them all; false (and `buf` untouched) otherwise.
    pub fn serve(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset.saturating_add(u64_of(buf.len()));
        if buf.is_empty() || u64_of(buf.len()) > MAX_SPAN {
            return false;
        }
        for (&start, span) in self
            .spans
            .range(offset.saturating_sub(MAX_SPAN)..=offset)
            .rev()
        {
            if start.saturating_add(u64_of(span.len())) < end {
                continue;
            }
            // start <= offset and end <= start + span.len().
            let from = us(offset.saturating_sub(start));
            if let Some(src) = span.get(from..from.saturating_add(buf.len())) {
                buf.copy_from_slice(src);
                return true;
            }
        }
        false
    }

    /// Keeps the bytes read at `offset` (when small enough), evicting the
    /// oldest spans past the budget.
    pub fn keep(&mut self, offset: u64, bytes: &[u8]) {
        let n = u64_of(bytes.len());
        if bytes.is_empty() || n > MAX_SPAN {
            return;
        }
        if self
            .spans
            .get(&offset)
            .is_some_and(|s| s.len() >= bytes.len())
        {
            return;
        }
        if let Some(old) = self.spans.insert(offset, Arc::from(bytes)) {
            self.bytes = self.bytes.saturating_sub(u64_of(old.len()));
        }
        self.bytes = self.bytes.saturating_add(n);
        self.order.push_back((offset, bytes.len()));
        while self.bytes > BUDGET {
            let Some((start, len)) = self.order.pop_front() else {
                break;
            };
            // A span replaced by a longer one later is queued again
            // under its new length: only the entry that matches goes.
            if self.spans.get(&start).is_some_and(|s| s.len() == len) {
                self.spans.remove(&start);
                self.bytes = self.bytes.saturating_sub(u64_of(len));
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_a_kept_span_are_served() {
        let mut r = Recent::default();
        let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        r.keep(4096, &data);
        let mut b = [0u8; 100];
        assert!(r.serve(4096 + 50, &mut b));
        assert_eq!(b[..], data[50..150]);
        assert!(!r.serve(4000, &mut b), "starts before the span");
        assert!(!r.serve(4096 + 8150, &mut b), "ends after the span");
        // A smaller span at a later start does not hide the larger one.
        r.keep(8192, &data[..10]);
        assert!(r.serve(8192 + 20, &mut b));
        assert_eq!(b[..], data[4096 + 20..4096 + 120]);
    }

    #[test]
    fn the_budget_holds() {
        let mut r = Recent::default();
        let data = vec![7u8; MAX_SPAN as usize];
        for i in 0..200u64 {
            r.keep(i * MAX_SPAN, &data);
        }
        assert!(r.bytes() <= BUDGET);
        let mut b = [0u8; 10];
        assert!(!r.serve(0, &mut b), "the oldest went first");
        assert!(r.serve(199 * MAX_SPAN, &mut b));
        // Too large to keep.
        r.keep(0, &vec![1u8; MAX_SPAN as usize + 1]);
        assert!(!r.serve(0, &mut b));
    }
}
