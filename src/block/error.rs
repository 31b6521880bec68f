//! Errors of the block layer. Every variant names the file (or layer) and,
//! where there is one, the offset, so a user can find the bad bytes.
//!
//! Causes (`io::Error`s) are kept as `source()`, not repeated in the
//! message: print with `{:#}` (anyhow) to get the whole line.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::io;

/// An error while opening or reading a block source.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A backing chain names a file that is already in the chain.
    #[error("backing chain loop: {chain}")]
    BackingLoop { chain: String },

    /// The chain is deeper than [`crate::block::chain::MAX_CHAIN_DEPTH`].
    #[error("{overlay}: backing chain deeper than {limit} layers")]
    ChainTooDeep { overlay: String, limit: usize },

    /// A server could not be reached or refused the handshake.
    #[error("{uri}: cannot connect")]
    Connect {
        uri: String,
        #[source]
        source: io::Error,
    },

    /// On-disk metadata that cannot be right.
    #[error("{path}: corrupt {structure} at offset {offset:#x}: {detail}")]
    Corrupt {
        path: String,
        structure: &'static str,
        offset: u64,
        detail: String,
    },

    /// The file has no bytes at all.
    #[error("{path}: empty file (0 bytes), not a disk image")]
    EmptyFile { path: String },

    /// A bug in layerscope rather than bad input.
    #[error("internal error: {what}")]
    Internal { what: String },

    /// Reading the file failed.
    #[error("{path}: {action} at offset {offset:#x}")]
    Io {
        path: String,
        action: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },

    /// The path is a directory.
    #[error("{path}: is a directory, not a disk image")]
    IsDirectory { path: String },

    /// An overlay's backing file could not be opened.
    #[error("{overlay}: cannot open backing file {name:?} (tried {tried})")]
    MissingBacking {
        overlay: String,
        name: String,
        tried: String,
        #[source]
        source: io::Error,
    },

    /// A qcow2 image's external data file could not be opened.
    #[error("{image}: cannot open its external data file {name:?} (tried {tried})")]
    MissingDataFile {
        image: String,
        name: String,
        tried: String,
        #[source]
        source: io::Error,
    },

    /// A VMDK descriptor names an extent file that cannot be opened.
    #[error("{descriptor}: cannot open extent {name:?} (descriptor line at offset {line:#x}, tried {tried}): {reason}")]
    MissingExtent {
        descriptor: String,
        line: u64,
        name: String,
        tried: String,
        reason: String,
    },

    /// The file is an image of a format we do not read.
    #[error("{path}: not an image format layerscope reads (looks like {detected}); use --format raw to read its bytes as a raw disk")]
    NotAnImage { path: String, detected: String },

    /// The file could not be opened.
    #[error("{path}: cannot open")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },

    /// A read past the end of a disk (a caller's mistake or a bad argument).
    #[error("{name}: range {offset:#x}+{len:#x} is beyond the end of the disk ({size} bytes)")]
    OutOfRange {
        name: String,
        offset: u64,
        len: u64,
        size: u64,
    },

    /// The path is a FIFO, a socket or a character device: not a disk, and
    /// opening or reading it could block forever.
    #[error(
        "{path}: is a {kind}, not a disk image (layerscope reads regular files and block devices)"
    )]
    SpecialFile { path: String, kind: &'static str },

    /// A valid image using something layerscope does not implement.
    #[error("{path}: unsupported: {what}")]
    Unsupported { path: String, what: String },
}

impl BlockError {
    /// Shorthand for [`BlockError::Corrupt`].
    pub fn corrupt(
        path: &str,
        structure: &'static str,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        BlockError::Corrupt {
            path: path.to_owned(),
            structure,
            offset,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`BlockError::Io`].
    pub fn io(path: &str, action: &'static str, offset: u64, source: io::Error) -> Self {
        BlockError::Io {
            path: path.to_owned(),
            action,
            offset,
            source,
        }
    }

    /// Shorthand for [`BlockError::Unsupported`].
    pub fn unsupported(path: &str, what: impl Into<String>) -> Self {
        BlockError::Unsupported {
            path: path.to_owned(),
            what: what.into(),
        }
    }
}
