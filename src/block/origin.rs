//! Where a volume's bytes come from in a layered disk, for a wrapper that
//! serves some of them from elsewhere: the replayed view of a journal
//! serves a block from the journal's copy, held by some layer, and says so
//! in the hit map ("journal of layer L").
//!
//! A volume is a window of the disk (the whole disk, a partition) or
//! pieces of it (an LVM volume); the trait hides where it sits
//! (`crate::volume::layers::Origin` implements it over a volume's
//! geometry), so wrappers above a volume never learn.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
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
