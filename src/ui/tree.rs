//! The Tree pane's state: directories opened lazily, the layers each
//! row's blocks come from (asked of the worker for the rows on screen
//! only), and what opening a file does to the other panes (the hex view
//! jumps to its first block, the hit map marks its cells).
use super::app::{Action, App, Pane, Request};

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
    /// The root directory, closed.
    pub fn root() -> TreeNode {
        TreeNode {
            ino: 2,
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

/// Rows asked about in one request, at most (a screenful).
const MARKS_PER_REQUEST: usize = 256;

impl App {
    /// Rows of the tree on screen (as it would be with the tree focused).
    pub(super) fn tree_window(&self) -> std::ops::Range<usize> {
        let area = super::render::layout(self, Pane::Tree).tree;
        let height = usize::from(area.map_or(0, |r| r.height.saturating_sub(2)));
        let start = super::render::scroll_start(self.tree_sel, height);
        start..(start + height).min(self.tree.len())
    }

    /// Asks for the layer marks of the rows on screen that have none; they
    /// become pending, so each row is asked about once.
    pub(super) fn marks_request(&mut self) -> Option<Request> {
        let on_screen = super::render::areas(self).tree.is_some();
        if !on_screen || !matches!(self.sb, Some(Ok(_))) {
            return None;
        }
        let window = self.tree_window();
        let mut inos = Vec::new();
        for n in self.tree[window].iter_mut() {
            if n.marks == Marks::Unknown && inos.len() < MARKS_PER_REQUEST {
                n.marks = Marks::Pending;
                inos.push(n.ino);
            }
        }
        (!inos.is_empty()).then_some(Request::Marks {
            as_of: self.as_of,
            inos,
        })
    }

    /// Takes layer marks from the worker.
    pub(super) fn receive_marks(&mut self, marks: Vec<(u64, LayerSet)>) {
        for (ino, set) in marks {
            for n in self
                .tree
                .iter_mut()
                .filter(|n| n.ino == ino && n.marks != Marks::Deleted)
            {
                n.marks = Marks::Known(set);
            }
        }
    }

    /// Keys in the Tree pane (None: not the pane's).
    pub(super) fn tree_action(&mut self, action: &Action) -> Option<Vec<Request>> {
        let last = self.tree.len().saturating_sub(1);
        let page = self.tree_window().len().max(1);
        match action {
            Action::Up => self.tree_sel = self.tree_sel.saturating_sub(1),
            Action::Down => self.tree_sel = (self.tree_sel + 1).min(last),
            Action::PageUp => self.tree_sel = self.tree_sel.saturating_sub(page),
            Action::PageDown => self.tree_sel = (self.tree_sel + page).min(last),
            Action::Top => self.tree_sel = 0,
            Action::Bottom => self.tree_sel = last,
            Action::Enter => return Some(self.tree_enter()),
            _ => return None,
        }
        Some(Vec::new())
    }

    /// Enter in the tree: open or close a directory, or show a file's bytes.
    fn tree_enter(&mut self) -> Vec<Request> {
        let Some(node) = self.tree.get(self.tree_sel).cloned() else {
            return Vec::new();
        };
        if node.marks == Marks::Deleted {
            self.message = Some(format!(
                "{} was deleted in layer {}: d, then Enter on it, shows it as of layer {}",
                node.name,
                self.as_of,
                self.as_of.saturating_sub(1)
            ));
            return Vec::new();
        }
        if !node.is_dir {
            return vec![Request::File {
                as_of: self.as_of,
                ino: node.ino,
                cells: self.grid_cells(),
            }];
        }
        if node.expanded {
            // Close: drop the deeper lines that follow.
            let end = self.tree[self.tree_sel + 1..]
                .iter()
                .position(|n| n.depth <= node.depth)
                .map_or(self.tree.len(), |p| self.tree_sel + 1 + p);
            self.tree.drain(self.tree_sel + 1..end);
            self.tree[self.tree_sel].expanded = false;
            return Vec::new();
        }
        // Open it, and show its first block with the entries marked.
        vec![
            Request::Dir {
                as_of: self.as_of,
                ino: node.ino,
            },
            Request::DirBlock {
                as_of: self.as_of,
                ino: node.ino,
            },
        ]
    }

    /// A directory's entries: shown under it.
    pub(super) fn receive_dir(
        &mut self,
        ino: u64,
        entries: Result<Vec<TreeNode>, String>,
    ) -> Vec<Request> {
        match entries {
            Ok(children) => {
                if let Some(i) = self
                    .tree
                    .iter()
                    .position(|n| n.ino == ino && n.is_dir && !n.expanded)
                {
                    let depth = self.tree[i].depth + 1;
                    self.tree[i].expanded = true;
                    let mut rows: Vec<TreeNode> = children
                        .into_iter()
                        .map(|mut c| {
                            c.depth = depth;
                            c
                        })
                        .collect();
                    rows.extend(self.deleted_rows(i));
                    self.tree.splice(i + 1..i + 1, rows);
                }
            }
            Err(e) => {
                self.tree_error = Some(e);
                self.reveal = None;
            }
        }
        self.advance_reveal()
    }

    /// A file's blocks: the hex view goes to the first, the hit map marks
    /// them all.
    pub(super) fn receive_file(&mut self, f: FileAt) -> Vec<Request> {
        for n in self
            .tree
            .iter_mut()
            .filter(|n| n.ino == f.ino && n.marks != Marks::Deleted)
        {
            n.marks = Marks::Known(f.layers);
        }
        self.file_cells = (f.cells.len() == self.grid_cells()).then_some(f.cells);
        let Some(off) = f.offset else {
            self.message = Some("no data blocks (empty, inline or a fast symlink)".into());
            return Vec::new();
        };
        self.hex_offset = (off & !15).min(self.max_offset());
        self.highlight = None;
        self.focus = Pane::Hex;
        let mut names: Vec<String> = f.layers.top_first().map(|i| format!("layer {i}")).collect();
        if f.layers.zeros {
            names.push("no layer (zeros)".into());
        }
        self.message = Some(format!(
            "file data at {off:#x}; its blocks come from {}",
            names.join(", ")
        ));
        self.hex = None;
        self.refresh().into_iter().take(1).collect()
    }
}
