//! The hit map coloured by a persistent dirty bitmap of the top layer
//! (qcow2): the cells holding bytes the bitmap marks dirty, and the dirty
//! and clean bytes, as `map --bitmap NAME` and `nbdinfo
//! --map=qemu:dirty-bitmap:NAME` give them.
use super::{Worker, MAX_CELLS};
use crate::block::{BlockError, BlockSource};
use crate::ui::msg::{CellOwner, Grid, HitMode};

impl Worker {
    /// The grid of `cells` cells for bitmap `index` of the top layer (in
    /// the file's order, as [`crate::ui::msg::ChainInfo::bitmaps`] lists
    /// them); `as_of` only says which view the cells are laid out for.
    pub(super) fn bitmap_grid(
        &mut self,
        as_of: usize,
        cells: usize,
        index: usize,
    ) -> Result<Grid, BlockError> {
        let size = self.view(as_of)?.reader.len();
        let top = self
            .chain
            .top()
            .ok_or_else(|| BlockError::unsupported("", "an empty chain"))?;
        let Some(q) = top.qcow2.as_ref() else {
            return Err(BlockError::unsupported(
                &top.path,
                format!(
                    "persistent bitmaps are a qcow2 feature, and this is {}",
                    top.format.name()
                ),
            ));
        };
        let bitmaps = q.bitmaps()?;
        let Some(b) = bitmaps.get(index) else {
            return Err(BlockError::unsupported(
                &top.path,
                format!("no bitmap number {index}"),
            ));
        };
        let cells = cells.clamp(1, MAX_CELLS);
        let cell = size.div_ceil(crate::bytes::u64_of(cells)).max(1);
        let last = cells.saturating_sub(1);
        let mut out = vec![CellOwner::NotRead; cells];
        let (mut dirty, mut clean) = (0u64, 0u64);
        q.bitmap_runs(&b.name, &mut |offset, len, is_dirty| {
            if is_dirty {
                dirty = dirty.saturating_add(len);
            } else {
                clean = clean.saturating_add(len);
            }
            let end = offset.saturating_add(len).min(size);
            if offset < end {
                let span = super::grid::cell_span(offset, end, cell, last);
                for c in out.get_mut(span).unwrap_or_default() {
                    // A cell with any dirty byte is dirty.
                    if is_dirty || *c == CellOwner::NotRead {
                        *c = if is_dirty {
                            CellOwner::Dirty
                        } else {
                            CellOwner::Clean
                        };
                    }
                }
            }
            Ok(())
        })?;
        let volume = self.volume_cells(size, cell, cells);
        Ok(Grid {
            mode: HitMode::Bitmap(index),
            as_of,
            cells: out,
            bytes: Vec::new(),
            nowhere: 0,
            exact: true,
            journal: Vec::new(),
            server: None,
            volume,
            dirty: Some((dirty, clean)),
        })
    }
}
