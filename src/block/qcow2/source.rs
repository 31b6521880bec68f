//! A layer as a [`BlockSource`]: reads (data clusters from the file,
//! compressed ones inflated, the rest zeros), batches of reads, block
//! status and where the bytes are stored.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use super::l2::{Kind, L1E_OFFSET_MASK};
use super::{Qcow2Layer, Run};
use crate::block::{check_range, BlockError, BlockSource, Extent, HostRun, Status, Stored};
use crate::bytes::{u64_of, us};

/// A read that could not go on: a run that is empty or does not fit where
/// it must (a bug, not bad input, but never a panic or an endless loop).
fn stalled(path: &str, pos: u64) -> BlockError {
    BlockError::Internal {
        what: format!("{path}: a read made no progress at guest offset {pos:#x}"),
    }
}

fn status_of(run: &Run) -> Extent {
    let (status, compressed) = match run.kind {
        Kind::Normal { .. } => (Status::Data, false),
        Kind::Compressed { .. } => (Status::Data, true),
        Kind::ZeroPlain | Kind::ZeroAlloc { .. } => (Status::Zero, false),
        Kind::UnallocatedPlain | Kind::UnallocatedAlloc { .. } => (Status::Unallocated, false),
    };
    Extent {
        offset: 0,
        len: run.len,
        status,
        compressed,
        host_offset: run.host,
        reads_zero: false,
    }
}

impl Qcow2Layer {
    /// `piece` (at guest offset `pos`) from the compressed cluster
    /// `descriptor` names.
    fn fill_compressed(
        &self,
        descriptor: u64,
        pos: u64,
        piece: &mut [u8],
    ) -> Result<(), BlockError> {
        if self.data.is_some() {
            return Err(BlockError::corrupt(
                &self.path,
                "L2 entry",
                pos,
                "a compressed cluster in an image with an external data file (qemu refuses these)",
            ));
        }
        let cluster = self.decompressed(descriptor)?;
        // A read's compressed run stays in one cluster (runs merge
        // compressed units only for block status).
        let at = us(pos & self.cluster_mask);
        let from = cluster
            .get(at..)
            .and_then(|c| c.get(..piece.len()))
            .ok_or_else(|| BlockError::Internal {
                what: format!(
                    "{}: a compressed run at guest offset {pos:#x} passes its cluster",
                    self.path
                ),
            })?;
        piece.copy_from_slice(from);
        Ok(())
    }
}

impl BlockSource for Qcow2Layer {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.header.size
    }

    fn map_missing(&self, offset: u64) -> bool {
        if !self.storage.remote() {
            return false;
        }
        // An L1 slice not held is a read too.
        let Some(entry) = self.l1.peek(offset >> self.l1_shift) else {
            return true;
        };
        let table = entry & L1E_OFFSET_MASK;
        table != 0 && self.l2_cache.lock().is_ok_and(|c| !c.contains(&table))
    }

    fn warm_map(&self, offset: u64) {
        if let Err(e) = self.l2_table(offset >> self.l1_shift) {
            tracing::debug!("{}: fetching a map ahead: {e}", self.path);
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.path, self.header.size, offset, u64_of(buf.len()))?;
        // check_range proved the sum fits.
        let end = offset.saturating_add(u64_of(buf.len()));
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let run = self.run_at(pos, end, false)?;
            let n = us(run.len).min(rest.len());
            // n <= rest.len(): the line above.
            let (piece, tail) = rest.split_at_mut(n);
            rest = tail;
            if n == 0 {
                return Err(stalled(&self.path, pos));
            }
            match run.kind {
                Kind::Normal { .. } => {
                    let host = run.host.unwrap_or(0);
                    let data = self.data_storage();
                    data.read_exact_at(host, piece).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            BlockError::corrupt(
                                &self.path,
                                "data cluster",
                                host,
                                format!(
                                    "guest offset {pos:#x} maps past the end of the {} ({} bytes)",
                                    if self.data.is_some() {
                                        "data file"
                                    } else {
                                        "file"
                                    },
                                    data.len()
                                ),
                            )
                        } else {
                            BlockError::io(&self.path, "reading a data cluster", host, e)
                        }
                    })?;
                }
                Kind::Compressed { descriptor } => self.fill_compressed(descriptor, pos, piece)?,
                _ => piece.fill(0),
            }
            pos = pos.saturating_add(u64_of(n));
        }
        Ok(())
    }

    /// The ranges mapped as [`Qcow2Layer::read_at`] maps them; the data
    /// clusters of all of them read in one [`crate::block::storage::Storage::read_many`] (in
    /// flight together over a remote file).
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        let mut batch: Vec<(u64, &mut [u8])> = Vec::new();
        for (offset, buf) in reqs.iter_mut() {
            let offset = *offset;
            check_range(&self.path, self.header.size, offset, u64_of(buf.len()))?;
            let end = offset.saturating_add(u64_of(buf.len()));
            let mut pos = offset;
            let mut rest: &mut [u8] = buf;
            while !rest.is_empty() {
                let run = self.run_at(pos, end, false)?;
                let n = us(run.len).min(rest.len());
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                if n == 0 {
                    return Err(stalled(&self.path, pos));
                }
                match run.kind {
                    Kind::Normal { .. } => batch.push((run.host.unwrap_or(0), piece)),
                    Kind::Compressed { descriptor } => {
                        self.fill_compressed(descriptor, pos, piece)?
                    }
                    _ => piece.fill(0),
                }
                pos = pos.saturating_add(u64_of(n));
            }
        }
        let first = batch.first().map_or(0, |b| b.0);
        let data = self.data_storage();
        let file_len = data.len();
        if let Some((host, _)) = batch
            .iter()
            .find(|(h, b)| h.checked_add(u64_of(b.len())).is_none_or(|e| e > file_len))
        {
            return Err(BlockError::corrupt(
                &self.path,
                "data cluster",
                *host,
                format!("a data cluster maps past the end of the file ({file_len} bytes)"),
            ));
        }
        data.read_many(&mut batch)
            .map_err(|e| BlockError::io(&self.path, "reading data clusters", first, e))
    }

    fn remote(&self) -> bool {
        self.storage.remote()
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        // One run per call: callers loop, and a run never costs more than
        // the units it covers (qemu's block_status does the same).
        let mut e = self.locate(offset, len)?;
        // The heuristic counts this file's refcounts; with an external data
        // file the data clusters are not among them.
        if e.status == Status::Data
            && !e.compressed
            && self.data.is_none()
            && self.metadata_prealloc()
        {
            if let Some(host) = e.host_offset {
                // qemu's recursion into the file for preallocated
                // metadata (`BDRV_BLOCK_RECURSE`), as for the other formats.
                crate::block::image::recurse_into_file(
                    self.storage.as_ref(),
                    &self.path,
                    &mut e,
                    host,
                )?;
            }
        }
        Ok(vec![e])
    }

    /// A run of plain data clusters with contiguous host offsets, in a
    /// local file, cut where the host file has a hole; a run that starts
    /// in a hole (metadata preallocation, a discarded range) is that hole,
    /// which reads as zeros. A run that passes the end of the file is left
    /// to `read_at`, which reports it.
    fn stored(&self, offset: u64, len: u64) -> Result<Option<HostRun<'_>>, BlockError> {
        check_range(&self.path, self.header.size, offset, len)?;
        // check_range proved the sum fits.
        let run = self.run_at(offset, offset.saturating_add(len), false)?;
        let (Kind::Normal { .. }, Some(host)) = (run.kind, run.host) else {
            return Ok(None);
        };
        let data = self.data_storage();
        let Some(file) = data.local_file() else {
            return Ok(None);
        };
        let n = run.len.min(len);
        if n == 0 || host.checked_add(n).is_none_or(|end| end > data.len()) {
            return Ok(None);
        }
        let stored = |n: u64| Stored { file, host, len: n };
        let next = data
            .next_run(host)
            .map_err(|e| BlockError::io(&self.path, "asking for holes", host, e))?;
        Ok(match next {
            Some((true, end)) => Some(HostRun::Stored(stored(n.min(end.saturating_sub(host))))),
            Some((false, end)) => Some(HostRun::Hole(n.min(end.saturating_sub(host)))),
            // The filesystem cannot tell: all of it is data.
            None => Some(HostRun::Stored(stored(n))),
        }
        .filter(|r| !r.is_empty()))
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.path, self.header.size, offset, len)?;
        // check_range proved the sum fits.
        let run = self.run_at(offset, offset.saturating_add(len), true)?;
        let mut e = status_of(&run);
        e.offset = offset;
        Ok(e)
    }
}
