//! Where the journal's blocks are: journal block `n` is logical block `n`
//! of the journal inode (its extent tree or indirect map, holes and all),
//! or block `start + n` of a journal device (`jbd2_journal_bmap`).
use std::sync::Arc;

use crate::block::BlockSource;
use crate::fs::ext::blockmap::Run;
use crate::fs::ext::FsError;

/// How journal blocks map to the bytes of a source.
#[derive(Clone, Debug)]
pub enum Layout {
    /// An inode's data runs (logical -> physical filesystem blocks),
    /// sorted by logical block.
    Inode { ino: u64, runs: Vec<Run> },
    /// A journal device: journal block 0 is device block `start`.
    Device { start: u64 },
}

/// The journal's blocks on their source.
#[derive(Clone)]
pub struct Log {
    /// The volume (internal journal) or the journal device.
    pub source: Arc<dyn BlockSource>,
    pub layout: Layout,
    pub block_size: u64,
    /// Journal blocks there are (the inode's size, or the device's),
    /// whatever `s_maxlen` says: `j_total_len`.
    pub total: u64,
}

impl Log {
    /// The byte offset of journal block `n` in the source.
    ///
    /// # Errors
    /// `Corrupt` for a block past the journal's end, in a hole of the
    /// journal inode, or outside the source.
    pub fn offset(&self, n: u64) -> Result<u64, FsError> {
        if n >= self.total {
            return Err(FsError::corrupt(
                "journal",
                "block",
                0,
                format!(
                    "journal block {n} is past the journal's end ({} blocks)",
                    self.total
                ),
            ));
        }
        let block = match &self.layout {
            Layout::Device { start } => start.checked_add(n),
            Layout::Inode { ino, runs } => {
                let i = runs.partition_point(|r| r.logical.saturating_add(r.len) <= n);
                match runs.get(i) {
                    Some(r) if r.logical <= n => {
                        r.physical.checked_add(n.saturating_sub(r.logical))
                    }
                    _ => {
                        return Err(FsError::corrupt(
                            "journal inode",
                            "block map",
                            0,
                            format!("journal block {n} is a hole in inode {ino}'s map"),
                        ))
                    }
                }
            }
        };
        block
            .and_then(|b| b.checked_mul(self.block_size))
            .filter(|o| {
                o.checked_add(self.block_size)
                    .is_some_and(|end| end <= self.source.len())
            })
            .ok_or_else(|| {
                FsError::corrupt(
                    "journal",
                    "block",
                    0,
                    format!("journal block {n} maps outside {}", self.source.name()),
                )
            })
    }

    /// Reads journal block `n`.
    ///
    /// # Errors
    /// As [`Log::offset`]; read errors.
    pub fn read(&self, n: u64) -> Result<Vec<u8>, FsError> {
        let at = self.offset(n)?;
        let mut buf = vec![0u8; usize::try_from(self.block_size).unwrap_or(0)];
        self.source.read_at(at, &mut buf)?;
        Ok(buf)
    }
}
