//! The bytes of recent small reads, kept for the session: a read inside
//! one of them is answered from memory, so a round trip is never paid
//! twice for the same bytes (the export probe, the volume probe and the
//! filesystem's caches all start by reading the first blocks).
//!
//! Bounded: at most [`BUDGET`] bytes, oldest out first; only reads of at
//! most [`MAX_SPAN`] bytes are kept (bulk reads stream past), or a
//! longer buffer handed over whole ([`Recent::keep_shared`]), kept as
//! spans that share it: its bytes are freed when its last span goes, so
//! at most one such buffer outlives the budget in part.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::bytes::{u64_of, us};

/// Largest read kept.
pub const MAX_SPAN: u64 = 256 << 10;
/// Bytes kept in all.
const BUDGET: u64 = 16 << 20;

/// One span kept.
struct Span {
    bytes: Bytes,
    /// Part of a buffer handed over whole ([`Recent::keep_shared`]):
    /// [`Recent::held`] hands out slices of it, copies of the others.
    shared: bool,
}

/// Spans read, by start offset.
#[derive(Default)]
pub struct Recent {
    spans: BTreeMap<u64, Span>,
    /// Insertion order (start, length), for eviction.
    order: VecDeque<(u64, usize)>,
    bytes: u64,
}

impl Recent {
    /// Fills `buf` with the bytes at `offset` when kept spans hold them
    /// all: one span, or several in a row (a long read, such as a tree
    /// walk's head of the disk, is kept a span at a time); false (and
    /// `buf` untouched) otherwise.
    pub fn serve(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset.saturating_add(u64_of(buf.len()));
        if buf.is_empty() {
            return false;
        }
        let Some(first) = self.covering(offset, end) else {
            return false;
        };
        if first.2 == buf.len() {
            return copy_piece(first, buf);
        }
        // Where every piece comes from, found before anything is copied.
        let mut pieces = vec![first];
        let mut pos = offset.saturating_add(u64_of(first.2));
        while pos < end {
            let Some(p) = self.covering(pos, end) else {
                return false;
            };
            pieces.push(p);
            pos = pos.saturating_add(u64_of(p.2));
        }
        let mut rest = buf;
        for p in pieces {
            let (here, tail) = rest.split_at_mut(p.2.min(rest.len()));
            if !copy_piece(p, here) {
                return false;
            }
            rest = tail;
        }
        true
    }

    /// The bytes at `offset` as kept: the piece of the span holding
    /// `offset` that reaches furthest, at most `max` bytes. A slice (no
    /// copy) of a buffer handed over whole; a copy of a small read's span,
    /// so that a holder counting the piece by its length counts what it
    /// keeps alive (a slice of a 256 KiB span would keep all of it).
    pub fn held(&self, offset: u64, max: u64) -> Option<Bytes> {
        let (span, from, n) = self.covering_span(offset, offset.saturating_add(max))?;
        let to = from.saturating_add(n);
        let piece = span.bytes.get(from..to).filter(|p| !p.is_empty())?;
        Some(if span.shared {
            span.bytes.slice(from..to)
        } else {
            Bytes::copy_from_slice(piece)
        })
    }

    /// The kept span holding `pos` that reaches furthest toward `end`:
    /// (the span, where `pos` is in it, its bytes from `pos` up to
    /// `end`). Spans are at most [`MAX_SPAN`] long, so only those
    /// starting that far before `pos` can hold it.
    fn covering(&self, pos: u64, end: u64) -> Option<(&[u8], usize, usize)> {
        self.covering_span(pos, end)
            .map(|(span, from, n)| (&span.bytes[..], from, n))
    }

    /// [`Recent::covering`], giving the span itself.
    fn covering_span(&self, pos: u64, end: u64) -> Option<(&Span, usize, usize)> {
        let mut best: Option<(&Span, u64, u64)> = None;
        for (&start, span) in self.spans.range(pos.saturating_sub(MAX_SPAN)..=pos) {
            let upto = start.saturating_add(u64_of(span.bytes.len())).min(end);
            if upto > pos && best.is_none_or(|b| upto > b.2) {
                best = Some((span, start, upto));
            }
        }
        best.map(|(span, start, upto)| {
            (
                span,
                us(pos.saturating_sub(start)),
                us(upto.saturating_sub(pos)),
            )
        })
    }

    /// Keeps the bytes read at `offset` (when small enough), evicting the
    /// oldest spans past the budget.
    pub fn keep(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.is_empty()
            || u64_of(bytes.len()) > MAX_SPAN
            || self.holds_span(offset, bytes.len())
        {
            return;
        }
        self.put(offset, Bytes::copy_from_slice(bytes), false);
    }

    /// Keeps a read of any length without copying it: spans of at most
    /// [`MAX_SPAN`] that share `bytes` (a tree walk's head of the disk,
    /// megabytes that a copy would cost a fresh page each).
    pub fn keep_shared(&mut self, offset: u64, bytes: &Bytes) {
        let span = us(MAX_SPAN);
        let mut from = 0usize;
        while from < bytes.len() {
            let to = from.saturating_add(span).min(bytes.len());
            let at = offset.saturating_add(u64_of(from));
            if !self.holds_span(at, to.saturating_sub(from)) {
                self.put(at, bytes.slice(from..to), true);
            }
            from = to;
        }
    }

    /// Whether the span kept at `offset` is at least `len` long.
    fn holds_span(&self, offset: u64, len: usize) -> bool {
        self.spans
            .get(&offset)
            .is_some_and(|s| s.bytes.len() >= len)
    }

    fn put(&mut self, offset: u64, bytes: Bytes, shared: bool) {
        let n = u64_of(bytes.len());
        let len = bytes.len();
        if let Some(old) = self.spans.insert(offset, Span { bytes, shared }) {
            self.bytes = self.bytes.saturating_sub(u64_of(old.bytes.len()));
        }
        self.bytes = self.bytes.saturating_add(n);
        self.order.push_back((offset, len));
        while self.bytes > BUDGET {
            let Some((start, len)) = self.order.pop_front() else {
                break;
            };
            // A span replaced by a longer one later is queued again
            // under its new length: only the entry that matches goes.
            if self.spans.get(&start).is_some_and(|s| s.bytes.len() == len) {
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

/// Copies a piece found by [`Recent::covering`] into `out` (as long as
/// the piece); false when the span does not hold it.
fn copy_piece((span, from, n): (&[u8], usize, usize), out: &mut [u8]) -> bool {
    match span.get(from..from.saturating_add(n)) {
        Some(src) if src.len() == out.len() => {
            out.copy_from_slice(src);
            true
        }
        _ => false,
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
    fn a_read_across_spans_in_a_row_is_served() {
        let mut r = Recent::default();
        let data: Vec<u8> = (0..3 * MAX_SPAN as u32).map(|i| (i % 251) as u8).collect();
        for (i, piece) in data.chunks(MAX_SPAN as usize).enumerate() {
            r.keep(i as u64 * MAX_SPAN, piece);
        }
        let mut b = vec![0u8; 2 * MAX_SPAN as usize + 10];
        assert!(r.serve(100, &mut b));
        assert_eq!(b[..], data[100..100 + b.len()]);
        // A gap in the row: nothing served, the buffer untouched.
        let mut r2 = Recent::default();
        r2.keep(0, &data[..MAX_SPAN as usize]);
        r2.keep(
            MAX_SPAN + 1,
            &data[MAX_SPAN as usize + 1..2 * MAX_SPAN as usize],
        );
        let mut c = vec![9u8; MAX_SPAN as usize + 10];
        assert!(!r2.serve(0, &mut c));
        assert!(c.iter().all(|&x| x == 9));
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

    #[test]
    fn a_shared_buffer_is_kept_as_spans_within_the_budget() {
        let mut r = Recent::default();
        let data: Vec<u8> = (0..3 * MAX_SPAN as u32 + 10)
            .map(|i| (i % 253) as u8)
            .collect();
        r.keep_shared(4096, &Bytes::from(data.clone()));
        assert_eq!(r.bytes(), data.len() as u64);
        let mut b = vec![0u8; 2 * MAX_SPAN as usize];
        assert!(r.serve(4096 + 5, &mut b));
        assert_eq!(b[..], data[5..5 + b.len()]);
        let mut end = [0u8; 10];
        assert!(r.serve(4096 + 3 * MAX_SPAN, &mut end));
        assert_eq!(end[..], data[3 * MAX_SPAN as usize..]);
        // A buffer past the budget: its oldest spans go.
        let big = Bytes::from(vec![3u8; 2 * BUDGET as usize]);
        r.keep_shared(1 << 40, &big);
        assert!(r.bytes() <= BUDGET);
        assert!(!r.serve(4096, &mut end), "the first buffer went first");
        assert!(r.serve((1 << 40) + 2 * BUDGET - 10, &mut end));
    }

    #[test]
    fn held_bytes_are_slices_of_the_kept_buffer() {
        let mut r = Recent::default();
        let data: Vec<u8> = (0..600u32 << 10).map(|i| (i % 241) as u8).collect();
        let buf = Bytes::from(data.clone());
        r.keep_shared(4096, &buf);
        // From inside the first span: up to its end, not past it.
        let got = r.held(4096 + 10, 1 << 20).unwrap();
        assert_eq!(got.len(), MAX_SPAN as usize - 10);
        assert_eq!(got[..], data[10..MAX_SPAN as usize]);
        assert_eq!(got.as_ptr(), buf[10..].as_ptr(), "a copy, not a slice");
        // Bounded by max; the last span's rest; nothing outside.
        assert_eq!(
            r.held(4096 + MAX_SPAN, 100).unwrap()[..],
            data[MAX_SPAN as usize..][..100]
        );
        let last = r.held(4096 + 2 * MAX_SPAN, 1 << 20).unwrap();
        assert_eq!(last[..], data[2 * MAX_SPAN as usize..]);
        assert!(r.held(0, 4096).is_none());
        assert!(r.held(4096 + (600 << 10), 1).is_none());
        assert!(r.held(4096, 0).is_none());
        // A small read's span is handed out as a copy.
        r.keep(1 << 30, &data[..8192]);
        let small = r.held((1 << 30) + 100, 1000).unwrap();
        assert_eq!(small[..], data[100..1100]);
        let kept = &r.spans.get(&(1 << 30)).unwrap().bytes;
        assert_ne!(
            small.as_ptr(),
            kept[100..].as_ptr(),
            "a slice of a small span"
        );
    }
}
