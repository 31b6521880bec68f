//! The Hex pane: the disk's bytes in hexyl's colours, the offset column
//! coloured by the layer serving each row, the fields of the structure in
//! view underlined and the selected one reversed.
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::DrawCx;
use crate::bytes::u64_of;
use crate::ui::action::{Action, Pane};
use crate::ui::context::{Highlight, Shared};
use crate::ui::hex::{glyph, ByteClass};
use crate::ui::layout::{inner_rows, offset_digits};
use crate::ui::msg::{HexData, Request};
use crate::ui::style::pane_block;

/// The hex pane's state.
#[derive(Clone, Debug, Default)]
pub struct HexPane {
    /// First byte shown (a multiple of 16).
    pub offset: u64,
    /// The bytes last read (shown only while they are for the offset in
    /// view: stale bytes are never shown as current).
    pub data: Option<HexData>,
    /// The offset whose read failed last, and why.
    pub failed: Option<(u64, String)>,
    /// Fields marked.
    pub highlight: Option<Highlight>,
}

impl HexPane {
    /// Rows the pane shows at the current size.
    pub fn rows(s: &Shared) -> u64 {
        u64::from(inner_rows(s, Pane::Hex)).max(1)
    }

    /// The last offset the view can start at.
    pub fn max_offset(s: &Shared) -> u64 {
        s.disk_size
            .div_ceil(16)
            .saturating_sub(Self::rows(s))
            .saturating_mul(16)
    }

    /// The read that fills the view.
    pub fn request(&self, s: &Shared) -> Request {
        Request::Hex {
            as_of: s.as_of,
            offset: self.offset,
            len: Self::rows(s)
                .saturating_mul(16)
                .min(s.disk_size.saturating_sub(self.offset)),
        }
    }

    /// Moves the view to `offset` (row-aligned, clamped); returns the read.
    pub fn go(&mut self, offset: u64, s: &Shared) -> Request {
        self.offset = (offset & !15).min(Self::max_offset(s));
        self.request(s)
    }

    /// Keeps the view inside the disk (after a resize).
    pub fn clamp(&mut self, s: &Shared) {
        self.offset = self.offset.min(Self::max_offset(s));
    }

    /// Scrolling keys; None for other keys.
    pub fn key(&mut self, action: &Action, s: &Shared) -> Option<Request> {
        let page = i64::try_from(Self::rows(s)).unwrap_or(i64::MAX);
        let rows = match action {
            Action::Up => -1,
            Action::Down => 1,
            Action::PageUp => page.saturating_neg(),
            Action::PageDown => page,
            Action::Top => i64::MIN / 32,
            Action::Bottom => i64::MAX / 32,
            _ => return None,
        };
        let delta = rows.unsigned_abs().saturating_mul(16);
        self.offset = if rows < 0 {
            self.offset.saturating_sub(delta)
        } else {
            self.offset.saturating_add(delta).min(Self::max_offset(s))
        };
        Some(self.request(s))
    }

    /// Marks `h`'s fields, scrolling to the selected (or first) field
    /// when it is off screen; returns the read when it scrolled.
    pub fn show_highlight(&mut self, h: Highlight, s: &Shared) -> Option<Request> {
        let anchor = h.anchor();
        self.highlight = Some(h);
        let (offset, _) = anchor?;
        let on_screen = Self::rows(s).saturating_mul(16);
        if offset < self.offset || offset >= self.offset.saturating_add(on_screen) {
            self.offset = (offset & !15)
                .saturating_sub((on_screen / 2) & !15)
                .min(Self::max_offset(s));
            return Some(self.request(s));
        }
        None
    }

    /// Takes the worker's bytes when they are for what is on screen.
    pub fn receive(&mut self, h: HexData, s: &Shared) {
        if h.as_of == s.as_of && h.offset == self.offset {
            self.data = Some(h);
        }
    }

    pub fn draw(&self, f: &mut Frame, r: Rect, cx: DrawCx) {
        let s = cx.shared;
        let st = cx.styles;
        let focused = cx.focused(Pane::Hex);
        let digits = usize::from(offset_digits(s.disk_size));
        let mut title = format!("Hex @ {:#x} (as of layer {})", self.offset, s.as_of);
        if let Some(h) = &self.highlight {
            title.push_str(" · ");
            title.push_str(&h.label);
        }
        // A byte's style: hexyl's class colour; in a marked field
        // underlined, the selected field reversed (both survive NO_COLOR).
        let style = |at: u64, b: u8| {
            let style = st.fg(ByteClass::of(b).color());
            match self.highlight.as_ref().and_then(|h| h.at(at)) {
                Some((_, true)) => style.add_modifier(Modifier::REVERSED),
                Some(_) => style.add_modifier(Modifier::UNDERLINED),
                None => style,
            }
        };
        let mut lines = Vec::new();
        let current = self
            .data
            .as_ref()
            .filter(|h| h.offset == self.offset && h.as_of == s.as_of);
        let failed = self.failed.as_ref().filter(|f| f.0 == self.offset);
        match (current, failed) {
            (None, Some((_, e))) => {
                lines.push(Line::styled(
                    format!("cannot read {:#x}: {e}", self.offset),
                    st.error(),
                ));
            }
            (None, None) => lines.push(Line::from(format!("reading {:#x}…", self.offset))),
            (Some(h), _) => {
                for (row, chunk) in h.bytes.chunks(16).enumerate() {
                    let at = h.offset.saturating_add(u64_of(row).saturating_mul(16));
                    let owner = h.owners.get(row).copied().flatten();
                    let mut spans = vec![
                        Span::styled(format!("{at:0digits$x}"), st.layer(owner)),
                        Span::raw(" "),
                    ];
                    for (i, b) in chunk.iter().enumerate() {
                        let here = at.saturating_add(u64_of(i));
                        spans.push(Span::styled(format!("{b:02x}"), style(here, *b)));
                        // The gap inside a field is marked too, so a field
                        // reads as one run.
                        let gap = if i == 7 { "  " } else { " " };
                        let next_same = i < 15
                            && self
                                .highlight
                                .as_ref()
                                .and_then(|h| h.at(here).zip(h.at(here.saturating_add(1))))
                                .is_some_and(|(a, b)| a.0 == b.0);
                        if next_same {
                            spans.push(Span::styled(gap, style(here, *b).fg(Color::Reset)));
                        } else {
                            spans.push(Span::raw(gap));
                        }
                    }
                    for _ in chunk.len()..16 {
                        spans.push(Span::raw("   "));
                    }
                    for (i, b) in chunk.iter().enumerate() {
                        spans.push(Span::styled(
                            glyph(*b).to_string(),
                            style(at.saturating_add(u64_of(i)), *b),
                        ));
                    }
                    lines.push(Line::from(spans));
                }
            }
        }
        f.render_widget(
            Paragraph::new(lines).block(pane_block(title, focused, r)),
            r,
        );
    }
}
