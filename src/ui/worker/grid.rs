//! The worker's views of the disk itself: hex bytes with the layer of
//! each row, and the hit map grid (static owners from the map, or what
//! reads were served from). Over NBD with allocation depths the layers
//! are the server's, numbered as a local chain would be (see
//! [`super::remote`]).
use super::{Worker, MAX_CELLS};
use crate::block::hitmap::Served;
use crate::block::map::MapIter;
use crate::block::{BlockError, BlockSource};
use crate::ui::msg::{CellOwner, Grid, HexData, HitMode, ServerLayers, VolumeCells};

/// Map entries kept per layer for the static hit map; past this the rest
/// of the disk shows as "not read" rather than using unbounded memory.
const MAX_MAP_ENTRIES: usize = 1 << 20;
/// Block status answers the static hit map asks for at most: local
/// metadata is cheap (as many as the entries kept), a server's answers
/// cost a round trip each, and a source whose size is a claim (an NBD
/// export of 2^63 bytes answered 4 GiB at a time) maps only this far; the
/// rest shows as not read.
const MAX_MAP_STEPS: u64 = MAX_MAP_ENTRIES as u64;
const MAX_REMOTE_MAP_STEPS: u64 = 1 << 14;

/// The topmost layer with anything in a cell wins (a small overlay write
/// stays visible); a cell no layer holds beats one not read.
fn merge(c: CellOwner, o: CellOwner) -> CellOwner {
    match (c, o) {
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
            let at = offset + row * 16;
            while at >= run_end {
                match run.next() {
                    Some(&(n, l)) => {
                        run_end += n;
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

    /// The static map (start, end, owner), computed once per view.
    fn static_map(&mut self, as_of: usize) -> Result<(), BlockError> {
        if self.view(as_of)?.map.is_some() {
            return Ok(());
        }
        let mut map = Vec::new();
        if let Some(r) = self.remote()? {
            for &(start, end, depth) in &r.map {
                let owner = r
                    .layer_of(depth)
                    .map_or(CellOwner::Nowhere, CellOwner::Layer);
                map.push((start, end, owner));
            }
        } else {
            let steps = if self.chain.layers.iter().any(|l| l.nbd.is_some()) {
                MAX_REMOTE_MAP_STEPS
            } else {
                MAX_MAP_STEPS
            };
            let view = self.view(as_of)?;
            for e in MapIter::new(&view.reader)
                .with_budget(steps)
                .take(MAX_MAP_ENTRIES)
            {
                let e = e?;
                let owner = if e.present {
                    let depth = usize::try_from(e.depth).unwrap_or(usize::MAX);
                    CellOwner::Layer(as_of.saturating_sub(depth))
                } else {
                    CellOwner::Nowhere
                };
                map.push((e.start, e.start + e.length, owner));
            }
        }
        self.view(as_of)?.map = Some(map);
        Ok(())
    }

    pub(super) fn grid(
        &mut self,
        as_of: usize,
        cells: usize,
        mode: HitMode,
    ) -> Result<Grid, BlockError> {
        let server = self.remote()?.map(|r| ServerLayers {
            layers: r.layers,
            complete: r.complete,
        });
        let layers = server.map_or(as_of + 1, |s| s.layers);
        if mode == HitMode::Static {
            self.static_map(as_of)?;
        }
        let view = self.view(as_of)?;
        let size = view.reader.len();
        let cells = cells.clamp(1, MAX_CELLS);
        let cell = size.div_ceil(cells as u64).max(1);
        let last = cells - 1;
        let mut out = vec![CellOwner::NotRead; cells];
        let mut bytes = vec![0u64; layers];
        let mut nowhere = 0;
        match mode {
            HitMode::Static => {
                for &(start, end, owner) in view.map.iter().flatten() {
                    match owner {
                        CellOwner::Layer(l) => bytes[l.min(layers - 1)] += end - start,
                        _ => nowhere += end - start,
                    }
                    let first = usize::try_from(start / cell).unwrap_or(last).min(last);
                    let end_cell = usize::try_from((end - 1) / cell).unwrap_or(last).min(last);
                    for c in &mut out[first..=end_cell] {
                        *c = merge(*c, owner);
                    }
                }
            }
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
                    let (start, end) = (i as u64 * cell, ((i as u64 + 1) * cell).min(size));
                    let mut at = start;
                    while at < end {
                        let s = if server.is_some() {
                            hits.served_recorded(at)
                        } else {
                            hits.served(at)
                        };
                        *c = merge(*c, owner(s));
                        at += step;
                    }
                }
                let (per_layer, none) = hits.totals();
                match (hits.depth_totals(), server) {
                    (Some(top_first), Some(sv)) => {
                        for (d, t) in top_first.iter().enumerate() {
                            let l = sv.layers.saturating_sub(1).saturating_sub(d);
                            if let Some(b) = bytes.get_mut(l) {
                                *b += t.bytes;
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
        let volume = self.volume_cells(size, cell, cells);
        Ok(Grid {
            mode,
            as_of,
            cells: out,
            bytes,
            nowhere,
            server,
            volume,
        })
    }

    /// The cells (of `cells`, `cell` bytes each, on a disk of `size`)
    /// holding the volume in view, unless that is the whole disk.
    fn volume_cells(&mut self, size: u64, cell: u64, cells: usize) -> Option<VolumeCells> {
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
            let first = usize::try_from(start / cell).unwrap_or(last).min(last);
            let end_cell = usize::try_from((end - 1) / cell).unwrap_or(last).min(last);
            inside[first..=end_cell].fill(true);
        }
        Some(VolumeCells { name, len, inside })
    }
}
