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

/// What the terminal can show: no colour (NO_COLOR), the 16 ANSI colours
/// (any terminal, SSH, the Linux console), 256 colours, or 24-bit colour.
/// Byte classes always use the 16 (hexyl's scheme); layers get more
/// distinct colours where the terminal has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Palette {
    None,
    Ansi16,
    Ansi256,
    TrueColor,
}

impl Palette {
    /// Decides from NO_COLOR, LAYERSCOPE_COLORS (`none`, `16`, `256`,
    /// `truecolor`: a forced choice), COLORTERM and TERM, in that order.
    /// Anything unknown gets the 16 colours every terminal has.
    pub fn detect(
        no_color: Option<&str>,
        forced: Option<&str>,
        colorterm: Option<&str>,
        term: Option<&str>,
    ) -> Palette {
        if no_color.is_some_and(|v| !v.is_empty()) {
            return Palette::None;
        }
        match forced.map(str::trim) {
            Some("none" | "0") => return Palette::None,
            Some("16") => return Palette::Ansi16,
            Some("256") => return Palette::Ansi256,
            Some("truecolor" | "24bit") => return Palette::TrueColor,
            _ => {}
        }
        if matches!(colorterm, Some("truecolor" | "24bit")) {
            return Palette::TrueColor;
        }
        match term {
            Some(t) if t.contains("256color") => Palette::Ansi256,
            Some("dumb") => Palette::None,
            _ => Palette::Ansi16,
        }
    }

    /// [`Palette::detect`] on this process's environment.
    pub fn from_env() -> Palette {
        let var = |n: &str| std::env::var(n).ok();
        Palette::detect(
            var("NO_COLOR").as_deref(),
            var("LAYERSCOPE_COLORS").as_deref(),
            var("COLORTERM").as_deref(),
            var("TERM").as_deref(),
        )
    }

    /// The colour of layer `index` (0 is the base; None: no layer) in the
    /// chain pane, the hex gutter, the tree marks and the hit map; cycling
    /// for deep chains. None without colour.
    pub fn layer(self, index: Option<usize>) -> Option<Color> {
        // Tableau 10 (made to tell categories apart), and the nearest
        // xterm-256 entries.
        const RGB: [(u8, u8, u8); 10] = [
            (0x4e, 0x79, 0xa7),
            (0xf2, 0x8e, 0x2b),
            (0x59, 0xa1, 0x4f),
            (0xe1, 0x57, 0x59),
            (0xb0, 0x7a, 0xa1),
            (0x76, 0xb7, 0xb2),
            (0xed, 0xc9, 0x48),
            (0xff, 0x9d, 0xa7),
            (0x9c, 0x75, 0x5f),
            (0xba, 0xb0, 0xac),
        ];
        const XTERM: [u8; 10] = [67, 208, 71, 167, 139, 109, 221, 217, 137, 145];
        match (self, index) {
            (Palette::None, _) => None,
            (Palette::Ansi16, i) => Some(layer_color(i)),
            (_, None) => Some(Color::DarkGray),
            (Palette::Ansi256, Some(i)) => cycle(&XTERM, i).map(Color::Indexed),
            (Palette::TrueColor, Some(i)) => cycle(&RGB, i).map(|(r, g, b)| Color::Rgb(r, g, b)),
        }
    }
}

/// The colour of layer `index` (0 is the base) in the 16-colour palette,
/// cycling for deep chains.
pub fn layer_color(index: Option<usize>) -> Color {
    const PALETTE: [Color; 6] = [
        Color::Blue,
        Color::Magenta,
        Color::Green,
        Color::Yellow,
        Color::Cyan,
        Color::Red,
    ];
    index
        .and_then(|i| cycle(&PALETTE, i))
        .unwrap_or(Color::DarkGray)
}

/// Item `i` of `items`, counted round and round (None when empty).
fn cycle<T: Copy>(items: &[T], i: usize) -> Option<T> {
    items.get(i.checked_rem(items.len())?).copied()
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

    #[test]
    fn palettes_are_detected_and_layer_colours_differ() {
        let d = Palette::detect;
        assert_eq!(d(Some("1"), None, Some("truecolor"), None), Palette::None);
        assert_eq!(d(Some(""), None, None, Some("xterm")), Palette::Ansi16);
        assert_eq!(d(None, None, None, Some("linux")), Palette::Ansi16);
        assert_eq!(d(None, None, None, None), Palette::Ansi16);
        assert_eq!(
            d(None, None, None, Some("xterm-256color")),
            Palette::Ansi256
        );
        assert_eq!(
            d(None, None, Some("truecolor"), Some("xterm")),
            Palette::TrueColor
        );
        assert_eq!(
            d(None, Some("16"), Some("truecolor"), None),
            Palette::Ansi16
        );
        assert_eq!(d(None, None, None, Some("dumb")), Palette::None);
        for (p, distinct) in [
            (Palette::Ansi16, 6),
            (Palette::Ansi256, 10),
            (Palette::TrueColor, 10),
        ] {
            let colours: Vec<Color> = (0..distinct).map(|i| p.layer(Some(i)).unwrap()).collect();
            for (i, a) in colours.iter().enumerate() {
                assert_ne!(
                    Some(*a),
                    p.layer(None),
                    "{p:?} layer {i} looks like no layer"
                );
                for b in &colours[i + 1..] {
                    assert_ne!(a, b, "{p:?}: two layers share a colour");
                }
            }
            // The hex gutter's layer colours are not the NUL byte's grey.
            assert!(colours.iter().all(|c| *c != ByteClass::Null.color()));
        }
        // The 16-colour palette uses only the named ANSI colours.
        assert!((0..12).all(|i| !matches!(
            Palette::Ansi16.layer(Some(i)),
            Some(Color::Rgb(..) | Color::Indexed(_))
        )));
        assert_eq!(Palette::None.layer(Some(0)), None);
    }
}
