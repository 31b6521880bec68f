//! The Chain pane: the layers, top first, each with its colour; Enter
//! shows the disk as of the selected layer, Esc the top again.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Effect, Effects, Shared};
use crate::ui::style::{pane_block, selected};
use crate::ui::text::fit;
use crate::units::human;

/// The chain pane's state: the selected layer.
#[derive(Clone, Debug, Default)]
pub struct ChainPane {
    pub sel: usize,
}

impl ChainPane {
    /// Keys (None: not the pane's).
    pub fn key(&mut self, action: &Action, s: &Shared) -> Option<Effects> {
        match action {
            Action::Up => self.sel = self.sel.saturating_add(1).min(s.top()),
            Action::Down => self.sel = self.sel.saturating_sub(1),
            Action::Top => self.sel = s.top(),
            Action::Bottom => self.sel = 0,
            Action::Enter => {
                return Some(vec![
                    Effect::AsOf(self.sel),
                    Effect::Message(format!("disk as of layer {}", self.sel)),
                ])
            }
            Action::Back => {
                self.sel = s.top();
                return Some(vec![Effect::AsOf(s.top())]);
            }
            _ => return None,
        }
        Some(Vec::new())
    }

    /// A click on row `row` (the top layer first): selects that layer; on
    /// the selected one, shows the disk as of it.
    pub fn click(&mut self, row: usize, open: bool, s: &Shared) -> Option<Effects> {
        let layer = s.top().checked_sub(row)?;
        if open && layer == self.sel {
            return self.key(&Action::Enter, s);
        }
        self.sel = layer;
        Some(Vec::new())
    }

    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let s = cx.shared;
        let focused = cx.focused(Pane::Chain);
        // Inside the frame, after the mark and the layer's colour.
        let width = usize::from(r.width.saturating_sub(4));
        let lines: Vec<Line> = s
            .layers
            .iter()
            .rev()
            .map(|l| {
                let sel = focused && l.index == self.sel;
                let mark = if l.index == s.as_of { "▶" } else { " " };
                let style = if sel { selected() } else { Default::default() };
                Line::from(vec![
                    Span::raw(mark),
                    Span::styled("█", cx.styles.layer(Some(l.index))),
                    Span::styled(
                        fit(
                            &format!("{} {} {} {}", l.index, l.name, l.format, l.detail),
                            width,
                        ),
                        style,
                    ),
                ])
            })
            .collect();
        let n = s.layers.len();
        let title = match s.server_layers {
            // An NBD export is one layer here; its server's chain is
            // deeper.
            Some(l) if s.is_nbd => format!(
                "Chain: NBD export of a {l}-layer chain, {}",
                human(s.disk_size)
            ),
            _ => format!(
                "Chain: {n} layer{}, {}",
                if n == 1 { "" } else { "s" },
                human(s.disk_size)
            ),
        };
        f.render_widget(
            Paragraph::new(lines).block(pane_block(title, focused, r)),
            r,
        );
    }
}
