//! The Volumes pane: the disk's volume stack (the whole disk, its
//! partitions, LVM's logical volumes), where each lies on the disk and
//! what it holds, the one in view marked; Enter shows the selected
//! volume's filesystem in every pane.
//!
//! ```text
//! ┌Volumes: GPT, 4 ───────────────────────────────────────────┐
//! │  disk     whole disk            0x0        2 GiB  unknown │
//! │  p1       partition, BIOS boot  0x100000   1 MiB  unknown │
//! │▶ p2       partition, EFI System 0x200000  64 MiB  vfat    │
//! └───────────────────────────────────────────────────────────┘
//! ```
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Effect, Effects, Shared};
use crate::ui::msg::VolumeList;
use crate::ui::style::{pane_block, scroll_start, selected};
use crate::ui::text::{self, fit, fit_pad};
use crate::units::human;

/// The volumes pane's state: the list (asked for when the pane first
/// shows) and the selected row.
#[derive(Clone, Debug, Default)]
pub struct VolumesPane {
    pub list: Option<Result<VolumeList, String>>,
    pub sel: usize,
}

impl VolumesPane {
    fn rows(&self) -> usize {
        match &self.list {
            Some(Ok(l)) => l.rows.len(),
            _ => 0,
        }
    }

    /// Keys (None: not the pane's).
    pub fn key(&mut self, action: &Action, s: &Shared) -> Option<Effects> {
        let last = self.rows().saturating_sub(1);
        let page = usize::from(s.height.saturating_sub(4)).max(1);
        match action {
            Action::Up => self.sel = self.sel.saturating_sub(1),
            Action::Down => self.sel = self.sel.saturating_add(1).min(last),
            Action::PageUp => self.sel = self.sel.saturating_sub(page),
            Action::PageDown => self.sel = self.sel.saturating_add(page).min(last),
            Action::Top => self.sel = 0,
            Action::Bottom => self.sel = last,
            Action::Enter => return Some(self.choose()),
            _ => return None,
        }
        Some(Vec::new())
    }

    /// The selected volume's filesystem in view.
    fn choose(&mut self) -> Effects {
        let Some(Ok(list)) = &self.list else {
            return Vec::new();
        };
        let Some(row) = list.rows.get(self.sel) else {
            return Vec::new();
        };
        if list.current == Some(self.sel) {
            return vec![Effect::Message(format!("{} is in view", row.name))];
        }
        let name = row.name.clone();
        // The list comes again with the new volume marked.
        self.list = None;
        vec![
            Effect::Volume(name.clone()),
            Effect::Message(format!("volume {name} in view")),
        ]
    }

    /// A click on row `row`: selects it; on the selected one (with
    /// `open`), shows its filesystem.
    pub fn click(&mut self, row: usize, open: bool, s: &Shared) -> Option<Effects> {
        let height = usize::from(crate::ui::layout::inner_rows(s, Pane::Volumes));
        let i = scroll_start(self.sel, height).checked_add(row)?;
        if i >= self.rows() {
            return None;
        }
        if open && i == self.sel {
            return Some(self.choose());
        }
        self.sel = i;
        Some(Vec::new())
    }

    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let focused = cx.focused(Pane::Volumes);
        let width = usize::from(r.width.saturating_sub(2));
        let height = usize::from(r.height.saturating_sub(2));
        let mut lines: Vec<Line> = Vec::new();
        let mut title = "Volumes".to_owned();
        match &self.list {
            None => lines.push(Line::from("reading…")),
            Some(Err(e)) => lines.push(Line::styled(
                fit(&format!("no volumes: {e}"), width),
                cx.styles.error(),
            )),
            Some(Ok(list)) => {
                title = format!("Volumes: {}", list.rows.len());
                if let Some(c) = list.current.and_then(|c| list.rows.get(c)) {
                    title.push_str(&format!(" · {} in view (Enter: another)", c.name));
                }
                let name_w = list.rows.iter().map(|v| v.name.len()).max().unwrap_or(4);
                let content_w = list
                    .rows
                    .iter()
                    .map(|v| text::width(&v.content))
                    .max()
                    .unwrap_or(8);
                let start = scroll_start(self.sel, height);
                for (i, v) in list.rows.iter().enumerate().skip(start) {
                    let mark = if list.current == Some(i) { "▶" } else { " " };
                    let at = v.start.map_or("-".to_owned(), |s| format!("{s:#x}"));
                    // What it holds first: that is what a person picks by.
                    let text = format!(
                        "{} {} {:>10} {:>9}  {}",
                        fit_pad(&v.name, name_w),
                        fit_pad(&v.content, content_w.min(width / 3)),
                        at,
                        human(v.len),
                        v.what
                    );
                    let style = if focused && i == self.sel {
                        selected()
                    } else if v.readable {
                        Default::default()
                    } else {
                        ratatui::style::Style::default().add_modifier(ratatui::style::Modifier::DIM)
                    };
                    lines.push(Line::from(vec![
                        Span::raw(mark),
                        Span::styled(fit(&text, width.saturating_sub(1)), style),
                    ]));
                }
                for p in &list.problems {
                    lines.push(Line::styled(
                        fit(&format!("⚠ {p}"), width),
                        cx.styles.error(),
                    ));
                }
            }
        }
        f.render_widget(
            Paragraph::new(lines).block(pane_block(fit(&title, width), focused, r)),
            r,
        );
    }
}
