//! The worker's views of the disk itself: hex bytes with the layer of
//! each row, and the hit map grid (static owners from the map, or what
//! reads were served from). Over NBD with allocation depths the layers
//! are the server's, numbered as a local chain would be (see
//! [`super::remote`]).

use super::refine::FIRST_WALK;
use super::{Worker, MAX_CELLS};
use crate::block::hitmap::Served;
use crate::block::{BlockError, BlockSource};
use crate::bytes::u64_of;
use crate::fs::ext::Ext4;
use crate::ui::msg::{CellOwner, Grid, HexData, HitMode, ServerLayers, VolumeCells};

/// The topmost layer with anything in a cell wins (a small overlay write
/// stays visible); a cell no layer holds beats one not read.
pub(super) fn merge(c: CellOwner, o: CellOwner) -> CellOwner {
    match (c, o) {
        // A replayed block stays visible: the journal's copy serves it.
        (CellOwner::Journal(a), CellOwner::Journal(b)) => CellOwner::Journal(a.max(b)),
        (CellOwner::Journal(a), _) | (_, CellOwner::Journal(a)) => CellOwner::Journal(a),
        (CellOwner::Layer(a), CellOwner::Layer(b)) => CellOwner::Layer(a.max(b)),
        (CellOwner::Layer(a), _) => CellOwner::Layer(a),
        (CellOwner::Nowhere, CellOwner::NotRead) => CellOwner::Nowhere,
        (_, o) => o,
    }
}

impl Worker {
    pub(super) fn hex(
        &mut self,
        as_of: usize,
        offset: u64,
        len: u64,
    ) -> Result<HexData, BlockError> {
        let view = self.view(as_of)?;
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        view.cache.read_at(offset, &mut bytes)?;
        // The owner of each row's first byte.
        let runs = self.owners(as_of, offset, len)?;
        let mut owners = Vec::new();
        let (mut run, mut run_end) = (runs.iter(), offset);
        let mut current = None;
        for row in 0..len.div_ceil(16) {
            let at = offset.saturating_add(row.saturating_mul(16));
            while at >= run_end {
                match run.next() {
                    Some(&(n, l)) => {
                        run_end = run_end.saturating_add(n);
                        current = l;
                    }
                    None => {
                        current = None;
                        break;
                    }
                }
            }
            owners.push(current);
        }
        Ok(HexData {
            as_of,
            offset,
            bytes,
            owners,
        })
    }

    /// The static map (start, end, owner) over NBD with allocation
    /// depths: the server's map, scanned once. `false` when the server
    /// gives no depths (the map is then walked as a local chain's is, see
    /// [`Worker::walk_map`]).
    fn server_map(&mut self, as_of: usize) -> Result<bool, BlockError> {
        if self.view(as_of)?.map.is_some() {
            return Ok(true);
        }
        let Some(r) = self.remote()? else {
            return Ok(false);
        };
        let mut map = Vec::new();
        for &(start, end, depth) in &r.map {
            let owner = r
                .layer_of(depth)
                .map_or(CellOwner::Nowhere, CellOwner::Layer);
            map.push((start, end, owner));
        }
        self.view(as_of)?.map = Some(map);
        Ok(true)
    }

    pub(super) fn grid(
        &mut self,
        as_of: usize,
        cells: usize,
        mode: HitMode,
    ) -> Result<Grid, BlockError> {
        if let HitMode::Bitmap(index) = mode {
            return self.bitmap_grid(as_of, cells, index);
        }
        let server = self.remote()?.map(|r| ServerLayers {
            layers: r.layers,
            complete: r.complete,
        });
        let layers = server.map_or(as_of.saturating_add(1), |s| s.layers);
        if mode == HitMode::Static && !self.server_map(as_of)? {
            // The map walked for a moment (a small disk's is done by
            // then); else the cells probed, refined between requests.
            if !self.walk_map(as_of, crate::ui::deadline::after(FIRST_WALK))? {
                return self.first_grid(as_of, cells);
            }
        }
        let view = self.view(as_of)?;
        let size = view.reader.len();
        let cells = cells.clamp(1, MAX_CELLS);
        let cell = size.div_ceil(u64_of(cells)).max(1);
        let last = cells.saturating_sub(1);
        let mut out = vec![CellOwner::NotRead; cells];
        let mut bytes = vec![0u64; layers];
        let mut nowhere = 0;
        match mode {
            HitMode::Static => {
                for &(start, end, owner) in view.map.iter().flatten() {
                    match owner {
                        CellOwner::Layer(l) => {
                            if let Some(b) = bytes.get_mut(l.min(layers.saturating_sub(1))) {
                                *b = b.saturating_add(end.saturating_sub(start));
                            }
                        }
                        _ => nowhere = end.saturating_sub(start).saturating_add(nowhere),
                    }
                    for c in out
                        .get_mut(cell_span(start, end, cell, last))
                        .unwrap_or_default()
                    {
                        *c = merge(*c, owner);
                    }
                }
            }
            // Answered above.
            HitMode::Bitmap(_) => {}
            HitMode::Runtime => {
                let hits = view.reader.hits();
                let step = hits.cell_size().max(1);
                // Over NBD the map records server depths (0 the top):
                // numbered from the chain's depth found by the scan.
                let owner = |s: Served| match (s, server) {
                    (Served::Layer(d), Some(sv)) => {
                        CellOwner::Layer(sv.layers.saturating_sub(1).saturating_sub(d))
                    }
                    (s, _) => CellOwner::from(s),
                };
                for (i, c) in out.iter_mut().enumerate() {
                    let start = u64_of(i).saturating_mul(cell);
                    let end = start.saturating_add(cell).min(size);
                    let mut at = start;
                    while at < end {
                        let s = if server.is_some() {
                            hits.served_recorded(at)
                        } else {
                            hits.served(at)
                        };
                        *c = merge(*c, owner(s));
                        at = at.saturating_add(step);
                    }
                }
                let (per_layer, none) = hits.totals();
                match (hits.depth_totals(), server) {
                    (Some(top_first), Some(sv)) => {
                        for (d, t) in top_first.iter().enumerate() {
                            let l = sv.layers.saturating_sub(1).saturating_sub(d);
                            if let Some(b) = bytes.get_mut(l) {
                                *b = b.saturating_add(t.bytes);
                            }
                        }
                    }
                    _ => {
                        for (b, t) in bytes.iter_mut().zip(&per_layer) {
                            *b = t.bytes;
                        }
                    }
                }
                nowhere = none.bytes;
            }
        }
        // Blocks the journal replay serves: owned by the journal of the
        // layer holding their copy (the runtime map recorded them so as
        // they were read).
        let journal = self.overlay_journal(as_of, &mut out, cell, mode == HitMode::Static);
        let volume = self.volume_cells(size, cell, cells);
        Ok(Grid {
            mode,
            as_of,
            cells: out,
            bytes,
            nowhere,
            exact: true,
            journal,
            server,
            volume,
            dirty: None,
        })
    }

    /// `out` (cells of `cell` bytes) with the blocks the journal replay
    /// serves as the journal of their layer; the bytes they are, per layer.
    pub(super) fn overlay_journal(
        &mut self,
        as_of: usize,
        out: &mut [CellOwner],
        cell: u64,
        mark: bool,
    ) -> Vec<u64> {
        let last = out.len().saturating_sub(1);
        let mut journal = Vec::new();
        for (start, end, l) in self.replayed_ranges(as_of) {
            if journal.len() <= l {
                journal.resize(l.saturating_add(1), 0);
            }
            if let Some(j) = journal.get_mut(l) {
                *j = end.saturating_sub(start).saturating_add(*j);
            }
            if mark && start < end && !out.is_empty() {
                for c in out
                    .get_mut(cell_span(start, end, cell, last))
                    .unwrap_or_default()
                {
                    *c = merge(*c, CellOwner::Journal(l));
                }
            }
        }
        journal
    }

    /// The disk ranges of the blocks the journal replay serves in the
    /// filesystem in view as of `as_of`, with the layer whose journal
    /// holds each copy: only once that filesystem is open (the map does
    /// not wait for a replay) and its journal was replayed.
    fn replayed_ranges(&mut self, as_of: usize) -> Vec<(u64, u64, usize)> {
        let fs = match self.views.get(&as_of).and_then(|v| v.fs.as_ref()) {
            Some(Ok(fs)) => std::sync::Arc::clone(fs),
            _ => return Vec::new(),
        };
        let Some(replayed) = fs.as_any().downcast_ref::<Ext4>().and_then(Ext4::replayed) else {
            return Vec::new();
        };
        let bs = fs.block_size();
        let mut out = Vec::new();
        for b in replayed.blocks() {
            let Some(Some(layer)) = replayed.journal_layer(b) else {
                continue;
            };
            let start = b.saturating_mul(bs);
            for (s, e) in self.disk_ranges(start, start.saturating_add(bs)) {
                out.push((s, e, layer));
            }
        }
        out
    }

    /// The cells (of `cells`, `cell` bytes each, on a disk of `size`)
    /// holding the volume in view, unless that is the whole disk.
    pub(super) fn volume_cells(
        &mut self,
        size: u64,
        cell: u64,
        cells: usize,
    ) -> Option<VolumeCells> {
        let v = match self.volume() {
            Ok(Ok(v)) if v.role != crate::volume::Role::Disk => v,
            _ => return None,
        };
        let (name, len) = (crate::escape::printable(&v.name), v.len);
        let areas = v.geometry()?.disk_areas();
        let mut inside = vec![false; cells];
        let last = cells.checked_sub(1)?;
        for (start, n) in areas {
            let end = start.saturating_add(n).min(size);
            if start >= end {
                continue;
            }
            if let Some(cells) = inside.get_mut(cell_span(start, end, cell, last)) {
                cells.fill(true);
            }
        }
        Some(VolumeCells { name, len, inside })
    }
}

/// The cells (`cell` bytes each, the last one `last`) that bytes
/// `start..end` (not empty) touch.
pub(super) fn cell_span(
    start: u64,
    end: u64,
    cell: u64,
    last: usize,
) -> std::ops::RangeInclusive<usize> {
    let of = |at: u64| {
        at.checked_div(cell)
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(last)
            .min(last)
    };
    of(start)..=of(end.saturating_sub(1))
}
