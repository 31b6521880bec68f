//! A raw image: the file's bytes are the disk. Allocation comes from the
//! kernel (SEEK_DATA/SEEK_HOLE); a hole is a range that reads as zeros and,
//! like qemu, is reported as held (`Zero`), never as unallocated: a raw
//! file has no backing file to fall through to.
use std::sync::Arc;

use crate::block::storage::Storage;
use crate::block::{check_range, BlockError, BlockSource, Extent, Status};

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
}

impl BlockSource for RawFile {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.storage.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.path, self.storage.len(), offset, buf.len() as u64)?;
        self.storage
            .read_exact_at(offset, buf)
            .map_err(|e| BlockError::io(&self.path, "reading", offset, e))
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        check_range(&self.path, self.storage.len(), offset, len)?;
        let end = offset + len;
        let (data, run_end) = match self
            .storage
            .next_run(offset)
            .map_err(|e| BlockError::io(&self.path, "asking for holes", offset, e))?
        {
            Some((data, run_end)) => (data, run_end.clamp(offset + 1, end)),
            None => (true, end),
        };
        Ok(vec![Extent {
            offset,
            len: run_end - offset,
            status: if data { Status::Data } else { Status::Zero },
            compressed: false,
            host_offset: Some(offset),
            reads_zero: false,
        }])
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.path, self.storage.len(), offset, len)?;
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
