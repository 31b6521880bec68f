//! Messages between the UI thread and the worker: the [`Request`]s the
//! panes make, the [`Reply`]s the worker sends back, and the plain data
//! they carry. Nothing here does I/O or draws; both sides depend on this
//! module and on nothing of each other.
use crate::block::hitmap::Served;
use crate::block::nbd::status::StatsSnapshot;
use crate::block::nbd::ExportInfo;
pub use crate::ui::fsinfo::{
    FieldRow, FileCompare, FsView, JournalNote, OtherGroupRow, OtherGroups, Seek, VolumeList,
    VolumeRow, COMPARE_BYTES,
};

/// One layer as the chain pane shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerView {
    pub index: usize,
    /// Escaped for the terminal.
    pub name: String,
    pub format: String,
    /// Cluster size and compression, for qcow2.
    pub detail: String,
    pub size: u64,
}

/// What the UI needs to know of an opened chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainInfo {
    /// The image's name (escaped).
    pub title: String,
    /// Base first.
    pub layers: Vec<LayerView>,
    pub disk_size: u64,
    pub is_nbd: bool,
    /// Read over ssh (`ssh://`): the status pane shows the session.
    pub is_ssh: bool,
    /// The top layer's persistent dirty bitmaps (qcow2), by name
    /// (escaped), in the file's order.
    pub bitmaps: Vec<String>,
}

impl ChainInfo {
    /// What the UI shows of `chain`.
    pub fn of(chain: &crate::block::chain::Chain) -> ChainInfo {
        let layers = chain
            .layers
            .iter()
            .map(|l| {
                let detail = match &l.qcow2 {
                    Some(q) => {
                        let h = q.header();
                        // Read as of an internal snapshot (`--snapshot`).
                        let at = q.snapshot().map_or_else(String::new, |s| {
                            crate::escape::printable(&format!("at snapshot {} {} · ", s.id, s.name))
                        });
                        format!(
                            "{at}{} {}",
                            crate::units::human(h.cluster_size()),
                            h.compression.name()
                        )
                    }
                    None => l.info.as_ref().map(|i| i.summary()).unwrap_or_default(),
                };
                let name = l.path.rsplit('/').next().unwrap_or(&l.path);
                LayerView {
                    index: l.index,
                    name: crate::escape::printable(name),
                    format: l.format.name().to_owned(),
                    detail,
                    size: l.source.len(),
                }
            })
            .collect();
        let top = chain.top();
        ChainInfo {
            title: top.map_or_else(String::new, |t| crate::escape::printable(&t.path)),
            layers,
            disk_size: top.map_or(0, |t| t.source.len()),
            is_nbd: top.is_some_and(|t| t.nbd.is_some()),
            is_ssh: crate::block::ssh::session_of(chain).is_some(),
            bitmaps: top
                .and_then(|t| t.qcow2.as_ref())
                .and_then(|q| q.bitmaps().ok())
                .unwrap_or_default()
                .iter()
                .map(|b| crate::escape::printable(&b.name))
                .collect(),
        }
    }
}

/// Work for the worker thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Bytes (and the layer of each 16-byte row) of the disk as of layer
    /// `as_of`.
    Hex { as_of: usize, offset: u64, len: u64 },
    /// The hit map grid of `cells` cells.
    Grid {
        as_of: usize,
        cells: usize,
        mode: HitMode,
    },
    /// The NBD connection's state.
    Nbd,
    /// The ssh session's state.
    Ssh,
    /// The filesystem's superblock and root directory as of a layer.
    Fs { as_of: usize },
    /// A directory's entries.
    Dir { as_of: usize, ino: u64 },
    /// Where a file's blocks are: its first byte, the layers holding
    /// them, and which of the hit map's `cells` cells they fall in.
    File {
        as_of: usize,
        ino: u64,
        cells: usize,
    },
    /// The layers holding the blocks of each of these inodes (the tree's
    /// rows on screen).
    Marks { as_of: usize, inos: Vec<u64> },
    /// Names containing `needle`, through the whole tree.
    Search { as_of: usize, needle: String },
    /// An inode's slot in its table, and its fields.
    Inode { as_of: usize, ino: u64 },
    /// Block `block` of the filesystem in view (of its block size; 4 KiB
    /// without one), where the volume puts it on the disk (through a
    /// logical volume's segments and stripes).
    Block { as_of: usize, block: u64 },
    /// A directory's first block, and its entries' fields.
    DirBlock { as_of: usize, ino: u64 },
    /// The disk's volumes (partitions, logical volumes) and the one in
    /// view.
    Volumes,
    /// Show the filesystem of volume `name` (as `layerscope volumes`
    /// names it) in every pane.
    Volume { name: String },
    /// The group descriptor table.
    Groups { as_of: usize },
    /// One group descriptor's fields.
    GroupFields { as_of: usize, group: u64 },
    /// What layer `to` changed over the one below (on its own thread).
    Diff { to: usize },
    /// Stop the running diff.
    CancelDiff,
    /// A window of a changed file's bytes as of both layers, from
    /// `offset`, or around the difference `seek` looks for from there.
    Compare {
        to: usize,
        change: Box<crate::diff::Change>,
        offset: u64,
        seek: Seek,
    },
}

/// The worker's answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// The chain is open (the first reply of a worker that opens it).
    Opened(Box<ChainInfo>),
    /// It could not be opened: why (escaped).
    OpenFailed(String),
    Hex(HexData),
    Grid(Grid),
    Nbd(Box<(ExportInfo, StatsSnapshot)>),
    /// The ssh session the chain is read through.
    Ssh(Box<crate::block::ssh::SshStatus>),
    /// The filesystem in view: its superblock's fields and what the panes
    /// need of it (or why there is none).
    Fs {
        as_of: usize,
        fields: Result<FsView, String>,
    },
    /// The disk's volumes (or why they could not be read).
    Volumes(Result<VolumeList, String>),
    Dir {
        as_of: usize,
        ino: u64,
        entries: Result<Vec<TreeNode>, String>,
    },
    /// Where a file's blocks are.
    FileAt(Box<FileAt>),
    /// A search's matches.
    Found(Box<Found>),
    /// A structure to show in hex with its fields marked.
    Structure(Box<Structure>),
    /// The layers the blocks of tree rows come from.
    Marks {
        as_of: usize,
        marks: Vec<(u64, LayerSet)>,
    },
    /// The group descriptor table (or why there is none).
    Groups {
        as_of: usize,
        table: Result<GroupsTable, String>,
    },
    GroupFields {
        as_of: usize,
        group: u64,
        fields: Result<Vec<FieldRow>, String>,
    },
    /// How far the diff of layer `to` is.
    DiffProgress {
        to: usize,
        phase: String,
        done: u64,
        total: u64,
    },
    /// The diff of layer `to`: the changes and a summary, or why not.
    Diff {
        from: usize,
        to: usize,
        result: Result<(Vec<crate::diff::Change>, String), String>,
    },
    Compare(Box<FileCompare>),
    /// Nothing to show.
    Done,
    Error(String),
    /// A request that could not be served, and why (escaped): the pane
    /// that asked shows the failure instead of stale data.
    Failed {
        request: Box<Request>,
        error: String,
    },
}

/// Bytes for the hex pane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HexData {
    pub as_of: usize,
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// The layer serving each 16-byte row (None: no layer, zeros).
    pub owners: Vec<Option<usize>>,
}

/// Static ownership (from metadata), runtime hits (what reads touched),
/// or a persistent dirty bitmap of the top layer (its index in
/// [`ChainInfo::bitmaps`]): which bytes it marks dirty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HitMode {
    Static,
    Runtime,
    Bitmap(usize),
}

/// One cell of the hit map grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellOwner {
    Layer(usize),
    /// A block the journal replay serves from the copy layer `n`'s
    /// journal blocks hold ("journal of layer n").
    Journal(usize),
    Nowhere,
    NotRead,
    /// In a bitmap's map: bytes it marks dirty in the cell.
    Dirty,
    /// In a bitmap's map: none dirty.
    Clean,
}

impl From<Served> for CellOwner {
    fn from(s: Served) -> Self {
        match s {
            Served::Layer(l) => CellOwner::Layer(l),
            Served::Journal(l) => CellOwner::Journal(l),
            Served::Nowhere => CellOwner::Nowhere,
            Served::NotRead => CellOwner::NotRead,
        }
    }
}

/// The hit map grid and per-layer byte counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    pub mode: HitMode,
    pub as_of: usize,
    pub cells: Vec<CellOwner>,
    /// Bytes per layer (index 0 is the base), then the bytes of no layer.
    pub bytes: Vec<u64>,
    pub nowhere: u64,
    /// The byte counts are known (else the cells are probed and the
    /// counts still being walked: the legend says so).
    pub exact: bool,
    /// Bytes the journal replay serves, by the layer whose journal holds
    /// them (index 0 is the base; empty without a replay).
    pub journal: Vec<u64>,
    /// Over NBD with allocation depths: the server's layers.
    pub server: Option<ServerLayers>,
    /// The volume in view when it is not the whole disk: which cells hold
    /// its bytes (so the map shows which part of the disk the tree and
    /// the superblock belong to).
    pub volume: Option<VolumeCells>,
    /// In a bitmap's map: the bytes it marks dirty, and the clean ones.
    pub dirty: Option<(u64, u64)>,
}

/// The cells of the hit map grid a volume's bytes fall in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeCells {
    /// `p3`, `vg0/root` (escaped).
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
    /// One per grid cell: whether any of the volume's bytes are in it.
    pub inside: Vec<bool>,
}

/// What the scan of an NBD export's allocation depths found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLayers {
    /// Layers of the server's chain (the deepest depth found).
    pub layers: usize,
    /// Whether the whole disk was scanned (else `layers` is a floor).
    pub complete: bool,
}

/// The layers a file's blocks come from: bit `i` for layer `i` (a chain
/// has at most [`crate::block::chain::MAX_CHAIN_DEPTH`] = 64 layers), and
/// whether some blocks are in no layer (zeros).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerSet {
    pub layers: u64,
    pub zeros: bool,
}

impl LayerSet {
    /// Adds the layer of one block range (`None`: no layer).
    pub fn add(&mut self, layer: Option<usize>) {
        match layer {
            Some(l) if l < 64 => self.layers |= 1 << l,
            _ => self.zeros = true,
        }
    }

    /// The layers, top first.
    pub fn top_first(self) -> impl Iterator<Item = usize> {
        (0..64).rev().filter(move |l| self.layers & (1 << l) != 0)
    }
}

/// A row's layer marks: not asked for yet, asked, or known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Marks {
    #[default]
    Unknown,
    Pending,
    Known(LayerSet),
    /// A name the diff of the layer in view says was deleted (shown
    /// dimmed; it has no blocks as of this layer).
    Deleted,
}

/// One line of the directory tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    pub ino: u64,
    /// Escaped for the terminal.
    pub name: String,
    pub depth: usize,
    pub is_dir: bool,
    pub expanded: bool,
    pub size: u64,
    pub mode: u16,
    pub marks: Marks,
}

impl TreeNode {
    /// The root directory (ext's inode 2), closed.
    pub fn root() -> TreeNode {
        TreeNode::root_at(2)
    }

    /// The root directory at node `ino`, closed.
    pub fn root_at(ino: u64) -> TreeNode {
        TreeNode {
            ino,
            name: "/".into(),
            depth: 0,
            is_dir: true,
            expanded: false,
            size: 0,
            mode: 0o40755,
            marks: Marks::Unknown,
        }
    }
}

/// Where a file's blocks are (the worker's answer to `Request::File`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAt {
    pub as_of: usize,
    pub ino: u64,
    /// The first data byte on the disk (None: no data blocks).
    pub offset: Option<u64>,
    /// The layers its blocks come from.
    pub layers: LayerSet,
    /// For each hit map cell asked for, whether it holds some of the
    /// file's blocks.
    pub cells: Vec<bool>,
}

/// A structure for the hex view: where it is and its fields (from the
/// decoder's field table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Structure {
    pub as_of: usize,
    /// What it is, for the hex pane's title (escaped).
    pub label: String,
    /// Where to show it from.
    pub at: u64,
    /// (disk offset, size) of each field.
    pub fields: Vec<(u64, usize)>,
    /// Move the focus to the hex view (a `g`, not a tree step).
    pub focus: bool,
}

/// Group rows kept at most: a filesystem with more groups shows the first
/// ones (a 64 TiB filesystem of 4 KiB blocks has 512 Ki groups).
pub const MAX_GROUP_ROWS: u64 = 1 << 16;

/// A descriptor's checksum state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// Neither metadata_csum nor uninit_bg: descriptors carry none.
    None,
    Ok(u16),
    Bad {
        stored: u16,
        expected: u16,
    },
}

impl Checksum {
    /// As the pane shows it.
    pub fn text(self) -> String {
        match self {
            Checksum::None => "-".into(),
            Checksum::Ok(c) => format!("ok {c:#06x}"),
            Checksum::Bad { stored, expected } => {
                format!("BAD {stored:#06x}, expected {expected:#06x}")
            }
        }
    }
}

/// One group descriptor as the pane shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRow {
    pub group: u64,
    /// The descriptor's disk offset (None when it could not be read).
    pub offset: Option<u64>,
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub used_dirs: u64,
    pub itable_unused: u64,
    /// Flag names in effect, as dumpe2fs prints them.
    pub flags: Vec<&'static str>,
    pub checksum: Checksum,
    /// Why the descriptor could not be read (escaped).
    pub error: Option<String>,
}

/// The descriptor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupsTable {
    /// Groups in the filesystem (the rows may be fewer, see
    /// [`MAX_GROUP_ROWS`]).
    pub count: u64,
    /// Bytes per descriptor (32, or `s_desc_size` with 64bit).
    pub desc_size: usize,
    /// "crc32c", "crc16" or "none".
    pub checksum_kind: &'static str,
    pub rows: Vec<GroupRow>,
    /// For filesystems other than ext: the table as the filesystem gives
    /// it (then `rows` is empty).
    pub other: Option<OtherGroups>,
}

/// One search match: the inodes from the root's child down to it, and
/// its path (escaped for the terminal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub inos: Vec<u64>,
    pub path: String,
}

/// A search's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub as_of: usize,
    pub needle: String,
    pub matches: Vec<Match>,
    pub dirs: usize,
    /// Why it stopped early, if it did.
    pub stopped: Option<&'static str>,
}
