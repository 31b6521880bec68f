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
use crate::ui::style::{pane_block, selected};
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
            Action::Down => self.select(sel.saturating_add(1)),
            Action::PageUp => self.select(sel.saturating_sub(10)),
            Action::PageDown => self.select(sel.saturating_add(10)),
            Action::Enter => self.select(sel),
            _ => return None,
        })
    }

    /// A click on row `row` of the pane selects the field drawn there
    /// (a field whose value wraps takes more than one row).
    pub fn click(&mut self, row: usize, s: &Shared) -> Option<Effects> {
        let area = crate::ui::layout::areas(s).superblock?;
        let height = usize::from(area.height.saturating_sub(2));
        let width = usize::from(area.width.saturating_sub(2));
        // The journal's lines head the pane.
        let above = self.journal_rows(width).len();
        let row = row.checked_sub(above)?;
        let Some(Ok(rows)) = &self.fields else {
            return None;
        };
        let laid = lay_out(rows, width);
        let start = first_shown(&laid, self.sel, height.saturating_sub(above));
        let mut top = 0usize;
        for (i, lines) in laid.iter().enumerate().skip(start) {
            top = top.saturating_add(lines.len());
            if row < top {
                return Some(self.select(i));
            }
        }
        None
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
        let Some(last) = rows.len().checked_sub(1) else {
            return Vec::new();
        };
        self.sel = sel.min(last);
        let name = rows.get(self.sel).map_or("", |r| r.name);
        vec![Effect::Highlight(Highlight {
            label: format!("superblock {name}"),
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
                let laid = lay_out(rows, width);
                let start = first_shown(&laid, self.sel, height);
                let mut used = 0usize;
                for (i, (row, texts)) in rows.iter().zip(&laid).enumerate().skip(start) {
                    // Whole fields only (the first one shown even when
                    // cut by the pane's bottom).
                    if used.saturating_add(texts.len()) > height && i > start {
                        break;
                    }
                    let style = if focused && i == self.sel {
                        selected()
                    } else if row.value.contains("BAD") {
                        cx.styles.error()
                    } else {
                        Default::default()
                    };
                    for text in texts.iter().take(height.saturating_sub(used)) {
                        lines.push(Line::from(Span::styled(text.clone(), style)));
                    }
                    used = used.saturating_add(texts.len());
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
            Paragraph::new(lines).block(pane_block(fit(&title, width), focused, r)),
            r,
        );
    }
}

/// Most screen lines one field takes (the last marked `…` when its value
/// needs more).
const MAX_LINES: usize = 6;

/// Each field as the lines it is drawn in, `width` columns wide: offset
/// (where there is room), name and value on the first line; a value that
/// does not fit goes on under it. The raw number stays on the first line
/// and its meaning (`raw = meaning`: a date, feature names) follows on
/// the next ones, so neither is cut: long words (a UUID, a hex dump) are
/// broken across lines, and only a value over [`MAX_LINES`] lines is cut,
/// with `…`.
fn lay_out(rows: &[FieldRow], width: usize) -> Vec<Vec<String>> {
    let (off_w, name_w) = columns(rows, width);
    rows.iter()
        .map(|row| {
            let offset = if off_w > 0 {
                format!("{:#0off_w$x} ", row.offset)
            } else {
                String::new()
            };
            let head = format!("{offset}{} ", fit_pad(row.name, name_w));
            field_lines(&head, &row.value, width)
        })
        .collect()
}

/// One field's lines: `head` (offset and name, padded) then `value`.
fn field_lines(head: &str, value: &str, width: usize) -> Vec<String> {
    let head_w = width_of(head);
    let room = width.saturating_sub(head_w);
    if width_of(value) <= room {
        return vec![fit(&format!("{head}{value}"), width)];
    }
    // Continuation lines under the value where it has some room, else
    // under the name.
    let indent = if room >= 24 { head_w } else { 2 };
    let rest = width.saturating_sub(indent).max(1);
    let mut parts: Vec<String> = match value.split_once(" = ") {
        Some((raw, meaning)) => {
            let mut p = wrap_hard(raw, room, rest);
            p.extend(wrap_hard(&format!("= {meaning}"), rest, rest));
            p
        }
        None => wrap_hard(value, room, rest),
    };
    let cut = parts.len() > MAX_LINES;
    parts.truncate(MAX_LINES);
    let pad = " ".repeat(indent);
    let last = parts.len().saturating_sub(1);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let p = if cut && i == last {
                format!("{p}…")
            } else {
                p
            };
            let line = if i == 0 {
                format!("{head}{p}")
            } else {
                format!("{pad}{p}")
            };
            fit(&line, width)
        })
        .collect()
}

/// `s` in lines, the first `first` cells wide (it may stay empty when
/// the first word does not fit there), the others `rest`; broken at
/// spaces, a word longer than a line broken inside it (nothing cut).
fn wrap_hard(s: &str, first: usize, rest: usize) -> Vec<String> {
    let rest = rest.max(1);
    let mut lines = vec![String::new()];
    let cap = |n: usize| if n == 1 { first } else { rest };
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let n = lines.len();
        // `lines` starts with one line and only grows.
        let Some(line) = lines.last_mut() else {
            break;
        };
        let used = width_of(line);
        let sep = usize::from(used > 0);
        if used.saturating_add(sep).saturating_add(width_of(word)) <= cap(n) {
            if sep == 1 {
                line.push(' ');
            }
            line.push_str(word);
            continue;
        }
        if width_of(word) <= rest {
            lines.push(word.to_owned());
            continue;
        }
        // Longer than a line: character by character, on a line of its
        // own.
        if used > 0 || cap(n) == 0 {
            lines.push(String::new());
        }
        for c in word.chars() {
            let n = lines.len();
            // `lines` starts with one line and only grows.
            let Some(line) = lines.last_mut() else {
                break;
            };
            let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if width_of(line).saturating_add(w) > cap(n) && !line.is_empty() {
                lines.push(c.to_string());
            } else {
                line.push(c);
            }
        }
    }
    lines
}

/// The first field drawn, so that the selected one is on screen (at the
/// bottom once the fields above fill the pane).
fn first_shown(laid: &[Vec<String>], sel: usize, height: usize) -> usize {
    let sel = sel.min(laid.len().saturating_sub(1));
    let mut start = sel;
    let mut used = laid.get(sel).map_or(0, Vec::len);
    while let Some(up) = start.checked_sub(1) {
        let above = laid.get(up).map_or(0, Vec::len);
        if used.saturating_add(above) > height {
            break;
        }
        used = used.saturating_add(above);
        start = up;
    }
    start
}

/// Widths of the offset column (0: left out, the pane is too narrow) and
/// of the name column, leaving the values room: every name whole where
/// it fits; else the offsets kept and the longest names cut (marked) at
/// 24; else the offsets left out.
fn columns(rows: &[FieldRow], width: usize) -> (usize, usize) {
    const VALUE_ROOM: usize = 10;
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).min(26);
    let off_w = rows
        .iter()
        .map(|r| format!("{:#x}", r.offset).len())
        .max()
        .unwrap_or(0)
        .max(6);
    let room = |name_w: usize| off_w.saturating_add(name_w).saturating_add(2 + VALUE_ROOM);
    if room(name_w) <= width {
        (off_w, name_w)
    } else if room(name_w.min(24)) <= width {
        (off_w, name_w.min(24))
    } else {
        (0, name_w.min(width.saturating_sub(VALUE_ROOM + 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::{field_lines, first_shown, wrap_hard};

    #[test]
    fn a_value_that_does_not_fit_goes_on_under_its_field_uncut() {
        let head = "s_wtime    ";
        assert_eq!(field_lines(head, "1 = clean", 30), ["s_wtime    1 = clean"]);
        // The raw number on the field's line, its meaning under it.
        assert_eq!(
            field_lines(head, "1700000000 = Tue Nov 14 22:13:20 2023", 30),
            ["s_wtime    1700000000", "  = Tue Nov 14 22:13:20 2023"]
        );
        // Feature names wrap at spaces; with room, under the value.
        let head = format!("{:<26}", "s_feature_ro_compat");
        let lines = field_lines(
            &head,
            "1131 = sparse_super large_file huge_file dir_nlink extra_isize metadata_csum",
            52,
        );
        assert_eq!(
            lines,
            [
                format!("{head}1131"),
                format!("{:26}= sparse_super large_file", ""),
                format!("{:26}huge_file dir_nlink", ""),
                format!("{:26}extra_isize metadata_csum", ""),
            ]
        );
        // A UUID longer than the room is broken, not cut.
        let lines = field_lines("s_uuid ", "c8ea9206-4576-4778-8547-32c04451b5a7", 30);
        assert_eq!(
            lines.concat().replace(' ', ""),
            "s_uuidc8ea9206-4576-4778-8547-32c04451b5a7"
        );
        assert!(lines.iter().all(|l| super::width_of(l) <= 30));
        // Past MAX_LINES lines, the cut is marked.
        let long = "ab".repeat(200);
        let lines = field_lines("x ", &long, 20);
        assert_eq!(lines.len(), super::MAX_LINES);
        assert!(lines.last().unwrap().ends_with('…'));
    }

    #[test]
    fn wraps_at_spaces_and_breaks_long_words() {
        assert_eq!(wrap_hard("a bb ccc", 4, 4), ["a bb", "ccc"]);
        assert_eq!(wrap_hard("abcdefgh", 4, 3), ["abcd", "efg", "h"]);
        assert_eq!(wrap_hard("abc", 0, 4), ["", "abc"]);
        assert_eq!(wrap_hard("x abcdefgh", 4, 3), ["x", "abc", "def", "gh"]);
    }

    #[test]
    fn the_selected_field_is_on_screen_whole() {
        let laid: Vec<Vec<String>> = [1, 3, 1, 2]
            .iter()
            .map(|&n| vec![String::new(); n])
            .collect();
        assert_eq!(first_shown(&laid, 0, 4), 0);
        assert_eq!(first_shown(&laid, 2, 5), 0);
        assert_eq!(first_shown(&laid, 3, 4), 2);
        assert_eq!(first_shown(&laid, 3, 1), 3);
    }
}
