//! The worker's views of the disk itself: hex bytes with the layer of
//! each row, and the hit map grid (static owners from the map, or what
//! reads were served from).
use super::{Worker, MAX_CELLS};
use crate::block::map::MapIter;
use crate::block::{BlockError, BlockSource};
use crate::ui::msg::{CellOwner, Grid, HexData, HitMode};

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

impl Worker {
    pub(super) fn hex(
        &mut self,
        as_of: usize,
        offset: u64,
        len: u64,
    ) -> Result<HexData, BlockError> {
        let view = self.view(as_of)?;
        let mut bytes = vec![0u8; len as usize];
        view.cache.read_at(offset, &mut bytes)?;
        let owners = (0..len.div_ceil(16))
            .map(|row| {
                let at = offset + row * 16;
                view.reader
                    .owner(at, 16.min(len - row * 16))
                    .map(|o| o.layer)
            })
            .collect::<Result<_, _>>()?;
        Ok(HexData {
            as_of,
            offset,
            bytes,
            owners,
        })
    }

    pub(super) fn grid(
        &mut self,
        as_of: usize,
        cells: usize,
        mode: HitMode,
    ) -> Result<Grid, BlockError> {
        let layers = as_of + 1;
        let steps = if self.chain.layers.iter().any(|l| l.nbd.is_some()) {
            MAX_REMOTE_MAP_STEPS
        } else {
            MAX_MAP_STEPS
        };
        let view = self.view(as_of)?;
        let size = view.reader.len();
        let cells = cells.clamp(1, MAX_CELLS);
        let cell = size.div_ceil(cells as u64).max(1);
        let mut out = vec![CellOwner::NotRead; cells];
        let mut bytes = vec![0u64; layers];
        let mut nowhere = 0;
        match mode {
            HitMode::Static => {
                if view.map.is_none() {
                    let mut map = Vec::new();
                    for e in MapIter::new(&view.reader)
                        .with_budget(steps)
                        .take(MAX_MAP_ENTRIES)
                    {
                        let e = e?;
                        let owner = if e.present {
                            CellOwner::Layer(as_of.saturating_sub(e.depth as usize))
                        } else {
                            CellOwner::Nowhere
                        };
                        map.push((e.start, e.start + e.length, owner));
                    }
                    view.map = Some(map);
                }
                for &(start, end, owner) in view.map.iter().flatten() {
                    match owner {
                        CellOwner::Layer(l) => bytes[l.min(layers - 1)] += end - start,
                        _ => nowhere += end - start,
                    }
                    for c in &mut out[(start / cell) as usize..=((end - 1) / cell) as usize] {
                        // The topmost layer with anything in the cell wins:
                        // a small overlay write stays visible.
                        *c = match (*c, owner) {
                            (CellOwner::Layer(a), CellOwner::Layer(b)) => {
                                CellOwner::Layer(a.max(b))
                            }
                            (CellOwner::Layer(a), _) => CellOwner::Layer(a),
                            (_, o) => o,
                        };
                    }
                }
            }
            HitMode::Runtime => {
                let hits = view.reader.hits();
                let step = hits.cell_size().max(1);
                for (i, c) in out.iter_mut().enumerate() {
                    let (start, end) = (i as u64 * cell, ((i as u64 + 1) * cell).min(size));
                    let mut at = start;
                    while at < end {
                        *c = match (*c, CellOwner::from(hits.served(at))) {
                            (CellOwner::Layer(a), CellOwner::Layer(b)) => {
                                CellOwner::Layer(a.max(b))
                            }
                            (CellOwner::Layer(a), _) => CellOwner::Layer(a),
                            (CellOwner::Nowhere, CellOwner::NotRead) => CellOwner::Nowhere,
                            (_, o) => o,
                        };
                        at += step;
                    }
                }
                let (per_layer, none) = hits.totals();
                // Over NBD the server's layers, as deep as reads found them.
                bytes.resize(bytes.len().max(per_layer.len()), 0);
                for (i, t) in per_layer.iter().enumerate() {
                    bytes[i] = t.bytes;
                }
                nowhere = none.bytes;
            }
        }
        Ok(Grid {
            mode,
            as_of,
            cells: out,
            bytes,
            nowhere,
        })
    }
}
