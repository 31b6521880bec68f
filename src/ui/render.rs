//! Drawing: pure functions of the [`App`] state into a ratatui frame. The
//! same code draws the real terminal and the headless frames of
//! `layerscope render` and snapshot tests.
//!
//! Wide layout (at least 110x30), every pane visible:
//!
//! ```text
//! ┌Chain───────┐┌Hex──────────────────────────────────────┐
//! │▶2 top.qcow2││0000000400 53 ef 01 00 …  S⋄•⋄           │
//! │ 1 update   ││…                                        │
//! ├Status──────┤│                                         │
//! ├Hit map─────┤│                                         │
//! │██··▒▒      ││                                         │
//! └────────────┘└─────────────────────────────────────────┘
//!  q quit  ? help  Tab pane  g go to  m map mode   [message]
//! ```
//!
//! Narrow (80x24): a tab line, the focused pane full size (Hex first), and
//! the key bar; Tab brings in the others.
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::app::{App, CellOwner, HitMode, Marks, Pane};
use super::hex::{glyph, ByteClass, Palette};
use crate::units::human;

/// Where each pane goes for a terminal size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    pub chain: Option<Rect>,
    pub status: Option<Rect>,
    pub tree: Option<Rect>,
    pub superblock: Option<Rect>,
    pub groups: Option<Rect>,
    pub hex: Option<Rect>,
    pub hitmap: Option<Rect>,
    pub tabs: Option<Rect>,
    pub bar: Rect,
}

/// Width of a hex row: offset digits, 16 bytes, 16 glyphs, borders.
fn hex_width(digits: u16) -> u16 {
    digits + 1 + 48 + 1 + 16 + 2
}

/// Hex digits of the offset column for a disk of `size` bytes.
pub fn offset_digits(size: u64) -> u16 {
    if size > 1 << 40 {
        12
    } else if size > 1 << 32 {
        10
    } else {
        8
    }
}

/// The layout for the app's terminal size.
pub fn areas(app: &App) -> Areas {
    layout(app, app.focus)
}

/// The layout as it would be with `focus` (in the narrow layout only the
/// focused pane is on screen).
pub fn layout(app: &App, focus: Pane) -> Areas {
    let full = Rect::new(0, 0, app.width, app.height);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Min(1), Constraint::Length(1)])
        .split(full);
    let (main, bar) = (rows[0], rows[1]);
    if app.wide() {
        let hex_w = hex_width(offset_digits(app.disk_size)).min(main.width.saturating_sub(28));
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Min(28), Constraint::Length(hex_w)])
            .split(main);
        let chain_h = (app.layers.len() as u16 + 2).clamp(3, main.height / 3);
        let status_h = if app.is_nbd { 9 } else { 4 };
        let left = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(chain_h),
                Constraint::Length(status_h),
                Constraint::Min(6),
                Constraint::Length(main.height / 4),
            ])
            .split(cols[0]);
        // The tree's slot shows the superblock or the groups while that
        // pane has focus.
        let slot = |p: Pane| (focus == p).then_some(left[2]);
        let (superblock, groups) = (slot(Pane::Superblock), slot(Pane::Groups));
        let tree = (superblock.is_none() && groups.is_none()).then_some(left[2]);
        Areas {
            chain: Some(left[0]),
            status: Some(left[1]),
            tree,
            superblock,
            groups,
            hitmap: Some(left[3]),
            hex: Some(cols[1]),
            tabs: None,
            bar,
        }
    } else {
        let parts = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(1), Constraint::Min(1)])
            .split(main);
        let body = Some(parts[1]);
        let mut a = Areas {
            chain: None,
            status: None,
            tree: None,
            superblock: None,
            groups: None,
            hex: None,
            hitmap: None,
            tabs: Some(parts[0]),
            bar,
        };
        match focus {
            Pane::Tree => a.tree = body,
            Pane::Superblock => a.superblock = body,
            Pane::Groups => a.groups = body,
            Pane::Chain => a.chain = body,
            Pane::Status => a.status = body,
            Pane::Hex => a.hex = body,
            Pane::HitMap => a.hitmap = body,
        }
        a
    }
}

/// Styles for the terminal's palette (none with NO_COLOR).
pub struct Styles {
    palette: Palette,
}

impl Styles {
    /// A foreground colour, or nothing without colour.
    pub fn fg(&self, c: Color) -> Style {
        if self.palette == Palette::None {
            Style::default()
        } else {
            Style::default().fg(c)
        }
    }

    /// Layer `index`'s colour (None: no layer).
    pub fn layer(&self, index: Option<usize>) -> Style {
        match self.palette.layer(index) {
            Some(c) => Style::default().fg(c),
            None => Style::default(),
        }
    }
}

/// A pane's frame, bold when focused.
pub fn pane_block<'a>(title: String, focused: bool) -> Block<'a> {
    let style = if focused {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, style))
        .border_style(if focused {
            Style::default().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        })
}

/// Draws the whole app.
pub fn draw(f: &mut Frame, app: &App, palette: Palette) {
    let s = Styles { palette };
    let a = areas(app);
    if let Some(r) = a.tabs {
        draw_tabs(f, r, app);
    }
    if let Some(r) = a.chain {
        draw_chain(f, r, app, &s);
    }
    if let Some(r) = a.status {
        draw_status(f, r, app);
    }
    if let Some(r) = a.tree {
        if app.show_changes {
            super::changes::draw_changes(f, r, app, &s);
        } else {
            draw_tree(f, r, app, &s);
        }
    }
    if let Some(r) = a.superblock {
        draw_superblock(f, r, app);
    }
    if let Some(r) = a.groups {
        super::groups::draw_groups(f, r, app, &s);
    }
    if let Some(r) = a.hex {
        if app.show_changes && app.changes.as_ref().is_some_and(|c| c.compare.is_some()) {
            super::changes::draw_compare(f, r, app, &s);
        } else {
            draw_hex(f, r, app, &s);
        }
    }
    if let Some(r) = a.hitmap {
        draw_hitmap(f, r, app, &s);
    }
    draw_bar(f, a.bar, app);
    if app.help {
        draw_help(f, Rect::new(0, 0, app.width, app.height));
    }
}

fn draw_tabs(f: &mut Frame, r: Rect, app: &App) {
    let mut spans = Vec::new();
    for p in Pane::ORDER {
        let n = p.name();
        let style = if p == app.focus {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        spans.push(Span::styled(format!(" {n} "), style));
        spans.push(Span::raw(" "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), r);
}

fn draw_chain(f: &mut Frame, r: Rect, app: &App, s: &Styles) {
    let focused = app.focus == Pane::Chain;
    let lines: Vec<Line> = app
        .layers
        .iter()
        .rev()
        .map(|l| {
            let sel = focused && l.index == app.chain_sel;
            let mark = if l.index == app.as_of { "▶" } else { " " };
            let style = if sel {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            Line::from(vec![
                Span::raw(mark),
                Span::styled("█", s.layer(Some(l.index))),
                Span::styled(
                    format!("{} {} {} {}", l.index, l.name, l.format, l.detail),
                    style,
                ),
            ])
        })
        .collect();
    let title = format!(
        "Chain: {} layers, {}",
        app.layers.len(),
        human(app.disk_size)
    );
    f.render_widget(Paragraph::new(lines).block(pane_block(title, focused)), r);
}

fn draw_status(f: &mut Frame, r: Rect, app: &App) {
    let mut lines = Vec::new();
    match &app.nbd {
        Some(n) => {
            let (info, st) = (&n.0, &n.1);
            lines.push(Line::from(format!(
                "{:?}  export {:?}",
                st.state,
                crate::escape::printable(&info.name)
            )));
            lines.push(Line::from(format!(
                "size {}  {}",
                human(info.size),
                info.handshake
            )));
            let ctx: Vec<&str> = info.meta_contexts.iter().map(|(_, n)| n.as_str()).collect();
            lines.push(Line::from(format!(
                "contexts {}",
                crate::escape::printable(&ctx.join(" "))
            )));
            lines.push(Line::from(format!(
                "read {}  {} requests, {} in flight",
                human(st.bytes_read),
                st.requests,
                st.in_flight
            )));
            let ms = |v: Option<u32>| {
                v.map_or("-".into(), |us| format!("{:.2} ms", f64::from(us) / 1000.0))
            };
            lines.push(Line::from(format!(
                "latency p50 {} p99 {}",
                ms(st.latency_p50_us),
                ms(st.latency_p99_us)
            )));
            lines.push(Line::from(format!(
                "errors {}  reconnects {}",
                st.errors, st.reconnects
            )));
            if let Some(e) = &st.last_error {
                lines.push(Line::from(format!(
                    "last error: {}",
                    crate::escape::printable(e)
                )));
            }
        }
        None if app.is_nbd => lines.push(Line::from("connecting…")),
        None => {
            lines.push(Line::from("local files (no NBD connection)"));
            lines.push(Line::from(format!("disk as of layer {}", app.as_of)));
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(pane_block("Status".into(), app.focus == Pane::Status)),
        r,
    );
}

fn draw_hex(f: &mut Frame, r: Rect, app: &App, s: &Styles) {
    let focused = app.focus == Pane::Hex;
    let digits = usize::from(offset_digits(app.disk_size));
    let mut title = format!("Hex @ {:#x} (as of layer {})", app.hex_offset, app.as_of);
    if let Some(h) = &app.highlight {
        title.push_str(" · ");
        title.push_str(&h.label);
    }
    // A byte's style: hexyl's class colour; in a marked field underlined,
    // the selected field reversed (both survive NO_COLOR).
    let style = |at: u64, b: u8| {
        let st = s.fg(ByteClass::of(b).color());
        match app.highlight.as_ref().and_then(|h| h.at(at)) {
            Some((_, true)) => st.add_modifier(Modifier::REVERSED),
            Some(_) => st.add_modifier(Modifier::UNDERLINED),
            None => st,
        }
    };
    let mut lines = Vec::new();
    match &app.hex {
        None => lines.push(Line::from("reading…")),
        Some(h) => {
            for (row, chunk) in h.bytes.chunks(16).enumerate() {
                let at = h.offset + row as u64 * 16;
                let owner = h.owners.get(row).copied().flatten();
                let mut spans = vec![
                    Span::styled(format!("{at:0digits$x}"), s.layer(owner)),
                    Span::raw(" "),
                ];
                for (i, b) in chunk.iter().enumerate() {
                    let here = at + i as u64;
                    spans.push(Span::styled(format!("{b:02x}"), style(here, *b)));
                    // The gap inside a field is marked too, so a field
                    // reads as one run.
                    let gap = if i == 7 { "  " } else { " " };
                    let next_same = i < 15
                        && app
                            .highlight
                            .as_ref()
                            .and_then(|h| h.at(here).zip(h.at(here + 1)))
                            .is_some_and(|(a, b)| a.0 == b.0);
                    if next_same {
                        spans.push(Span::styled(gap, style(here, *b).fg(Color::Reset)));
                    } else {
                        spans.push(Span::raw(gap));
                    }
                }
                for _ in chunk.len()..16 {
                    spans.push(Span::raw("   "));
                }
                for (i, b) in chunk.iter().enumerate() {
                    spans.push(Span::styled(
                        glyph(*b).to_string(),
                        style(at + i as u64, *b),
                    ));
                }
                lines.push(Line::from(spans));
            }
        }
    }
    f.render_widget(Paragraph::new(lines).block(pane_block(title, focused)), r);
}

/// The first row to show so that `sel` is visible in `height` rows.
pub fn scroll_start(sel: usize, height: usize) -> usize {
    if height == 0 {
        0
    } else {
        sel.saturating_sub(height - 1)
    }
}

fn draw_tree(f: &mut Frame, r: Rect, app: &App, s: &Styles) {
    let focused = app.focus == Pane::Tree;
    let title = format!("Tree (as of layer {})", app.as_of);
    let height = usize::from(r.height.saturating_sub(2));
    let mut lines: Vec<Line> = Vec::new();
    match &app.sb {
        None => lines.push(Line::from("reading…")),
        Some(Err(e)) => lines.push(Line::from(format!("no filesystem: {e}"))),
        Some(Ok(_)) => {
            let start = scroll_start(app.tree_sel, height);
            let width = usize::from(r.width.saturating_sub(2));
            // The marks column: the layers each row's blocks come from,
            // top first, as digits in the layer's colour; `·` for blocks in
            // no layer.
            let mark_w = (app.as_of + 1).min(8) + 1;
            for (i, n) in app.tree.iter().enumerate().skip(start).take(height) {
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
                let mut left = format!("{}{mark}{}", "  ".repeat(n.depth), n.name);
                let room = width.saturating_sub(size.len() + mark_w + 2);
                if left.chars().count() > room {
                    left = left.chars().take(room.saturating_sub(1)).collect();
                    left.push('…');
                }
                let pad = width.saturating_sub(left.chars().count() + size.len() + mark_w + 2);
                let selected = focused && i == app.tree_sel;
                let style = if selected {
                    Style::default().add_modifier(Modifier::REVERSED)
                } else if n.marks == Marks::Deleted {
                    Style::default().add_modifier(Modifier::DIM)
                } else if n.is_dir {
                    s.fg(Color::Blue)
                } else {
                    Style::default()
                };
                let mut spans = vec![Span::styled(format!("{left}{} ", " ".repeat(pad)), style)];
                let mut marks: Vec<Span> = Vec::new();
                if let Marks::Known(set) = n.marks {
                    for l in set.top_first().take(mark_w - 1) {
                        let c = char::from_digit((l % 36) as u32, 36).unwrap_or('+');
                        marks.push(Span::styled(c.to_string(), s.layer(Some(l))));
                    }
                    if set.zeros {
                        marks.push(Span::styled("·", s.layer(None)));
                    }
                }
                // What the diff of this layer says of the file (after `d`).
                if let Some(m) = super::changes::tree_mark(app, n, s) {
                    if marks.len() >= mark_w {
                        marks.pop();
                    }
                    marks.insert(0, m);
                }
                spans.push(Span::raw(" ".repeat(mark_w.saturating_sub(marks.len()))));
                spans.extend(marks);
                spans.push(Span::styled(format!(" {size}"), style));
                lines.push(Line::from(spans));
            }
            if let Some(e) = &app.tree_error {
                lines.push(Line::from(format!("error: {e}")));
            }
        }
    }
    f.render_widget(Paragraph::new(lines).block(pane_block(title, focused)), r);
}

fn draw_superblock(f: &mut Frame, r: Rect, app: &App) {
    let focused = app.focus == Pane::Superblock;
    let height = usize::from(r.height.saturating_sub(2));
    let mut lines: Vec<Line> = Vec::new();
    match &app.sb {
        None => lines.push(Line::from("reading…")),
        Some(Err(e)) => lines.push(Line::from(format!("no filesystem: {e}"))),
        Some(Ok(rows)) => {
            let start = scroll_start(app.sb_sel, height);
            for (i, row) in rows.iter().enumerate().skip(start).take(height) {
                let style = if focused && i == app.sb_sel {
                    Style::default().add_modifier(Modifier::REVERSED)
                } else {
                    Style::default()
                };
                lines.push(Line::from(Span::styled(
                    format!("{:#06x} {:<24} {}", row.offset, row.name, row.value),
                    style,
                )));
            }
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(pane_block("Superblock (ext)".into(), focused)),
        r,
    );
}

fn draw_hitmap(f: &mut Frame, r: Rect, app: &App, s: &Styles) {
    let focused = app.focus == Pane::HitMap;
    let mode = match app.hit_mode {
        HitMode::Static => "owner",
        HitMode::Runtime => "served so far",
    };
    let title = format!("Hit map: {mode} (m)");
    let inner_w = usize::from(r.width.saturating_sub(2)).max(1);
    let mut lines: Vec<Line> = Vec::new();
    match &app.grid {
        None => lines.push(Line::from("computing…")),
        Some(g) => {
            // The opened file's cells: `▓` in the owner's colour, reversed.
            let file = app.file_cells.as_ref().filter(|c| c.len() == g.cells.len());
            for (y, row) in g.cells.chunks(inner_w).enumerate() {
                let spans: Vec<Span> = row
                    .iter()
                    .enumerate()
                    .map(|(x, c)| {
                        let mine = file.is_some_and(|f| f[y * inner_w + x]);
                        match (c, mine) {
                            (CellOwner::Layer(l), true) => Span::styled(
                                "▓",
                                s.layer(Some(*l)).add_modifier(Modifier::REVERSED),
                            ),
                            (_, true) => Span::styled(
                                "▓",
                                s.fg(Color::DarkGray).add_modifier(Modifier::REVERSED),
                            ),
                            (CellOwner::Layer(l), false) => Span::styled("█", s.layer(Some(*l))),
                            (CellOwner::Nowhere, false) => Span::styled("·", s.fg(Color::DarkGray)),
                            (CellOwner::NotRead, false) => Span::raw(" "),
                        }
                    })
                    .collect();
                lines.push(Line::from(spans));
            }
            // The legend replaces the last grid row.
            let mut legend = Vec::new();
            if file.is_some() {
                legend.push(Span::raw("▓file "));
            }
            for (i, b) in g.bytes.iter().enumerate().rev() {
                legend.push(Span::styled("█", s.layer(Some(i))));
                legend.push(Span::raw(format!("{i}:{} ", human(*b))));
            }
            legend.push(Span::styled("·", s.fg(Color::DarkGray)));
            legend.push(Span::raw(format!("none:{}", human(g.nowhere))));
            let room = usize::from(r.height.saturating_sub(2)).max(1);
            lines.truncate(room - 1);
            lines.push(Line::from(legend));
        }
    }
    f.render_widget(Paragraph::new(lines).block(pane_block(title, focused)), r);
}

fn draw_bar(f: &mut Frame, r: Rect, app: &App) {
    let text = match (&app.prompt, &app.message) {
        (Some(p), _) if app.prompt_search => format!(" search names in the tree: {p}▏"),
        (Some(p), _) => format!(" go to (0x.., 64K, b<block>, i<inode>): {p}▏"),
        (None, Some(m)) => format!(" {m}"),
        (None, None) => format!(
            " q quit  ? help  Tab pane  g go to  / search  m map  │ {}",
            app.title
        ),
    };
    f.render_widget(
        Paragraph::new(Line::from(text)).style(Style::default().add_modifier(Modifier::REVERSED)),
        r,
    );
}

/// Every key, for `?`.
pub const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    ("?", "this help (any key closes it)"),
    ("Tab, Shift-Tab", "next / previous pane"),
    (
        "j, k, ↓, ↑",
        "scroll the hex view; move in chain, tree, superblock",
    ),
    ("PgDn, PgUp, Space", "scroll a page"),
    ("Home, End", "start / end of the disk"),
    (
        "Enter",
        "chain: the disk as of that layer; tree: open, or a file's bytes",
    ),
    ("", "groups: a descriptor's fields (each marked in hex)"),
    (
        "Esc",
        "chain: the top layer again; groups: the list; close a prompt",
    ),
    (
        "g",
        "go to an offset (0x400, 4096, 64K), a block (b<N>), an inode (i<N> or <N>)",
    ),
    (
        "m",
        "hit map: who owns each region, or who served it so far",
    ),
    (
        "d",
        "the layer's changes (A/M/R/D); Enter: a file as of both layers",
    ),
    (
        "/, n",
        "search names through the whole tree (Esc cancels); the next match",
    ),
    ("mouse", "click a pane to focus it, wheel to scroll"),
];

fn draw_help(f: &mut Frame, full: Rect) {
    let w = 78.min(full.width);
    // Each text wrapped at words beside its key column.
    let room = usize::from(w.saturating_sub(2 + 19)).max(10);
    let mut lines: Vec<Line> = Vec::new();
    for (k, v) in HELP {
        let mut line = String::new();
        let mut key = *k;
        for word in v.split(' ') {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
                lines.push(Line::from(format!("{key:<18} {line}")));
                key = "";
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(Line::from(format!("{key:<18} {line}")));
    }
    let h = (lines.len() as u16 + 2).min(full.height);
    let r = Rect::new((full.width - w) / 2, (full.height - h) / 2, w, h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("Keys")),
        r,
    );
}
