//! One place that knows every image format reader besides qcow2 and raw:
//! opening a file in a given format as a chain layer, and reading the
//! identity a child uses to name it as its parent.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::Arc;

use crate::block::chain::{ChainOptions, Opener};
use crate::block::image::FormatLayer;
use crate::block::probe::Format;
use crate::block::storage::Storage;
use crate::block::BlockError;

/// Opens `path` (its bytes in `storage`) as a layer of `format`; other
/// files of the image (VMDK extents) are opened through `opener`.
///
/// # Errors
/// The format reader's errors; `Internal` for qcow2, raw and NBD, which
/// the chain opens itself.
pub fn open(
    format: Format,
    path: &str,
    storage: Arc<dyn Storage>,
    opener: &dyn Opener,
    opts: &ChainOptions,
) -> Result<FormatLayer, BlockError> {
    match format {
        Format::Vmdk => crate::block::vmdk::VmdkImage::layer(path, storage, opener),
        Format::Vpc => crate::block::vhd::VhdImage::layer(path, storage),
        Format::Vhdx => crate::block::vhdx::VhdxImage::layer(
            path,
            storage,
            crate::block::vhdx::Options {
                log_as_is: opts.log_as_is,
            },
        ),
        Format::Vdi => crate::block::vdi::VdiImage::layer(path, storage),
        Format::Qcow2 | Format::Raw | Format::Nbd => Err(BlockError::Internal {
            what: format!("{path}: {} is not opened by block::formats", format.name()),
        }),
    }
}

/// The identity a child names this image by, if it has one (see
/// [`crate::block::image::ParentRef::identity`]).
pub fn identity(format: Format, storage: &dyn Storage) -> Option<[u8; 16]> {
    match format {
        Format::Vpc => crate::block::vhd::identity(storage),
        Format::Vhdx => crate::block::vhdx::identity(storage),
        Format::Vdi => crate::block::vdi::identity(storage),
        Format::Vmdk | Format::Qcow2 | Format::Raw | Format::Nbd => None,
    }
}
