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
// Disk data must never panic or wrap (issue 11): these lints are denied
// for every filesystem; an `allow` names the bound that makes it safe.
// Tests may index their fixtures.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::block::BlockSource;

pub mod ext;
pub mod fat;
pub mod node;
pub mod report;
pub mod time;
pub mod xfs;

pub use ext::FsError;
pub use node::{DirEntry, FileType, Metadata, NodeId, Problem, Run, RunKind, Timestamp, Xattr};
pub use report::{Check, GroupRow, GroupTable, Report, ReportField};

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

/// A filesystem opened read-only on a volume: what the CLI, the TUI,
/// `diff` and `blame` ask every filesystem, so a new one plugs in without
/// touching them.
///
/// It is kept small and object-safe (callers hold `Arc<dyn Filesystem>`);
/// each method says which caller needs it. Every method is bounded by
/// what is really on the disk: listings stream through callbacks (a
/// caller that wants only the first screen, or one name, stops the walk
/// with [`ControlFlow::Break`]), and damaged parts are reported as
/// [`Problem`]s while the rest is still given.
pub trait Filesystem: Send + Sync {
    /// Which filesystem this is (`info`, `volumes`, the TUI's title; and
    /// whether a quicker, filesystem-specific path exists, such as ext's
    /// diff from inode-table slots).
    fn kind(&self) -> FsKind;

    /// The volume it reads. Offsets in reports and runs are relative to
    /// it; `blocks`, `blame` and the hit map turn them into the chain
    /// layers serving those bytes.
    fn source(&self) -> &Arc<dyn BlockSource>;

    /// The bytes of [`Filesystem::source`] at `[offset, offset + len)`
    /// when the filesystem's own cache holds them in one piece, shared
    /// without a read or a copy (`blame` compares two views' bytes where
    /// their walks already read them); `None` otherwise.
    fn cached_bytes(&self, _offset: u64, _len: usize) -> Option<crate::block::cache::Shared> {
        None
    }

    /// The allocation unit in bytes (block or cluster size): the unit
    /// `blocks` lists runs in.
    fn block_size(&self) -> u64;

    /// The volume label, raw bytes (escaped only at the output edge), for
    /// `info` and `volumes`.
    fn label(&self) -> Option<Vec<u8>>;

    /// The filesystem UUID or serial number, as `blkid` prints it.
    fn uuid(&self) -> Option<String>;

    /// The root directory: where `lookup`, `ls` and tree walks start.
    fn root(&self) -> NodeId;

    /// How a person names a node in messages: `inode 12`, or for FAT
    /// `entry at 0x…`.
    fn node_name(&self, node: NodeId) -> String {
        format!("inode {node}")
    }

    /// The superblock (or boot sector), every field with its offset and
    /// decoded value: `info` and the Superblock pane render it.
    fn superblock(&self) -> Report;

    /// The per-group headers (ext block groups, XFS allocation groups):
    /// `count` rows from `first`, so an absurd group count costs only the
    /// rows asked for. The one builder of the table `groups`, `info
    /// --groups` and the Groups pane show. Filesystems without groups
    /// return an empty table.
    ///
    /// # Errors
    /// Read errors that stop the whole table (a group that cannot be
    /// read is a row with its error).
    fn groups(&self, first: u64, count: u64) -> Result<GroupTable, FsError>;

    /// One group's header fields (the Groups pane's Enter).
    ///
    /// # Errors
    /// As [`Filesystem::groups`].
    fn group_report(&self, group: u64) -> Result<Report, FsError>;

    /// A node's metadata: `ls -l`, `stat`, and what `diff` compares.
    ///
    /// # Errors
    /// A node that cannot exist or cannot be read.
    fn metadata(&self, node: NodeId) -> Result<Metadata, FsError>;

    /// A node's on-disk structure (inode fields with offsets): `stat`,
    /// the hex view's marks, and where the node lies (`blame` asks which
    /// layer holds it).
    ///
    /// # Errors
    /// As [`Filesystem::metadata`].
    fn node_report(&self, node: NodeId) -> Result<Report, FsError>;

    /// Where the node's own bytes lie on the volume: the offset of
    /// [`Filesystem::node_report`], without building the report (per
    /// file in `timeline` and `grep`, where only the layer holding it is
    /// wanted).
    ///
    /// # Errors
    /// As [`Filesystem::node_report`].
    fn node_offset(&self, node: NodeId) -> Result<u64, FsError> {
        Ok(self.node_report(node)?.offset)
    }

    /// Where the node's own bytes lie on the volume, (offset, length):
    /// those of [`Filesystem::node_report`], without building the report
    /// (per file in `blame -R`, which asks which layers hold them).
    ///
    /// # Errors
    /// As [`Filesystem::node_report`].
    fn node_span(&self, node: NodeId) -> Result<(u64, u64), FsError> {
        let r = self.node_report(node)?;
        Ok((r.offset, r.len))
    }

    /// Calls `each` with the entries of directory `dir` in on-disk order
    /// (`.` and `..` included where the filesystem stores them) until it
    /// breaks, holding one directory block at a time, never the whole
    /// directory. Damage that does not stop the listing goes to
    /// `problems`.
    ///
    /// # Errors
    /// `dir` is not a directory; its map cannot be read at all; I/O
    /// errors.
    fn read_dir(
        &self,
        dir: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(DirEntry) -> ControlFlow<()>,
    ) -> Result<(), FsError>;

    /// The node at `path` (bytes, `/`-separated, from the root; symlinks
    /// are not followed). Filesystems with directory indexes override it
    /// to search the index instead of listing.
    ///
    /// # Errors
    /// `NotFound` naming the component that is missing.
    fn lookup(&self, path: &[u8]) -> Result<NodeId, FsError> {
        node::lookup_by_listing(self, path)
    }

    /// Calls `each` with the runs of the volume holding the node's bytes,
    /// its map blocks and its out-of-node attributes, in map order:
    /// `blocks`, `blame` and the hit map name the layers serving them.
    /// Damage goes to `problems` (`lost` where bytes of the file could
    /// not be mapped).
    ///
    /// # Errors
    /// The node cannot be read.
    fn runs(
        &self,
        node: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError>;

    /// [`Filesystem::metadata`] and then [`Filesystem::runs`] of one
    /// node, reading it once where the filesystem can (per file in
    /// `blame -R`). The outer error is the metadata's; the inner result
    /// is the runs'.
    ///
    /// # Errors
    /// As [`Filesystem::metadata`].
    fn metadata_runs(
        &self,
        node: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(Metadata, Result<(), FsError>), FsError> {
        let meta = self.metadata(node)?;
        Ok((meta, self.runs(node, problems, each)))
    }

    /// Fills `buf` with the file's bytes at `offset` (holes as zeros) and
    /// returns how many bytes the file has there (less than `buf.len()`
    /// at the end of the file): `cat`, the hex view, `diff`'s content
    /// comparison. Parts of the map that cannot be followed read as
    /// zeros here; [`Filesystem::runs`] reports them.
    ///
    /// # Errors
    /// Read errors; content that cannot be decoded.
    fn read_file(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError>;

    /// A symlink's target, raw bytes (`ls -l`, `stat`, `diff`).
    ///
    /// # Errors
    /// Not a symlink; read errors.
    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError>;

    /// Extended attributes: (full name, value), raw bytes (`stat`,
    /// `diff`). Data the filesystem keeps in attributes (ext's inline
    /// data, `system.data`) is content, not listed here.
    ///
    /// Damage (a bad checksum, an attribute area that ends early) goes
    /// to `problems`; the attributes read before it are returned.
    ///
    /// # Errors
    /// The node cannot be read; I/O errors.
    fn xattrs(&self, node: NodeId, problems: &mut Vec<Problem>) -> Result<Vec<Xattr>, FsError>;

    /// A hint: the directories `dirs` will be listed soon. A filesystem
    /// on a remote disk fetches what listing them reads, in batches of
    /// requests in flight together, into a bounded store; true when it
    /// did (false: a local disk, or a filesystem that does not fetch
    /// ahead). Errors are left for the listing to meet.
    fn prefetch_dirs(&self, _dirs: &[NodeId]) -> bool {
        false
    }

    /// A hint: every directory will be listed soon (a walk of the whole
    /// tree). A filesystem on a remote disk that can find its
    /// directories without walking them (ext's inode tables) fetches
    /// them all ahead at once; it returns the directories whose listing
    /// it now holds (a walk need not fetch ahead for those again), none
    /// when it did nothing. Errors are left for the listing to meet.
    fn prefetch_all_dirs(&self) -> Vec<NodeId> {
        Vec::new()
    }

    /// A hint: the metadata of `nodes` will be read soon (a listing's
    /// sizes and types). A filesystem on a remote disk fetches their
    /// inodes in one batch of requests in flight together, into its
    /// bounded store; true when it did. Errors are left for the reads.
    fn prefetch_nodes(&self, _nodes: &[NodeId]) -> bool {
        false
    }

    /// One line for the user when the view read differs from the disk
    /// (ext's journal replayed in memory, or a replay that failed):
    /// every command prints it, the TUI shows it. `None` for a view that
    /// is the disk's.
    fn replay_note(&self) -> Option<String> {
        None
    }

    /// The concrete filesystem, for what only it has (ext's dumpe2fs and
    /// debugfs views, its quick diff, its journal).
    fn as_any(&self) -> &dyn Any;
}

/// Fetches ahead the directory trees under `dirs`, a level at a time
/// (each level's directories with one [`Filesystem::prefetch_dirs`], then
/// listed from what was fetched to find the next level), at most
/// `max_dirs` directories. Returns the directories fetched: listing them
/// now costs no round trip while they stay in the filesystem's store.
/// Empty for a filesystem on a local disk. Only entries that say they are
/// directories are followed; the listing itself reports damage.
pub fn prefetch_tree(fs: &dyn Filesystem, dirs: &[NodeId], max_dirs: usize) -> Vec<NodeId> {
    let mut done: Vec<NodeId> = Vec::new();
    let mut seen: std::collections::HashSet<NodeId> = dirs.iter().copied().collect();
    let mut level: Vec<NodeId> = dirs.to_vec();
    while !level.is_empty() {
        level.truncate(max_dirs.saturating_sub(done.len()));
        if level.is_empty() || !fs.prefetch_dirs(&level) {
            break;
        }
        let mut next = Vec::new();
        for &dir in &level {
            let mut problems = Vec::new();
            let _ = fs.read_dir(dir, &mut problems, &mut |e| {
                if e.file_type == Some(FileType::Directory)
                    && !e.is_dot_or_dotdot()
                    && seen.insert(e.node)
                {
                    next.push(e.node);
                }
                ControlFlow::Continue(())
            });
        }
        done.append(&mut level);
        level = next;
    }
    done
}

/// How to open a filesystem: whether to replay its journal (ext3/4's
/// jbd2) in memory, and where an external journal or the chain's layers
/// are. The default is the kernel's view: a journal that needs recovery
/// is replayed.
pub use ext::jbd2::mount::Mount;

/// Opens the filesystem on `source` as the kernel would mount it (a
/// journal that needs recovery replayed in memory, see [`Mount`]), trying
/// each kind layerscope decodes.
///
/// # Errors
/// As [`open_with`].
pub fn open(source: Arc<dyn BlockSource>) -> Result<Arc<dyn Filesystem>, FsError> {
    open_with(source, &Mount::default())
}

/// Identifies and opens the filesystem on `source` as it is on disk,
/// never replaying a journal: what `volumes` and the choice of a volume
/// need (naming a filesystem must not cost its journal's replay).
///
/// # Errors
/// As [`open_with`].
pub fn probe(source: Arc<dyn BlockSource>) -> Result<Arc<dyn Filesystem>, FsError> {
    open_with(
        source,
        &Mount {
            no_replay: true,
            ..Mount::default()
        },
    )
}

/// Opens the filesystem on `source`, trying each kind layerscope decodes,
/// mounted as `mount` says (only ext has a journal to replay).
///
/// # Errors
/// The error of the filesystem whose magic matched; when none did, one
/// error saying what each kind found, ext's first (`no ext2/3/4
/// filesystem found: magic 0x0000 at 0x438, expected 0xef53; not XFS
/// either: …; not FAT either: …`).
pub fn open_with(
    source: Arc<dyn BlockSource>,
    mount: &Mount,
) -> Result<Arc<dyn Filesystem>, FsError> {
    let mut detail = match ext::Ext4::open_with(source.clone(), mount) {
        Ok(fs) => return Ok(Arc::new(fs)),
        Err(FsError::NotExt { detail } | FsError::NotThisFs { detail, .. }) => detail,
        Err(e) => return Err(e),
    };
    match xfs::Xfs::open(source.clone()) {
        Ok(fs) => return Ok(Arc::new(fs)),
        Err(FsError::NotThisFs { detail: d, .. }) => {
            detail.push_str(&format!("; not XFS either: {d}"));
        }
        Err(e) => return Err(e),
    }
    match fat::Fat::open(source) {
        Ok(fs) => return Ok(Arc::new(fs)),
        Err(FsError::NotThisFs { detail: d, .. }) => {
            detail.push_str(&format!("; not FAT either: {d}"));
        }
        Err(e) => return Err(e),
    }
    Err(FsError::NotThisFs {
        fs: "ext2/3/4",
        detail,
    })
}
