//! A raw image: the file's bytes are the disk. Allocation comes from the
//! kernel (SEEK_DATA/SEEK_HOLE); a hole is a range that reads as zeros and,
//! like qemu, is reported as held (`Zero`), never as unallocated: a raw
//! file has no backing file to fall through to.
//!
//! qemu counts a disk in 512-byte sectors, so a file whose length is not a
//! whole number of sectors is a disk rounded up: the tail past the end of
//! the file reads as zeros and is mapped as a zero range of this layer.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::sync::Arc;

use crate::block::storage::Storage;
use crate::block::{check_range, BlockError, BlockSource, Extent, HostRun, Status, Stored};
use crate::bytes::{u64_of, us};

/// A raw disk image.
pub struct RawFile {
    path: String,
    storage: Arc<dyn Storage>,
}

impl RawFile {
    /// Wraps a file as a raw disk.
    pub fn new(path: &str, storage: Arc<dyn Storage>) -> Self {
        RawFile {
            path: path.to_owned(),
            storage,
        }
    }

    /// The underlying file.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The disk's size: the file's length rounded up to whole sectors.
    fn size(&self) -> u64 {
        self.storage.len().div_ceil(SECTOR).saturating_mul(SECTOR)
    }
}

/// qemu's sector (`BDRV_SECTOR_SIZE`).
const SECTOR: u64 = 512;

impl BlockSource for RawFile {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.path, self.size(), offset, u64_of(buf.len()))?;
        // The part inside the file, then the tail of the last sector.
        let in_file = us(self.storage.len().saturating_sub(offset)).min(buf.len());
        // in_file <= buf.len(): the line above.
        let (head, tail) = buf.split_at_mut(in_file);
        tail.fill(0);
        self.storage
            .read_exact_at(offset, head)
            .map_err(|e| BlockError::io(&self.path, "reading", offset, e))
    }

    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        let file_len = self.storage.len();
        let mut batch: Vec<(u64, &mut [u8])> = Vec::new();
        for (offset, buf) in reqs.iter_mut() {
            check_range(&self.path, self.size(), *offset, u64_of(buf.len()))?;
            let in_file = us(file_len.saturating_sub(*offset)).min(buf.len());
            let (head, tail) = buf.split_at_mut(in_file);
            tail.fill(0);
            if !head.is_empty() {
                batch.push((*offset, head));
            }
        }
        let first = batch.first().map_or(0, |b| b.0);
        self.storage
            .read_many(&mut batch)
            .map_err(|e| BlockError::io(&self.path, "reading", first, e))
    }

    fn remote(&self) -> bool {
        self.storage.remote()
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        check_range(&self.path, self.size(), offset, len)?;
        let file_len = self.storage.len();
        if offset >= file_len {
            // The tail of the last sector, past the end of the file.
            return Ok(vec![Extent {
                offset,
                len,
                status: Status::Zero,
                compressed: false,
                host_offset: Some(offset),
                reads_zero: false,
            }]);
        }
        // check_range proved offset + len fits; offset < end.
        let end = offset.saturating_add(len).min(file_len);
        let (data, run_end) = match self
            .storage
            .next_run(offset)
            .map_err(|e| BlockError::io(&self.path, "asking for holes", offset, e))?
        {
            Some((data, run_end)) => (data, run_end.clamp(offset.saturating_add(1), end)),
            None => (true, end),
        };
        Ok(vec![Extent {
            offset,
            len: run_end.saturating_sub(offset),
            status: if data { Status::Data } else { Status::Zero },
            compressed: false,
            host_offset: Some(offset),
            reads_zero: false,
        }])
    }

    /// The range itself, up to the end of the file: the disk's bytes are
    /// the file's. Holes inside it would be copied as zeros; a stream asks
    /// only for the data runs `locate_exact` found.
    fn stored(&self, offset: u64, len: u64) -> Result<Option<HostRun<'_>>, BlockError> {
        check_range(&self.path, self.size(), offset, len)?;
        let in_file = self.storage.len().saturating_sub(offset).min(len);
        Ok(self
            .storage
            .local_file()
            .filter(|_| in_file > 0)
            .map(|file| {
                HostRun::Stored(Stored {
                    file,
                    host: offset,
                    len: in_file,
                })
            }))
    }

    fn locate_exact(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        crate::block::first_extent(self.block_status(offset, len)?, &self.path, offset)
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.path, self.size(), offset, len)?;
        // Holes read as zeros: no need to ask the kernel where they are.
        Ok(Extent {
            offset,
            len,
            status: Status::Data,
            compressed: false,
            host_offset: Some(offset),
            reads_zero: false,
        })
    }
}
