//! Which chain layer holds a volume's bytes: its disk areas walked with the
//! layered reader's block status (the static map, from metadata only; no
//! data is read). The walk is bounded by a number of status queries, so a
//! volume over a badly fragmented chain costs a known amount; a cut-short
//! walk says how far it got.
use serde::Serialize;

use crate::block::layered::{LayeredReader, StatusCache};
use crate::block::BlockError;

use super::Volume;

/// Most block-status answers used for one volume.
pub const MAX_QUERIES: u64 = 100_000;

/// Bytes of a volume held by one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Share {
    /// The layer (0 is the base); `None`: no layer holds them (zeros).
    pub layer: Option<usize>,
    pub bytes: u64,
}

/// The shares of a volume, top layer first, then `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Shares {
    pub shares: Vec<Share>,
    /// Bytes not looked at because the query budget ran out.
    pub unknown: u64,
}

/// How many bytes of `volume` each layer of `reader` holds.
///
/// # Errors
/// The layers' metadata errors.
pub fn shares(reader: &LayeredReader, volume: &Volume) -> Result<Shares, BlockError> {
    let mut out = Shares::default();
    let Some(g) = volume.geometry() else {
        return Ok(out);
    };
    let top = reader.layer_count().saturating_sub(1);
    let mut cache = StatusCache::default();
    let mut budget = MAX_QUERIES;
    let size = crate::block::BlockSource::len(reader);
    for (start, len) in g.disk_areas() {
        let end = start.saturating_add(len).min(size);
        let mut at = start;
        while at < end {
            if budget == 0 {
                out.unknown = out.unknown.saturating_add(end.saturating_sub(at));
                break;
            }
            budget = budget.saturating_sub(1);
            let e = reader.map_entry_cached(at, end.saturating_sub(at), &mut cache)?;
            let n = e.length.max(1).min(end.saturating_sub(at));
            let layer = e
                .present
                .then(|| top.checked_sub(usize::try_from(e.depth).unwrap_or(usize::MAX)))
                .flatten();
            match out.shares.iter_mut().find(|s| s.layer == layer) {
                Some(s) => s.bytes = s.bytes.saturating_add(n),
                None => out.shares.push(Share { layer, bytes: n }),
            }
            at = at.saturating_add(n);
        }
    }
    out.shares
        .sort_by_key(|s| std::cmp::Reverse(s.layer.map_or(0, |l| l.saturating_add(1))));
    Ok(out)
}
