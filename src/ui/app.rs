//! The app: the panes, what they share, and the routing between them. No
//! I/O and no drawing here: [`App::apply`] turns an [`Action`] into state
//! changes and [`Request`]s for the worker, [`App::receive`] takes the
//! worker's [`Reply`]s. Each key goes to the focused pane first, then to
//! the keys every pane shares; what a pane asks of the others comes back
//! as [`Effect`]s, carried out here.
pub use super::action::{Action, Pane};
pub use super::context::{Highlight, LayerView};
pub use super::msg::{Reply, Request};

use super::context::{Effect, Effects, FsState, Shared};
use super::goto::{parse, Target};
use super::layout::areas;
use super::msg::FieldRow;
use super::panes::chain::ChainPane;
use super::panes::changes::ChangesPane;
use super::panes::groups::GroupsPane;
use super::panes::hex::HexPane;
use super::panes::hitmap::HitMapPane;
use super::panes::status::StatusPane;
use super::panes::superblock::SuperblockPane;
use super::panes::tree::TreePane;
use crate::block::chain::Chain;

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
    pub prompt: Option<Prompt>,
    /// The message line, kept until the next key.
    pub message: Option<String>,
    pub help: bool,
    pub quit: bool,
}

impl App {
    /// A new app for a chain described by `layers` (base first).
    pub fn new(title: String, layers: Vec<LayerView>, disk_size: u64, is_nbd: bool) -> App {
        let top = layers.len().saturating_sub(1);
        App {
            shared: Shared {
                title,
                layers,
                disk_size,
                is_nbd,
                as_of: top,
                focus: Pane::Hex,
                width: 80,
                height: 24,
                block_size: None,
                fs: FsState::Reading,
            },
            chain: ChainPane { sel: top },
            status: StatusPane::default(),
            superblock: SuperblockPane::default(),
            groups: GroupsPane::default(),
            tree: TreePane::default(),
            hex: HexPane::default(),
            hitmap: HitMapPane::default(),
            changes: ChangesPane::default(),
            prompt: None,
            message: None,
            help: false,
            quit: false,
        }
    }

    /// The app state for a chain.
    pub fn for_chain(chain: &Chain) -> App {
        let layers = chain
            .layers
            .iter()
            .map(|l| {
                let detail = match &l.qcow2 {
                    Some(q) => {
                        let h = q.header();
                        format!(
                            "{} {}",
                            crate::units::human(h.cluster_size()),
                            h.compression.name()
                        )
                    }
                    None => String::new(),
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
        let title = top.map_or_else(String::new, |t| crate::escape::printable(&t.path));
        let size = top.map_or(0, |t| t.source.len());
        let is_nbd = top.is_some_and(|t| t.nbd.is_some());
        App::new(title, layers, size, is_nbd)
    }

    /// The pane with the focus.
    pub fn focus(&self) -> Pane {
        self.shared.focus
    }

    /// The requests that fill the screen for the current state.
    pub fn refresh(&self) -> Vec<Request> {
        let s = &self.shared;
        let mut r = vec![self.hex.request(s)];
        r.extend(self.hitmap.request(s));
        if s.is_nbd {
            r.push(Request::Nbd);
        }
        if self.superblock.fields.is_none() {
            r.push(Request::Fs { as_of: s.as_of });
        }
        r.extend(self.lazy());
        r
    }

    /// Requests for data only the focused pane needs, when not in yet.
    fn lazy(&self) -> Option<Request> {
        (self.shared.focus == Pane::Groups && self.groups.table.is_none()).then_some(
            Request::Groups {
                as_of: self.shared.as_of,
            },
        )
    }

    /// Applies an action; returns work for the worker (with the layer
    /// marks of tree rows that came into view).
    pub fn apply(&mut self, action: Action) -> Vec<Request> {
        let fx = self.apply_inner(action);
        let mut r = self.run(fx);
        r.extend(self.tree.marks_request(&self.shared));
        r
    }

    fn apply_inner(&mut self, action: Action) -> Effects {
        if let Action::Resize(w, h) = action {
            self.shared.width = w;
            self.shared.height = h;
            self.hex.clamp(&self.shared);
            return super::context::requests(self.refresh());
        }
        if self.prompt.is_some() {
            return self.prompt_key(action);
        }
        if self.help && action.is_user() {
            self.help = false;
            if action == Action::Help || action == Action::Back {
                return Vec::new();
            }
        }
        if action.is_user() {
            self.message = None;
        }
        let s = &self.shared;
        let first = match s.focus {
            Pane::Tree | Pane::Hex if self.changes.show => self.changes.key(&action),
            Pane::Groups => self.groups.key(&action, s),
            Pane::Tree => self.tree.key(&action, s),
            _ => None,
        };
        if let Some(fx) = first {
            return fx;
        }
        if let Some(fx) = self.global_key(&action) {
            return fx;
        }
        let s = &self.shared;
        let pane = match s.focus {
            Pane::Superblock => self.superblock.key(&action),
            Pane::Chain => self.chain.key(&action, s),
            _ => None,
        };
        if let Some(fx) = pane {
            return fx;
        }
        // Elsewhere the moving keys scroll the hex view.
        self.hex
            .key(&action, &self.shared)
            .map(Effect::Request)
            .into_iter()
            .collect()
    }

    /// The keys every pane shares.
    fn global_key(&mut self, action: &Action) -> Option<Effects> {
        let focus = self.shared.focus;
        Some(match action {
            Action::Quit => {
                self.quit = true;
                Vec::new()
            }
            Action::Help => {
                self.help = true;
                Vec::new()
            }
            Action::NextPane => vec![Effect::Focus(focus.step(1))],
            Action::PrevPane => vec![Effect::Focus(focus.step(-1))],
            Action::Focus(p) => vec![Effect::Focus(*p)],
            Action::Goto => self.open_prompt(PromptKind::Goto),
            Action::Search => {
                if !self.shared.fs.is_present() {
                    return Some(vec![Effect::Message("no filesystem to search".into())]);
                }
                self.open_prompt(PromptKind::Search)
            }
            Action::NextMatch => self.tree.next_match(&self.shared),
            Action::Back if self.tree.searching() => self.tree.cancel_search(),
            Action::Diff => self.changes.toggle(&self.shared),
            Action::ToggleHitMode => {
                self.hitmap.toggle();
                super::context::requests(self.refresh())
            }
            Action::Tick => {
                let runtime = self.hitmap.mode == super::msg::HitMode::Runtime;
                super::context::requests(self.refresh().into_iter().filter(|r| {
                    matches!(r, Request::Nbd) || (runtime && matches!(r, Request::Grid { .. }))
                }))
            }
            _ => return None,
        })
    }

    fn open_prompt(&mut self, kind: PromptKind) -> Effects {
        self.prompt = Some(Prompt {
            kind,
            text: String::new(),
        });
        Vec::new()
    }

    /// A key while the prompt is open.
    fn prompt_key(&mut self, action: Action) -> Effects {
        let Some(p) = &mut self.prompt else {
            return Vec::new();
        };
        match action {
            Action::Char(c) => p.text.push(c),
            Action::Backspace => {
                p.text.pop();
            }
            Action::Back => self.prompt = None,
            Action::Quit => self.quit = true,
            Action::Enter => {
                let Prompt { kind, text } = self.prompt.take().unwrap_or(Prompt {
                    kind: PromptKind::Goto,
                    text: String::new(),
                });
                return match kind {
                    PromptKind::Search => self.tree.start_search(text, &self.shared),
                    PromptKind::Goto => self.goto(&text),
                };
            }
            _ => {}
        }
        Vec::new()
    }

    /// `g`: goes to what `text` names (see [`super::goto`]).
    fn goto(&mut self, text: &str) -> Effects {
        let s = &self.shared;
        let off = match parse(text) {
            Err(e) => return vec![Effect::Message(e)],
            Ok(Target::Inode(ino)) => {
                if !s.fs.is_present() {
                    return vec![Effect::Message("no filesystem: no inodes to go to".into())];
                }
                return vec![Effect::Request(Request::Inode {
                    as_of: s.as_of,
                    ino,
                })];
            }
            Ok(Target::Block(b)) => b.saturating_mul(s.block_size.unwrap_or(4096)),
            Ok(Target::Offset(o)) => o,
        };
        if off >= s.disk_size {
            return vec![Effect::Message(format!(
                "{off:#x} is past the end of the disk ({:#x})",
                s.disk_size
            ))];
        }
        vec![
            Effect::HexTo {
                offset: off,
                clear: false,
            },
            Effect::Focus(Pane::Hex),
        ]
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
                Effect::Message(m) => self.say(m),
                Effect::AsOf(n) => {
                    self.shared.as_of = n;
                    self.clear_layer_data();
                    out.extend(self.refresh());
                }
                Effect::FileCells(cells) => {
                    let n = super::layout::grid_cells(&self.shared);
                    self.hitmap.file_cells = cells.filter(|c| c.len() == n);
                }
            }
        }
        out
    }

    /// Shows a message (until the next key) and logs it.
    fn say(&mut self, m: String) {
        tracing::info!(message = %m, "message");
        self.message = Some(m);
    }

    /// Forgets what was read as of the current layer (it changed).
    fn clear_layer_data(&mut self) {
        self.hex.data = None;
        self.hex.highlight = None;
        self.hitmap.grid = None;
        self.hitmap.file_cells = None;
        self.superblock.fields = None;
        self.shared.fs = FsState::Reading;
        self.tree.clear();
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

    fn receive_inner(&mut self, reply: Reply) -> Effects {
        let s = &self.shared;
        match reply {
            Reply::Hex(h) => self.hex.receive(h, s),
            Reply::Grid(g) => self.hitmap.receive(g, s),
            Reply::Nbd(n) => self.status.nbd = Some(n),
            Reply::Fs { as_of, fields } if as_of == s.as_of => self.receive_fs(fields),
            Reply::Dir {
                as_of,
                ino,
                entries,
            } if as_of == s.as_of => {
                let changes = self.changes.rows_for(s.as_of);
                return self.tree.receive_dir(ino, entries, changes, s);
            }
            Reply::FileAt(f) if f.as_of == s.as_of => return self.tree.receive_file(*f),
            Reply::Marks { as_of, marks } if as_of == s.as_of => self.tree.receive_marks(marks),
            Reply::Found(f) => return self.tree.receive_found(*f, s),
            Reply::Structure(st) if st.as_of == s.as_of => {
                let mut fx = Vec::new();
                if st.focus {
                    fx.push(Effect::Focus(Pane::Hex));
                }
                fx.push(Effect::HexStale);
                self.hex.offset = (st.at & !15).min(HexPane::max_offset(s));
                let h = Highlight {
                    label: st.label,
                    fields: st.fields,
                    selected: None,
                };
                match self.hex.show_highlight(h, s) {
                    Some(r) => fx.push(Effect::Request(r)),
                    None => fx.push(Effect::Request(self.hex.request(s))),
                }
                return fx;
            }
            Reply::Groups { as_of, table } if as_of == s.as_of => {
                return self.groups.receive_table(table)
            }
            Reply::GroupFields {
                as_of,
                group,
                fields,
            } if as_of == s.as_of => return self.groups.receive_fields(group, fields),
            r @ (Reply::DiffProgress { .. } | Reply::Diff { .. } | Reply::Compare(_)) => {
                self.receive_diff(r)
            }
            Reply::Error(e) => return vec![Effect::Message(e)],
            _ => {}
        }
        Vec::new()
    }

    /// The diff's replies; when its result is in, the tree shows the
    /// names it deleted.
    fn receive_diff(&mut self, r: Reply) {
        if self.changes.receive(r) {
            let rows = self.changes.rows_for(self.shared.as_of);
            self.tree.add_deleted_rows(rows.unwrap_or_default());
        }
    }

    /// The superblock's fields (or why there is no filesystem): the tree
    /// starts at the root.
    fn receive_fs(&mut self, fields: Result<Vec<FieldRow>, String>) {
        self.shared.block_size = fields.as_ref().ok().and_then(|rows| {
            let log = rows.iter().find(|r| r.name == "s_log_block_size")?;
            let log: u32 = log.value.parse().ok()?;
            1024u64.checked_shl(log).filter(|&b| b <= 1 << 16)
        });
        self.shared.fs = match &fields {
            Ok(_) => FsState::Present,
            Err(e) => FsState::Missing(e.clone()),
        };
        self.superblock.fields = Some(fields);
        self.tree.reset_root();
    }

    /// The layout for the current state (for the mouse).
    pub fn areas(&self) -> super::layout::Areas {
        areas(&self.shared)
    }
}
