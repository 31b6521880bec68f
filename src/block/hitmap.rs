//! The runtime hit map: which layer served each block of the virtual disk,
//! and how many bytes and reads each layer served so far.
//!
//! Readers record with relaxed atomic stores and the UI reads at any moment
//! without taking a lock. Memory is bounded whatever the disk size: the
//! cell size grows with the disk so there are at most [`MAX_CELLS`] cells,
//! and cells live in pages allocated on first touch.
//!
//! Over NBD the layers are the server's, known only by their depth from
//! the top as `qemu:allocation-depth` reports them, and how deep the
//! server's chain goes is never said: a map made with [`HitMap::by_depth`]
//! records depths and numbers layers from the deepest depth seen so far.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::bytes::us;

/// A layer's cell value: the layer + 1 (layers are fewer than
/// [`JOURNAL`] - 1, so it fits below the journal bit).
fn cell_value(layer: usize) -> Option<u8> {
    u8::try_from(layer).ok()?.checked_add(1)
}

/// Upper bound on cells (one byte each): 4 MiB for any disk.
pub const MAX_CELLS: u64 = 1 << 22;
const PAGE_CELLS: u64 = 4096;
const NOT_READ: u8 = 0;
const NO_LAYER: u8 = u8::MAX;
/// Cells served from a journal's copy (a replayed block) hold this plus
/// the layer + 1; plain layers are 1 to 127.
const JOURNAL: u8 = 0x80;

/// Who served a cell, as far as the hit map knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Nothing has read this cell yet.
    NotRead,
    /// Layer `n` (0 is the base) served the last read of the cell.
    Layer(usize),
    /// No layer holds the cell: it read as zeros.
    Nowhere,
    /// A replayed block: its bytes came from the journal copy that layer
    /// `n` holds ("journal of layer n"), not from the cell's own place.
    Journal(usize),
}

/// Bytes and reads served by one layer.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub reads: AtomicU64,
}

/// A snapshot of one layer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub bytes: u64,
    pub reads: u64,
}

/// The hit map of one layered disk.
pub struct HitMap {
    size: u64,
    shift: u32,
    pages: Box<[OnceLock<Box<[AtomicU8]>>]>,
    layers: Box<[Counters]>,
    nowhere: Counters,
    /// Cells and counters are indexed by depth from the top (0 is the
    /// top), not by layer from the base.
    by_depth: bool,
    /// The deepest depth recorded (`by_depth` only).
    deepest: AtomicUsize,
}

/// Depths a [`HitMap::by_depth`] tells apart; deeper ones count as this
/// deep (a server may say anything).
pub const MAX_DEPTHS: usize = 64;

impl HitMap {
    /// A hit map for a disk of `size` bytes with `layers` layers; cells are
    /// at least `min_cell` bytes (rounded up to a power of two, at least 512).
    pub fn new(size: u64, layers: usize, min_cell: u64) -> Self {
        let mut shift = min_cell
            .max(512)
            .checked_next_power_of_two()
            .unwrap_or(1 << 63)
            .trailing_zeros();
        // Ends by shift 42 for any u64 size (2^64 / 2^42 = MAX_CELLS).
        while size.div_ceil(1u64 << shift) > MAX_CELLS {
            shift = shift.saturating_add(1);
        }
        let cells = size.div_ceil(1u64 << shift);
        let pages = us(cells.div_ceil(PAGE_CELLS));
        HitMap {
            size,
            shift,
            pages: (0..pages).map(|_| OnceLock::new()).collect(),
            layers: (0..layers.min(usize::from(JOURNAL).saturating_sub(1)))
                .map(|_| Counters::default())
                .collect(),
            nowhere: Counters::default(),
            by_depth: false,
            deepest: AtomicUsize::new(0),
        }
    }

    /// A hit map whose layers are known only by depth from the top (an
    /// NBD export with `qemu:allocation-depth`): record with
    /// [`HitMap::record_depth`]. [`HitMap::served`] and [`HitMap::totals`]
    /// number layers from the base as everywhere else, taking the deepest
    /// depth recorded so far as the base.
    pub fn by_depth(size: u64, min_cell: u64) -> Self {
        HitMap {
            by_depth: true,
            ..HitMap::new(size, MAX_DEPTHS, min_cell)
        }
    }

    /// True for a map made with [`HitMap::by_depth`].
    pub fn is_by_depth(&self) -> bool {
        self.by_depth
    }

    /// Records that the layer at `depth` from the top (`None`: no layer,
    /// zeros) served `[offset, offset + len)`. Only for maps made with
    /// [`HitMap::by_depth`].
    pub fn record_depth(&self, depth: Option<usize>, offset: u64, len: u64) {
        let depth = depth.map(|d| d.min(self.layers.len().saturating_sub(1)));
        if let Some(d) = depth {
            if len > 0 && offset < self.size {
                self.deepest.fetch_max(d, Ordering::Relaxed);
            }
        }
        self.record(depth, offset, len);
    }

    /// Per-depth totals, top first, up to the deepest depth recorded
    /// (`None` for a map indexed by layer).
    pub fn depth_totals(&self) -> Option<Vec<Totals>> {
        self.by_depth.then(|| {
            let deepest = self.deepest.load(Ordering::Relaxed);
            self.layers
                .iter()
                .take(deepest.saturating_add(1))
                .map(snap)
                .collect()
        })
    }

    /// Bytes covered by one cell.
    pub fn cell_size(&self) -> u64 {
        1u64 << self.shift
    }

    /// Number of cells.
    pub fn cells(&self) -> u64 {
        self.size.div_ceil(self.cell_size())
    }

    /// Records that `layer` (`None`: no layer, zeros) served
    /// `[offset, offset + len)`.
    pub fn record(&self, layer: Option<usize>, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let (counters, value) =
            match layer.and_then(|l| Some((self.layers.get(l)?, cell_value(l)?))) {
                Some(found) => found,
                None => (&self.nowhere, NO_LAYER),
            };
        counters.bytes.fetch_add(len, Ordering::Relaxed);
        counters.reads.fetch_add(1, Ordering::Relaxed);
        self.mark(offset, len, value);
    }

    /// Records that `[offset, offset + len)` was served from a journal
    /// copy held by `layer` (a block replayed in memory). The bytes were
    /// counted when the journal block itself was read, so only the cells
    /// are marked.
    pub fn record_journal(&self, layer: Option<usize>, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let value = match layer
            .filter(|&l| l < self.layers.len())
            .and_then(cell_value)
        {
            Some(v) => JOURNAL | v,
            None => NO_LAYER,
        };
        self.mark(offset, len, value);
    }

    /// Marks the cells of `[offset, offset + len)`, a page at a time.
    /// Callers checked `len > 0` and `offset < size`, so the range has a
    /// last byte inside the disk.
    fn mark(&self, offset: u64, len: u64, value: u8) {
        let last = offset.saturating_add(len).min(self.size).saturating_sub(1) >> self.shift;
        let mut cell = offset >> self.shift;
        while cell <= last {
            let Some(page) = self.pages.get(us(cell / PAGE_CELLS)) else {
                return;
            };
            let page =
                page.get_or_init(|| (0..PAGE_CELLS).map(|_| AtomicU8::new(NOT_READ)).collect());
            // The cells from `cell` to `last` that are in this page: at
            // least one, as `cell % PAGE_CELLS < PAGE_CELLS`.
            let in_page = cell % PAGE_CELLS;
            let n = (last.saturating_sub(cell).saturating_add(1))
                .min(PAGE_CELLS.saturating_sub(in_page));
            for c in page.iter().skip(us(in_page)).take(us(n)) {
                c.store(value, Ordering::Relaxed);
            }
            cell = cell.saturating_add(n.max(1));
        }
    }

    /// The value of the cell holding `offset` (inside the disk).
    fn value_at(&self, offset: u64) -> u8 {
        let cell = offset >> self.shift;
        self.pages
            .get(us(cell / PAGE_CELLS))
            .and_then(OnceLock::get)
            .and_then(|p| p.get(us(cell % PAGE_CELLS)))
            .map_or(NOT_READ, |c| c.load(Ordering::Relaxed))
    }

    /// Who served the cell holding `offset`.
    pub fn served(&self, offset: u64) -> Served {
        if offset >= self.size {
            return Served::NotRead;
        }
        // Written values are a layer + 1 (1 to 127), maybe with JOURNAL:
        // never 0 below it, so the subtractions do not saturate.
        match self.value_at(offset) {
            NOT_READ => Served::NotRead,
            NO_LAYER => Served::Nowhere,
            v if v & JOURNAL != 0 => Served::Journal(usize::from((v & !JOURNAL).saturating_sub(1))),
            v if self.by_depth => Served::Layer(
                self.deepest
                    .load(Ordering::Relaxed)
                    .saturating_sub(usize::from(v.saturating_sub(1))),
            ),
            v => Served::Layer(usize::from(v.saturating_sub(1))),
        }
    }

    /// Who served the cell holding `offset`, as recorded: for a map made
    /// with [`HitMap::by_depth`], `Layer(d)` is the depth from the top (0
    /// is the top), for a caller that knows how deep the chain is and
    /// numbers layers once for good rather than from the deepest depth
    /// seen so far.
    pub fn served_recorded(&self, offset: u64) -> Served {
        if offset >= self.size {
            return Served::NotRead;
        }
        match self.value_at(offset) {
            NOT_READ => Served::NotRead,
            NO_LAYER => Served::Nowhere,
            v => Served::Layer(usize::from(v.saturating_sub(1))),
        }
    }

    /// Per-layer totals (index 0 is the base), then the zeros served by no
    /// layer.
    pub fn totals(&self) -> (Vec<Totals>, Totals) {
        let layers = match self.depth_totals() {
            Some(mut top_first) => {
                top_first.reverse();
                top_first
            }
            None => self.layers.iter().map(snap).collect(),
        };
        (layers, snap(&self.nowhere))
    }
}

fn snap(c: &Counters) -> Totals {
    Totals {
        bytes: c.bytes.load(Ordering::Relaxed),
        reads: c.reads.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back() {
        let h = HitMap::new(1 << 20, 3, 4096);
        assert_eq!(h.cell_size(), 4096);
        h.record(Some(2), 0, 8192);
        h.record(None, 8192, 100);
        h.record(Some(0), 1 << 19, 1);
        assert_eq!(h.served(4095), Served::Layer(2));
        assert_eq!(h.served(4096), Served::Layer(2));
        assert_eq!(h.served(8192), Served::Nowhere);
        assert_eq!(h.served(12288), Served::NotRead);
        assert_eq!(h.served(1 << 19), Served::Layer(0));
        let (layers, nowhere) = h.totals();
        assert_eq!(
            layers[2],
            Totals {
                bytes: 8192,
                reads: 1
            }
        );
        assert_eq!(nowhere.bytes, 100);
        // A replayed block: the journal of layer 1 served it.
        h.record_journal(Some(1), 12288, 4096);
        assert_eq!(h.served(12288), Served::Journal(1));
        h.record(Some(0), 12288, 1);
        assert_eq!(h.served(12288), Served::Layer(0), "the last read wins");
    }

    #[test]
    fn by_depth_numbers_layers_from_the_deepest_seen() {
        let h = HitMap::by_depth(1 << 20, 4096);
        h.record_depth(Some(0), 0, 4096);
        assert_eq!(h.served(0), Served::Layer(0));
        h.record_depth(Some(2), 8192, 100);
        h.record_depth(None, 16384, 10);
        h.record_depth(Some(1_000), 32768, 1);
        // The top is now layer 63 of 64 (an absurd depth is clamped).
        assert_eq!(h.served(0), Served::Layer(MAX_DEPTHS - 1));
        assert_eq!(h.served(8192), Served::Layer(MAX_DEPTHS - 3));
        assert_eq!(h.served(16384), Served::Nowhere);
        let d = h.depth_totals().unwrap();
        assert_eq!(d.len(), MAX_DEPTHS);
        assert_eq!(
            (d[0].bytes, d[2].bytes, d[MAX_DEPTHS - 1].bytes),
            (4096, 100, 1)
        );
        let (layers, nowhere) = h.totals();
        assert_eq!(layers[MAX_DEPTHS - 1].bytes, 4096);
        assert_eq!(layers[0].bytes, 1);
        assert_eq!(nowhere.bytes, 10);
        assert_eq!(HitMap::new(1 << 20, 2, 4096).depth_totals(), None);
    }

    #[test]
    fn memory_is_bounded_for_a_huge_disk() {
        let h = HitMap::new(1 << 40, 2, 512);
        assert!(h.cells() <= MAX_CELLS);
        assert_eq!(h.cell_size(), (1u64 << 40) / MAX_CELLS);
        h.record(Some(1), (1 << 40) - 1, 1);
        assert_eq!(h.served((1 << 40) - 1), Served::Layer(1));
        let touched = h.pages.iter().filter(|p| p.get().is_some()).count();
        assert_eq!(touched, 1);
    }
}
