//! The static hit map without waiting for the whole map: the first grid
//! of a disk whose map is not walked yet probes each cell for the topmost
//! layer holding anything in it ([`LayeredReader::topmost_in`]), within a
//! few milliseconds and checking the clock after every cell; between
//! requests the worker probes the rest, then walks the exact map (the
//! byte counts) in slices, sending the grid again as it gets better. A
//! cell not probed yet is "not read"; a probed one is what the exact map
//! will say of it.
use std::time::{Duration, Instant};

use super::{Reply, Request, Worker, MAX_CELLS};
use crate::block::layered::LayeredReader;
use crate::block::map::MapIter;
use crate::block::{BlockError, BlockSource};
use crate::bytes::u64_of;
use crate::ui::msg::{CellOwner, Grid, HitMode};

/// Map entries kept per layer for the static hit map; past this the rest
/// of the disk shows as "not read" rather than using unbounded memory.
const MAX_MAP_ENTRIES: usize = 1 << 20;
/// Block status answers the static hit map asks for at most: local
/// metadata is cheap (as many as the entries kept), a server's answers
/// cost a round trip each, and a source whose size is a claim (an NBD
/// export of 2^63 bytes answered 4 GiB at a time) maps only this far; the
/// rest shows as not read.
#[allow(
    clippy::as_conversions,
    reason = "a const: usize to u64 is lossless on every supported host"
)]
const MAX_MAP_STEPS: u64 = MAX_MAP_ENTRIES as u64;
const MAX_REMOTE_MAP_STEPS: u64 = 1 << 14;

/// How long a grid request walks the map before it probes instead.
pub(super) const FIRST_WALK: Duration = Duration::from_millis(3);
/// How long the first grid probes cells.
const FIRST_PROBE: Duration = Duration::from_millis(8);
/// One slice of refinement between requests.
pub const SLICE: Duration = Duration::from_millis(5);
/// A grid still being probed is sent again at most this often.
const RESEND: Duration = Duration::from_millis(100);

/// The map of a view walked so far.
#[derive(Default)]
pub(super) struct Walk {
    /// Where the walk goes on.
    pos: u64,
    entries: Vec<(u64, u64, CellOwner)>,
    /// Block status answers left.
    steps: Option<u64>,
}

/// The static grid being made better between requests.
pub(super) struct Refine {
    as_of: usize,
    /// The cells probed (not read until then).
    probe: Vec<CellOwner>,
    /// The next cell to probe.
    next: usize,
    /// When a grid was last sent.
    sent: Instant,
}

impl Refine {
    fn request(&self) -> Request {
        Request::Grid {
            as_of: self.as_of,
            cells: self.probe.len(),
            mode: HitMode::Static,
        }
    }
}

/// The cell size of a grid of `cells` over `size` bytes.
fn cell_size(size: u64, cells: usize) -> u64 {
    size.div_ceil(u64_of(cells.max(1))).max(1)
}

impl Worker {
    /// Walks the static map of the view as of `as_of` until `deadline`;
    /// `true` once it is whole (or stopped by its bounds: the rest is then
    /// "not read").
    pub(super) fn walk_map(&mut self, as_of: usize, deadline: Instant) -> Result<bool, BlockError> {
        let remote = self.chain.layers.iter().any(|l| l.nbd.is_some());
        let view = self.view(as_of)?;
        if view.map.is_some() {
            return Ok(true);
        }
        let mut w = view.walk.take().unwrap_or_else(|| Walk {
            steps: Some(if remote {
                MAX_REMOTE_MAP_STEPS
            } else {
                MAX_MAP_STEPS
            }),
            ..Walk::default()
        });
        let reader = std::sync::Arc::clone(&view.reader);
        let walked = walk(&reader, as_of, &mut w, deadline);
        let view = self.view(as_of)?;
        match walked {
            Ok(true) => view.map = Some(w.entries),
            Ok(false) => view.walk = Some(w),
            Err(e) => return Err(e),
        }
        Ok(view.map.is_some())
    }

    /// The first static grid of a view whose map is not whole: the cells
    /// probed for a moment (the rest "not read"), to be refined between
    /// requests.
    pub(super) fn first_grid(&mut self, as_of: usize, cells: usize) -> Result<Grid, BlockError> {
        let cells = cells.clamp(1, MAX_CELLS);
        let mut r = match self.refine.take() {
            Some(r) if r.as_of == as_of && r.probe.len() == cells => r,
            _ => Refine {
                as_of,
                probe: vec![CellOwner::NotRead; cells],
                next: 0,
                sent: Instant::now(),
            },
        };
        self.probe(&mut r, crate::ui::deadline::after(FIRST_PROBE))?;
        let grid = self.probed_grid(&r)?;
        r.sent = Instant::now();
        self.refine = Some(r);
        Ok(grid)
    }

    /// Probes cells of `r` until `deadline` (the clock read after every
    /// cell).
    fn probe(&mut self, r: &mut Refine, deadline: Instant) -> Result<(), BlockError> {
        let reader = std::sync::Arc::clone(&self.view(r.as_of)?.reader);
        let size = reader.len();
        let cell = cell_size(size, r.probe.len());
        while let Some(c) = r.probe.get_mut(r.next) {
            let start = u64_of(r.next).saturating_mul(cell).min(size);
            let end = start.saturating_add(cell).min(size);
            *c = if start < end {
                match reader.topmost_in(start, end.saturating_sub(start))? {
                    Some(l) => CellOwner::Layer(l),
                    None => CellOwner::Nowhere,
                }
            } else {
                CellOwner::Nowhere
            };
            r.next = r.next.saturating_add(1);
            if Instant::now() >= deadline {
                break;
            }
        }
        Ok(())
    }

    /// The grid of the cells probed so far (byte counts not known yet).
    fn probed_grid(&mut self, r: &Refine) -> Result<Grid, BlockError> {
        let size = self.view(r.as_of)?.reader.len();
        let cells = r.probe.len();
        let cell = cell_size(size, cells);
        let mut out = r.probe.clone();
        let journal = self.overlay_journal(r.as_of, &mut out, cell, true);
        let volume = self.volume_cells(size, cell, cells);
        Ok(Grid {
            mode: HitMode::Static,
            as_of: r.as_of,
            cells: out,
            bytes: vec![0; r.as_of.saturating_add(1)],
            nowhere: 0,
            exact: false,
            journal,
            server: None,
            volume,
            dirty: None,
        })
    }

    /// Whether a static grid is still being made better.
    pub fn refining(&self) -> bool {
        self.refine.is_some()
    }

    /// One slice (`slice` long) of making the static grid better: the
    /// next cells probed, then the map walked; a grid to send when there
    /// is news (every [`RESEND`] while probing, when the probe is done,
    /// and the exact grid once the map is whole).
    pub fn refine(&mut self, slice: Duration) -> Option<Reply> {
        let mut r = self.refine.take()?;
        let deadline = crate::ui::deadline::after(slice);
        match self.refine_step(&mut r, deadline) {
            Ok(Some(Reply::Grid(g))) if g.exact => Some(Reply::Grid(g)),
            Ok(reply) => {
                self.refine = Some(r);
                reply
            }
            Err(e) => Some(Reply::Failed {
                request: Box::new(r.request()),
                error: crate::escape::printable(&super::error_chain(&e)),
            }),
        }
    }

    fn refine_step(
        &mut self,
        r: &mut Refine,
        deadline: Instant,
    ) -> Result<Option<Reply>, BlockError> {
        if r.next < r.probe.len() {
            self.probe(r, deadline)?;
            let done = r.next >= r.probe.len();
            if done || r.sent.elapsed() >= RESEND {
                r.sent = Instant::now();
                return Ok(Some(Reply::Grid(self.probed_grid(r)?)));
            }
            return Ok(None);
        }
        if self.walk_map(r.as_of, deadline)? {
            let cells = r.probe.len();
            return Ok(Some(Reply::Grid(self.grid(
                r.as_of,
                cells,
                HitMode::Static,
            )?)));
        }
        Ok(None)
    }
}

/// Walks `w` on until `deadline` (the clock read after every entry):
/// `true` when the map is whole or its bounds are reached.
fn walk(
    reader: &LayeredReader,
    as_of: usize,
    w: &mut Walk,
    deadline: Instant,
) -> Result<bool, BlockError> {
    let mut it = MapIter::range(reader, w.pos, reader.len());
    if let Some(steps) = w.steps {
        it = it.with_budget(steps);
    }
    loop {
        let Some(e) = it.next() else {
            return Ok(true);
        };
        let e = e?;
        let owner = if e.present {
            let depth = usize::try_from(e.depth).unwrap_or(usize::MAX);
            CellOwner::Layer(as_of.saturating_sub(depth))
        } else {
            CellOwner::Nowhere
        };
        let end = e.start.saturating_add(e.length);
        // Entries cut where a slice ended meet again here.
        match w.entries.last_mut() {
            Some(last) if last.1 == e.start && last.2 == owner => last.1 = end,
            _ => w.entries.push((e.start, end, owner)),
        }
        w.pos = end;
        w.steps = it.steps_left();
        if w.entries.len() >= MAX_MAP_ENTRIES {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::grid::merge;
    use super::*;

    #[test]
    fn cell_sizes_cover_the_disk() {
        assert_eq!(cell_size(100, 10), 10);
        assert_eq!(cell_size(101, 10), 11);
        assert_eq!(cell_size(0, 10), 1);
        assert_eq!(
            merge(CellOwner::Layer(1), CellOwner::Journal(0)),
            CellOwner::Journal(0)
        );
    }
}
