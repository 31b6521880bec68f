//! Errors of the ext2/3/4 decoder: the top-level split of ext4-view (I/O,
//! corruption, unsupported), each naming the structure, field and offset.
use crate::block::BlockError;

/// An error decoding an ext2/3/4 filesystem.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A structure whose value cannot be right.
    #[error("corrupt {structure} at {offset:#x}: {field}: {detail}")]
    Corrupt {
        structure: &'static str,
        field: &'static str,
        offset: u64,
        detail: String,
    },
    /// Not an ext2/3/4 filesystem at all.
    #[error("no ext2/3/4 filesystem found: {detail}")]
    NotExt { detail: String },
    /// A path that does not exist.
    #[error("{path}: not found: {detail}")]
    NotFound { path: String, detail: String },
    /// Reading the disk failed.
    #[error(transparent)]
    Block(#[from] BlockError),
}

impl FsError {
    /// Shorthand for [`FsError::Corrupt`].
    pub fn corrupt(
        structure: &'static str,
        field: &'static str,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        FsError::Corrupt {
            structure,
            field,
            offset,
            detail: detail.into(),
        }
    }
}
