//! The app: the panes, what they share, and the routing between them. No
//! I/O and no drawing here: [`App::apply`] turns an [`Action`] into state
//! changes and [`Request`]s for the worker, [`App::receive`] takes the
//! worker's [`Reply`]s. Each key goes to the focused pane first, then to
//! the keys every pane shares; what a pane asks of the others comes back
//! as [`Effect`]s, carried out here.
mod input;
mod receive;

pub use crate::ui::action::{Action, Pane};
pub use crate::ui::context::{Highlight, LayerView};
pub use crate::ui::msg::{Reply, Request};

use crate::block::chain::Chain;
use crate::ui::context::{Effect, Effects, FsState, OpenState, Shared};
use crate::ui::layout::areas;
use crate::ui::msg::ChainInfo;
use crate::ui::panes::chain::ChainPane;
use crate::ui::panes::changes::ChangesPane;
use crate::ui::panes::groups::GroupsPane;
use crate::ui::panes::hex::HexPane;
use crate::ui::panes::hitmap::HitMapPane;
use crate::ui::panes::status::StatusPane;
use crate::ui::panes::superblock::SuperblockPane;
use crate::ui::panes::tree::TreePane;
use crate::ui::panes::volumes::VolumesPane;

/// What the prompt is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptKind {
    /// `g`: an offset, a block or an inode.
    Goto,
    /// `/`: a name fragment.
    Search,
}

/// The open prompt and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub kind: PromptKind,
    pub text: String,
}

/// A line in the message bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Escaped for the terminal.
    pub text: String,
    /// Something went wrong (drawn as an error).
    pub error: bool,
}

/// The whole UI state.
#[derive(Clone, Debug)]
pub struct App {
    pub shared: Shared,
    pub chain: ChainPane,
    pub status: StatusPane,
    pub superblock: SuperblockPane,
    pub groups: GroupsPane,
    pub tree: TreePane,
    pub hex: HexPane,
    pub hitmap: HitMapPane,
    pub changes: ChangesPane,
    pub volumes: VolumesPane,
    pub prompt: Option<Prompt>,
    /// The message line, kept until the next key.
    pub message: Option<Message>,
    pub help: bool,
    pub quit: bool,
}

impl App {
    /// A new app for a chain described by `layers` (base first).
    pub fn new(title: String, layers: Vec<LayerView>, disk_size: u64, is_nbd: bool) -> App {
        let mut app = App::opening(title, is_nbd);
        app.opened(ChainInfo {
            title: app.shared.title.clone(),
            layers,
            disk_size,
            is_nbd,
            is_ssh: false,
            bitmaps: Vec::new(),
        });
        app
    }

    /// The app for a chain being opened (by the worker): up at once, it
    /// says what it waits for and answers `q`.
    pub fn opening(title: String, is_nbd: bool) -> App {
        App {
            shared: Shared {
                title,
                layers: Vec::new(),
                disk_size: 0,
                is_nbd,
                is_ssh: false,
                as_of: 0,
                focus: Pane::Hex,
                width: 80,
                height: 24,
                block_size: None,
                fs: FsState::Reading,
                fs_kind: "",
                fs_root: 2,
                volume: None,
                volume_rows: 1,
                journal_note: false,
                server_layers: None,
                open: OpenState::Opening,
            },
            chain: ChainPane::default(),
            status: StatusPane::default(),
            superblock: SuperblockPane::default(),
            groups: GroupsPane::default(),
            tree: TreePane::default(),
            hex: HexPane::default(),
            hitmap: HitMapPane::default(),
            changes: ChangesPane::default(),
            volumes: VolumesPane::default(),
            prompt: None,
            message: None,
            help: false,
            quit: false,
        }
    }

    /// The chain is open: the top layer in view (and the bitmap asked
    /// for in the hit map, or why it cannot be in the message line).
    fn opened(&mut self, info: ChainInfo) {
        if let Err(e) = self.hitmap.opened(info.bitmaps, &info.title) {
            self.say(e, true);
        }
        let top = info.layers.len().saturating_sub(1);
        let s = &mut self.shared;
        s.title = info.title;
        s.layers = info.layers;
        s.disk_size = info.disk_size;
        s.is_nbd = info.is_nbd;
        s.is_ssh = info.is_ssh;
        s.as_of = top;
        s.open = OpenState::Open;
        self.chain.sel = top;
    }

    /// The app state for a chain.
    pub fn for_chain(chain: &Chain) -> App {
        App::for_chain_with(chain, None)
    }

    /// The app state for a chain, the hit map showing persistent dirty
    /// bitmap `bitmap` of the top layer (`--bitmap NAME`; one not there
    /// is said in the message line).
    pub fn for_chain_with(chain: &Chain, bitmap: Option<String>) -> App {
        let info = ChainInfo::of(chain);
        let mut app = App::opening(info.title.clone(), info.is_nbd);
        app.hitmap.want = bitmap;
        app.opened(info);
        app
    }

    /// The pane with the focus.
    pub fn focus(&self) -> Pane {
        self.shared.focus
    }

    /// The requests that fill the screen for the current state.
    pub fn refresh(&self) -> Vec<Request> {
        let s = &self.shared;
        if s.open != OpenState::Open {
            return Vec::new();
        }
        let mut r = vec![self.hex.request(s)];
        r.extend(self.hitmap.request(s));
        if s.is_nbd {
            r.push(Request::Nbd);
        }
        if s.is_ssh {
            r.push(Request::Ssh);
        }
        if self.superblock.fields.is_none() {
            r.push(Request::Fs { as_of: s.as_of });
        }
        r.extend(self.lazy());
        r
    }

    /// Requests for data only a pane on screen needs (the group table,
    /// the volumes), when not in yet.
    fn lazy(&self) -> Vec<Request> {
        let on_screen = areas(&self.shared);
        let mut r = Vec::new();
        if on_screen.groups.is_some() && self.groups.table.is_none() {
            r.push(Request::Groups {
                as_of: self.shared.as_of,
            });
        }
        if on_screen.volumes.is_some() && self.volumes.list.is_none() {
            r.push(Request::Volumes);
        }
        r
    }

    /// Applies an action; returns work for the worker (with the layer
    /// marks of tree rows that came into view).
    pub fn apply(&mut self, action: Action) -> Vec<Request> {
        let fx = self.apply_inner(action);
        let mut r = self.run(fx);
        r.extend(self.tree.marks_request(&self.shared));
        r
    }

    /// Carries out effects; returns the requests among them and those
    /// they lead to.
    fn run(&mut self, fx: Effects) -> Vec<Request> {
        let mut out = Vec::new();
        for e in fx {
            match e {
                Effect::Request(r) => out.push(r),
                Effect::Highlight(h) => out.extend(self.hex.show_highlight(h, &self.shared)),
                Effect::HexTo { offset, clear } => {
                    if clear {
                        self.hex.highlight = None;
                        self.hex.data = None;
                    }
                    out.push(self.hex.go(offset, &self.shared));
                }
                Effect::HexStale => self.hex.data = None,
                Effect::Focus(p) => {
                    self.shared.focus = p;
                    out.extend(self.lazy());
                }
                Effect::Message(m) => self.say(m, false),
                Effect::Error(m) => self.say(m, true),
                Effect::AsOf(n) => {
                    self.shared.as_of = n;
                    self.clear_layer_data();
                    out.extend(self.refresh());
                }
                Effect::Volume(name) => {
                    // The worker switches first, then serves what the
                    // panes ask anew (requests are served in order).
                    out.push(Request::Volume { name });
                    self.clear_layer_data();
                    self.tree.clear();
                    self.changes = ChangesPane::default();
                    out.extend(self.refresh());
                }
                Effect::FileCells(cells) => {
                    let n = crate::ui::layout::grid_cells(&self.shared);
                    self.hitmap.file_cells = cells.filter(|c| c.len() == n);
                }
            }
        }
        out
    }

    /// Shows a message (until the next key) and logs it.
    fn say(&mut self, text: String, error: bool) {
        if error {
            tracing::warn!(message = %text, "error shown");
        } else {
            tracing::info!(message = %text, "message");
        }
        self.message = Some(Message { text, error });
    }

    /// Forgets what was read as of the current layer (it changed).
    fn clear_layer_data(&mut self) {
        self.hex.data = None;
        self.hex.highlight = None;
        self.hitmap.grid = None;
        self.hitmap.file_cells = None;
        self.superblock.fields = None;
        self.shared.fs = FsState::Reading;
        self.tree.remember();
        self.groups = GroupsPane::default();
        self.changes.show = false;
    }

    /// Takes a worker reply (stale ones, for another layer or offset, are
    /// dropped); returns any follow-up work.
    pub fn receive(&mut self, reply: Reply) -> Vec<Request> {
        let fx = self.receive_inner(reply);
        let mut r = self.run(fx);
        r.extend(self.tree.marks_request(&self.shared));
        r
    }

    /// The layout for the current state (for the mouse).
    pub fn areas(&self) -> crate::ui::layout::Areas {
        areas(&self.shared)
    }
}
