//! The layer diff in the UI: `d` lists what the chosen layer changed
//! (added, modified, moved, deleted; deleted ones dimmed) in the tree's
//! place, with a gauge while it is computed on its own thread (Esc
//! cancels); tree rows of changed files carry the same letter; Enter on a
//! change shows the file's bytes as of both layers side by side, changed
//! bytes highlighted, from the first difference.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};
use ratatui::Frame;

use super::app::{Action, App, Marks, Reply, Request, TreeNode};
use super::render::{pane_block, scroll_start, Styles};
use crate::block::chain::Chain;
use crate::block::layered::LayeredReader;
use crate::block::BlockSource;
use crate::diff::{Change, Kind, Progress};
use crate::fs::ext::Ext4;

/// Bytes of a file shown side by side.
pub const COMPARE_BYTES: usize = 4096;
/// How far the first difference is looked for.
const SEARCH_LIMIT: u64 = 256 << 20;

/// The diff of one layer against the one below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    pub from: usize,
    pub to: usize,
    pub state: JobState,
    pub sel: usize,
    /// The file opened with Enter.
    pub compare: Option<FileCompare>,
}

/// Where the computation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running {
        phase: String,
        done: u64,
        total: u64,
    },
    Ready {
        rows: Vec<Change>,
        summary: String,
    },
    Failed(String),
}

/// A window of a file as of both layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCompare {
    pub to: usize,
    /// Escaped.
    pub path: String,
    pub offset: u64,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    /// Sizes as of each layer (None: not there).
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
}

/// The running job's handle, kept by the worker.
#[derive(Default)]
pub struct Job {
    cancel: Option<Arc<AtomicBool>>,
}

impl Job {
    /// Cancels the running job, if any.
    pub fn cancel(&mut self) {
        if let Some(c) = self.cancel.take() {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// Starts a diff of `to` against `to - 1` of `chain`: on a thread when
    /// `send` is given (progress and the result go there), else here (the
    /// headless frames). Returns the reply to give now.
    pub fn start(
        &mut self,
        chain: &Chain,
        to: usize,
        send: Option<Box<dyn Fn(Reply) + Send + Sync>>,
    ) -> Reply {
        self.cancel();
        let from = to.saturating_sub(1);
        let (old, new) = (chain.cut(from), chain.cut(to));
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancel = Some(cancel.clone());
        match send {
            None => finished(from, to, run(&old, &new, &|_| {}, &cancel)),
            Some(send) => {
                std::thread::spawn(move || {
                    let result = run(&old, &new, &|r| send(r), &cancel);
                    if !cancel.load(Ordering::Relaxed) {
                        send(finished(from, to, result));
                    }
                });
                Reply::DiffProgress {
                    to,
                    phase: "starting".into(),
                    done: 0,
                    total: 0,
                }
            }
        }
    }
}

fn finished(from: usize, to: usize, result: Result<(Vec<Change>, String), String>) -> Reply {
    Reply::Diff { from, to, result }
}

/// Progress sent to the UI at most every 1/64 of the work.
struct Sender<'a> {
    to: usize,
    send: &'a (dyn Fn(Reply) + Sync),
    cancel: &'a AtomicBool,
    last: std::sync::Mutex<(String, u64)>,
}

impl Progress for Sender<'_> {
    fn step(&self, phase: &str, done: u64, total: u64) -> bool {
        if let Ok(mut last) = self.last.lock() {
            let step = (total / 64).max(1);
            if last.0 != phase || done >= last.1 + step || done == total {
                *last = (phase.to_owned(), done);
                (self.send)(Reply::DiffProgress {
                    to: self.to,
                    phase: phase.to_owned(),
                    done,
                    total,
                });
            }
        }
        !self.cancel.load(Ordering::Relaxed)
    }
}

fn open(chain: &Chain) -> Result<Ext4, String> {
    let reader = LayeredReader::new(chain).map_err(|e| e.to_string())?;
    let src: Arc<dyn BlockSource> = Arc::new(reader);
    Ext4::open(src).map_err(|e| e.to_string())
}

fn run(
    old: &Chain,
    new: &Chain,
    send: &(dyn Fn(Reply) + Sync),
    cancel: &AtomicBool,
) -> Result<(Vec<Change>, String), String> {
    let from = old.layers.len().saturating_sub(1);
    let to = new.layers.len().saturating_sub(1);
    if from == to {
        return Err("the base layer has nothing below it to compare with".into());
    }
    let (ofs, nfs) = (open(old)?, open(new)?);
    let held = crate::diff::blocks::held_ranges(new, from, to, 0, nfs.disk().len())
        .map_err(|e| e.to_string())?;
    let progress = Sender {
        to,
        send,
        cancel,
        last: Default::default(),
    };
    let d = crate::diff::diff(&ofs, &nfs, &held, &progress).map_err(|e| e.to_string())?;
    let summary = format!(
        "{} change(s), {} block(s) changed, {} copied up",
        d.changes.len(),
        d.stats.changed_blocks,
        d.stats.copied_up_blocks
    );
    Ok((d.changes, summary))
}

/// The bytes of change `c` as of both layers from `offset` (or, with
/// `None`, from the first 16-byte row that differs).
pub fn compare(
    old: &Ext4,
    new: &Ext4,
    to: usize,
    c: &Change,
    offset: Option<u64>,
) -> Result<FileCompare, String> {
    // The file as of each layer, read once (absent where it was added or
    // deleted).
    let side = |fs: &Ext4, present: bool| -> Result<Option<Side>, String> {
        if !present {
            return Ok(None);
        }
        let e = |e: crate::fs::ext::FsError| e.to_string();
        let inode = fs.inode(c.inode).map_err(e)?;
        let target = if inode.is_symlink() {
            Some(fs.symlink_target(&inode).map_err(e)?)
        } else {
            None
        };
        let runs = if target.is_none() {
            fs.runs(&inode).map_err(e)?
        } else {
            Vec::new()
        };
        Ok(Some(Side {
            inode,
            runs,
            target,
        }))
    };
    let a_side = side(old, c.change != Kind::Added)?;
    let b_side = side(new, c.change != Kind::Deleted)?;
    let read = |fs: &Ext4, s: &Option<Side>, at: u64, len: usize| -> Result<Vec<u8>, String> {
        s.as_ref().map_or(Ok(Vec::new()), |s| s.read(fs, at, len))
    };
    let mut at = offset.unwrap_or(0);
    if let (None, Some(sa), Some(sb)) = (offset, &a_side, &b_side) {
        // The first differing window.
        let end = sa.size().max(sb.size()).min(SEARCH_LIMIT);
        at = 0;
        while at < end {
            let a = read(old, &a_side, at, 1 << 20)?;
            let b = read(new, &b_side, at, 1 << 20)?;
            if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
                at += i as u64;
                break;
            }
            if a.len() != b.len() {
                at += a.len().min(b.len()) as u64;
                break;
            }
            at += a.len().max(1) as u64;
        }
        if at >= end {
            at = 0;
        }
        at &= !15;
    }
    Ok(FileCompare {
        to,
        path: c.path.clone(),
        offset: at,
        old: read(old, &a_side, at, COMPARE_BYTES)?,
        new: read(new, &b_side, at, COMPARE_BYTES)?,
        old_size: a_side.as_ref().map(Side::size),
        new_size: b_side.as_ref().map(Side::size),
    })
}

/// One side of a comparison: the inode and where its bytes are.
struct Side {
    inode: crate::fs::ext::inode::Inode,
    runs: Vec<crate::fs::ext::blockmap::Run>,
    /// A symlink's target.
    target: Option<Vec<u8>>,
}

impl Side {
    fn size(&self) -> u64 {
        self.inode.size
    }

    /// Up to `len` bytes at `at`.
    fn read(&self, fs: &Ext4, at: u64, len: usize) -> Result<Vec<u8>, String> {
        if let Some(t) = &self.target {
            let s = usize::try_from(at).unwrap_or(usize::MAX).min(t.len());
            return Ok(t[s..].iter().take(len).copied().collect());
        }
        let mut buf = vec![0u8; self.size().saturating_sub(at).min(len as u64) as usize];
        if !buf.is_empty() {
            fs.read_file(&self.inode, &self.runs, at, &mut buf)
                .map_err(|e| e.to_string())?;
        }
        Ok(buf)
    }
}

fn kind_color(k: Kind) -> Color {
    match k {
        Kind::Added => Color::Green,
        Kind::Deleted => Color::Red,
        Kind::Modified => Color::Yellow,
        Kind::Moved => Color::Cyan,
    }
}

/// The letter and style a tree row of inode `ino` gets from the diff of
/// the layer in view.
pub fn tree_mark(app: &App, n: &TreeNode, s: &Styles) -> Option<Span<'static>> {
    if n.marks == Marks::Deleted {
        return Some(Span::styled(
            "D",
            s.fg(kind_color(Kind::Deleted)).add_modifier(Modifier::BOLD),
        ));
    }
    let ino = n.ino;
    let ch = app.changes.as_ref().filter(|c| c.to == app.as_of)?;
    let JobState::Ready { rows, .. } = &ch.state else {
        return None;
    };
    let c = rows
        .iter()
        .find(|c| c.inode == ino && c.change != Kind::Deleted)?;
    Some(Span::styled(
        c.change.letter().to_string(),
        s.fg(kind_color(c.change)).add_modifier(Modifier::BOLD),
    ))
}

impl App {
    /// Keys while the changes list is shown; `None` when not.
    pub fn changes_action(&mut self, action: &Action) -> Option<Vec<Request>> {
        let ch = self.changes.as_mut().filter(|_| self.show_changes)?;
        let rows = match &ch.state {
            JobState::Ready { rows, .. } => rows.len(),
            _ => 0,
        };
        match action {
            Action::Back if ch.compare.is_some() => ch.compare = None,
            Action::Back => {
                self.show_changes = false;
                if matches!(ch.state, JobState::Running { .. }) {
                    self.changes = None;
                    self.message = Some("diff cancelled".into());
                    return Some(vec![Request::CancelDiff]);
                }
            }
            Action::Up => ch.sel = ch.sel.saturating_sub(1),
            Action::Down => ch.sel = (ch.sel + 1).min(rows.saturating_sub(1)),
            Action::PageUp => ch.sel = ch.sel.saturating_sub(10),
            Action::PageDown => {
                if let (Some(c), JobState::Ready { rows: list, .. }) = (&ch.compare, &ch.state) {
                    let next = c.offset + COMPARE_BYTES as u64;
                    return Some(list.get(ch.sel).map_or_else(Vec::new, |row| {
                        vec![Request::Compare {
                            to: ch.to,
                            change: Box::new(row.clone()),
                            offset: Some(next),
                        }]
                    }));
                }
                ch.sel = (ch.sel + 10).min(rows.saturating_sub(1));
            }
            Action::Top => ch.sel = 0,
            Action::Bottom => ch.sel = rows.saturating_sub(1),
            Action::Enter => {
                if let JobState::Ready { rows: list, .. } = &ch.state {
                    return Some(list.get(ch.sel).map_or_else(Vec::new, |row| {
                        vec![Request::Compare {
                            to: ch.to,
                            change: Box::new(row.clone()),
                            offset: None,
                        }]
                    }));
                }
            }
            _ => return None,
        }
        Some(Vec::new())
    }

    /// `d`: show the changes of the layer in view (computed once).
    pub fn toggle_changes(&mut self) -> Vec<Request> {
        if self.show_changes {
            self.show_changes = false;
            return Vec::new();
        }
        self.show_changes = true;
        self.focus = super::app::Pane::Tree;
        if self.as_of == 0 {
            self.message = Some("layer 0 is the base: choose an overlay in the Chain pane".into());
            self.show_changes = false;
            return Vec::new();
        }
        if self.changes.as_ref().is_some_and(|c| c.to == self.as_of) {
            return Vec::new();
        }
        self.changes = Some(Changes {
            from: self.as_of - 1,
            to: self.as_of,
            state: JobState::Running {
                phase: "starting".into(),
                done: 0,
                total: 0,
            },
            sel: 0,
            compare: None,
        });
        vec![Request::Diff { to: self.as_of }]
    }

    /// The path of tree row `i` (escaped, as the diff's paths are), from
    /// the rows above it.
    fn row_path(&self, i: usize) -> String {
        let mut names = Vec::new();
        let mut depth = self.tree[i].depth;
        names.push(self.tree[i].name.clone());
        for n in self.tree[..i].iter().rev() {
            if n.depth < depth {
                names.push(n.name.clone());
                depth = n.depth;
            }
        }
        names.pop(); // the root, "/"
        names.reverse();
        format!("/{}", names.join("/"))
    }

    /// Rows for the names the diff of the layer in view deleted from the
    /// directory at tree row `i`.
    pub(super) fn deleted_rows(&self, i: usize) -> Vec<TreeNode> {
        let Some(JobState::Ready { rows, .. }) = self
            .changes
            .as_ref()
            .filter(|c| c.to == self.as_of)
            .map(|c| &c.state)
        else {
            return Vec::new();
        };
        let dir = self.row_path(i);
        let prefix = if dir == "/" {
            dir.clone()
        } else {
            format!("{dir}/")
        };
        rows.iter()
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
                    depth: self.tree[i].depth + 1,
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
    fn add_deleted_rows(&mut self) {
        self.tree.retain(|n| n.marks != Marks::Deleted);
        self.tree_sel = self.tree_sel.min(self.tree.len().saturating_sub(1));
        let mut i = 0;
        while i < self.tree.len() {
            if self.tree[i].is_dir && self.tree[i].expanded && self.tree[i].marks != Marks::Deleted
            {
                let depth = self.tree[i].depth;
                let end = self.tree[i + 1..]
                    .iter()
                    .position(|n| n.depth <= depth)
                    .map_or(self.tree.len(), |p| i + 1 + p);
                let rows = self.deleted_rows(i);
                self.tree.splice(end..end, rows);
            }
            i += 1;
        }
    }

    /// Takes the diff's replies.
    pub fn receive_changes(&mut self, reply: Reply) {
        let Some(ch) = self.changes.as_mut() else {
            return;
        };
        match reply {
            Reply::DiffProgress {
                to,
                phase,
                done,
                total,
            } if to == ch.to && matches!(ch.state, JobState::Running { .. }) => {
                ch.state = JobState::Running { phase, done, total }
            }
            Reply::Diff { to, result, .. } if to == ch.to => {
                ch.state = match result {
                    Ok((rows, summary)) => JobState::Ready { rows, summary },
                    Err(e) => JobState::Failed(crate::escape::printable(&e)),
                };
                self.add_deleted_rows();
            }
            Reply::Compare(c) if c.to == ch.to => ch.compare = Some(*c),
            _ => {}
        }
    }
}

/// The changes list, in the tree's place.
pub fn draw_changes(f: &mut Frame, r: Rect, app: &App, s: &Styles) {
    let Some(ch) = &app.changes else { return };
    let focused = app.focus == super::app::Pane::Tree;
    let title = format!("Changes: layer {} over {}", ch.to, ch.from);
    let block = pane_block(title, focused);
    let inner = block.inner(r);
    f.render_widget(block, r);
    match &ch.state {
        JobState::Running { phase, done, total } => {
            let ratio = if *total == 0 {
                0.0
            } else {
                *done as f64 / *total as f64
            };
            let g = Gauge::default()
                .gauge_style(s.fg(Color::Green))
                .ratio(ratio.clamp(0.0, 1.0))
                .label(format!("{phase}: {done}/{total} (Esc cancels)"));
            f.render_widget(
                g,
                Rect::new(inner.x, inner.y, inner.width, 1.min(inner.height)),
            );
        }
        JobState::Failed(e) => f.render_widget(Paragraph::new(format!("diff failed: {e}")), inner),
        JobState::Ready { rows, summary } => {
            let height = usize::from(inner.height.saturating_sub(1));
            let start = scroll_start(ch.sel, height);
            let width = usize::from(inner.width);
            let mut lines = vec![Line::from(Span::styled(
                summary.clone(),
                Style::default().add_modifier(Modifier::DIM),
            ))];
            for (i, c) in rows.iter().enumerate().skip(start).take(height) {
                let path = match &c.from {
                    Some(from) => format!("{from} -> {}", c.path),
                    None => c.path.clone(),
                };
                let mut what = Vec::new();
                if c.delta.content {
                    what.push("content".to_owned());
                }
                if !c.delta.metadata.is_empty() {
                    what.push(c.delta.metadata.join(","));
                }
                let mut text = format!(" {path}");
                if !what.is_empty() {
                    text.push_str(&format!("  ({})", what.join("; ")));
                }
                let text: String = text.chars().take(width.saturating_sub(1)).collect();
                let mut style = Style::default();
                if c.change == Kind::Deleted {
                    style = style.add_modifier(Modifier::DIM);
                }
                if focused && i == ch.sel {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                lines.push(Line::from(vec![
                    Span::styled(
                        c.change.letter().to_string(),
                        s.fg(kind_color(c.change)).add_modifier(Modifier::BOLD),
                    ),
                    Span::styled(text, style),
                ]));
            }
            if rows.is_empty() {
                lines.push(Line::from("no file changed"));
            }
            f.render_widget(Paragraph::new(lines), inner);
        }
    }
}

/// A file as of both layers, side by side, changed bytes reversed.
pub fn draw_compare(f: &mut Frame, r: Rect, app: &App, s: &Styles) {
    let Some(c) = app.changes.as_ref().and_then(|c| c.compare.as_ref()) else {
        return;
    };
    let size = |s: Option<u64>| s.map_or("absent".to_owned(), |n| format!("{n} B"));
    let title = format!(
        "{}: layer {} ({}) | layer {} ({})",
        c.path,
        c.to.saturating_sub(1),
        size(c.old_size),
        c.to,
        size(c.new_size)
    );
    let block = pane_block(title, app.focus == super::app::Pane::Hex);
    let inner = block.inner(r);
    f.render_widget(block, r);
    // offset, then per side: hex bytes and their characters.
    // 8 columns of offset, then per side a bar and 4 columns a byte.
    let per = [16, 8, 4]
        .into_iter()
        .find(|p| 8 + 2 * (1 + 4 * p) <= usize::from(inner.width))
        .unwrap_or(2);
    let mut lines = Vec::new();
    for row in 0..usize::from(inner.height) {
        let at = row * per;
        if at >= c.old.len().max(c.new.len()) {
            break;
        }
        let mut spans = vec![Span::styled(
            format!("{:08x}", c.offset + at as u64),
            s.fg(Color::DarkGray),
        )];
        for (mine, other) in [(&c.old, &c.new), (&c.new, &c.old)] {
            spans.push(Span::raw("│"));
            let mut chars = String::new();
            for k in at..at + per {
                match mine.get(k) {
                    Some(&b) => {
                        let style = if other.get(k) != Some(&b) {
                            s.fg(Color::Yellow).add_modifier(Modifier::REVERSED)
                        } else {
                            s.fg(super::hex::ByteClass::of(b).color())
                        };
                        spans.push(Span::styled(format!("{b:02x} "), style));
                        chars.push(super::hex::glyph(b));
                    }
                    None => {
                        spans.push(Span::raw("   "));
                        chars.push(' ');
                    }
                }
            }
            spans.push(Span::raw(chars));
        }
        lines.push(Line::from(spans));
    }
    f.render_widget(Paragraph::new(lines), inner);
}
