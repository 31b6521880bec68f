//! The Tree pane: directories opened lazily, the layers each row's blocks
//! come from (asked of the worker for the rows on screen only), and what
//! opening a file does to the other panes (the hex view jumps to its
//! first block, the hit map marks its cells). Searching and revealing a
//! match are in [`super::reveal`].
use std::collections::HashSet;

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::diff::{Change, Kind};
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Effect, Effects, FsState, Shared};
use crate::ui::layout::{areas, grid_cells, layout};
use crate::ui::msg::{FileAt, LayerSet, Marks, Request, TreeNode};
use crate::ui::style::{change_letter, pane_block, scroll_start, selected, Styles};
use crate::ui::text::{fit_pad, fit_right};
use crate::units::human;

/// Rows asked about in one request, at most (a screenful).
const MARKS_PER_REQUEST: usize = 256;

/// The search state of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search {
    pub needle: String,
    /// None while the worker searches.
    pub found: Option<crate::ui::msg::Found>,
    /// The match shown last.
    pub at: usize,
}

/// What to restore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restore {
    /// Paths of the directories that were open (escaped, as shown).
    pub open: HashSet<String>,
    /// The selected row's path.
    pub selected: Option<String>,
    /// Directories asked for and not answered yet.
    pub asked: HashSet<u64>,
}

/// The tree pane's state.
#[derive(Clone, Debug, Default)]
pub struct TreePane {
    /// The tree, flattened in display order.
    pub nodes: Vec<TreeNode>,
    pub sel: usize,
    pub error: Option<String>,
    /// The last search and its matches.
    pub search: Option<Search>,
    /// A match being revealed: the inodes from the root's child down to
    /// it, whose directories are opened one reply at a time.
    pub reveal: Option<Vec<u64>>,
    /// The state to bring back after a layer switch.
    pub restore: Option<Restore>,
}

impl TreePane {
    /// Forgets everything (the layer changed).
    pub fn clear(&mut self) {
        *self = TreePane::default();
    }

    /// A new filesystem: the root, closed (or opened again, with what was
    /// open before a layer switch).
    pub fn reset_root(&mut self, s: &Shared) -> Effects {
        self.nodes = vec![TreeNode::root_at(s.fs_root)];
        self.sel = 0;
        self.error = None;
        self.advance_restore(s)
    }

    /// Rows of the tree on screen (as it would be with the tree focused).
    pub fn window(&self, s: &Shared) -> std::ops::Range<usize> {
        let area = layout(s, Pane::Tree).tree;
        let height = usize::from(area.map_or(0, |r| r.height.saturating_sub(2)));
        let start = scroll_start(self.sel, height);
        start..start.saturating_add(height).min(self.nodes.len())
    }

    /// Asks for the layer marks of the rows on screen that have none; they
    /// become pending, so each row is asked about once.
    pub fn marks_request(&mut self, s: &Shared) -> Option<Request> {
        if areas(s).tree.is_none() || !s.fs.is_present() {
            return None;
        }
        let window = self.window(s);
        let mut inos = Vec::new();
        for n in self.nodes.get_mut(window).unwrap_or_default() {
            if n.marks == Marks::Unknown && inos.len() < MARKS_PER_REQUEST {
                n.marks = Marks::Pending;
                inos.push(n.ino);
            }
        }
        (!inos.is_empty()).then_some(Request::Marks {
            as_of: s.as_of,
            inos,
        })
    }

    /// Takes layer marks from the worker.
    pub fn receive_marks(&mut self, marks: Vec<(u64, LayerSet)>) {
        for (ino, set) in marks {
            for n in self
                .nodes
                .iter_mut()
                .filter(|n| n.ino == ino && n.marks != Marks::Deleted)
            {
                n.marks = Marks::Known(set);
            }
        }
    }

    /// Keys (None: not the pane's).
    pub fn key(&mut self, action: &Action, s: &Shared) -> Option<Effects> {
        let last = self.nodes.len().saturating_sub(1);
        let page = self.window(s).len().max(1);
        match action {
            Action::Up => self.sel = self.sel.saturating_sub(1),
            Action::Down => self.sel = self.sel.saturating_add(1).min(last),
            Action::PageUp => self.sel = self.sel.saturating_sub(page),
            Action::PageDown => self.sel = self.sel.saturating_add(page).min(last),
            Action::Top => self.sel = 0,
            Action::Bottom => self.sel = last,
            Action::Enter => return Some(self.enter(s)),
            _ => return None,
        }
        Some(Vec::new())
    }

    /// A click on row `row` of the pane: selects it; on the selected row
    /// (with `open`), opens it.
    pub fn click(&mut self, row: usize, open: bool, s: &Shared) -> Option<Effects> {
        let i = self.window(s).start.saturating_add(row);
        if i >= self.nodes.len() {
            return None;
        }
        if open && i == self.sel {
            return Some(self.enter(s));
        }
        self.sel = i;
        Some(Vec::new())
    }

    /// Enter: open or close a directory, or show a file's bytes.
    fn enter(&mut self, s: &Shared) -> Effects {
        let Some(node) = self.nodes.get(self.sel).cloned() else {
            return Vec::new();
        };
        if node.marks == Marks::Deleted {
            return vec![Effect::Message(format!(
                "{} was deleted in layer {}: d, then Enter on it, shows it as of layer {}",
                node.name,
                s.as_of,
                s.as_of.saturating_sub(1)
            ))];
        }
        if !node.is_dir {
            return vec![Effect::Request(Request::File {
                as_of: s.as_of,
                ino: node.ino,
                cells: grid_cells(s),
            })];
        }
        if node.expanded {
            // Close: drop the deeper lines that follow.
            let end = self.subtree_end(self.sel);
            let first = self.sel.saturating_add(1).min(end);
            self.nodes.drain(first..end);
            if let Some(n) = self.nodes.get_mut(self.sel) {
                n.expanded = false;
            }
            return Vec::new();
        }
        // Open it, and show its first block with the entries marked.
        vec![
            Effect::Request(Request::Dir {
                as_of: s.as_of,
                ino: node.ino,
            }),
            Effect::Request(Request::DirBlock {
                as_of: s.as_of,
                ino: node.ino,
            }),
        ]
    }

    /// The index after row `i`'s subtree.
    fn subtree_end(&self, i: usize) -> usize {
        let Some(depth) = self.nodes.get(i).map(|n| n.depth) else {
            return self.nodes.len();
        };
        let next = i.saturating_add(1);
        self.nodes
            .get(next..)
            .unwrap_or_default()
            .iter()
            .position(|n| n.depth <= depth)
            .map_or(self.nodes.len(), |p| next.saturating_add(p))
    }

    /// A directory's entries: shown under it, with the names the diff of
    /// the layer in view (`changes`) deleted from it.
    pub fn receive_dir(
        &mut self,
        ino: u64,
        entries: Result<Vec<TreeNode>, String>,
        changes: Option<&[Change]>,
        s: &Shared,
    ) -> Effects {
        match entries {
            Ok(children) => {
                if let Some(i) = self
                    .nodes
                    .iter()
                    .position(|n| n.ino == ino && n.is_dir && !n.expanded)
                {
                    let mut depth = 0;
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.expanded = true;
                        depth = n.depth.saturating_add(1);
                    }
                    let mut rows: Vec<TreeNode> = children
                        .into_iter()
                        .map(|mut c| {
                            c.depth = depth;
                            c
                        })
                        .collect();
                    rows.extend(self.deleted_rows(i, changes.unwrap_or_default()));
                    let at = i.saturating_add(1);
                    self.nodes.splice(at..at, rows);
                }
            }
            Err(e) => {
                self.error = Some(e);
                self.reveal = None;
                self.restore = None;
            }
        }
        let mut fx = self.advance_restore(s);
        fx.extend(self.advance_reveal(s));
        fx
    }

    /// A file's blocks: the hex view goes to the first, the hit map marks
    /// them all.
    pub fn receive_file(&mut self, f: FileAt) -> Effects {
        for n in self
            .nodes
            .iter_mut()
            .filter(|n| n.ino == f.ino && n.marks != Marks::Deleted)
        {
            n.marks = Marks::Known(f.layers);
        }
        let mut fx = vec![Effect::FileCells(Some(f.cells))];
        let Some(off) = f.offset else {
            fx.push(Effect::Message(
                "no data blocks (empty, inline or a fast symlink)".into(),
            ));
            return fx;
        };
        let mut names: Vec<String> = f.layers.top_first().map(|i| format!("layer {i}")).collect();
        if f.layers.zeros {
            names.push("no layer (zeros)".into());
        }
        fx.extend([
            Effect::HexTo {
                offset: off,
                clear: true,
            },
            Effect::Focus(Pane::Hex),
            Effect::Message(format!(
                "file data at {off:#x}; its blocks come from {}",
                names.join(", ")
            )),
        ]);
        fx
    }

    /// The path of row `i` (escaped, as the diff's paths are), from the
    /// rows above it.
    pub fn path_of(&self, i: usize) -> String {
        let mut names = Vec::new();
        let Some(row) = self.nodes.get(i) else {
            return "/".into();
        };
        let mut depth = row.depth;
        names.push(row.name.clone());
        for n in self.nodes.get(..i).unwrap_or_default().iter().rev() {
            if n.depth < depth {
                names.push(n.name.clone());
                depth = n.depth;
            }
        }
        names.pop(); // the root, "/"
        names.reverse();
        format!("/{}", names.join("/"))
    }

    /// Rows for the names `changes` deleted (or moved away) from the
    /// directory at row `i`.
    fn deleted_rows(&self, i: usize, changes: &[Change]) -> Vec<TreeNode> {
        let dir = self.path_of(i);
        let depth = self.nodes.get(i).map_or(0, |n| n.depth);
        let prefix = if dir == "/" {
            dir.clone()
        } else {
            format!("{dir}/")
        };
        changes
            .iter()
            .filter(|c| c.change == Kind::Deleted || c.change == Kind::Moved)
            .filter_map(|c| {
                let gone = if c.change == Kind::Moved {
                    c.from.as_ref()?
                } else {
                    &c.path
                };
                let name = gone.strip_prefix(&prefix)?;
                (!name.contains('/')).then(|| TreeNode {
                    ino: c.inode,
                    name: name.to_owned(),
                    depth: depth.saturating_add(1),
                    is_dir: false,
                    expanded: false,
                    size: 0,
                    mode: 0,
                    marks: Marks::Deleted,
                })
            })
            .collect()
    }

    /// Adds the deleted names under every open directory (when the diff
    /// arrives after they were opened).
    pub fn add_deleted_rows(&mut self, changes: &[Change]) {
        self.nodes.retain(|n| n.marks != Marks::Deleted);
        self.sel = self.sel.min(self.nodes.len().saturating_sub(1));
        let mut i = 0;
        while let Some(n) = self.nodes.get(i) {
            if n.is_dir && n.expanded && n.marks != Marks::Deleted {
                let end = self.subtree_end(i);
                let rows = self.deleted_rows(i, changes);
                self.nodes.splice(end..end, rows);
            }
            i = i.saturating_add(1);
        }
    }

    /// Draws the pane; `changes` is the diff of the layer in view, when
    /// it is in (its letters mark the rows).
    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx, changes: Option<&[Change]>) {
        let s = cx.shared;
        let focused = cx.focused(Pane::Tree);
        let mut title = format!("Tree (as of layer {})", s.as_of);
        if let Some((name, _)) = &s.volume {
            title.push_str(&format!(" · {name} {}", s.fs_kind));
        }
        let height = usize::from(r.height.saturating_sub(2));
        let mut lines: Vec<Line> = Vec::new();
        match &s.fs {
            FsState::Reading => lines.push(Line::from("reading…")),
            FsState::Missing(e) => lines.push(Line::from(format!("no filesystem: {e}"))),
            FsState::Present => {
                let start = scroll_start(self.sel, height);
                let width = usize::from(r.width.saturating_sub(2));
                for (i, n) in self.nodes.iter().enumerate().skip(start).take(height) {
                    let sel = focused && i == self.sel;
                    lines.push(row_line(n, sel, width, s.as_of, changes, &cx.styles));
                }
                if let Some(e) = &self.error {
                    lines.push(Line::from(format!("error: {e}")));
                }
            }
        }
        f.render_widget(
            Paragraph::new(lines).block(pane_block(title, focused, r)),
            r,
        );
    }
}

/// Cells of the size column ("1023.9 KiB" is the widest).
const SIZE_W: usize = 10;

/// One row, in columns: the indented name (cut with `…` to fit, by cells
/// on screen), the layer marks (the layers its blocks come from, top
/// first, as digits in the layer's colour; `·` for blocks in no layer;
/// the diff's letter first), then the size, right-aligned two cells
/// further so marks and size never run together.
fn row_line(
    n: &TreeNode,
    sel: bool,
    width: usize,
    as_of: usize,
    changes: Option<&[Change]>,
    st: &Styles,
) -> Line<'static> {
    let mark_w = as_of.saturating_add(1).min(8).saturating_add(1);
    let mark = match (n.is_dir, n.expanded) {
        (true, true) => "▾ ",
        (true, false) => "▸ ",
        _ => "  ",
    };
    let size = if n.is_dir || n.marks == Marks::Deleted {
        String::new()
    } else {
        human(n.size)
    };
    let left = format!("{}{mark}{}", "  ".repeat(n.depth), n.name);
    let room = width.saturating_sub(mark_w.saturating_add(1 + 2 + SIZE_W));
    let style = if sel {
        selected()
    } else if n.marks == Marks::Deleted {
        Style::default().add_modifier(Modifier::DIM)
    } else if n.is_dir {
        st.fg(Color::Blue)
    } else {
        Style::default()
    };
    let mut spans = vec![Span::styled(format!("{} ", fit_pad(&left, room)), style)];
    let mut marks: Vec<Span> = Vec::new();
    if let Marks::Known(set) = n.marks {
        for l in set.top_first().take(mark_w.saturating_sub(1)) {
            let c = u32::try_from(l % 36)
                .ok()
                .and_then(|d| char::from_digit(d, 36))
                .unwrap_or('+');
            marks.push(Span::styled(c.to_string(), st.layer(Some(l))));
        }
        if set.zeros {
            marks.push(Span::styled("·", st.layer(None)));
        }
    }
    // What the diff of this layer says of the file (after `d`).
    let letter = if n.marks == Marks::Deleted {
        Some(change_letter(Kind::Deleted, st))
    } else {
        changes
            .and_then(|rows| {
                rows.iter()
                    .find(|c| c.inode == n.ino && c.change != Kind::Deleted)
            })
            .map(|c| change_letter(c.change, st))
    };
    if let Some(m) = letter {
        if marks.len() >= mark_w {
            marks.pop();
        }
        marks.insert(0, m);
    }
    spans.push(Span::raw(" ".repeat(mark_w.saturating_sub(marks.len()))));
    spans.extend(marks);
    spans.push(Span::styled(
        format!("  {}", fit_right(&size, SIZE_W)),
        style,
    ));
    Line::from(spans)
}
