//! Where a volume's bytes come from in a layered disk, for a wrapper that
//! serves some of them from elsewhere: the replayed view of a journal
//! serves a block from the journal's copy, held by some layer, and says so
//! in the hit map ("journal of layer L").
//!
//! A volume is a window of the disk (the whole disk, a partition); the
//! trait hides the window, so wrappers above a volume never learn where it
//! sits.
use std::sync::Arc;

use crate::block::layered::LayeredReader;
use crate::block::BlockError;

/// Which layer serves a volume's bytes, and where to record what a
/// wrapper over the volume served.
pub trait Origin: Send + Sync {
    /// The layer serving the volume byte at `offset` (`None`: no layer
    /// holds it, it reads as zeros).
    ///
    /// # Errors
    /// The layers' metadata errors.
    fn layer_at(&self, offset: u64) -> Result<Option<usize>, BlockError>;

    /// Records in the hit map that the volume range `[offset, offset +
    /// len)` was served from a journal copy held by `layer`.
    fn record_journal(&self, layer: Option<usize>, offset: u64, len: u64);
}

/// A contiguous window of a layered disk starting at `base`.
pub struct Window {
    pub reader: Arc<LayeredReader>,
    pub base: u64,
}

impl Origin for Window {
    fn layer_at(&self, offset: u64) -> Result<Option<usize>, BlockError> {
        let at = self.base.saturating_add(offset);
        Ok(self.reader.owner(at, 1)?.layer)
    }

    fn record_journal(&self, layer: Option<usize>, offset: u64, len: u64) {
        self.reader
            .hits()
            .record_journal(layer, self.base.saturating_add(offset), len);
    }
}
