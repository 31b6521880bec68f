//! The Hit map pane: the disk as a grid of cells, each in the colour of
//! the layer that owns it (from metadata) or that served it so far (`m`
//! toggles), with a legend of bytes per layer; the opened file's cells are
//! marked.
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::ui::action::Pane;
use crate::ui::context::Shared;
use crate::ui::layout::grid_cells;
use crate::ui::msg::{CellOwner, Grid, HitMode, Request};
use crate::ui::style::pane_block;
use crate::units::human;

/// The hit map pane's state.
#[derive(Clone, Debug)]
pub struct HitMapPane {
    pub mode: HitMode,
    pub grid: Option<Grid>,
    /// The cells holding the opened file's blocks (as many as the grid
    /// has).
    pub file_cells: Option<Vec<bool>>,
}

impl Default for HitMapPane {
    fn default() -> Self {
        HitMapPane {
            mode: HitMode::Static,
            grid: None,
            file_cells: None,
        }
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

    /// `m`: owners, or what was served so far.
    pub fn toggle(&mut self) {
        self.mode = match self.mode {
            HitMode::Static => HitMode::Runtime,
            HitMode::Runtime => HitMode::Static,
        };
        self.grid = None;
    }

    /// Takes a grid when it is for the current layer, mode and size.
    pub fn receive(&mut self, g: Grid, s: &Shared) {
        if g.as_of == s.as_of && g.mode == self.mode && g.cells.len() == grid_cells(s) {
            self.grid = Some(g);
        }
    }

    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let st = cx.styles;
        let mode = match self.mode {
            HitMode::Static => "owner",
            HitMode::Runtime => "served so far",
        };
        let title = format!("Hit map: {mode} (m)");
        let inner_w = usize::from(r.width.saturating_sub(2)).max(1);
        let mut lines: Vec<Line> = Vec::new();
        match &self.grid {
            None => lines.push(Line::from("computing…")),
            Some(g) => {
                // The opened file's cells: `▓` in the owner's colour,
                // reversed.
                let file = self
                    .file_cells
                    .as_ref()
                    .filter(|c| c.len() == g.cells.len());
                for (y, row) in g.cells.chunks(inner_w).enumerate() {
                    let spans: Vec<Span> = row
                        .iter()
                        .enumerate()
                        .map(|(x, c)| {
                            let mine = file.is_some_and(|f| f[y * inner_w + x]);
                            match (c, mine) {
                                (CellOwner::Layer(l), true) => Span::styled(
                                    "▓",
                                    st.layer(Some(*l)).add_modifier(Modifier::REVERSED),
                                ),
                                (_, true) => Span::styled(
                                    "▓",
                                    st.fg(Color::DarkGray).add_modifier(Modifier::REVERSED),
                                ),
                                (CellOwner::Layer(l), false) => {
                                    Span::styled("█", st.layer(Some(*l)))
                                }
                                (CellOwner::Nowhere, false) => {
                                    Span::styled("·", st.fg(Color::DarkGray))
                                }
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
                    legend.push(Span::styled("█", st.layer(Some(i))));
                    legend.push(Span::raw(format!("{i}:{} ", human(*b))));
                }
                legend.push(Span::styled("·", st.fg(Color::DarkGray)));
                legend.push(Span::raw(format!("none:{}", human(g.nowhere))));
                let room = usize::from(r.height.saturating_sub(2)).max(1);
                lines.truncate(room - 1);
                lines.push(Line::from(legend));
            }
        }
        f.render_widget(
            Paragraph::new(lines).block(pane_block(title, cx.focused(Pane::HitMap))),
            r,
        );
    }
}
