//! Over NBD, the server's layers: an export is one layer here, but qemu's
//! `qemu:allocation-depth` context says which layer of the server's chain
//! holds each range (1 its top, 0 none). Numbered like a local chain
//! (layer 0 the base, the top the highest) they agree with what the same
//! chain shows opened locally; that needs the chain's depth, which the
//! server never states: it is the deepest depth found over the whole
//! disk, scanned once (the owner map needs that scan anyway), so numbers
//! never shift as reads find deeper layers.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::block::hitmap::MAX_DEPTHS;
use crate::block::nbd::NbdClient;
use crate::block::BlockError;

/// Ranges kept at most from the scan (past it the rest is not known).
const MAX_RANGES: usize = 1 << 20;
/// Bytes looked up per step of the scan: the client asks the server about
/// the rest of the disk at once and answers from what it was told, so a
/// step is a round trip only where the server answered in short pieces.
const STEP: u64 = 64 << 20;
/// Steps of the scan at most: an export whose size is a claim (2^63
/// bytes) is scanned this far (1 TiB), the rest not known.
const MAX_STEPS: u32 = 1 << 14;
/// Block-status round trips the scan may cost: a server answering in
/// short pieces stops it early (the rest not known) rather than holding
/// the worker for minutes.
const MAX_REQUESTS: u64 = 1 << 12;

/// The server's layers, from a scan of the whole disk.
pub struct Remote {
    client: Arc<NbdClient>,
    /// (start, end, depth) over the disk, depth as qemu gives it.
    pub map: Vec<(u64, u64, u32)>,
    /// Layers of the server's chain: the deepest depth found.
    pub layers: usize,
    /// The scan covered the whole disk (else `layers` is a floor).
    pub complete: bool,
}

impl Remote {
    /// Scans the export, when the server gives allocation depths.
    ///
    /// # Errors
    /// Block-status errors.
    pub fn scan(client: Arc<NbdClient>) -> Result<Option<Remote>, BlockError> {
        let size = client.info().size;
        let mut map: Vec<(u64, u64, u32)> = Vec::new();
        let mut at = 0u64;
        let mut complete = true;
        let mut steps = 0u32;
        let requests = || client.stats().requests.load(Ordering::Relaxed);
        let first = requests();
        while at < size {
            if steps == MAX_STEPS || requests().saturating_sub(first) > MAX_REQUESTS {
                complete = false;
                break;
            }
            steps = steps.saturating_add(1);
            let len = STEP.min(size.saturating_sub(at));
            let Some(runs) = client.served_depths(at, len)? else {
                return Ok(None);
            };
            for (n, depth) in runs {
                match map.last_mut() {
                    Some(last) if last.2 == depth && last.1 == at => {
                        last.1 = last.1.saturating_add(n);
                    }
                    _ => map.push((at, at.saturating_add(n), depth)),
                }
                at = at.saturating_add(n);
            }
            if map.len() >= MAX_RANGES {
                complete = at >= size;
                break;
            }
        }
        let deepest = map.iter().map(|m| m.2).max().unwrap_or(0);
        Ok(Some(Remote {
            client,
            map,
            // A depth is the server's claim (up to 2^32 - 1): the UI keeps
            // a row and a counter per layer, so it counts at most the
            // depths the hit map tells apart, and deeper ones as the base.
            layers: usize::try_from(deepest)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_DEPTHS),
            complete,
        }))
    }

    /// The layer (0 the base) at qemu depth `depth` (None for 0: no layer;
    /// one deeper than any found counts as the base).
    pub fn layer_of(&self, depth: u32) -> Option<usize> {
        let d = usize::try_from(depth).ok()?.checked_sub(1)?;
        Some(self.layers.saturating_sub(1).saturating_sub(d))
    }

    /// The layer serving each part of `[offset, offset + len)`: (length,
    /// layer) in order.
    ///
    /// # Errors
    /// Block-status errors.
    pub fn owners(&self, offset: u64, len: u64) -> Result<Vec<(u64, Option<usize>)>, BlockError> {
        Ok(self
            .client
            .served_depths(offset, len)?
            .unwrap_or_default()
            .into_iter()
            .map(|(n, d)| (n, self.layer_of(d)))
            .collect())
    }
}

impl super::Worker {
    /// The server's layers, over an NBD export that gives allocation
    /// depths (scanned once).
    pub(super) fn remote(&mut self) -> Result<Option<&Remote>, BlockError> {
        if self.remote.is_none() {
            let client = match self.chain.layers.as_slice() {
                [only] => only.nbd.clone(),
                _ => None,
            };
            self.remote = Some(match client {
                Some(c) => {
                    let start = std::time::Instant::now();
                    let r = Remote::scan(c)?;
                    if let Some(r) = &r {
                        tracing::info!(layers = r.layers, ranges = r.map.len(), complete = r.complete, ms = %start.elapsed().as_millis(), "server layers scanned");
                    }
                    r
                }
                None => None,
            });
        }
        Ok(self.remote.as_ref().and_then(Option::as_ref))
    }
}
