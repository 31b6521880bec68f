//! The TUI's state and what actions do to it. No I/O and no drawing here:
//! `App::apply` turns an [`Action`] into state changes and [`Request`]s for
//! the worker; `App::receive` takes the worker's [`Reply`]s.
use crate::block::hitmap::Served;
use crate::block::nbd::status::StatsSnapshot;
use crate::block::nbd::ExportInfo;

pub use super::goto::Structure;
pub use super::groups::{Checksum, GroupRow, GroupsTable};
pub use super::search::{Found, Match, Search};
pub use super::tree::{FileAt, LayerSet, Marks, TreeNode};

/// The panes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Chain,
    Status,
    Tree,
    Superblock,
    Groups,
    Hex,
    HitMap,
}

impl Pane {
    /// Tab order, and the narrow layout's tab line.
    pub const ORDER: [Pane; 7] = [
        Pane::Chain,
        Pane::Tree,
        Pane::Hex,
        Pane::HitMap,
        Pane::Superblock,
        Pane::Groups,
        Pane::Status,
    ];

    /// The pane's name on its tab.
    pub fn name(self) -> &'static str {
        match self {
            Pane::Chain => "Chain",
            Pane::Status => "Status",
            Pane::Tree => "Tree",
            Pane::Superblock => "Superblock",
            Pane::Groups => "Groups",
            Pane::Hex => "Hex",
            Pane::HitMap => "Hit map",
        }
    }

    fn step(self, by: isize) -> Pane {
        let i = Self::ORDER.iter().position(|p| *p == self).unwrap_or(0) as isize;
        Self::ORDER[(i + by).rem_euclid(Self::ORDER.len() as isize) as usize]
    }
}

/// What the user asked for (from keys, mouse or a script).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    NextPane,
    PrevPane,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Enter,
    Back,
    Help,
    /// Start the "go to" prompt.
    Goto,
    /// Start the search prompt (`/`).
    Search,
    /// Show the next search match (`n`).
    NextMatch,
    /// A character typed into the prompt.
    Char(char),
    Backspace,
    ToggleHitMode,
    /// Show or hide what the layer in view changed.
    Diff,
    /// The terminal's new size.
    Resize(u16, u16),
    /// Time passes: refresh live data.
    Tick,
    /// Focus a pane (mouse click).
    Focus(Pane),
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
    /// A directory's first block, and its entries' fields.
    DirBlock { as_of: usize, ino: u64 },
    /// The group descriptor table.
    Groups { as_of: usize },
    /// One group descriptor's fields.
    GroupFields { as_of: usize, group: u64 },
    /// What layer `to` changed over the one below (on its own thread).
    Diff { to: usize },
    /// Stop the running diff.
    CancelDiff,
    /// A changed file's bytes as of both layers.
    Compare {
        to: usize,
        change: Box<crate::diff::Change>,
        offset: Option<u64>,
    },
}

/// The worker's answers.
#[derive(Clone, Debug)]
pub enum Reply {
    Hex(HexData),
    Grid(Grid),
    Nbd(Box<(ExportInfo, StatsSnapshot)>),
    /// The superblock's fields (or why there is no filesystem).
    Fs {
        as_of: usize,
        fields: Result<Vec<FieldRow>, String>,
    },
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
    Compare(Box<super::changes::FileCompare>),
    /// Nothing to show.
    Done,
    Error(String),
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
            .position(|&(o, n)| offset >= o && offset - o < n as u64)
            .map(|i| (i, self.selected == Some(i)))
    }

    /// The byte to keep on screen: the selected field's, else the first.
    fn anchor(&self) -> Option<(u64, usize)> {
        self.selected
            .and_then(|i| self.fields.get(i))
            .or_else(|| self.fields.first())
            .copied()
    }
}

/// One superblock field for the pane and the hex highlight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRow {
    pub name: &'static str,
    pub offset: u64,
    pub size: usize,
    /// Escaped for the terminal.
    pub value: String,
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

/// Static ownership (from metadata) or runtime hits (what reads touched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HitMode {
    Static,
    Runtime,
}

/// One cell of the hit map grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellOwner {
    Layer(usize),
    Nowhere,
    NotRead,
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
}

impl From<Served> for CellOwner {
    fn from(s: Served) -> Self {
        match s {
            Served::Layer(l) | Served::Journal(l) => CellOwner::Layer(l),
            Served::Nowhere => CellOwner::Nowhere,
            Served::NotRead => CellOwner::NotRead,
        }
    }
}

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

/// The whole UI state.
#[derive(Clone, Debug)]
pub struct App {
    pub title: String,
    /// Base first.
    pub layers: Vec<LayerView>,
    pub disk_size: u64,
    pub focus: Pane,
    /// The chain pane's selection.
    pub chain_sel: usize,
    /// The layer the disk is seen "as of" (the chain cut there).
    pub as_of: usize,
    /// First byte shown in the hex pane (a multiple of 16).
    pub hex_offset: u64,
    pub hex: Option<HexData>,
    pub hit_mode: HitMode,
    pub grid: Option<Grid>,
    pub nbd: Option<Box<(ExportInfo, StatsSnapshot)>>,
    /// The superblock pane's rows, or why there is no filesystem.
    pub sb: Option<Result<Vec<FieldRow>, String>>,
    pub sb_sel: usize,
    /// The tree, flattened in display order.
    pub tree: Vec<TreeNode>,
    pub tree_sel: usize,
    pub tree_error: Option<String>,
    /// The cells of the hit map holding the opened file's blocks (as many
    /// as the grid has).
    pub file_cells: Option<Vec<bool>>,
    /// The group descriptor table, or why there is none (asked for when
    /// the Groups pane first shows).
    pub groups: Option<Result<GroupsTable, String>>,
    pub groups_sel: usize,
    /// The fields of the group opened with Enter, and the selected one.
    pub group_fields: Option<(u64, Vec<FieldRow>)>,
    pub group_field_sel: usize,
    /// Fields the hex view marks.
    pub highlight: Option<Highlight>,
    /// The diff of a layer (kept while that layer is in view) and whether
    /// its list shows in the tree's place.
    pub changes: Option<super::changes::Changes>,
    pub show_changes: bool,
    /// The filesystem's block size (for `g b<N>`), once known.
    pub block_size: Option<u64>,
    pub is_nbd: bool,
    pub help: bool,
    /// The prompt's text while it is open: "go to", or the search's
    /// when `prompt_search`.
    pub prompt: Option<String>,
    pub prompt_search: bool,
    /// The last search and its matches.
    pub search: Option<Search>,
    /// A match being revealed: the inodes from the root's child down to
    /// it, whose directories are opened one reply at a time.
    pub reveal: Option<Vec<u64>>,
    pub message: Option<String>,
    pub quit: bool,
    pub width: u16,
    pub height: u16,
}

impl App {
    /// A new app for a chain described by `layers` (base first).
    pub fn new(title: String, layers: Vec<LayerView>, disk_size: u64, is_nbd: bool) -> App {
        let top = layers.len().saturating_sub(1);
        App {
            title,
            layers,
            disk_size,
            focus: Pane::Hex,
            chain_sel: top,
            as_of: top,
            hex_offset: 0,
            hex: None,
            hit_mode: HitMode::Static,
            grid: None,
            nbd: None,
            sb: None,
            sb_sel: 0,
            tree: Vec::new(),
            tree_sel: 0,
            tree_error: None,
            file_cells: None,
            groups: None,
            groups_sel: 0,
            group_fields: None,
            group_field_sel: 0,
            highlight: None,
            changes: None,
            show_changes: false,
            block_size: None,
            is_nbd,
            help: false,
            prompt: None,
            prompt_search: false,
            search: None,
            reveal: None,
            message: None,
            quit: false,
            width: 80,
            height: 24,
        }
    }

    /// Rows the hex pane shows at the current size.
    pub fn hex_rows(&self) -> u64 {
        let area = super::render::layout(self, Pane::Hex).hex;
        u64::from(area.map_or(1, |r| r.height.saturating_sub(2))).max(1)
    }

    /// Cells the hit map pane shows at the current size (its last row is
    /// the legend).
    pub fn grid_cells(&self) -> usize {
        let area = super::render::layout(self, Pane::HitMap).hitmap;
        area.map_or(0, |r| {
            usize::from(r.width.saturating_sub(2)) * usize::from(r.height.saturating_sub(3))
        })
    }

    /// Whether all panes fit side by side.
    pub fn wide(&self) -> bool {
        self.width >= 110 && self.height >= 30
    }

    /// The requests that fill the screen for the current state.
    pub fn refresh(&self) -> Vec<Request> {
        let mut r = vec![Request::Hex {
            as_of: self.as_of,
            offset: self.hex_offset,
            len: (self.hex_rows() * 16).min(self.disk_size.saturating_sub(self.hex_offset)),
        }];
        if self.grid_cells() > 0 {
            r.push(Request::Grid {
                as_of: self.as_of,
                cells: self.grid_cells(),
                mode: self.hit_mode,
            });
        }
        if self.is_nbd {
            r.push(Request::Nbd);
        }
        if self.sb.is_none() {
            r.push(Request::Fs { as_of: self.as_of });
        }
        r.extend(self.lazy());
        r
    }

    /// Requests for data only the focused pane needs, when not in yet.
    fn lazy(&self) -> Option<Request> {
        (self.focus == Pane::Groups && self.groups.is_none())
            .then_some(Request::Groups { as_of: self.as_of })
    }

    /// Marks `h`'s fields in the hex view, scrolling it to the selected
    /// (or first) field when that is off screen.
    pub(super) fn show_highlight(&mut self, h: Highlight) -> Vec<Request> {
        let anchor = h.anchor();
        self.highlight = Some(h);
        let Some((offset, _)) = anchor else {
            return Vec::new();
        };
        let rows_on_screen = self.hex_rows() * 16;
        if offset < self.hex_offset || offset >= self.hex_offset + rows_on_screen {
            self.hex_offset = (offset & !15)
                .saturating_sub((rows_on_screen / 2) & !15)
                .min(self.max_offset());
            return self.refresh().into_iter().take(1).collect();
        }
        Vec::new()
    }

    /// Forgets what was read as of the current layer (it changed).
    fn clear_layer_data(&mut self) {
        self.hex = None;
        self.grid = None;
        self.sb = None;
        self.tree.clear();
        self.tree_sel = 0;
        self.file_cells = None;
        self.search = None;
        self.reveal = None;
        self.groups = None;
        self.groups_sel = 0;
        self.group_fields = None;
        self.highlight = None;
        self.show_changes = false;
    }

    /// Moves the superblock selection and highlights the field's bytes.
    fn select_field(&mut self, sel: usize) -> Vec<Request> {
        let Some(Ok(rows)) = &self.sb else {
            return Vec::new();
        };
        let Some(row) = rows.get(sel.min(rows.len().saturating_sub(1))) else {
            return Vec::new();
        };
        let h = Highlight {
            label: format!("superblock {}", row.name),
            fields: rows.iter().map(|r| (r.offset, r.size)).collect(),
            selected: Some(sel.min(rows.len() - 1)),
        };
        self.sb_sel = sel.min(rows.len() - 1);
        self.show_highlight(h)
    }

    pub(super) fn max_offset(&self) -> u64 {
        let rows = self.disk_size.div_ceil(16);
        rows.saturating_sub(self.hex_rows()) * 16
    }

    fn scroll_hex(&mut self, rows: i64) -> Vec<Request> {
        let delta = rows.unsigned_abs().saturating_mul(16);
        let new = if rows < 0 {
            self.hex_offset.saturating_sub(delta)
        } else {
            self.hex_offset.saturating_add(delta).min(self.max_offset())
        };
        self.hex_offset = new;
        self.refresh().into_iter().take(1).collect()
    }

    /// Applies an action; returns work for the worker (with the layer
    /// marks of tree rows that came into view).
    pub fn apply(&mut self, action: Action) -> Vec<Request> {
        let mut r = self.apply_inner(action);
        r.extend(self.marks_request());
        r
    }

    fn apply_inner(&mut self, action: Action) -> Vec<Request> {
        if let Some(text) = &mut self.prompt {
            match action {
                Action::Char(c) => text.push(c),
                Action::Backspace => {
                    text.pop();
                }
                Action::Back => self.prompt = None,
                Action::Enter => {
                    let text = self.prompt.take().unwrap_or_default();
                    if self.prompt_search {
                        return self.start_search(text);
                    }
                    return self.goto(&text);
                }
                Action::Resize(w, h) => {
                    self.width = w;
                    self.height = h;
                }
                _ => {}
            }
            return Vec::new();
        }
        if self.help && !matches!(action, Action::Resize(..) | Action::Tick) {
            self.help = false;
            if action == Action::Help || action == Action::Back {
                return Vec::new();
            }
        }
        self.message = None;
        let page = self.hex_rows() as i64;
        let handled = match self.focus {
            Pane::Tree | Pane::Hex if self.show_changes => self.changes_action(&action),
            Pane::Groups => self.groups_action(&action),
            Pane::Tree => self.tree_action(&action),
            _ => None,
        };
        if let Some(r) = handled {
            return r;
        }
        match (action, self.focus) {
            (Action::Quit, _) => self.quit = true,
            (Action::Help, _) => self.help = true,
            (Action::NextPane, _) => {
                self.focus = self.focus.step(1);
                return self.lazy().into_iter().collect();
            }
            (Action::PrevPane, _) => {
                self.focus = self.focus.step(-1);
                return self.lazy().into_iter().collect();
            }
            (Action::Focus(p), _) => {
                self.focus = p;
                return self.lazy().into_iter().collect();
            }
            (Action::Goto, _) => {
                self.prompt = Some(String::new());
                self.prompt_search = false;
            }
            (Action::Search, _) => {
                if !matches!(self.sb, Some(Ok(_))) {
                    self.message = Some("no filesystem to search".into());
                    return Vec::new();
                }
                self.prompt = Some(String::new());
                self.prompt_search = true;
            }
            (Action::NextMatch, _) => return self.next_match(),
            (Action::Back, _) if self.search.as_ref().is_some_and(|s| s.found.is_none()) => {
                // The worker sees the cancel through its generation
                // counter (the run loop bumps it on this key).
                self.search = None;
                self.message = Some("search cancelled".into());
            }
            (Action::Diff, _) => return self.toggle_changes(),
            (Action::ToggleHitMode, _) => {
                self.hit_mode = match self.hit_mode {
                    HitMode::Static => HitMode::Runtime,
                    HitMode::Runtime => HitMode::Static,
                };
                self.grid = None;
                return self.refresh();
            }
            (Action::Resize(w, h), _) => {
                self.width = w;
                self.height = h;
                self.hex_offset = self.hex_offset.min(self.max_offset());
                return self.refresh();
            }
            (Action::Tick, _) => {
                return self
                    .refresh()
                    .into_iter()
                    .filter(|r| {
                        matches!(r, Request::Nbd)
                            || (self.hit_mode == HitMode::Runtime
                                && matches!(r, Request::Grid { .. }))
                    })
                    .collect()
            }
            (Action::Up, Pane::Superblock) => {
                return self.select_field(self.sb_sel.saturating_sub(1))
            }
            (Action::Down, Pane::Superblock) => return self.select_field(self.sb_sel + 1),
            (Action::PageUp, Pane::Superblock) => {
                return self.select_field(self.sb_sel.saturating_sub(10))
            }
            (Action::PageDown, Pane::Superblock) => return self.select_field(self.sb_sel + 10),
            (Action::Enter, Pane::Superblock) => {
                self.focus = Pane::Superblock;
                return self.select_field(self.sb_sel);
            }
            (Action::Up, Pane::Chain) => {
                self.chain_sel = (self.chain_sel + 1).min(self.layers.len().saturating_sub(1))
            }
            (Action::Down, Pane::Chain) => self.chain_sel = self.chain_sel.saturating_sub(1),
            (Action::Top, Pane::Chain) => self.chain_sel = self.layers.len().saturating_sub(1),
            (Action::Bottom, Pane::Chain) => self.chain_sel = 0,
            (Action::Enter, Pane::Chain) => {
                self.as_of = self.chain_sel;
                self.clear_layer_data();
                self.message = Some(format!("disk as of layer {}", self.as_of));
                return self.refresh();
            }
            (Action::Back, Pane::Chain) => {
                self.as_of = self.layers.len().saturating_sub(1);
                self.chain_sel = self.as_of;
                self.clear_layer_data();
                return self.refresh();
            }
            (Action::Up, _) => return self.scroll_hex(-1),
            (Action::Down, _) => return self.scroll_hex(1),
            (Action::PageUp, _) => return self.scroll_hex(-page),
            (Action::PageDown, _) => return self.scroll_hex(page),
            (Action::Top, _) => return self.scroll_hex(i64::MIN / 32),
            (Action::Bottom, _) => return self.scroll_hex(i64::MAX / 32),
            _ => {}
        }
        Vec::new()
    }

    /// Takes a worker reply (stale ones, for another layer or offset, are
    /// dropped); returns any follow-up work.
    pub fn receive(&mut self, reply: Reply) -> Vec<Request> {
        let mut r = self.receive_inner(reply);
        r.extend(self.marks_request());
        r
    }

    fn receive_inner(&mut self, reply: Reply) -> Vec<Request> {
        match reply {
            Reply::Hex(h) if h.as_of == self.as_of && h.offset == self.hex_offset => {
                self.hex = Some(h)
            }
            Reply::Grid(g)
                if g.as_of == self.as_of
                    && g.mode == self.hit_mode
                    && g.cells.len() == self.grid_cells() =>
            {
                self.grid = Some(g)
            }
            Reply::Nbd(n) => self.nbd = Some(n),
            Reply::Fs { as_of, fields } if as_of == self.as_of => {
                self.block_size = fields.as_ref().ok().and_then(|rows| {
                    let log = rows.iter().find(|r| r.name == "s_log_block_size")?;
                    let log: u32 = log.value.parse().ok()?;
                    1024u64.checked_shl(log).filter(|&b| b <= 1 << 16)
                });
                self.sb = Some(fields);
                self.tree = vec![TreeNode::root()];
                self.tree_sel = 0;
                self.tree_error = None;
            }
            Reply::Dir {
                as_of,
                ino,
                entries,
            } if as_of == self.as_of => return self.receive_dir(ino, entries),
            Reply::FileAt(f) if f.as_of == self.as_of => return self.receive_file(*f),
            Reply::Marks { as_of, marks } if as_of == self.as_of => self.receive_marks(marks),
            Reply::Found(f) => return self.receive_found(*f),
            Reply::Structure(st) if st.as_of == self.as_of => return self.receive_structure(*st),
            Reply::Groups { as_of, table } if as_of == self.as_of => {
                self.groups = Some(table);
                return self.select_group(self.groups_sel);
            }
            Reply::GroupFields {
                as_of,
                group,
                fields,
            } if as_of == self.as_of => match fields {
                Ok(f) => {
                    self.group_fields = Some((group, f));
                    return self.select_group_field(0);
                }
                Err(e) => self.message = Some(e),
            },
            r @ (Reply::DiffProgress { .. } | Reply::Diff { .. } | Reply::Compare(_)) => {
                self.receive_changes(r)
            }
            Reply::Error(e) => self.message = Some(e),
            _ => {}
        }
        Vec::new()
    }
}
