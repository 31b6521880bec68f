//! The Groups pane: the block group descriptor table, one row per group,
//! and the fields of one descriptor. Moving through it marks the
//! descriptor's fields in the hex view, from the decoder's own field table
//! ([`GROUP_DESC`]), so no second list of descriptor fields exists here.
//!
//! ```text
//! ┌Groups: 16, 64-byte descriptors, crc32c──────────────────────┐
//! │group  blk bmp  ino bmp  ino tbl free blk free ino  checksum │
//! │    0      262      278      294     1021     8180  ok 0x3a1c│
//! │▶   1      263      279      806        0     8192  BAD 0x… │
//! │group 1: block bitmap 263, … (the selected group, in full)   │
//! └─────────────────────────────────────────────────────────────┘
//! ```
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::DrawCx;
use crate::bytes::u64_of;
use crate::fs::ext::group_desc::GROUP_DESC;
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Effect, Effects, Highlight, Shared};
use crate::ui::msg::{Checksum, FieldRow, GroupRow, GroupsTable, OtherGroups, Request};
use crate::ui::style::{pane_block, scroll_start, selected};
use crate::ui::text;

/// The groups pane's state.
#[derive(Clone, Debug, Default)]
pub struct GroupsPane {
    /// The descriptor table, or why there is none (asked for when the
    /// pane first shows).
    pub table: Option<Result<GroupsTable, String>>,
    pub sel: usize,
    /// The fields of the group opened with Enter, and the selected one.
    pub fields: Option<(u64, Vec<FieldRow>)>,
    pub field_sel: usize,
}

/// The highlight of group `row`'s descriptor: every field the
/// descriptor's size holds.
fn descriptor_marks(table: &GroupsTable, row: &GroupRow) -> Option<Highlight> {
    let base = row.offset?;
    Some(Highlight {
        label: format!("group {} descriptor", row.group),
        fields: GROUP_DESC
            .iter()
            .filter(|f| f.offset.saturating_add(f.size) <= table.desc_size)
            .map(|f| (base.saturating_add(u64_of(f.offset)), f.size))
            .collect(),
        selected: None,
    })
}

impl GroupsPane {
    /// Keys (None: not the pane's, handled as elsewhere). In the table,
    /// moving selects a group; Enter lists its fields, where moving
    /// selects a field; Esc goes back to the table.
    pub fn key(&mut self, action: &Action, s: &Shared) -> Option<Effects> {
        let page = usize::from(s.height.saturating_sub(8)).max(1);
        if self.fields.is_some() {
            let sel = self.field_sel;
            return Some(match action {
                Action::Up => self.select_field(sel.saturating_sub(1)),
                Action::Down => self.select_field(sel.saturating_add(1)),
                Action::PageUp => self.select_field(sel.saturating_sub(page)),
                Action::PageDown => self.select_field(sel.saturating_add(page)),
                Action::Top => self.select_field(0),
                Action::Bottom => self.select_field(usize::MAX),
                Action::Back => {
                    self.fields = None;
                    self.select(self.sel)
                }
                _ => return None,
            });
        }
        let sel = self.sel;
        Some(match action {
            Action::Up => self.select(sel.saturating_sub(1)),
            Action::Down => self.select(sel.saturating_add(1)),
            Action::PageUp => self.select(sel.saturating_sub(page)),
            Action::PageDown => self.select(sel.saturating_add(page)),
            Action::Top => self.select(0),
            Action::Bottom => self.select(usize::MAX),
            Action::Enter => match self.selected_group() {
                Some(group) => vec![Effect::Request(Request::GroupFields {
                    as_of: s.as_of,
                    group,
                })],
                None => Vec::new(),
            },
            _ => return None,
        })
    }

    /// The selected group, when its header could be read.
    fn selected_group(&self) -> Option<u64> {
        let Some(Ok(t)) = &self.table else {
            return None;
        };
        match &t.other {
            Some(o) => o
                .rows
                .get(self.sel)
                .filter(|r| r.offset.is_some())
                .map(|r| r.index),
            None => t
                .rows
                .get(self.sel)
                .filter(|r| r.offset.is_some())
                .map(|r| r.group),
        }
    }

    /// The table arrived.
    pub fn receive_table(&mut self, table: Result<GroupsTable, String>) -> Effects {
        self.table = Some(table);
        self.select(self.sel)
    }

    /// A descriptor's fields arrived.
    pub fn receive_fields(&mut self, group: u64, fields: Result<Vec<FieldRow>, String>) -> Effects {
        match fields {
            Ok(f) => {
                self.fields = Some((group, f));
                self.select_field(0)
            }
            Err(e) => vec![Effect::Error(e)],
        }
    }

    /// Selects a group (clamped) and marks its descriptor in hex.
    fn select(&mut self, sel: usize) -> Effects {
        let Some(Ok(table)) = &self.table else {
            return Vec::new();
        };
        if let Some(o) = &table.other {
            self.sel = sel.min(o.rows.len().saturating_sub(1));
            return o
                .rows
                .get(self.sel)
                .and_then(|r| {
                    Some(Highlight {
                        label: format!("{} {}", o.noun, r.index),
                        fields: vec![(r.offset?, 4)],
                        selected: None,
                    })
                })
                .map(Effect::Highlight)
                .into_iter()
                .collect();
        }
        self.sel = sel.min(table.rows.len().saturating_sub(1));
        table
            .rows
            .get(self.sel)
            .and_then(|r| descriptor_marks(table, r))
            .map(Effect::Highlight)
            .into_iter()
            .collect()
    }

    /// Selects a field of the opened descriptor (clamped) and marks it.
    fn select_field(&mut self, sel: usize) -> Effects {
        let Some((group, fields)) = &self.fields else {
            return Vec::new();
        };
        let Some(last) = fields.len().checked_sub(1) else {
            return Vec::new();
        };
        self.field_sel = sel.min(last);
        let name = fields.get(self.field_sel).map_or("", |f| f.name);
        vec![Effect::Highlight(Highlight {
            label: format!("group {group} {name}"),
            fields: fields.iter().map(|f| (f.offset, f.size)).collect(),
            selected: Some(self.field_sel),
        })]
    }

    /// Draws the pane; `fs_error` is why there is no filesystem, if so.
    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx, fs_error: Option<&str>) {
        let focused = cx.focused(Pane::Groups);
        let inner_w = usize::from(r.width.saturating_sub(2));
        let height = usize::from(r.height.saturating_sub(2));
        let mut title = "Groups".to_owned();
        let mut lines: Vec<Line> = Vec::new();
        match (&self.table, &self.fields) {
            (None, _) => lines.push(Line::from(match fs_error {
                Some(e) => format!("no filesystem: {e}"),
                None => "reading…".into(),
            })),
            (Some(Err(e)), _) => lines.push(Line::from(format!("no group table: {e}"))),
            (Some(Ok(_)), Some((group, fields))) => {
                title = match self
                    .table
                    .as_ref()
                    .and_then(|t| t.as_ref().ok()?.other.as_ref())
                {
                    Some(o) => format!("{} {group} (Esc: all groups)", o.noun),
                    None => format!("Group {group} descriptor (Esc: all groups)"),
                };
                let start = scroll_start(self.field_sel, height);
                for (i, row) in fields.iter().enumerate().skip(start).take(height) {
                    let sel = i == self.field_sel;
                    let style = if focused && sel {
                        selected()
                    } else {
                        Style::default()
                    };
                    // A mark as well as the reverse video: plain-text
                    // frames (and screen readers) see the selection too.
                    lines.push(Line::from(Span::styled(
                        format!(
                            "{}{:#x} {:<24} {}",
                            if sel { "▶" } else { " " },
                            row.offset,
                            row.name,
                            row.value
                        ),
                        style,
                    )));
                }
            }
            (Some(Ok(t)), None) if t.other.is_some() => match &t.other {
                Some(o) if o.rows.is_empty() => {
                    lines.push(Line::from(format!(
                        "{} has no groups",
                        match cx.shared.fs_kind {
                            "" => "this filesystem",
                            k => k,
                        }
                    )));
                }
                Some(o) => {
                    title = format!("Groups: {} {}", t.count, plural(o.noun, t.count));
                    self.other_lines(o, t.count, inner_w, height, focused, &mut lines);
                }
                None => {}
            },
            (Some(Ok(t)), None) => {
                title = format!(
                    "Groups: {} · {} B descriptors · checksums {}",
                    t.count, t.desc_size, t.checksum_kind
                );
                self.table_lines(t, inner_w, height, focused, cx, &mut lines);
            }
        }
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(pane_block(title, focused, r)),
            r,
        );
    }

    /// A filesystem's own table (XFS's allocation groups): columns as
    /// wide as their widest cell, dropped from the right when the pane is
    /// narrow (the cut marked).
    fn other_lines(
        &self,
        o: &OtherGroups,
        count: u64,
        inner_w: usize,
        height: usize,
        focused: bool,
        lines: &mut Vec<Line<'static>>,
    ) {
        let widths: Vec<usize> = o
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                o.rows
                    .iter()
                    .filter_map(|r| r.cells.get(i))
                    .map(|c| text::width(c))
                    .chain(std::iter::once(text::width(c)))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let row_text = |index: String, cells: &mut dyn Iterator<Item = &str>| {
            let mut line = format!("{index:>6}");
            for (cell, w) in cells.zip(&widths) {
                line.push_str(&format!("  {:>w$}", cell, w = w));
            }
            text::fit(&line, inner_w.saturating_sub(1))
        };
        // The index column is named for what the rows are (`AG`, `copy`).
        let index = match o.noun {
            "allocation group" => "AG",
            n => n.rsplit(' ').next().unwrap_or("group"),
        };
        let header = row_text(index.into(), &mut o.columns.iter().map(String::as_str));
        lines.push(Line::from(Span::styled(
            format!(" {header}"),
            Style::default().add_modifier(Modifier::BOLD),
        )));
        let rows_h = height.saturating_sub(2).max(1);
        let start = scroll_start(self.sel, rows_h);
        for (i, r) in o.rows.iter().enumerate().skip(start).take(rows_h) {
            let mark = if i == self.sel { "▶" } else { " " };
            let mut text = row_text(r.index.to_string(), &mut r.cells.iter().map(String::as_str));
            if r.ok == Some(false) {
                text.push_str(" BAD");
            }
            let mut line = Line::from(format!("{mark}{text}"));
            if focused && i == self.sel {
                line = line.patch_style(selected());
            }
            lines.push(line);
        }
        if u64_of(o.rows.len()) < count {
            lines.push(Line::from(format!(
                "(showing the first {} of {count})",
                o.rows.len()
            )));
        }
    }

    fn table_lines(
        &self,
        t: &GroupsTable,
        inner_w: usize,
        height: usize,
        focused: bool,
        cx: DrawCx,
        lines: &mut Vec<Line<'static>>,
    ) {
        let mut width = 0usize;
        let shown: Vec<&Column> = COLUMNS
            .iter()
            .take_while(|c| {
                width = width.saturating_add(c.1);
                width < inner_w.max(COLUMNS.first().map_or(0, |c| c.1).saturating_add(1))
            })
            .collect();
        let mut header: String = std::iter::once(" ".to_owned())
            .chain(shown.iter().map(|c| format!("{:>w$}", c.0, w = c.1)))
            .collect();
        // Columns left out are marked (the line below has their values).
        if shown.len() < COLUMNS.len() {
            header = text::fit(&format!("{header} …"), inner_w);
        }
        lines.push(Line::from(Span::styled(
            header,
            Style::default().add_modifier(Modifier::BOLD),
        )));
        // Below the table: the selected group in full (wrapped), and a
        // note when rows were left out.
        let mut foot = t.rows.get(self.sel).map(detail).unwrap_or_default();
        if u64_of(t.rows.len()) < t.count {
            foot.push_str(&format!(
                " (showing the first {} of {} groups)",
                t.rows.len(),
                t.count
            ));
        }
        // Wrapping breaks at words: allow a line more than the count.
        let detail_h = (foot
            .chars()
            .count()
            .div_ceil(inner_w.max(1))
            .saturating_add(1))
        .clamp(1, (height / 2).max(1));
        let rows_h = height.saturating_sub(detail_h.saturating_add(1)).max(1);
        let start = scroll_start(self.sel, rows_h);
        for (i, row) in t.rows.iter().enumerate().skip(start).take(rows_h) {
            let mut spans = vec![Span::raw(if i == self.sel { "▶" } else { " " })];
            for c in &shown {
                let text = format!("{:>w$}", (c.2)(row), w = c.1);
                let style = match row.checksum {
                    Checksum::Bad { .. } if c.0 == "checksum" => {
                        cx.styles.fg(Color::Red).add_modifier(Modifier::BOLD)
                    }
                    _ => Style::default(),
                };
                spans.push(Span::styled(text, style));
            }
            let mut line = Line::from(spans);
            if focused && i == self.sel {
                line = line.patch_style(selected());
            }
            lines.push(line);
        }
        while lines.len() < rows_h.saturating_add(1) {
            lines.push(Line::from(""));
        }
        lines.push(Line::from(foot));
    }
}

/// A column of the table: header, width, and its text for a row. Columns
/// are dropped right to left when the pane is narrow (the selected group's
/// line below the table has every value).
type Column = (&'static str, usize, fn(&GroupRow) -> String);

const COLUMNS: &[Column] = &[
    ("group", 6, |r| r.group.to_string()),
    ("checksum", 10, |r| match r.checksum {
        Checksum::Bad { stored, .. } => format!("BAD {stored:04x}"),
        Checksum::Ok(_) => "ok".into(),
        Checksum::None => "-".into(),
    }),
    ("ino tbl", 10, |r| r.inode_table.to_string()),
    ("free blk", 9, |r| r.free_blocks.to_string()),
    ("free ino", 9, |r| r.free_inodes.to_string()),
    ("blk bmp", 10, |r| r.block_bitmap.to_string()),
    ("ino bmp", 10, |r| r.inode_bitmap.to_string()),
    ("dirs", 6, |r| r.used_dirs.to_string()),
    ("flags", 9, |r| {
        r.flags
            .iter()
            .map(|f| match *f {
                "INODE_UNINIT" => "IU",
                "BLOCK_UNINIT" => "BU",
                "ITABLE_ZEROED" => "IZ",
                other => other,
            })
            .collect::<Vec<_>>()
            .join(",")
    }),
];

/// The selected group, every value in words.
fn detail(r: &GroupRow) -> String {
    if let Some(e) = &r.error {
        return format!("group {}: {e}", r.group);
    }
    format!(
        "group {} at {:#x}: block bitmap {}, inode bitmap {}, inode table {}, {} free blocks, {} free inodes, {} directories, {} unused inodes, flags [{}], checksum {}",
        r.group,
        r.offset.unwrap_or(0),
        r.block_bitmap,
        r.inode_bitmap,
        r.inode_table,
        r.free_blocks,
        r.free_inodes,
        r.used_dirs,
        r.itable_unused,
        r.flags.join(" "),
        r.checksum.text()
    )
}

/// `noun` for `n` of them: `1 FAT copy`, `2 FAT copies`, `4 allocation
/// groups`.
fn plural(noun: &str, n: u64) -> String {
    if n == 1 {
        noun.to_owned()
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{noun}s")
    }
}
