//! The layer diff in the UI: `d` lists what the chosen layer changed
//! (added, modified, moved, deleted; deleted ones dimmed) in the tree's
//! place, with a gauge while it is computed on its own thread (Esc
//! cancels); tree rows of changed files carry the same letter; Enter on a
//! change shows the file's bytes as of both layers side by side, changed
//! bytes highlighted, from the first difference.
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};
use ratatui::Frame;

use super::DrawCx;
use crate::diff::{Change, Kind};
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Effect, Effects, Shared};
use crate::ui::msg::{FileCompare, Reply, Request, COMPARE_BYTES};
use crate::ui::style::{change_letter, pane_block, scroll_start, selected};

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

/// The changes pane's state: the diff of a layer (kept while that layer is
/// in view) and whether its list shows in the tree's place.
#[derive(Clone, Debug, Default)]
pub struct ChangesPane {
    pub changes: Option<Changes>,
    pub show: bool,
}

impl ChangesPane {
    /// The changes of layer `as_of`, when they are in.
    pub fn rows_for(&self, as_of: usize) -> Option<&[Change]> {
        match &self.changes {
            Some(Changes {
                to,
                state: JobState::Ready { rows, .. },
                ..
            }) if *to == as_of => Some(rows),
            _ => None,
        }
    }

    /// Whether the side-by-side view is showing.
    pub fn comparing(&self) -> bool {
        self.show && self.changes.as_ref().is_some_and(|c| c.compare.is_some())
    }

    /// Keys while the list is shown; None when it is not, or for keys
    /// that are not its.
    pub fn key(&mut self, action: &Action) -> Option<Effects> {
        let ch = self.changes.as_mut().filter(|_| self.show)?;
        let rows = match &ch.state {
            JobState::Ready { rows, .. } => rows.len(),
            _ => 0,
        };
        let compare = |ch: &Changes, offset: Option<u64>| -> Effects {
            let JobState::Ready { rows: list, .. } = &ch.state else {
                return Vec::new();
            };
            list.get(ch.sel).map_or_else(Vec::new, |row| {
                vec![Effect::Request(Request::Compare {
                    to: ch.to,
                    change: Box::new(row.clone()),
                    offset,
                })]
            })
        };
        match action {
            Action::Back if ch.compare.is_some() => ch.compare = None,
            Action::Back => {
                self.show = false;
                if matches!(ch.state, JobState::Running { .. }) {
                    self.changes = None;
                    return Some(vec![
                        Effect::Message("diff cancelled".into()),
                        Effect::Request(Request::CancelDiff),
                    ]);
                }
            }
            Action::Up => ch.sel = ch.sel.saturating_sub(1),
            Action::Down => ch.sel = (ch.sel + 1).min(rows.saturating_sub(1)),
            Action::PageUp => ch.sel = ch.sel.saturating_sub(10),
            Action::PageDown => {
                if let Some(c) = &ch.compare {
                    let next = c.offset + COMPARE_BYTES as u64;
                    return Some(compare(ch, Some(next)));
                }
                ch.sel = (ch.sel + 10).min(rows.saturating_sub(1));
            }
            Action::Top => ch.sel = 0,
            Action::Bottom => ch.sel = rows.saturating_sub(1),
            Action::Enter => return Some(compare(ch, None)),
            _ => return None,
        }
        Some(Vec::new())
    }

    /// `d`: show the changes of the layer in view (computed once).
    pub fn toggle(&mut self, s: &Shared) -> Effects {
        if self.show {
            self.show = false;
            return Vec::new();
        }
        if s.as_of == 0 {
            return vec![
                Effect::Focus(Pane::Tree),
                Effect::Message("layer 0 is the base: choose an overlay in the Chain pane".into()),
            ];
        }
        self.show = true;
        let fx = vec![Effect::Focus(Pane::Tree)];
        if self.changes.as_ref().is_some_and(|c| c.to == s.as_of) {
            return fx;
        }
        self.changes = Some(Changes {
            from: s.as_of - 1,
            to: s.as_of,
            state: JobState::Running {
                phase: "starting".into(),
                done: 0,
                total: 0,
            },
            sel: 0,
            compare: None,
        });
        let mut fx = fx;
        fx.push(Effect::Request(Request::Diff { to: s.as_of }));
        fx
    }

    /// Takes the diff's replies; true when the result came in (the tree
    /// then marks the deleted names).
    pub fn receive(&mut self, reply: Reply) -> bool {
        let Some(ch) = self.changes.as_mut() else {
            return false;
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
                return true;
            }
            Reply::Compare(c) if c.to == ch.to => ch.compare = Some(*c),
            _ => {}
        }
        false
    }

    /// The changes list, in the tree's place.
    pub fn draw_list(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let Some(ch) = &self.changes else { return };
        let focused = cx.focused(Pane::Tree);
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
                    .gauge_style(cx.styles.fg(Color::Green))
                    .ratio(ratio.clamp(0.0, 1.0))
                    .label(format!("{phase}: {done}/{total} (Esc cancels)"));
                f.render_widget(
                    g,
                    Rect::new(inner.x, inner.y, inner.width, 1.min(inner.height)),
                );
            }
            JobState::Failed(e) => {
                f.render_widget(Paragraph::new(format!("diff failed: {e}")), inner)
            }
            JobState::Ready { rows, summary } => {
                let height = usize::from(inner.height.saturating_sub(1));
                let start = scroll_start(ch.sel, height);
                let width = usize::from(inner.width);
                let mut lines = vec![Line::from(Span::styled(
                    summary.clone(),
                    Style::default().add_modifier(Modifier::DIM),
                ))];
                for (i, c) in rows.iter().enumerate().skip(start).take(height) {
                    let mut style = Style::default();
                    if c.change == Kind::Deleted {
                        style = style.add_modifier(Modifier::DIM);
                    }
                    if focused && i == ch.sel {
                        style = style.patch(selected());
                    }
                    lines.push(Line::from(vec![
                        change_letter(c.change, &cx.styles),
                        Span::styled(change_text(c, width), style),
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
    pub fn draw_compare(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let Some(c) = self.changes.as_ref().and_then(|c| c.compare.as_ref()) else {
            return;
        };
        let st = cx.styles;
        let size = |s: Option<u64>| s.map_or("absent".to_owned(), |n| format!("{n} B"));
        let title = format!(
            "{}: layer {} ({}) | layer {} ({})",
            c.path,
            c.to.saturating_sub(1),
            size(c.old_size),
            c.to,
            size(c.new_size)
        );
        let block = pane_block(title, cx.focused(Pane::Hex));
        let inner = block.inner(r);
        f.render_widget(block, r);
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
                st.fg(Color::DarkGray),
            )];
            for (mine, other) in [(&c.old, &c.new), (&c.new, &c.old)] {
                spans.push(Span::raw("│"));
                let mut chars = String::new();
                for k in at..at + per {
                    match mine.get(k) {
                        Some(&b) => {
                            let style = if other.get(k) != Some(&b) {
                                st.fg(Color::Yellow).add_modifier(Modifier::REVERSED)
                            } else {
                                st.fg(crate::ui::hex::ByteClass::of(b).color())
                            };
                            spans.push(Span::styled(format!("{b:02x} "), style));
                            chars.push(crate::ui::hex::glyph(b));
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
}

/// A change's line: its path (and where it moved from), what changed.
fn change_text(c: &Change, width: usize) -> String {
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
    text.chars().take(width.saturating_sub(1)).collect()
}
