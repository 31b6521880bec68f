//! One escaping policy for every string that comes from a disk or a server,
//! applied at the output edge: the CLI's text, the TUI's cells and JSON.
//!
//! File names, labels, backing file names, partition names, NBD export
//! descriptions and server error messages are untrusted. A raw escape
//! sequence in one could rewrite the user's screen; a bidi override or a
//! zero-width character makes two different names look alike (or a name
//! look like another). Models keep the raw bytes; [`printable`] and
//! [`printable_bytes`] make them safe for a terminal, and [`json`] writes
//! JSON whose strings carry the same characters as `\u` escapes.
//!
//! What is escaped ([`is_unsafe`]): C0 controls and DEL, C1 controls
//! (U+0080–U+009F, which terminals read as CSI, OSC, …), the line and
//! paragraph separators U+2028/U+2029, and every Unicode default-ignorable
//! code point: the bidi controls (U+061C, U+200E/U+200F, U+202A–U+202E,
//! U+2066–U+2069), the zero-width characters (U+200B–U+200D, U+2060,
//! U+FEFF), the invisible operators, fillers, soft hyphen, variation
//! selectors and tags. Everything else, including letters of any script,
//! is kept.

// Strings from disk and servers pass here (issue 11): no panic, no wrap.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

/// Whether `c` must not reach a terminal (or a JSON string) raw.
pub fn is_unsafe(c: char) -> bool {
    matches!(
        u32::from(c),
        // C0, DEL, C1.
        0x00..=0x1f | 0x7f..=0x9f
        // Soft hyphen, combining grapheme joiner, Arabic letter mark.
        | 0xad | 0x34f | 0x61c
        // Hangul and Khmer fillers and vowels that render as nothing.
        | 0x115f..=0x1160 | 0x17b4..=0x17b5 | 0x3164 | 0xffa0
        // Mongolian free variation selectors and vowel separator.
        | 0x180b..=0x180f
        // Zero-width space, non-joiner, joiner; LRM, RLM.
        | 0x200b..=0x200f
        // Line and paragraph separators.
        | 0x2028..=0x2029
        // Bidi embeddings and overrides (LRE, RLE, PDF, LRO, RLO).
        | 0x202a..=0x202e
        // Word joiner, invisible operators, bidi isolates, deprecated
        // format characters.
        | 0x2060..=0x206f
        // Variation selectors, zero-width no-break space (BOM).
        | 0xfe00..=0xfe0f | 0xfeff
        // Interlinear annotation and reserved format characters.
        | 0xfff0..=0xfffb
        // Shorthand format controls, musical symbol formatting.
        | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        // Tags and variation selectors supplement.
        | 0xe0000..=0xe0fff
    )
}

/// `text` with unsafe characters ([`is_unsafe`]) and backslashes escaped:
/// `\n`, `\r`, `\t`, `\x1b` for other C0 controls and DEL, `\u{202e}` for
/// the rest, `\\` for a backslash (so an escape in the output always
/// means an escaped character). Everything else is kept.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_printable(&mut out, text);
    out
}

fn push_printable(out: &mut String, text: &str) {
    use std::fmt::Write;
    if needs_no_escape(text.as_bytes()) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Printable ASCII but the backslash (most names): kept as it is.
fn needs_no_escape(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\')
}

/// Raw bytes from disk (names are not necessarily UTF-8) made safe the
/// same way; bytes that are not UTF-8 are shown as `\xNN`, so different
/// names never look alike.
pub fn printable_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        push_printable(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// [`printable_bytes`] written to `out`: a name that needs no escape
/// (printable ASCII without a backslash, nearly every name) goes out as
/// it is, without a string made for it (`ls -R` writes tens of
/// thousands).
///
/// # Errors
/// Write errors.
pub fn write_printable_bytes(out: &mut dyn std::io::Write, bytes: &[u8]) -> std::io::Result<()> {
    if needs_no_escape(bytes) {
        out.write_all(bytes)
    } else {
        out.write_all(printable_bytes(bytes).as_bytes())
    }
}

/// The inverse of [`printable_bytes`]: the raw bytes of a name as
/// layerscope prints it (`\xNN`, `\n`, `\r`, `\t`, `\\`, `\u{…}`), so
/// the escaped form `ls` shows can be given back as a path. `None` when
/// `text` holds no backslash or an escape that [`printable_bytes`] never
/// writes (the text is then meant as it is).
pub fn unescape(text: &[u8]) -> Option<Vec<u8>> {
    if !text.contains(&b'\\') {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let (&kind, tail) = rest.split_first()?;
        rest = tail;
        match kind {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'x' => {
                let hex = rest.get(..2)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                rest = rest.get(2..)?;
            }
            b'u' => {
                let body = rest.strip_prefix(b"{")?;
                let end = body.iter().position(|&c| c == b'}')?;
                let hex = std::str::from_utf8(body.get(..end)?).ok()?;
                let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                rest = body.get(end.checked_add(1)?..)?;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// JSON output under the same policy: every string is written with the
/// unsafe characters as `\u` escapes (serde_json escapes only C0 controls,
/// quotes and backslashes), so a JSON document from layerscope is as safe
/// to print as its text output, and parses to the same strings.
pub mod json {
    use std::io::{self, Write};

    use serde::Serialize;
    use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter, Serializer};

    use super::is_unsafe;

    /// A formatter that escapes [`is_unsafe`] characters inside strings and
    /// otherwise lays out like `F`.
    #[derive(Clone, Debug, Default)]
    pub struct Escaping<F>(pub F);

    impl<F: Formatter> Formatter for Escaping<F> {
        fn write_string_fragment<W: ?Sized + Write>(
            &mut self,
            writer: &mut W,
            fragment: &str,
        ) -> io::Result<()> {
            // Printable ASCII (most names) is never unsafe: one write.
            if fragment.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return writer.write_all(fragment.as_bytes());
            }
            let mut start = 0;
            for (i, c) in fragment.char_indices() {
                if !is_unsafe(c) {
                    continue;
                }
                if let Some(safe) = fragment.get(start..i) {
                    writer.write_all(safe.as_bytes())?;
                }
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = i.saturating_add(c.len_utf8());
            }
            if let Some(safe) = fragment.get(start..) {
                writer.write_all(safe.as_bytes())?;
            }
            Ok(())
        }

        fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.begin_array(w)
        }
        fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_array(w)
        }
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            self.0.begin_array_value(w, first)
        }
        fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_array_value(w)
        }
        fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.begin_object(w)
        }
        fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_object(w)
        }
        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            self.0.begin_object_key(w, first)
        }
        fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_object_key(w)
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.begin_object_value(w)
        }
        fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            self.0.end_object_value(w)
        }
    }

    /// `serde_json::to_writer_pretty` under the policy.
    ///
    /// # Errors
    /// Write and serialization errors.
    pub fn to_writer_pretty<W: Write, T: ?Sized + Serialize>(
        writer: W,
        value: &T,
    ) -> serde_json::Result<()> {
        let mut ser = Serializer::with_formatter(writer, Escaping(PrettyFormatter::new()));
        value.serialize(&mut ser)
    }

    /// `serde_json::to_writer` (one line) under the policy.
    ///
    /// # Errors
    /// Write and serialization errors.
    pub fn to_writer<W: Write, T: ?Sized + Serialize>(
        writer: W,
        value: &T,
    ) -> serde_json::Result<()> {
        let mut ser = Serializer::with_formatter(writer, Escaping(CompactFormatter));
        value.serialize(&mut ser)
    }

    /// `serde_json::to_string` under the policy.
    ///
    /// # Errors
    /// Serialization errors.
    pub fn to_string<T: ?Sized + Serialize>(value: &T) -> serde_json::Result<String> {
        let mut out = Vec::new();
        to_writer(&mut out, value)?;
        // The formatter writes only UTF-8 (and ASCII escapes).
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// A pretty JSON array of `items`, written as they come: a long list
    /// (2^20 block runs) never sits in memory as a JSON tree.
    ///
    /// # Errors
    /// Write and serialization errors.
    pub fn write_seq_pretty<W: Write, T: Serialize>(
        writer: W,
        items: impl IntoIterator<Item = T>,
    ) -> serde_json::Result<()> {
        use serde::Serializer as _;
        let mut ser = Serializer::with_formatter(writer, Escaping(PrettyFormatter::new()));
        (&mut ser).collect_seq(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_written_match_the_printable_form() {
        for name in [
            &b"plain-name.txt"[..],
            b"back\\slash",
            b"tab\there",
            b"\xff\xfe bytes",
            "bidi \u{202e}txt".as_bytes(),
            b"",
        ] {
            let mut out = Vec::new();
            write_printable_bytes(&mut out, name).unwrap();
            assert_eq!(out, printable_bytes(name).into_bytes(), "{name:?}");
        }
    }

    #[test]
    fn unescape_inverts_printable_bytes() {
        for raw in [
            &b"bad\xffname"[..],
            b"tab\there\\back\nnl",
            "rl\u{202e}o".as_bytes(),
            b"\x1b[2J",
        ] {
            let shown = printable_bytes(raw);
            assert_eq!(unescape(shown.as_bytes()).as_deref(), Some(raw), "{shown}");
        }
        assert_eq!(unescape(b"plain"), None);
        assert_eq!(unescape(b"C:\\dos\\q"), None);
        assert_eq!(unescape(b"\\x4"), None);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_not_replaced() {
        assert_eq!(printable_bytes(b"a\xff\xfeb\x1b"), "a\\xff\\xfeb\\x1b");
        assert_eq!(printable_bytes("ünï".as_bytes()), "ünï");
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("new\nline\ttab"), "new\\nline\\ttab");
        assert_eq!(printable("c1\u{9b}x"), "c1\\u{9b}x");
        assert_eq!(printable("päth/ünïcode ok"), "päth/ünïcode ok");
        assert_eq!(printable("back\\slash"), "back\\\\slash");
        assert_eq!(printable("del\x7f"), "del\\x7f");
    }

    #[test]
    fn escapes_bidi_and_invisible_characters() {
        assert_eq!(printable("txt.\u{202e}exe"), "txt.\\u{202e}exe");
        assert_eq!(
            printable("a\u{2066}b\u{2069}c\u{200e}\u{061c}"),
            "a\\u{2066}b\\u{2069}c\\u{200e}\\u{61c}"
        );
        assert_eq!(
            printable("zero\u{200b}\u{200d}\u{2060}\u{feff}width"),
            "zero\\u{200b}\\u{200d}\\u{2060}\\u{feff}width"
        );
        assert_eq!(printable("tag\u{e0041}"), "tag\\u{e0041}");
        // Letters of every script stay.
        assert_eq!(printable("日本語 עברית ελληνικά"), "日本語 עברית ελληνικά");
    }

    #[test]
    fn json_strings_carry_unsafe_characters_as_escapes() {
        let s = "n\u{9b}a\u{202e}m\u{200b}e\x1b\x7f\u{e0041}\"\\ü";
        let text = json::to_string(&s).unwrap();
        assert_eq!(
            text,
            "\"n\\u009ba\\u202em\\u200be\\u001b\\u007f\\udb40\\udc41\\\"\\\\ü\""
        );
        assert!(!text.chars().any(is_unsafe), "{text:?}");
        // The same string comes back.
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let mut pretty = Vec::new();
        json::to_writer_pretty(&mut pretty, &serde_json::json!({"k\u{202e}": [s]})).unwrap();
        let pretty = String::from_utf8(pretty).unwrap();
        assert!(
            !pretty.chars().any(|c| is_unsafe(c) && c != '\n'),
            "{pretty:?}"
        );
        assert!(pretty.contains("\"k\\u202e\": [\n"), "{pretty}");
    }
}
