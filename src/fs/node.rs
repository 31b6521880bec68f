//! What every filesystem says about its files: nodes, their metadata,
//! directory entries and the runs their bytes live in. Names and targets
//! stay raw bytes here; they are escaped only where they are printed.
use std::ops::ControlFlow;

use super::{Filesystem, FsError};

/// A node of a filesystem: an inode number (ext, XFS), or for FAT the
/// volume offset of its directory entry. Opaque outside its filesystem.
pub type NodeId = u64;

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Unknown,
}

impl FileType {
    /// Every type, in declaration order.
    pub const ALL: [FileType; 8] = [
        FileType::Regular,
        FileType::Directory,
        FileType::Symlink,
        FileType::CharDevice,
        FileType::BlockDevice,
        FileType::Fifo,
        FileType::Socket,
        FileType::Unknown,
    ];

    /// From the type bits of a POSIX mode (`S_IFMT`).
    pub fn from_mode(mode: u32) -> FileType {
        match mode & 0o170_000 {
            0o100_000 => FileType::Regular,
            0o040_000 => FileType::Directory,
            0o120_000 => FileType::Symlink,
            0o020_000 => FileType::CharDevice,
            0o060_000 => FileType::BlockDevice,
            0o010_000 => FileType::Fifo,
            0o140_000 => FileType::Socket,
            _ => FileType::Unknown,
        }
    }

    /// From a directory entry's type code (Linux's `FT_*`, which ext2/3/4
    /// and XFS both store: 1 regular … 7 symlink); `None` for 0 (not
    /// recorded) and codes no filesystem defines.
    pub fn from_code(code: u8) -> Option<FileType> {
        Some(match code {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => return None,
        })
    }

    /// The directory entry type code (`FT_*`; 0 for unknown), as
    /// `debugfs ls -l` prints it in parentheses.
    pub fn code(self) -> u8 {
        match self {
            FileType::Regular => 1,
            FileType::Directory => 2,
            FileType::CharDevice => 3,
            FileType::BlockDevice => 4,
            FileType::Fifo => 5,
            FileType::Socket => 6,
            FileType::Symlink => 7,
            FileType::Unknown => 0,
        }
    }

    /// The type in debugfs's words (`regular`, `directory`, `symlink`,
    /// `character special`, …): the one vocabulary `stat`, `diff` and
    /// `blame` print for every filesystem.
    pub fn name(self) -> &'static str {
        match self {
            FileType::Regular => "regular",
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            FileType::CharDevice => "character special",
            FileType::BlockDevice => "block special",
            FileType::Fifo => "FIFO",
            FileType::Socket => "socket",
            FileType::Unknown => "bad type",
        }
    }

    /// One letter, as `ls -l` prints it.
    pub fn letter(self) -> char {
        match self {
            FileType::Regular => '-',
            FileType::Directory => 'd',
            FileType::Symlink => 'l',
            FileType::CharDevice => 'c',
            FileType::BlockDevice => 'b',
            FileType::Fifo => 'p',
            FileType::Socket => 's',
            FileType::Unknown => '?',
        }
    }
}

/// A time as the filesystem stores it, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 UTC.
    pub secs: i64,
    pub nsec: u32,
}

/// A node's metadata, in POSIX terms.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    pub node: NodeId,
    pub file_type: FileType,
    /// Permission bits and type bits, as `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    /// Bytes allocated to the node (data and map blocks).
    pub allocated: u64,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
    /// Creation time, where the filesystem records it.
    pub crtime: Option<Timestamp>,
    /// Generation number (tells a reused inode number from the old file).
    pub generation: Option<u32>,
    /// Device number of a device node (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// Flags by name (`extents`, `immutable`, `hidden`, `realtime`, …).
    pub flags: Vec<&'static str>,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DirEntry {
    /// The name as stored, raw bytes (a FAT long name is its UTF-8).
    pub name: Vec<u8>,
    pub node: NodeId,
    /// The type the entry records, where it records one (saves reading
    /// the node).
    pub file_type: Option<FileType>,
    /// Where the entry lies on the volume (for hex marks).
    pub offset: Option<u64>,
}

impl DirEntry {
    /// `.` or `..`.
    pub fn is_dot_or_dotdot(&self) -> bool {
        self.name == b"." || self.name == b".."
    }
}

/// What a [`Run`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// File data.
    Data,
    /// Allocated but unwritten: reads as zeros.
    Unwritten,
    /// The file's map (indirect blocks, extent or B+tree nodes) at the
    /// given level, as the filesystem's tools name it.
    Meta { level: u8 },
    /// Extended attributes kept outside the node (an ext attribute
    /// block, an XFS attribute fork's blocks): part of the file for
    /// `blame` and the hit map, never part of its content.
    Attr,
}

impl RunKind {
    /// File data (written or not), as opposed to the file's own
    /// structures.
    pub fn is_content(self) -> bool {
        matches!(self, RunKind::Data | RunKind::Unwritten)
    }
}

/// A run of a node: where bytes `logical..logical+len` of the file (for
/// data) live on the volume. All in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub logical: u64,
    /// Byte offset on the volume.
    pub physical: u64,
    pub len: u64,
    pub kind: RunKind,
}

/// Damage met while reading a directory or a map that did not stop the
/// read. Callers tell the two kinds apart: `lost` means part of what was
/// asked for is missing (entries not listed, file bytes read as zeros),
/// so `cat` must fail after writing what it could; a warning (a checksum
/// that does not match) is shown and the read is complete.
#[derive(Debug)]
pub struct Problem {
    pub error: FsError,
    pub lost: bool,
}

impl Problem {
    /// Part of the answer is missing because of `error`.
    pub fn lost(error: FsError) -> Problem {
        Problem { error, lost: true }
    }

    /// `error` was noticed; the answer is complete.
    pub fn warning(error: FsError) -> Problem {
        Problem { error, lost: false }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// [`Filesystem::lookup`] for filesystems that have nothing faster: one
/// directory listing per component.
///
/// # Errors
/// `NotFound` naming the missing component.
pub fn lookup_by_listing<F: Filesystem + ?Sized>(fs: &F, path: &[u8]) -> Result<NodeId, FsError> {
    let mut node = fs.root();
    for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        let mut found = None;
        let mut problems: Vec<Problem> = Vec::new();
        fs.read_dir(node, &mut problems, &mut |e| {
            if e.name == part {
                found = Some(e.node);
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        node = found.ok_or_else(|| FsError::NotFound {
            path: crate::escape::printable_bytes(path),
            detail: format!("no {:?}", crate::escape::printable_bytes(part)),
        })?;
    }
    Ok(node)
}

/// One extended attribute: its full name (prefix included) and value, raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}
