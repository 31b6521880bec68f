//! The demo chain compiled into the binary: a small ext4 base and two thin
//! overlays (one compressed) made by `assets/make-demo.sh`. It lets
//! `cargo run --release` show something real on a fresh machine, and gives
//! tests a chain that needs no external tools.
// The panic policy of issue 11, as everywhere outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::sync::Arc;

use crate::block::chain::{open_chain, Chain, ChainOptions, FileId, Opened, Opener};
use crate::block::storage::MemStorage;
use crate::block::BlockError;

/// The files, by the names their overlays use for them.
const FILES: &[(&str, &[u8])] = &[
    ("base.qcow2", include_bytes!("../assets/demo/base.qcow2")),
    (
        "update.qcow2",
        include_bytes!("../assets/demo/update.qcow2"),
    ),
    ("top.qcow2", include_bytes!("../assets/demo/top.qcow2")),
];

/// The directory the demo's files appear to live in.
pub const DIR: &str = "[demo]";

/// The demo's top image, as named in messages.
pub fn top_path() -> String {
    format!("{DIR}/top.qcow2")
}

/// Opens files from the embedded table.
pub struct DemoOpener;

impl Opener for DemoOpener {
    fn open(&self, path: &str) -> Result<Opened, BlockError> {
        let name = path.strip_prefix(DIR).map(|n| n.trim_start_matches('/'));
        let bytes = FILES
            .iter()
            .find(|(n, _)| Some(*n) == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| BlockError::Open {
                path: path.to_owned(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        Ok(Opened {
            storage: Arc::new(MemStorage::new(bytes)),
            id: FileId::Name(path.to_owned()),
        })
    }
}

/// Opens the embedded demo chain.
///
/// # Errors
/// Only if the embedded files are broken (a build problem).
pub fn open() -> Result<Chain, BlockError> {
    open_chain(&top_path(), ChainOptions::default(), &DemoOpener)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_chain_opens_with_three_layers() {
        let chain = super::open().unwrap();
        assert_eq!(chain.layers.len(), 3);
        assert_eq!(chain.layers[0].path, "[demo]/base.qcow2");
    }
}
