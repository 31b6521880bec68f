//! The Superblock pane: every field with its offset and value; the
//! selected field is marked in the hex view, the others underlined.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Effect, Effects, Highlight, Shared};
use crate::ui::msg::{FieldRow, JournalNote};
use crate::ui::style::{pane_block, scroll_start, selected};
use crate::ui::text::{fit, fit_pad, width as width_of, wrap};

/// The superblock pane's state.
#[derive(Clone, Debug, Default)]
pub struct SuperblockPane {
    /// The fields, or why there is no filesystem (None: not read yet).
    pub fields: Option<Result<Vec<FieldRow>, String>>,
    pub sel: usize,
    /// The journal, when it needed recovery (its line heads the pane).
    pub journal: Option<JournalNote>,
}

impl SuperblockPane {
    /// Keys (None: not the pane's).
    pub fn key(&mut self, action: &Action) -> Option<Effects> {
        let sel = self.sel;
        Some(match action {
            Action::Up => self.select(sel.saturating_sub(1)),
            Action::Down => self.select(sel + 1),
            Action::PageUp => self.select(sel.saturating_sub(10)),
            Action::PageDown => self.select(sel + 10),
            Action::Enter => self.select(sel),
            _ => return None,
        })
    }

    /// A click on row `row` of the pane selects that field.
    pub fn click(&mut self, row: usize, s: &Shared) -> Option<Effects> {
        let mut height = usize::from(crate::ui::layout::inner_rows(s, Pane::Superblock));
        let mut row = row;
        let width = usize::from(
            crate::ui::layout::areas(s)
                .superblock?
                .width
                .saturating_sub(2),
        );
        // The journal's lines head the pane.
        let above = self.journal_rows(width).len();
        row = row.checked_sub(above)?;
        height = height.saturating_sub(above);
        let i = scroll_start(self.sel, height) + row;
        Some(self.select(i))
    }

    /// The journal's note in lines of `width` (none when it needed no
    /// recovery): the flag, and what was done about it.
    fn journal_rows(&self, width: usize) -> Vec<String> {
        match &self.journal {
            Some(j) => wrap(&format!("needs_recovery: {}", j.text), width, 3),
            None => Vec::new(),
        }
    }

    /// Moves the selection (clamped) and marks the field's bytes.
    fn select(&mut self, sel: usize) -> Effects {
        let Some(Ok(rows)) = &self.fields else {
            return Vec::new();
        };
        if rows.is_empty() {
            return Vec::new();
        }
        self.sel = sel.min(rows.len() - 1);
        vec![Effect::Highlight(Highlight {
            label: format!("superblock {}", rows[self.sel].name),
            fields: rows.iter().map(|r| (r.offset, r.size)).collect(),
            selected: Some(self.sel),
        })]
    }

    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let focused = cx.focused(Pane::Superblock);
        let height = usize::from(r.height.saturating_sub(2));
        let width = usize::from(r.width.saturating_sub(2));
        let mut lines: Vec<Line> = Vec::new();
        match &self.fields {
            None => lines.push(Line::from("reading…")),
            Some(Err(e)) => lines.push(Line::from(format!("no filesystem: {e}"))),
            Some(Ok(rows)) => {
                let (off_w, name_w) = columns(rows, width);
                let mut height = height;
                let style = self
                    .journal
                    .as_ref()
                    .map(|j| super::status::journal_line(j, cx).style)
                    .unwrap_or_default();
                for text in self.journal_rows(width) {
                    lines.push(Line::from(Span::styled(text, style)));
                    height = height.saturating_sub(1);
                }
                let start = scroll_start(self.sel, height);
                for (i, row) in rows.iter().enumerate().skip(start).take(height) {
                    let style = if focused && i == self.sel {
                        selected()
                    } else if row.value.contains("BAD") {
                        cx.styles.error()
                    } else {
                        Default::default()
                    };
                    let offset = if off_w > 0 {
                        format!("{:#0off_w$x} ", row.offset)
                    } else {
                        String::new()
                    };
                    let head = format!("{offset}{} ", fit_pad(row.name, name_w));
                    let room = width.saturating_sub(width_of(&head));
                    let text = format!("{head}{}", value_text(&row.value, room));
                    lines.push(Line::from(Span::styled(fit(&text, width), style)));
                }
            }
        }
        let s = cx.shared;
        let mut title = match s.fs_kind {
            "" => "Superblock".to_owned(),
            "vfat" => "Boot sector (vfat)".to_owned(),
            k => format!("Superblock ({k})"),
        };
        if let Some((name, _)) = &s.volume {
            title.push_str(&format!(" on {name}"));
        }
        f.render_widget(
            Paragraph::new(lines).block(pane_block(fit(&title, width), focused)),
            r,
        );
    }
}

/// A field's value in `room` columns. The raw number is what the hex
/// view shows, so it is never cut while it fits whole: a decoded meaning
/// (`raw = meaning`) is shortened first, and dropped when fewer than four
/// of its characters would show.
fn value_text(value: &str, room: usize) -> String {
    if width_of(value) <= room {
        return value.to_owned();
    }
    match value.split_once(" = ") {
        Some((raw, meaning)) if width_of(raw) + 3 + width_of(meaning).min(4) <= room => {
            fit(value, room)
        }
        Some((raw, _)) => fit(raw, room),
        None => fit(value, room),
    }
}

/// Widths of the offset column (0: left out, the pane is too narrow) and
/// of the name column, leaving the values room.
fn columns(rows: &[FieldRow], width: usize) -> (usize, usize) {
    const VALUE_ROOM: usize = 10;
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).min(24);
    let off_w = rows
        .iter()
        .map(|r| format!("{:#x}", r.offset).len())
        .max()
        .unwrap_or(0)
        .max(6);
    if off_w + 1 + name_w + 1 + VALUE_ROOM <= width {
        (off_w, name_w)
    } else {
        (0, name_w.min(width.saturating_sub(VALUE_ROOM + 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::value_text;

    #[test]
    fn the_raw_value_is_kept_whole_and_the_meaning_shortened_first() {
        assert_eq!(value_text("1 = clean", 10), "1 = clean");
        assert_eq!(value_text("1 = continue", 10), "1 = conti…");
        assert_eq!(value_text("61267 = 0xef53", 10), "61267");
        assert_eq!(
            value_text("1700000000 = 2023-11-14 22:13:20", 10),
            "1700000000"
        );
        assert_eq!(value_text("12345678901 = x", 10), "123456789…");
    }
}
