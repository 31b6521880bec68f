//! Filesystems inside the disk. They read only through a
//! [`crate::block::BlockSource`] (a whole disk, a partition or a logical
//! volume, as of any layer), so a raw file, a qcow2 chain and an NBD export
//! look the same to them.
//!
//! One seam, [`Filesystem`], is what the CLI, the TUI, `diff` and `blame`
//! call: ext2/3/4 is its first implementation ([`ext`]); XFS and FAT plug in
//! behind it without touching those callers. What a caller needs that only
//! one filesystem has (ext's quick diff from inode-table slots, its jbd2
//! journal) is reached by downcasting through [`Filesystem::as_any`].
//!
//! The model is deliberately the intersection a person asks about: nodes
//! (inodes, or FAT directory entries) with POSIX-like metadata, directory
//! entries as raw bytes, the runs of the volume a file's bytes live in, and
//! structure [`report::Report`]s (superblock, group headers, an inode) whose
//! fields carry their offsets so the hex view can mark them.
use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::block::BlockSource;

pub mod ext;
pub mod fat;
pub mod node;
pub mod report;
pub mod xfs;

pub use ext::FsError;
pub use node::{DirEntry, FileType, Metadata, NodeId, Run, RunKind, Timestamp, Xattr};
pub use report::{GroupTable, Report, ReportField};

/// Which filesystem a [`Filesystem`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Fat12,
    Fat16,
    Fat32,
}

impl FsKind {
    /// The name `blkid` gives it (`TYPE=`).
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => "vfat",
        }
    }
}

/// A filesystem opened read-only on a volume.
///
/// Every method is bounded by what is really on the disk: listings stream
/// through callbacks (a caller that wants only the first screen stops the
/// walk with [`ControlFlow::Break`]), and damaged parts are reported while
/// the rest is still given.
pub trait Filesystem: Send + Sync {
    /// Which filesystem this is.
    fn kind(&self) -> FsKind;

    /// The volume it reads (offsets in reports and runs are relative to
    /// it).
    fn source(&self) -> &Arc<dyn BlockSource>;

    /// The allocation unit in bytes (block or cluster size).
    fn block_size(&self) -> u64;

    /// The volume label, raw bytes (escaped only at the output edge).
    fn label(&self) -> Option<Vec<u8>>;

    /// The filesystem UUID or serial number, as `blkid` prints it.
    fn uuid(&self) -> Option<String>;

    /// The root directory.
    fn root(&self) -> NodeId;

    /// How a person names a node: `inode 12`, or for FAT `entry at 0x…`.
    fn node_name(&self, node: NodeId) -> String {
        format!("inode {node}")
    }

    /// The superblock (or boot sector), every field with its offset.
    fn superblock(&self) -> Report;

    /// The per-group headers (ext block groups, XFS allocation groups):
    /// `count` rows from `first`, so an absurd group count costs only the
    /// rows asked for. Filesystems without groups return an empty table.
    ///
    /// # Errors
    /// Read errors; geometry that cannot be right.
    fn groups(&self, first: u64, count: u64) -> Result<GroupTable, FsError>;

    /// One group's header fields (for the Groups pane's Enter).
    ///
    /// # Errors
    /// As [`Filesystem::groups`].
    fn group_report(&self, group: u64) -> Result<Report, FsError>;

    /// A node's metadata.
    ///
    /// # Errors
    /// A node that cannot exist or cannot be read.
    fn metadata(&self, node: NodeId) -> Result<Metadata, FsError>;

    /// A node's on-disk structure (inode fields with offsets).
    ///
    /// # Errors
    /// As [`Filesystem::metadata`].
    fn node_report(&self, node: NodeId) -> Result<Report, FsError>;

    /// Calls `each` with the entries of directory `dir` in on-disk order
    /// (`.` and `..` included where the filesystem stores them) until it
    /// breaks. Damage that does not stop the listing goes to `problems`.
    ///
    /// # Errors
    /// `dir` is not a directory; its map cannot be read at all.
    fn read_dir(
        &self,
        dir: NodeId,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(DirEntry) -> ControlFlow<()>,
    ) -> Result<(), FsError>;

    /// The node at `path` (bytes, `/`-separated, from the root).
    ///
    /// # Errors
    /// `NotFound` naming the component that is missing.
    fn lookup(&self, path: &[u8]) -> Result<NodeId, FsError> {
        node::lookup_by_listing(self, path)
    }

    /// Calls `each` with the runs of the volume holding the node's bytes
    /// and its map blocks, in logical order. Damage goes to `problems`.
    ///
    /// # Errors
    /// The node cannot be read.
    fn runs(
        &self,
        node: NodeId,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError>;

    /// Fills `buf` with the file's bytes at `offset` (holes as zeros) and
    /// returns how many bytes the file has there (less than `buf.len()`
    /// at the end of the file).
    ///
    /// # Errors
    /// Read errors; content that cannot be decoded.
    fn read_file(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError>;

    /// A symlink's target, raw bytes.
    ///
    /// # Errors
    /// Not a symlink; read errors.
    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError>;

    /// Extended attributes: (full name, value), raw bytes.
    ///
    /// # Errors
    /// Read errors (a damaged attribute block is reported, not skipped).
    fn xattrs(&self, node: NodeId) -> Result<Vec<Xattr>, FsError>;

    /// The concrete filesystem, for what only it has.
    fn as_any(&self) -> &dyn Any;
}

/// Opens the filesystem on `source`, trying each kind layerscope decodes.
///
/// # Errors
/// The error of the filesystem whose magic matched, or a `NotExt`-style
/// error naming what was tried when none matched.
pub fn open(source: Arc<dyn BlockSource>) -> Result<Arc<dyn Filesystem>, FsError> {
    let mut tried = Vec::new();
    match ext::Ext4::open(source.clone()) {
        Ok(fs) => return Ok(Arc::new(fs)),
        Err(FsError::NotExt { detail } | FsError::NotThisFs { detail, .. }) => {
            tried.push(format!("ext2/3/4 ({detail})"));
        }
        Err(e) => return Err(e),
    }
    match xfs::Xfs::open(source.clone()) {
        Ok(fs) => return Ok(Arc::new(fs)),
        Err(FsError::NotThisFs { detail, .. }) => tried.push(format!("XFS ({detail})")),
        Err(e) => return Err(e),
    }
    match fat::Fat::open(source) {
        Ok(fs) => return Ok(Arc::new(fs)),
        Err(FsError::NotThisFs { detail, .. }) => tried.push(format!("FAT ({detail})")),
        Err(e) => return Err(e),
    }
    Err(FsError::NotThisFs {
        fs: "known",
        detail: format!("tried {}", tried.join(", ")),
    })
}
