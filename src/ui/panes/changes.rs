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
use crate::bytes::{align_down, u64_of};
use crate::diff::{Change, Kind};
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Effect, Effects, Shared};
use crate::ui::layout::layout;
use crate::ui::msg::{FileCompare, Reply, Request, Seek, COMPARE_BYTES};
use crate::ui::style::{change_letter, pane_block, scroll_start, selected};
use crate::ui::text::fit;

/// The diff of one layer against the one below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    pub from: usize,
    pub to: usize,
    pub state: JobState,
    pub sel: usize,
    /// The file opened with Enter.
    pub compare: Option<CompareView>,
}

/// A changed file side by side: the window of bytes the worker sent, the
/// first byte on screen, and whether another window is on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompareView {
    pub data: FileCompare,
    /// The first byte shown (a multiple of the bytes per row).
    pub top: u64,
    pub pending: bool,
}

impl CompareView {
    /// The larger of the two sizes: where scrolling ends.
    fn end(&self) -> u64 {
        self.data
            .old_size
            .unwrap_or(0)
            .max(self.data.new_size.unwrap_or(0))
    }

    /// Whether the window holds `[from, to)` (or all of it that exists).
    fn holds(&self, from: u64, to: u64) -> bool {
        let d = &self.data;
        let have = d
            .offset
            .saturating_add(u64_of(d.old.len().max(d.new.len())));
        from >= d.offset && (to.min(self.end()) <= have)
    }
}

/// Bytes per row of the side-by-side view for a pane `inner` cells wide:
/// 8 columns of offset, then per side a bar and 4 columns a byte.
pub fn per_row(inner: u16) -> usize {
    [16, 8, 4]
        .into_iter()
        .find(|p: &usize| p.saturating_mul(8).saturating_add(8 + 2) <= usize::from(inner))
        .unwrap_or(2)
}

/// The side-by-side view's size: (bytes per row, rows).
fn compare_shape(s: &Shared) -> (u64, u64) {
    let r = layout(s, Pane::Hex).hex.unwrap_or_default();
    let per = u64_of(per_row(r.width.saturating_sub(2)));
    (per, u64::from(r.height.saturating_sub(2)).max(1))
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

    /// Keys while the list is shown (focus on the tree's slot) or the
    /// side-by-side view (focus on the hex slot); None for keys that are
    /// not theirs.
    pub fn key(&mut self, action: &Action, s: &Shared) -> Option<Effects> {
        if !self.show {
            return None;
        }
        if s.focus == Pane::Hex {
            return self.compare_key(action, s);
        }
        let ch = self.changes.as_mut()?;
        let rows = match &ch.state {
            JobState::Ready { rows, .. } => rows.len(),
            _ => 0,
        };
        match action {
            Action::Back => {
                self.show = false;
                if matches!(ch.state, JobState::Running { .. }) {
                    // It goes on: the tree's letters appear when it is done.
                    return Some(vec![Effect::Message(
                        "the diff goes on in the background: d shows it again".into(),
                    )]);
                }
            }
            Action::Up => ch.sel = ch.sel.saturating_sub(1),
            Action::Down => ch.sel = ch.sel.saturating_add(1).min(rows.saturating_sub(1)),
            Action::PageUp => ch.sel = ch.sel.saturating_sub(10),
            Action::PageDown => ch.sel = ch.sel.saturating_add(10).min(rows.saturating_sub(1)),
            Action::Top => ch.sel = 0,
            Action::Bottom => ch.sel = rows.saturating_sub(1),
            Action::Enter => return Some(compare_request(ch, 0, Seek::First)),
            _ => return None,
        }
        Some(Vec::new())
    }

    /// A click on row `row` of the list (row 0 is the summary): selects
    /// that change; on the selected one, opens it side by side.
    pub fn click(&mut self, row: usize, open: bool, s: &Shared) -> Option<Effects> {
        let ch = self.changes.as_mut()?;
        let height = usize::from(crate::ui::layout::inner_rows(s, Pane::Tree)).saturating_sub(1);
        let JobState::Ready { rows, .. } = &ch.state else {
            return None;
        };
        let i = scroll_start(ch.sel, height).saturating_add(row.checked_sub(1)?);
        if i >= rows.len() {
            return None;
        }
        if open && i == ch.sel {
            return Some(compare_request(ch, 0, Seek::First));
        }
        ch.sel = i;
        Some(Vec::new())
    }

    /// Keys in the side-by-side view: both sides scroll in step by line
    /// or page, `n`/`N` jump to the next/previous difference, Esc goes
    /// back to the list.
    fn compare_key(&mut self, action: &Action, s: &Shared) -> Option<Effects> {
        let ch = self.changes.as_mut()?;
        let view = ch.compare.as_mut()?;
        let (per, rows) = compare_shape(s);
        let page = per.saturating_mul(rows);
        let last = view
            .end()
            .div_ceil(per)
            .saturating_mul(per)
            .saturating_sub(page);
        let top = view.top;
        let new_top = match action {
            Action::Back => {
                ch.compare = None;
                return Some(vec![Effect::Focus(Pane::Tree)]);
            }
            Action::Up => top.saturating_sub(per),
            Action::Down => top.saturating_add(per).min(last),
            Action::PageUp => top.saturating_sub(page),
            Action::PageDown => top.saturating_add(page).min(last),
            Action::Top => 0,
            Action::Bottom => last,
            Action::NextMatch => {
                view.pending = true;
                return Some(compare_request(ch, top.saturating_add(per), Seek::Next));
            }
            Action::PrevMatch => {
                view.pending = true;
                return Some(compare_request(ch, top, Seek::Prev));
            }
            _ => return None,
        };
        view.top = align_down(new_top, per);
        if view.holds(view.top, view.top.saturating_add(page)) {
            return Some(Vec::new());
        }
        view.pending = true;
        let at = view.top.saturating_sub(u64_of(COMPARE_BYTES) / 4) & !15;
        Some(compare_request(ch, at, Seek::At))
    }

    /// `d`: show the changes of the layer in view (computed once).
    pub fn toggle(&mut self, s: &Shared) -> Effects {
        if self.show {
            self.show = false;
            return Vec::new();
        }
        if s.layers.len() < 2 {
            let what = if s.is_nbd {
                "an NBD export is one layer here: its server's layers cannot be seen one by one"
            } else {
                "this disk has one layer: no overlay to compare with a layer below"
            };
            return vec![Effect::Message(what.into())];
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
            from: s.as_of.saturating_sub(1),
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

    /// A window of the side-by-side view.
    fn receive_compare(&mut self, c: FileCompare, s: &Shared) -> Effects {
        let Some(ch) = self.changes.as_mut() else {
            return Vec::new();
        };
        let (per, _) = compare_shape(s);
        let mut fx = Vec::new();
        let top = match (c.seek, c.found, &ch.compare) {
            (Seek::At, _, Some(v)) => v.top,
            (Seek::At, _, None) => c.offset,
            (_, Some(f), _) => align_down(f, per),
            (Seek::First, None, _) => {
                fx.push(Effect::Message(
                    "the contents are the same as of both layers".into(),
                ));
                0
            }
            (seek, None, v) => {
                let which = if seek == Seek::Next {
                    "after"
                } else {
                    "before"
                };
                fx.push(Effect::Message(format!("no difference {which} this row")));
                v.as_ref().map_or(c.offset, |v| v.top)
            }
        };
        if c.seek == Seek::First {
            fx.push(Effect::Focus(Pane::Hex));
        }
        ch.compare = Some(CompareView {
            data: c,
            top,
            pending: false,
        });
        fx
    }

    /// Takes the diff's replies; true when the result came in (the tree
    /// then marks the deleted names).
    pub fn receive(&mut self, reply: Reply, s: &Shared) -> (bool, Effects) {
        let Some(ch) = self.changes.as_mut() else {
            return (false, Vec::new());
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
                return (true, Vec::new());
            }
            Reply::Compare(c) if c.to == ch.to => return (false, self.receive_compare(*c, s)),
            _ => {}
        }
        (false, Vec::new())
    }

    /// The changes list, in the tree's place.
    pub fn draw_list(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let Some(ch) = &self.changes else { return };
        let focused = cx.focused(Pane::Tree);
        let title = format!("Changes: layer {} over {}", ch.to, ch.from);
        let block = pane_block(title, focused, r);
        let inner = block.inner(r);
        f.render_widget(block, r);
        match &ch.state {
            JobState::Running { phase, done, total } => {
                let ratio = crate::units::fraction(*done, *total);
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
                    fit(summary, width),
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

    /// A file as of both layers, side by side, from the row in view,
    /// changed bytes reversed; rows whose window is still on its way are
    /// left blank with the title saying so.
    pub fn draw_compare(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let Some(v) = self.changes.as_ref().and_then(|c| c.compare.as_ref()) else {
            return;
        };
        let (c, st) = (&v.data, cx.styles);
        let size = |s: Option<u64>| s.map_or("absent".to_owned(), |n| format!("{n} B"));
        let mut title = format!(
            "{}: layer {} ({}) | layer {} ({})",
            c.path,
            c.to.saturating_sub(1),
            size(c.old_size),
            c.to,
            size(c.new_size)
        );
        if v.pending {
            title.push_str(" · reading…");
        }
        let block = pane_block(
            fit(&title, usize::from(r.width.saturating_sub(2))),
            cx.focused(Pane::Hex),
            r,
        );
        let inner = block.inner(r);
        f.render_widget(block, r);
        let per = per_row(inner.width);
        let end = v.end();
        let mut lines = Vec::new();
        for row in 0..u64::from(inner.height) {
            let at = v.top.saturating_add(row.saturating_mul(u64_of(per)));
            if at >= end.max(1) {
                break;
            }
            let mut spans = vec![Span::styled(format!("{at:08x}"), st.fg(Color::DarkGray))];
            // Index of `at` in the window, when the window has it.
            let base = at
                .checked_sub(c.offset)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < c.old.len().max(c.new.len()) || at >= end);
            for (mine, other) in [(&c.old, &c.new), (&c.new, &c.old)] {
                spans.push(Span::raw("│"));
                let mut chars = String::new();
                for k in 0..per {
                    match base.and_then(|b| mine.get(b.checked_add(k)?)) {
                        Some(&b) => {
                            let style =
                                if base.and_then(|i| other.get(i.checked_add(k)?)) != Some(&b) {
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

/// A request for a window of the selected change.
fn compare_request(ch: &Changes, offset: u64, seek: Seek) -> Effects {
    let JobState::Ready { rows, .. } = &ch.state else {
        return Vec::new();
    };
    rows.get(ch.sel).map_or_else(Vec::new, |row| {
        vec![Effect::Request(Request::Compare {
            to: ch.to,
            change: Box::new(row.clone()),
            offset,
            seek,
        })]
    })
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
