//! Byte classes and colours of the hex view, hexyl's scheme: the hexyl crate
//! keeps its categories private and reads colours from the environment, so
//! the TUI classifies bytes itself; a test checks that both agree.
use ratatui::style::Color;

/// hexyl's five byte categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteClass {
    Null,
    AsciiPrintable,
    AsciiWhitespace,
    AsciiOther,
    NonAscii,
}

impl ByteClass {
    /// The class of a byte (hexyl's `Byte::category`).
    pub fn of(b: u8) -> ByteClass {
        if b == 0 {
            ByteClass::Null
        } else if b.is_ascii_graphic() {
            ByteClass::AsciiPrintable
        } else if b.is_ascii_whitespace() {
            ByteClass::AsciiWhitespace
        } else if b.is_ascii() {
            ByteClass::AsciiOther
        } else {
            ByteClass::NonAscii
        }
    }

    /// The 16-colour palette colour hexyl uses for the class.
    pub fn color(self) -> Color {
        match self {
            ByteClass::Null => Color::DarkGray,
            ByteClass::AsciiPrintable => Color::Cyan,
            ByteClass::AsciiWhitespace | ByteClass::AsciiOther => Color::Green,
            ByteClass::NonAscii => Color::Yellow,
        }
    }

    /// The ANSI SGR foreground code of that colour (for comparing with
    /// hexyl's own output).
    pub fn ansi_fg(self) -> u8 {
        match self {
            ByteClass::Null => 90,
            ByteClass::AsciiPrintable => 36,
            ByteClass::AsciiWhitespace | ByteClass::AsciiOther => 32,
            ByteClass::NonAscii => 33,
        }
    }
}

/// hexyl's default character table: printable ASCII as is, `⋄` for NUL,
/// ` ` for space, `_` for other whitespace, `•` for other ASCII, `×` for
/// non-ASCII. Never a control character: safe for any terminal.
pub fn glyph(b: u8) -> char {
    match ByteClass::of(b) {
        ByteClass::Null => '⋄',
        ByteClass::AsciiPrintable => char::from(b),
        ByteClass::AsciiWhitespace if b == b' ' => ' ',
        ByteClass::AsciiWhitespace => '_',
        ByteClass::AsciiOther => '•',
        ByteClass::NonAscii => '×',
    }
}

/// The colour of layer `index` (0 is the base) in the chain pane, the hex
/// gutter and the hit map: 16-colour safe, cycling for deep chains.
pub fn layer_color(index: Option<usize>) -> Color {
    const PALETTE: [Color; 6] = [
        Color::Blue,
        Color::Magenta,
        Color::Green,
        Color::Yellow,
        Color::Cyan,
        Color::Red,
    ];
    match index {
        Some(i) => PALETTE[i % PALETTE.len()],
        None => Color::DarkGray,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_glyphs() {
        assert_eq!(ByteClass::of(0), ByteClass::Null);
        assert_eq!(ByteClass::of(b'a'), ByteClass::AsciiPrintable);
        assert_eq!(ByteClass::of(b'\n'), ByteClass::AsciiWhitespace);
        assert_eq!(ByteClass::of(0x1b), ByteClass::AsciiOther);
        assert_eq!(ByteClass::of(0xff), ByteClass::NonAscii);
        assert_eq!(glyph(0x1b), '•');
        assert_eq!(glyph(b'\t'), '_');
        assert!((0..=255u8).all(|b| !glyph(b).is_control()));
    }
}
