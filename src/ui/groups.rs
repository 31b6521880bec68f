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

use super::app::{Action, App, Highlight, Request};
use super::render::{pane_block, scroll_start, Styles};
use crate::fs::ext::group_desc::GROUP_DESC;

/// Rows kept at most: a filesystem with more groups shows the first ones
/// (a 64 TiB filesystem of 4 KiB blocks has 512 Ki groups).
pub const MAX_GROUP_ROWS: u64 = 1 << 16;

/// A descriptor's checksum state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// Neither metadata_csum nor uninit_bg: descriptors carry none.
    None,
    Ok(u16),
    Bad {
        stored: u16,
        expected: u16,
    },
}

impl Checksum {
    /// As the pane shows it.
    pub fn text(self) -> String {
        match self {
            Checksum::None => "-".into(),
            Checksum::Ok(c) => format!("ok {c:#06x}"),
            Checksum::Bad { stored, expected } => {
                format!("BAD {stored:#06x}, expected {expected:#06x}")
            }
        }
    }
}

/// One group descriptor as the pane shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRow {
    pub group: u64,
    /// The descriptor's disk offset (None when it could not be read).
    pub offset: Option<u64>,
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub used_dirs: u64,
    pub itable_unused: u64,
    /// Flag names in effect, as dumpe2fs prints them.
    pub flags: Vec<&'static str>,
    pub checksum: Checksum,
    /// Why the descriptor could not be read (escaped).
    pub error: Option<String>,
}

/// The descriptor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupsTable {
    /// Groups in the filesystem (the rows may be fewer, see
    /// [`MAX_GROUP_ROWS`]).
    pub count: u64,
    /// Bytes per descriptor (32, or `s_desc_size` with 64bit).
    pub desc_size: usize,
    /// "crc32c", "crc16" or "none".
    pub checksum_kind: &'static str,
    pub rows: Vec<GroupRow>,
}

impl GroupsTable {
    /// The highlight of group `row`'s descriptor: every field the
    /// descriptor's size holds.
    fn highlight(&self, row: &GroupRow) -> Option<Highlight> {
        let base = row.offset?;
        Some(Highlight {
            label: format!("group {} descriptor", row.group),
            fields: GROUP_DESC
                .iter()
                .filter(|f| f.offset + f.size <= self.desc_size)
                .map(|f| (base + f.offset as u64, f.size))
                .collect(),
            selected: None,
        })
    }
}

impl App {
    /// Keys in the Groups pane (None: not the pane's, handled as
    /// elsewhere). In the table, moving selects a group; Enter lists its
    /// fields, where moving selects a field; Esc goes back to the table.
    pub(super) fn groups_action(&mut self, action: &Action) -> Option<Vec<Request>> {
        let page = usize::from(self.height.saturating_sub(8)).max(1);
        if self.group_fields.is_some() {
            let sel = self.group_field_sel;
            return Some(match action {
                Action::Up => self.select_group_field(sel.saturating_sub(1)),
                Action::Down => self.select_group_field(sel + 1),
                Action::PageUp => self.select_group_field(sel.saturating_sub(page)),
                Action::PageDown => self.select_group_field(sel + page),
                Action::Top => self.select_group_field(0),
                Action::Bottom => self.select_group_field(usize::MAX),
                Action::Back => {
                    self.group_fields = None;
                    self.select_group(self.groups_sel)
                }
                _ => return None,
            });
        }
        let sel = self.groups_sel;
        Some(match action {
            Action::Up => self.select_group(sel.saturating_sub(1)),
            Action::Down => self.select_group(sel + 1),
            Action::PageUp => self.select_group(sel.saturating_sub(page)),
            Action::PageDown => self.select_group(sel.saturating_add(page)),
            Action::Top => self.select_group(0),
            Action::Bottom => self.select_group(usize::MAX),
            Action::Enter => match self.selected_group() {
                Some(row) if row.offset.is_some() => vec![Request::GroupFields {
                    as_of: self.as_of,
                    group: row.group,
                }],
                _ => Vec::new(),
            },
            _ => return None,
        })
    }

    fn selected_group(&self) -> Option<&GroupRow> {
        match &self.groups {
            Some(Ok(t)) => t.rows.get(self.groups_sel),
            _ => None,
        }
    }

    /// Selects a group (clamped) and marks its descriptor in hex.
    pub(super) fn select_group(&mut self, sel: usize) -> Vec<Request> {
        let Some(Ok(table)) = &self.groups else {
            return Vec::new();
        };
        self.groups_sel = sel.min(table.rows.len().saturating_sub(1));
        match table
            .rows
            .get(self.groups_sel)
            .and_then(|r| table.highlight(r))
        {
            Some(h) => self.show_highlight(h),
            None => Vec::new(),
        }
    }

    /// Selects a field of the opened descriptor (clamped) and marks it.
    pub(super) fn select_group_field(&mut self, sel: usize) -> Vec<Request> {
        let Some((group, fields)) = &self.group_fields else {
            return Vec::new();
        };
        if fields.is_empty() {
            return Vec::new();
        }
        self.group_field_sel = sel.min(fields.len() - 1);
        let h = Highlight {
            label: format!("group {group} {}", fields[self.group_field_sel].name),
            fields: fields.iter().map(|f| (f.offset, f.size)).collect(),
            selected: Some(self.group_field_sel),
        };
        self.show_highlight(h)
    }
}

/// A column of the table: header, width, and its text for a row. Columns
/// are dropped right to left when the pane is narrow (the selected group's
/// line below the table has every value).
type Column = (&'static str, usize, fn(&GroupRow) -> String);

const COLUMNS: &[Column] = &[
    ("group", 6, |r| r.group.to_string()),
    ("checksum", 10, |r| match r.checksum {
        super::groups::Checksum::Bad { stored, .. } => format!("BAD {stored:04x}"),
        super::groups::Checksum::Ok(_) => "ok".into(),
        super::groups::Checksum::None => "-".into(),
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

/// Draws the Groups pane.
pub fn draw_groups(f: &mut Frame, r: Rect, app: &App, s: &Styles) {
    let focused = app.focus == super::app::Pane::Groups;
    let inner_w = usize::from(r.width.saturating_sub(2));
    let height = usize::from(r.height.saturating_sub(2));
    let mut title = "Groups".to_owned();
    let mut lines: Vec<Line> = Vec::new();
    let sel_style = Style::default().add_modifier(Modifier::REVERSED);
    match (&app.groups, &app.group_fields) {
        (None, _) => lines.push(Line::from(match &app.sb {
            Some(Err(e)) => format!("no filesystem: {e}"),
            _ => "reading…".into(),
        })),
        (Some(Err(e)), _) => lines.push(Line::from(format!("no group table: {e}"))),
        (Some(Ok(_)), Some((group, fields))) => {
            title = format!("Group {group} descriptor (Esc: all groups)");
            let start = scroll_start(app.group_field_sel, height);
            for (i, row) in fields.iter().enumerate().skip(start).take(height) {
                let sel = i == app.group_field_sel;
                let style = if focused && sel {
                    sel_style
                } else {
                    Style::default()
                };
                // A mark as well as the reverse video: plain-text frames
                // (and screen readers) see the selection too.
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
        (Some(Ok(t)), None) => {
            title = format!(
                "Groups: {} · {} B descriptors · checksums {}",
                t.count, t.desc_size, t.checksum_kind
            );
            let mut width = 0;
            let shown: Vec<&Column> = COLUMNS
                .iter()
                .take_while(|c| {
                    width += c.1;
                    width < inner_w.max(COLUMNS[0].1 + 1)
                })
                .collect();
            let header: String = std::iter::once(" ".to_owned())
                .chain(shown.iter().map(|c| format!("{:>w$}", c.0, w = c.1)))
                .collect();
            lines.push(Line::from(Span::styled(
                header,
                Style::default().add_modifier(Modifier::BOLD),
            )));
            // Below the table: the selected group in full (wrapped), and a
            // note when rows were left out.
            let mut foot = t.rows.get(app.groups_sel).map(detail).unwrap_or_default();
            if (t.rows.len() as u64) < t.count {
                foot.push_str(&format!(
                    " (showing the first {} of {} groups)",
                    t.rows.len(),
                    t.count
                ));
            }
            // Wrapping breaks at words: allow a line more than the count.
            let detail_h =
                (foot.chars().count().div_ceil(inner_w.max(1)) + 1).clamp(1, (height / 2).max(1));
            let rows_h = height.saturating_sub(1 + detail_h).max(1);
            let start = scroll_start(app.groups_sel, rows_h);
            for (i, row) in t.rows.iter().enumerate().skip(start).take(rows_h) {
                let mut spans = vec![Span::raw(if i == app.groups_sel { "▶" } else { " " })];
                for c in &shown {
                    let text = format!("{:>w$}", (c.2)(row), w = c.1);
                    let style = match row.checksum {
                        super::groups::Checksum::Bad { .. } if c.0 == "checksum" => {
                            s.fg(Color::Red).add_modifier(Modifier::BOLD)
                        }
                        _ => Style::default(),
                    };
                    spans.push(Span::styled(text, style));
                }
                let mut line = Line::from(spans);
                if focused && i == app.groups_sel {
                    line = line.patch_style(sel_style);
                }
                lines.push(line);
            }
            while lines.len() < 1 + rows_h {
                lines.push(Line::from(""));
            }
            lines.push(Line::from(foot));
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(pane_block(title, focused)),
        r,
    );
}
