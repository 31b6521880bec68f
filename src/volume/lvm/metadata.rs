//! LVM2's text metadata, parsed: sections (`name { … }`), assignments
//! (`name = value`), values that are strings, numbers or lists, and `#`
//! comments. A small hand-written parser, one pass over the bytes:
//! nesting is bounded by [`MAX_DEPTH`] and the number of entries by
//! [`MAX_NODES`], so a hostile 10 MiB text costs one linear scan and ends
//! in a clear error, never a deep recursion or a huge tree.
//!
//! Numbers are kept as their text and converted where they are used
//! ([`Section::u64`]), so an out-of-range value is reported with the name
//! of the entry that holds it.

/// Deepest nesting of sections and lists accepted (LVM writes 4).
pub const MAX_DEPTH: usize = 32;
/// Most entries (assignments, sections, list items) accepted.
pub const MAX_NODES: usize = 500_000;

/// A value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string, unescaped, raw bytes.
    Str(Vec<u8>),
    /// A number, as written.
    Num(String),
    List(Vec<Value>),
}

/// An entry of a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Value(Value),
    Section(Section),
}

/// A section: its name and entries, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub items: Vec<(String, Item)>,
}

/// A parse error, with the line it was found on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {detail}")]
pub struct ParseError {
    pub line: usize,
    pub detail: String,
}

/// A lookup or conversion error, naming the entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct FieldError {
    pub path: String,
    pub detail: String,
}

impl Section {
    /// The entry `key`.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The subsection `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Item::Section(s) => Some(s),
            Item::Value(_) => None,
        }
    }

    /// The subsections, in order.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.items.iter().filter_map(|(_, i)| match i {
            Item::Section(s) => Some(s),
            Item::Value(_) => None,
        })
    }

    /// The value `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        match self.get(key)? {
            Item::Value(v) => Some(v),
            Item::Section(_) => None,
        }
    }

    /// The string `key`.
    pub fn str(&self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    }

    /// The number `key` as a u64; `path` names the section in errors.
    ///
    /// # Errors
    /// Missing, not a number, negative or 2^64 and above.
    pub fn u64(&self, key: &str, path: &str) -> Result<u64, FieldError> {
        let err = |detail: String| FieldError {
            path: format!("{path}: {key}"),
            detail,
        };
        match self.value(key) {
            Some(Value::Num(n)) => n
                .parse::<u64>()
                .map_err(|_| err(format!("{n} is not a whole number from 0 to 2^64-1"))),
            Some(_) => Err(err("not a number".into())),
            None => Err(err("missing".into())),
        }
    }

    /// The strings of the list `key` (`status = ["READ", "WRITE"]`).
    pub fn flags(&self, key: &str) -> Vec<String> {
        match self.value(key) {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    line: usize,
    nodes: usize,
}

fn is_name(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-')
}

impl Parser<'_> {
    fn err<T>(&self, detail: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            detail: detail.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn bump(&mut self) {
        if self.peek() == Some(b'\n') {
            self.line = self.line.saturating_add(1);
        }
        self.pos = self.pos.saturating_add(1);
    }

    /// Skips blanks and comments.
    fn skip(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.bump();
                }
            } else if c.is_ascii_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn count(&mut self) -> Result<(), ParseError> {
        self.nodes = self.nodes.saturating_add(1);
        if self.nodes > MAX_NODES {
            return self.err(format!("more than {MAX_NODES} entries"));
        }
        Ok(())
    }

    fn name(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(is_name) {
            self.bump();
        }
        match self.b.get(start..self.pos) {
            Some(n) if !n.is_empty() => Ok(String::from_utf8_lossy(n).into_owned()),
            _ => match self.peek() {
                Some(c) => self.err(format!("unexpected {:?}", char::from(c))),
                None => self.err("unexpected end of text"),
            },
        }
    }

    /// Entries until `}` (or the end, at depth 0).
    fn items(&mut self, depth: usize) -> Result<Vec<(String, Item)>, ParseError> {
        if depth > MAX_DEPTH {
            return self.err(format!("sections nested deeper than {MAX_DEPTH}"));
        }
        let mut items = Vec::new();
        loop {
            self.skip();
            match self.peek() {
                None if depth == 0 => return Ok(items),
                None => return self.err("unexpected end of text: a section is not closed"),
                Some(b'}') if depth > 0 => {
                    self.bump();
                    return Ok(items);
                }
                _ => {}
            }
            self.count()?;
            let name = self.name()?;
            self.skip();
            match self.peek() {
                Some(b'{') => {
                    self.bump();
                    let inner = self.items(depth.saturating_add(1))?;
                    items.push((name.clone(), Item::Section(Section { name, items: inner })));
                }
                Some(b'=') => {
                    self.bump();
                    let v = self.value(depth)?;
                    items.push((name, Item::Value(v)));
                }
                _ => return self.err(format!("expected '=' or '{{' after {name:?}")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return self.err(format!("lists nested deeper than {MAX_DEPTH}"));
        }
        self.skip();
        match self.peek() {
            Some(b'"') => {
                self.bump();
                let mut s = Vec::new();
                loop {
                    match self.peek() {
                        None => return self.err("a string is not closed"),
                        Some(b'"') => {
                            self.bump();
                            return Ok(Value::Str(s));
                        }
                        Some(b'\\') => {
                            self.bump();
                            match self.peek() {
                                Some(c) => s.push(c),
                                None => return self.err("a string is not closed"),
                            }
                            self.bump();
                        }
                        Some(c) => {
                            s.push(c);
                            self.bump();
                        }
                    }
                }
            }
            Some(b'[') => {
                self.bump();
                let mut list = Vec::new();
                loop {
                    self.skip();
                    match self.peek() {
                        Some(b']') => {
                            self.bump();
                            return Ok(Value::List(list));
                        }
                        Some(b',') if !list.is_empty() => {
                            self.bump();
                            continue;
                        }
                        None => return self.err("a list is not closed"),
                        _ => {}
                    }
                    self.count()?;
                    list.push(self.value(depth.saturating_add(1))?);
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.'))
                {
                    self.bump();
                }
                let text = self.b.get(start..self.pos).unwrap_or(&[]);
                Ok(Value::Num(String::from_utf8_lossy(text).into_owned()))
            }
            Some(c) => self.err(format!(
                "unexpected {:?} where a value was expected",
                char::from(c)
            )),
            None => self.err("unexpected end of text where a value was expected"),
        }
    }
}

/// Parses a metadata text into its top-level section.
///
/// # Errors
/// Syntax errors and the bounds, with the line.
pub fn parse(text: &[u8]) -> Result<Section, ParseError> {
    let mut p = Parser {
        b: text,
        pos: 0,
        line: 1,
        nodes: 0,
    };
    let items = p.items(0)?;
    Ok(Section {
        name: String::new(),
        items,
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions
    )]
    use super::*;

    const SAMPLE: &str = r#"vg0 {
id = "abc"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192 # 4 MiB
physical_volumes {
pv0 {
id = "x"
device = "/dev/loop0\"q"
pe_start = 2048
pe_count = 15
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
version = 1
"#;

    #[test]
    fn parses_lvm_metadata() {
        let top = parse(SAMPLE.as_bytes()).unwrap();
        let vg = top.section("vg0").unwrap();
        assert_eq!(vg.u64("seqno", "vg0").unwrap(), 3);
        assert_eq!(vg.flags("status"), vec!["RESIZEABLE", "READ", "WRITE"]);
        assert_eq!(vg.flags("flags"), Vec::<String>::new());
        let pv = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv.str("device").unwrap(), "/dev/loop0\"q");
        assert_eq!(top.u64("version", "top").unwrap(), 1);
        assert_eq!(vg.sections().count(), 1);
    }

    #[test]
    fn hostile_texts_are_clear_errors() {
        let deep = "a {".repeat(10_000);
        let e = parse(deep.as_bytes()).unwrap_err();
        assert!(e.detail.contains("deeper than"), "{e}");
        let deep_list = format!("a = {}", "[".repeat(10 << 20));
        let e = parse(deep_list.as_bytes()).unwrap_err();
        assert!(e.detail.contains("deeper than"), "{e}");
        let many = "a = 1\n".repeat(2 << 20);
        let e = parse(many.as_bytes()).unwrap_err();
        assert!(e.detail.contains("more than"), "{e}");
        assert_eq!(e.line, MAX_NODES + 1);
        let e = parse(b"a { b = \"open").unwrap_err();
        assert!(e.detail.contains("not closed"), "{e}");
        let e = parse(b"a { b = 1").unwrap_err();
        assert!(e.detail.contains("not closed"), "{e}");
        let e = parse(b"a = ;").unwrap_err();
        assert!(e.detail.contains("value was expected"), "{e}");
        let big = parse(b"lv { extent_count = 18446744073709551616 }").unwrap();
        let e = big
            .section("lv")
            .unwrap()
            .u64("extent_count", "vg0/lv")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "vg0/lv: extent_count: 18446744073709551616 is not a whole number from 0 to 2^64-1"
        );
    }
}
