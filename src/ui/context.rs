//! What the panes share and how they reach one another without knowing
//! one another: [`Shared`] is the state every pane reads (the chain, the
//! layer in view, the focus, the terminal size); a pane answers a key or a
//! reply with [`Effect`]s, which the [`super::app::App`] carries out (a
//! request to the worker, marks in the hex view, a message, a focus
//! change). So panes depend on this module, and the app on the panes,
//! never the other way round.
use super::action::Pane;
pub use super::msg::LayerView;
use super::msg::Request;

/// The state every pane reads.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The image's name (escaped).
    pub title: String,
    /// Base first.
    pub layers: Vec<LayerView>,
    pub disk_size: u64,
    pub is_nbd: bool,
    /// Read over ssh: the status pane shows the session.
    pub is_ssh: bool,
    /// The layer the disk is seen "as of" (the chain cut there).
    pub as_of: usize,
    pub focus: Pane,
    pub width: u16,
    pub height: u16,
    /// The filesystem's block size (for `g b<N>`), once known.
    pub block_size: Option<u64>,
    /// Whether a filesystem was found as of the layer in view.
    pub fs: FsState,
    /// The filesystem in view: its kind (`ext4`, `xfs`, `vfat`) and root
    /// node, once known.
    pub fs_kind: &'static str,
    pub fs_root: u64,
    /// The volume in view (escaped) and where it starts on the disk when
    /// it is one window; None: the whole disk.
    pub volume: Option<(String, Option<u64>)>,
    /// Rows the Volumes pane lists (for the layout), once known.
    pub volume_rows: u16,
    /// The filesystem's journal needed recovery: the Status pane has its
    /// line (replayed in memory, or pending).
    pub journal_note: bool,
    /// Over NBD with allocation depths: the server chain's layers, once
    /// scanned.
    pub server_layers: Option<usize>,
    /// Whether the chain is open yet.
    pub open: OpenState,
}

/// Where opening the chain is (it happens on the worker, so the UI is up,
/// and answers `q`, while an NBD server takes its time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OpenState {
    #[default]
    Opening,
    /// It could not be opened: why (escaped).
    Failed(String),
    Open,
}

/// What is known of the filesystem as of the layer in view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FsState {
    /// Not read yet.
    #[default]
    Reading,
    /// None there: why (escaped).
    Missing(String),
    Present,
}

impl FsState {
    pub fn is_present(&self) -> bool {
        *self == FsState::Present
    }
}

impl Shared {
    /// The top layer's index.
    pub fn top(&self) -> usize {
        self.layers.len().saturating_sub(1)
    }
}

/// Bytes the hex view marks: the fields of one structure, each underlined
/// (so their edges show), the selected one reversed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Highlight {
    /// What the fields belong to, for the hex pane's title.
    pub label: String,
    /// (disk offset, size) of each field, in table order.
    pub fields: Vec<(u64, usize)>,
    pub selected: Option<usize>,
}

impl Highlight {
    /// The field holding byte `offset`, and whether it is the selected one.
    pub fn at(&self, offset: u64) -> Option<(usize, bool)> {
        self.fields
            .iter()
            .position(|&(o, n)| {
                offset
                    .checked_sub(o)
                    .is_some_and(|d| d < crate::bytes::u64_of(n))
            })
            .map(|i| (i, self.selected == Some(i)))
    }

    /// The byte to keep on screen: the selected field's, else the first.
    pub fn anchor(&self) -> Option<(u64, usize)> {
        self.selected
            .and_then(|i| self.fields.get(i))
            .or_else(|| self.fields.first())
            .copied()
    }
}

/// What a pane asks of the rest of the UI.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Work for the worker.
    Request(Request),
    /// Mark these fields in the hex view, scrolling it to them when they
    /// are off screen.
    Highlight(Highlight),
    /// Show the hex view from `offset` (row-aligned, clamped): the bytes
    /// are read anew; `clear` forgets the marks.
    HexTo {
        offset: u64,
        clear: bool,
    },
    /// Forget the hex view's bytes (new ones are on their way).
    HexStale,
    Focus(Pane),
    /// A line for the message bar (kept until the next key, and logged).
    Message(String),
    /// The same, for something that went wrong (shown as an error).
    Error(String),
    /// See the disk as of this layer.
    AsOf(usize),
    /// Show the filesystem of this volume in every pane.
    Volume(String),
    /// The hit map cells holding the opened file (None: no file).
    FileCells(Option<Vec<bool>>),
}

/// The effects of one pane step.
pub type Effects = Vec<Effect>;

/// Requests as effects.
pub fn requests(r: impl IntoIterator<Item = Request>) -> Effects {
    r.into_iter().map(Effect::Request).collect()
}
