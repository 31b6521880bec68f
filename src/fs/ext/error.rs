//! Errors of the ext2/3/4 decoder: the top-level split of ext4-view (I/O,
//! corruption, unsupported), each naming the structure, field and offset.
use crate::block::BlockError;

/// An error decoding an ext2/3/4 filesystem.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A structure whose value cannot be right. `offset` is the absolute
    /// byte offset of the field (or of the structure) on the disk.
    #[error("corrupt {structure} at {offset:#x}: {field}: {detail}")]
    Corrupt {
        structure: &'static str,
        field: &'static str,
        offset: u64,
        detail: String,
    },
    /// Something valid that layerscope does not decode (yet): encrypted or
    /// compressed contents, values stored in other inodes.
    #[error("unsupported: {what}")]
    Unsupported { what: String },
    /// Not an ext2/3/4 filesystem at all.
    #[error("no ext2/3/4 filesystem found: {detail}")]
    NotExt { detail: String },
    /// Not a filesystem of the kind tried (no magic, or a header no such
    /// filesystem can have): the caller tries the next kind.
    #[error("no {fs} filesystem found: {detail}")]
    NotThisFs { fs: &'static str, detail: String },
    /// A path that does not exist.
    #[error("{path}: not found: {detail}")]
    NotFound { path: String, detail: String },
    /// Reading the disk failed.
    #[error(transparent)]
    Io(#[from] BlockError),
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

    /// A stored checksum that does not match the computed one.
    pub fn checksum(
        structure: &'static str,
        field: &'static str,
        offset: u64,
        stored: u32,
        computed: u32,
    ) -> Self {
        FsError::corrupt(
            structure,
            field,
            offset,
            format!("checksum {stored:#010x} does not match the computed {computed:#010x}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_structure_offset_field_and_expectation() {
        let e = FsError::corrupt("extent node", "eh_magic", 0x1234, "0x0000, expected 0xf30a");
        assert_eq!(
            e.to_string(),
            "corrupt extent node at 0x1234: eh_magic: 0x0000, expected 0xf30a"
        );
        let e = FsError::checksum("inode", "i_checksum", 0x400, 1, 2);
        assert_eq!(
            e.to_string(),
            "corrupt inode at 0x400: i_checksum: checksum 0x00000001 does not match the computed 0x00000002"
        );
        let e = FsError::Unsupported {
            what: "inode 13: encrypted contents".into(),
        };
        assert_eq!(e.to_string(), "unsupported: inode 13: encrypted contents");
    }
}
