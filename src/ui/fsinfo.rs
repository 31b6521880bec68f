//! What the worker says of the filesystem and the volumes in view: the
//! superblock's fields, the volume list, a filesystem's own group table,
//! a changed file's bytes as of two layers.
//! Plain data (escaped for the terminal), used by [`super::msg`].

/// The filesystem in view, as the panes need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsView {
    /// `ext4`, `xfs`, `vfat` (as blkid names it).
    pub kind: &'static str,
    /// The volume it is on (escaped), and where that starts on the disk
    /// when it is one window (a partition; not a striped LV).
    pub volume: Option<(String, Option<u64>)>,
    /// The root directory's node.
    pub root: u64,
    /// Block (or cluster) size in bytes.
    pub block_size: u64,
    /// The superblock's (or boot sector's) fields, at disk offsets.
    pub fields: Vec<FieldRow>,
    /// The journal's state when it needed recovery: replayed in memory,
    /// or pending (`--no-replay`, or a replay that could not be made).
    pub journal: Option<JournalNote>,
}

/// What the Status and Superblock panes say of a journal that needed
/// recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalNote {
    /// One line (escaped): "journal replayed in memory: N transaction(s),
    /// M block(s)", or that recovery is pending.
    pub text: String,
    /// The view is the replayed one (else recovery is still pending).
    pub replayed: bool,
}

/// One volume of the disk, as the Volumes pane lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeRow {
    /// `disk`, `p1`, `vg0/root` (escaped).
    pub name: String,
    /// `partition`, `logical volume`, `disk`, with the type (escaped).
    pub what: String,
    /// Where it starts on the disk (None: several pieces or unreadable).
    pub start: Option<u64>,
    pub len: u64,
    /// What it holds (`ext4 "root"`, `swap`, …) or why it cannot be read
    /// (escaped).
    pub content: String,
    /// Whether a filesystem layerscope reads may be on it.
    pub readable: bool,
}

/// The disk's volumes and the one in view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeList {
    pub rows: Vec<VolumeRow>,
    /// The row whose filesystem is in view.
    pub current: Option<usize>,
    /// Problems the scan found (escaped).
    pub problems: Vec<String>,
}

/// One field of a structure, for a pane row and the hex marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRow {
    pub name: &'static str,
    pub offset: u64,
    pub size: usize,
    /// Escaped for the terminal.
    pub value: String,
}

/// A filesystem's own group table (XFS's allocation groups), as text
/// cells (escaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherGroups {
    /// What a group is called (`allocation group`).
    pub noun: &'static str,
    pub columns: Vec<String>,
    pub rows: Vec<OtherGroupRow>,
}

/// One row of [`OtherGroups`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherGroupRow {
    pub index: u64,
    /// The group header's disk offset.
    pub offset: Option<u64>,
    pub cells: Vec<String>,
    /// Its checksums all match (None: it has none).
    pub ok: Option<bool>,
}

/// Where a comparison window goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// At the offset asked for (scrolling).
    At,
    /// Around the first difference (opening a change).
    First,
    /// Around the first difference at or after the offset.
    Next,
    /// Around the last difference before the offset.
    Prev,
}

/// A window of a file as of both layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCompare {
    pub to: usize,
    /// Escaped.
    pub path: String,
    /// What was asked for, and the difference found (None: none in
    /// reach, or not looked for).
    pub seek: Seek,
    pub found: Option<u64>,
    /// Where the window starts.
    pub offset: u64,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    /// Sizes as of each layer (None: not there).
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
}

/// Bytes of a file shown side by side.
pub const COMPARE_BYTES: usize = 4096;
