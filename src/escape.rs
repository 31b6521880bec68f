//! Making strings from disk safe for a terminal.
//!
//! File names, backing file names and labels come from untrusted images; a
//! raw escape sequence in one could rewrite the user's screen. Everything
//! printed for people goes through [`printable`]. (JSON output is already
//! safe: serde escapes control characters.)

/// `text` with control characters (C0, DEL, C1) and backslashes escaped as
/// `\n`, `\t`, `\x1b`, `\u{9b}`, `\\`. Everything else, including non-ASCII
/// letters, is kept.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Raw bytes from disk (names are not necessarily UTF-8) made safe the
/// same way; bytes that are not UTF-8 are shown as `\xNN`, so different
/// names never look alike.
pub fn printable_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&printable(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
