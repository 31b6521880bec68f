//! The Hit map pane: the disk as a grid of cells, each in the colour of
//! the layer that owns it (from metadata) or that served it so far (`m`
//! toggles), with a legend of bytes per layer; the opened file's cells are
//! marked. Without colours each layer's cells show its digit, so layers
//! can still be told apart. When the volume in view is not the whole
//! disk, the cells outside it are shaded (`░` in the layer's colour, no
//! `·`), so the map shows which part of the disk the tree belongs to.
//! Blocks a journal replay serves (a live snapshot read as the kernel
//! mounts it) are `▒` in the colour of the layer whose journal holds
//! their copy, "journal of layer L" in the legend. A qcow2 top layer's
//! persistent dirty bitmaps are more modes of `m` (or `--bitmap NAME`):
//! the cells holding bytes the bitmap marks dirty `█` (red), the others
//! `·`, and the legend the dirty and clean bytes.
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::ui::action::Pane;
use crate::ui::context::Shared;
use crate::ui::hex::Palette;
use crate::ui::layout::{grid_cells, grid_shape, legend_rows};
use crate::ui::msg::{CellOwner, Grid, HitMode, Request};
use crate::ui::style::{pane_block, Styles};
use crate::units::human;

/// The hit map pane's state.
#[derive(Clone, Debug)]
pub struct HitMapPane {
    pub mode: HitMode,
    /// The grid last made (shown only while it is for the layer, mode and
    /// size in view).
    pub grid: Option<Grid>,
    /// The cells holding the opened file's blocks (as many as the grid
    /// has).
    pub file_cells: Option<Vec<bool>>,
    /// Why the last grid could not be made.
    pub failed: Option<String>,
    /// The top layer's persistent dirty bitmaps (escaped names).
    pub bitmaps: Vec<String>,
    /// The bitmap asked for at the start (`--bitmap NAME`), until the
    /// chain is open.
    pub want: Option<String>,
}

impl Default for HitMapPane {
    fn default() -> Self {
        HitMapPane {
            mode: HitMode::Static,
            grid: None,
            file_cells: None,
            failed: None,
            bitmaps: Vec::new(),
            want: None,
        }
    }
}

/// A layer's glyph: a block in its colour, or without colours its digit.
fn layer_glyph(l: usize, st: &Styles) -> Span<'static> {
    if st.palette == Palette::None {
        let c = u32::try_from(l % 36)
            .ok()
            .and_then(|d| char::from_digit(d, 36))
            .unwrap_or('+');
        Span::raw(c.to_string())
    } else {
        Span::styled("█", st.layer(Some(l)))
    }
}

impl HitMapPane {
    /// The grid for the current size, when the pane has room for one.
    pub fn request(&self, s: &Shared) -> Option<Request> {
        let cells = grid_cells(s);
        (cells > 0).then_some(Request::Grid {
            as_of: s.as_of,
            cells,
            mode: self.mode,
        })
    }

    /// `m`: owners, what was served so far, then each persistent bitmap.
    pub fn toggle(&mut self) {
        self.mode = match self.mode {
            HitMode::Static => HitMode::Runtime,
            HitMode::Runtime if !self.bitmaps.is_empty() => HitMode::Bitmap(0),
            HitMode::Bitmap(i) if i.saturating_add(1) < self.bitmaps.len() => {
                HitMode::Bitmap(i.saturating_add(1))
            }
            HitMode::Runtime | HitMode::Bitmap(_) => HitMode::Static,
        };
        self.grid = None;
    }

    /// The chain is open with these bitmaps: the one asked for at the
    /// start in view, or why it cannot be.
    pub fn opened(&mut self, bitmaps: Vec<String>, top: &str) -> Result<(), String> {
        self.bitmaps = bitmaps;
        let Some(want) = self.want.take() else {
            return Ok(());
        };
        let want = crate::escape::printable(&want);
        match self.bitmaps.iter().position(|b| *b == want) {
            Some(i) => {
                self.mode = HitMode::Bitmap(i);
                self.grid = None;
                Ok(())
            }
            None => Err(format!(
                "{top}: no bitmap {want:?} (bitmaps here: {})",
                if self.bitmaps.is_empty() {
                    "none".to_owned()
                } else {
                    self.bitmaps.join(", ")
                }
            )),
        }
    }

    /// Takes a grid when it is for the current layer, mode and size.
    pub fn receive(&mut self, g: Grid, s: &Shared) {
        if g.as_of == s.as_of && g.mode == self.mode && g.cells.len() == grid_cells(s) {
            self.grid = Some(g);
            self.failed = None;
        }
    }

    /// The grid, when it is for what is in view.
    fn current(&self, s: &Shared) -> Option<&Grid> {
        self.grid
            .as_ref()
            .filter(|g| g.as_of == s.as_of && g.mode == self.mode && g.cells.len() == grid_cells(s))
    }

    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let st = cx.styles;
        let mode = match self.mode {
            HitMode::Static => "owner".to_owned(),
            HitMode::Runtime => "served so far".to_owned(),
            HitMode::Bitmap(i) => {
                format!("bitmap {}", self.bitmaps.get(i).map_or("?", String::as_str))
            }
        };
        let title = format!("Hit map: {mode} (m)");
        let (cols, rows) = grid_shape(cx.shared);
        let mut lines: Vec<Line> = Vec::new();
        match (self.current(cx.shared), &self.failed) {
            (None, Some(e)) => lines.push(Line::styled(format!("no map: {e}"), st.error())),
            (None, None) => lines.push(Line::from("computing…")),
            (Some(g), _) => {
                let file = self
                    .file_cells
                    .as_ref()
                    .filter(|c| c.len() == g.cells.len());
                let volume = g
                    .volume
                    .as_ref()
                    .filter(|v| v.inside.len() == g.cells.len());
                for (y, row) in g.cells.chunks(cols.max(1)).take(rows).enumerate() {
                    let spans: Vec<Span> = row
                        .iter()
                        .enumerate()
                        .map(|(x, c)| {
                            let i = y.saturating_mul(cols).saturating_add(x);
                            let mine = file.is_some_and(|f| f.get(i) == Some(&true));
                            let outside = volume.is_some_and(|v| v.inside.get(i) == Some(&false));
                            cell(*c, mine, outside, &st)
                        })
                        .collect();
                    lines.push(Line::from(spans));
                }
                let width = r.width.saturating_sub(2);
                lines.extend(legend(
                    g,
                    file.is_some(),
                    &st,
                    width,
                    legend_rows(cx.shared, width),
                ));
            }
        }
        f.render_widget(
            Paragraph::new(lines).block(pane_block(title, cx.focused(Pane::HitMap), r)),
            r,
        );
    }
}

/// One cell: its layer's glyph, `·` for no layer, blank when not read;
/// the opened file's cells `▓` (in the owner's colour, reversed); outside
/// the volume in view, `░` in the owner's colour and nothing for no layer.
fn cell(c: CellOwner, mine: bool, outside: bool, st: &Styles) -> Span<'static> {
    if outside && !mine {
        return match c {
            CellOwner::Layer(l) | CellOwner::Journal(l) => Span::styled("░", st.layer(Some(l))),
            CellOwner::Dirty => Span::styled("░", st.fg(DIRTY)),
            _ => Span::raw(" "),
        };
    }
    match (c, mine) {
        (CellOwner::Dirty, true) => {
            Span::styled("▓", st.fg(DIRTY).add_modifier(Modifier::REVERSED))
        }
        (CellOwner::Dirty, false) => Span::styled("█", st.fg(DIRTY)),
        (CellOwner::Clean, false) => Span::styled("·", st.fg(Color::DarkGray)),
        (CellOwner::Layer(l) | CellOwner::Journal(l), true) => {
            Span::styled("▓", st.layer(Some(l)).add_modifier(Modifier::REVERSED))
        }
        (_, true) => Span::styled("▓", st.fg(Color::DarkGray).add_modifier(Modifier::REVERSED)),
        (CellOwner::Layer(l), false) => layer_glyph(l, st),
        (CellOwner::Journal(l), false) => journal_glyph(l, st),
        (CellOwner::Nowhere, false) => Span::styled("·", st.fg(Color::DarkGray)),
        (CellOwner::NotRead, false) => Span::raw(" "),
    }
}

/// The colour of bytes a bitmap marks dirty.
const DIRTY: Color = Color::Red;

/// A block the journal replay serves: `▒` in the colour of the layer
/// whose journal holds its copy (`▒` alone without colours: the legend
/// names the layers).
fn journal_glyph(l: usize, st: &Styles) -> Span<'static> {
    Span::styled("▒", st.layer(Some(l)))
}

/// The legend: the opened file's mark, each layer's glyph and bytes (top
/// first), then the bytes in no layer; wrapped at entries into `rows`
/// lines of `width`, the last one ending in `…` if some did not fit.
fn legend(g: &Grid, file: bool, st: &Styles, width: u16, rows: u16) -> Vec<Line<'static>> {
    let mut entries: Vec<Vec<Span<'static>>> = Vec::new();
    if file {
        entries.push(vec![Span::raw("▓file")]);
    }
    if let Some(v) = &g.volume {
        entries.push(vec![Span::raw(format!("░outside {}", v.name))]);
    }
    // Counts still being walked show as `…`.
    let count = |b: u64| {
        if g.exact {
            human(b)
        } else {
            "…".to_owned()
        }
    };
    if let Some((dirty, clean)) = g.dirty {
        entries.push(vec![
            Span::styled("█", st.fg(DIRTY)),
            Span::raw(format!("dirty:{}", human(dirty))),
        ]);
        entries.push(vec![
            Span::styled("·", st.fg(Color::DarkGray)),
            Span::raw(format!("clean:{}", human(clean))),
        ]);
        return wrap_entries(entries, width, rows);
    }
    for (i, b) in g.bytes.iter().enumerate().rev() {
        let mut e = Vec::new();
        if st.palette != Palette::None {
            e.push(layer_glyph(i, st));
        }
        e.push(Span::raw(format!("{i}:{}", count(*b))));
        entries.push(e);
    }
    for (l, b) in g.journal.iter().enumerate().rev().filter(|(_, b)| **b > 0) {
        entries.push(vec![
            journal_glyph(l, st),
            Span::raw(format!("journal of layer {l}:{}", human(*b))),
        ]);
    }
    entries.push(vec![
        Span::styled("·", st.fg(Color::DarkGray)),
        Span::raw(format!("none:{}", count(g.nowhere))),
    ]);
    wrap_entries(entries, width, rows)
}

/// Legend entries wrapped into `rows` lines of `width`, the last one
/// saying how many did not fit.
fn wrap_entries(entries: Vec<Vec<Span<'static>>>, width: u16, rows: u16) -> Vec<Line<'static>> {
    let width = usize::from(width.max(1));
    let len = |e: &[Span]| e.iter().map(|s| s.content.chars().count()).sum::<usize>();
    let mut lines: Vec<Vec<Span<'static>>> = vec![Vec::new()];
    let mut used = 0usize;
    let total = entries.len();
    for (n, e) in entries.into_iter().enumerate() {
        let w = len(&e).saturating_add(usize::from(used > 0));
        let last_line = lines.len() == usize::from(rows.max(1));
        // On the last line, room for the mark of what does not fit.
        let reserve = if last_line && n.saturating_add(1) < total {
            10
        } else {
            0
        };
        if used.saturating_add(w).saturating_add(reserve) > width && used > 0 {
            if last_line {
                // No room for the rest: say so.
                // `lines` starts with one line and only grows.
                if let Some(last) = lines.last_mut() {
                    last.push(Span::raw(format!(" …{} more", total.saturating_sub(n))));
                }
                break;
            }
            lines.push(Vec::new());
            used = 0;
        }
        // As above: `lines` is never empty.
        let Some(line) = lines.last_mut() else {
            break;
        };
        if used > 0 {
            line.push(Span::raw(" "));
            used = used.saturating_add(1);
        }
        used = used.saturating_add(len(&e));
        line.extend(e);
    }
    lines.into_iter().map(Line::from).collect()
}
