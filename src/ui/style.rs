//! Drawing helpers every pane uses: colours that follow the terminal's
//! palette (none with NO_COLOR), pane frames, scrolling.
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};

use super::hex::Palette;
use crate::diff::Kind;

/// Styles for the terminal's palette (none with NO_COLOR).
#[derive(Clone, Copy, Debug)]
pub struct Styles {
    pub palette: Palette,
}

impl Styles {
    /// A foreground colour, or nothing without colour.
    pub fn fg(&self, c: Color) -> Style {
        if self.palette == Palette::None {
            Style::default()
        } else {
            Style::default().fg(c)
        }
    }

    /// Something that went wrong: red, and bold (which survives
    /// NO_COLOR).
    pub fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Layer `index`'s colour (None: no layer).
    pub fn layer(&self, index: Option<usize>) -> Style {
        match self.palette.layer(index) {
            Some(c) => Style::default().fg(c),
            None => Style::default(),
        }
    }
}

/// Reverse video: the selected row.
pub fn selected() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

/// A pane's frame in `area`, bold when focused; its title cut to the
/// frame's width with a mark.
pub fn pane_block<'a>(title: String, focused: bool, area: Rect) -> Block<'a> {
    let title = crate::ui::text::fit(&title, usize::from(area.width.saturating_sub(2)));
    let style = if focused {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, style))
        .border_style(style)
}

/// The first row to show so that `sel` is visible in `height` rows.
pub fn scroll_start(sel: usize, height: usize) -> usize {
    match height.checked_sub(1) {
        None => 0,
        Some(below) => sel.saturating_sub(below),
    }
}

/// The colour of a change's letter (A, M, R, D).
pub fn change_color(k: Kind) -> Color {
    match k {
        Kind::Added => Color::Green,
        Kind::Deleted => Color::Red,
        Kind::Modified => Color::Yellow,
        Kind::Moved => Color::Cyan,
    }
}

/// A change's letter as a bold span in its colour.
pub fn change_letter(k: Kind, s: &Styles) -> Span<'static> {
    Span::styled(
        k.letter().to_string(),
        s.fg(change_color(k)).add_modifier(Modifier::BOLD),
    )
}
