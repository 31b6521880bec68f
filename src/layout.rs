//! Field tables: one table per on-disk structure, naming each field with its
//! byte offset and size. A table drives decoding, the text and JSON output,
//! and (in the UI) the hex view's field highlight, so no second list of the
//! same fields exists anywhere.
//!
//! Decoders name a field through its table at compile time ([`field!`]):
//! a misspelt name does not build, and reading it costs a fixed offset.
//! Each field also says how its value reads to a person ([`Show`]), so a
//! structure's [`report`] carries `0xef53`, dates and feature names beside
//! the raw values, for every printer alike.
// Every field of a disk structure is read here (issue 11): no panic, no
// wrap.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use serde::Serialize;

use crate::fs::report::{RawValue, Report, ReportField};

/// Byte order of an on-disk structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    Big,
    Little,
}

/// How a field's bytes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An unsigned integer of 1 to 8 bytes.
    Uint,
    /// A NUL-padded string (labels, paths).
    Text,
    /// A 16-byte UUID.
    Uuid,
    /// Bytes shown in hex.
    Bytes,
}

/// How a field's value reads to a person, beside the raw value.
#[derive(Clone, Copy, Debug)]
pub enum Show {
    /// The number says it all.
    Plain,
    /// In hex: magic numbers, checksums, masks.
    Hex,
    /// Seconds since 1970 as a UTC date (`n/a` for 0).
    Date,
    /// A size of `1024 << value` bytes.
    Log1024,
    /// One of a list of values, by name.
    Enum(&'static [(u64, &'static str)]),
    /// Set bits, by name (unknown bits as `0x…`).
    Bits(&'static [(u64, &'static str)]),
    /// Computed by the structure's own function (feature sets, modes).
    With(fn(u64) -> String),
}

/// One field of an on-disk structure.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    /// Offset from the start of the structure.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    pub kind: Kind,
    /// One line saying what the field means.
    pub doc: &'static str,
    /// How the value reads to a person.
    pub show: Show,
}

impl Field {
    /// An unsigned integer field (1 to 8 bytes).
    pub const fn new(name: &'static str, offset: usize, size: usize, doc: &'static str) -> Self {
        Field {
            name,
            offset,
            size,
            kind: Kind::Uint,
            doc,
            show: Show::Plain,
        }
    }

    /// The same field, shown as `show` says.
    pub const fn show(self, show: Show) -> Self {
        Field { show, ..self }
    }

    /// A field of another kind.
    pub const fn of(
        kind: Kind,
        name: &'static str,
        offset: usize,
        size: usize,
        doc: &'static str,
    ) -> Self {
        Field {
            name,
            offset,
            size,
            kind,
            doc,
            show: Show::Plain,
        }
    }

    /// Reads the field from `bytes` (the structure's bytes), or `None` when
    /// they are too short to hold it.
    pub fn read(&self, bytes: &[u8], endian: Endian) -> Option<u64> {
        let end = self.offset.checked_add(self.size)?;
        let raw = bytes.get(self.offset..end)?;
        if raw.len() > 8 {
            return None;
        }
        // At most 8 bytes: no bit is shifted out.
        let fold = |acc: u64, b: &u8| acc.wrapping_shl(8) | u64::from(*b);
        Some(match endian {
            Endian::Big => raw.iter().fold(0, fold),
            Endian::Little => raw.iter().rev().fold(0, fold),
        })
    }

    /// Reads a little-endian integer field of 1, 2, 4 or 8 bytes
    /// (decoders' fast path: with a `const` field the offset and size
    /// are known when compiling); `None` when `bytes` is too short.
    #[inline]
    pub fn le(&self, bytes: &[u8]) -> Option<u64> {
        let end = self.offset.checked_add(self.size)?;
        let b = bytes.get(self.offset..end)?;
        Some(match *b {
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            _ => return self.read(bytes, Endian::Little),
        })
    }

    /// The field's raw bytes in `bytes` (empty when too short).
    pub fn bytes<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        self.offset
            .checked_add(self.size)
            .and_then(|end| bytes.get(self.offset..end))
            .unwrap_or(&[])
    }

    /// The value in words, as [`Field::show`] says (empty for plain
    /// numbers).
    pub fn shown(&self, value: u64) -> String {
        match self.show {
            Show::Plain => String::new(),
            Show::Hex => format!("{value:#x}"),
            Show::Date => crate::fs::time::ctime(value),
            Show::Log1024 => match u32::try_from(value)
                .ok()
                .and_then(|v| 1024u64.checked_shl(v))
            {
                Some(b) if value < 54 => format!("{b} bytes"),
                _ => "invalid".into(),
            },
            Show::Enum(names) => names
                .iter()
                .find(|(v, _)| *v == value)
                .map_or_else(|| format!("unknown ({value})"), |(_, n)| (*n).to_owned()),
            Show::Bits(names) => bit_names(value, names),
            Show::With(f) => f(value),
        }
    }
}

/// The names of the bits set in `value` (unknown ones together in hex).
pub fn bit_names(value: u64, names: &[(u64, &str)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut rest = value;
    for (bit, name) in names {
        if value & bit == *bit && *bit != 0 {
            out.push((*name).to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out.join(" ")
}

/// The field of `table` named `name`. Meant for `const` contexts (see
/// [`field!`]), where a missing name stops the build.
///
/// # Panics
/// For a name the table lacks (at compile time, through [`field!`]).
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn (slice::get is not const): i < table.len() and j < a.len() == b.len() \
              bound every index and count; it runs when compiling, through field!"
)]
pub const fn find(table: &'static [Field], name: &str) -> &'static Field {
    let mut i = 0;
    while i < table.len() {
        let (a, b) = (table[i].name.as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return &table[i];
            }
        }
        i += 1;
    }
    // Only reached while compiling (`field!` is evaluated in a const), so
    // a wrong name is a build error, never a panic at run time.
    #[allow(clippy::panic, reason = "const evaluation: a build error")]
    {
        panic!("no such field in the table")
    }
}

/// The field of a table, found when compiling: `field!(SUPERBLOCK,
/// "s_magic")` does not build if the table has no `s_magic`.
macro_rules! field {
    ($table:expr, $name:literal) => {
        const { $crate::layout::find($table, $name) }
    };
}
pub(crate) use field;

/// Builds the report of one structure: every field of `table` present in
/// `bytes` (at volume offset `base`), raw and shown. Text fields are
/// shown as their text (up to the first NUL), unescaped: printers escape.
pub fn report(
    structure: &'static str,
    title: String,
    table: &'static [Field],
    bytes: &[u8],
    endian: Endian,
    base: u64,
) -> Report {
    let fields = table
        .iter()
        .filter_map(|f| {
            let offset = base.checked_add(u64::try_from(f.offset).ok()?)?;
            let (raw, shown) = match f.kind {
                Kind::Uint => {
                    let v = f.read(bytes, endian)?;
                    (RawValue::Uint(v), f.shown(v))
                }
                kind => {
                    let raw = bytes.get(f.offset..f.offset.checked_add(f.size)?)?;
                    (RawValue::Bytes(raw.to_vec()), show_bytes(kind, raw))
                }
            };
            Some(ReportField {
                name: f.name,
                offset,
                size: u64::try_from(f.size).ok()?,
                raw,
                shown,
                check: None,
            })
        })
        .collect();
    Report {
        structure,
        title,
        offset: base,
        len: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        fields,
        problems: Vec::new(),
    }
}

/// A text, UUID or byte field in words (unescaped).
fn show_bytes(kind: Kind, raw: &[u8]) -> String {
    match kind {
        Kind::Text => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)).into_owned()
        }
        Kind::Uuid => uuid_text(raw),
        _ => raw.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// 16 bytes as a UUID (`8-4-4-4-12` hex digits); other lengths in hex.
pub fn uuid_text(raw: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in raw.iter().enumerate() {
        if raw.len() == 16 && matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A decoded field: where it is, and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldValue {
    pub name: &'static str,
    /// Absolute byte offset in the file or disk.
    pub offset: u64,
    pub size: usize,
    /// The value of an integer field (0 for other kinds).
    pub value: u64,
    /// The value of a text, UUID or byte field, as shown (escaped for a
    /// terminal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Decodes every field of `table` present in `bytes`; `base` is the
/// absolute offset of `bytes[0]`, so the values can point into a hex view.
/// Fields beyond the end of `bytes` (a shorter, older version of the
/// structure) are left out.
pub fn decode_table(
    table: &'static [Field],
    bytes: &[u8],
    endian: Endian,
    base: u64,
) -> Vec<FieldValue> {
    table
        .iter()
        .filter_map(|f| {
            let offset = base.checked_add(u64::try_from(f.offset).ok()?)?;
            let (value, text) = match f.kind {
                Kind::Uint => (f.read(bytes, endian)?, None),
                kind => {
                    let raw = bytes.get(f.offset..f.offset.checked_add(f.size)?)?;
                    (0, Some(render(kind, raw)))
                }
            };
            Some(FieldValue {
                name: f.name,
                offset,
                size: f.size,
                value,
                text,
            })
        })
        .collect()
}

/// Shows raw bytes of a non-integer field.
fn render(kind: Kind, raw: &[u8]) -> String {
    match kind {
        Kind::Text => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            crate::escape::printable(&String::from_utf8_lossy(raw.get(..end).unwrap_or(raw)))
        }
        Kind::Uuid if raw.len() == 16 => uuid_text(raw),
        _ => raw.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Looks a field up by name in a decoded list (for tables whose decoders
/// do not name fields through [`field!`] yet).
pub fn value_of(values: &[FieldValue], name: &str) -> Option<u64> {
    values.iter().find(|v| v.name == name).map(|v| v.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[Field] = &[
        Field::new("a", 0, 2, ""),
        Field::new("b", 2, 4, ""),
        Field::new("c", 6, 8, ""),
    ];

    #[test]
    fn fields_found_at_compile_time_and_shown() {
        const B: &Field = field!(T, "b");
        assert_eq!(B.offset, 2);
        assert_eq!(B.le(&[0, 0, 1, 2, 3, 4]), Some(0x0403_0201));
        assert_eq!(B.le(&[0, 0, 1]), None);
        let hex = Field::new("m", 0, 2, "").show(Show::Hex);
        assert_eq!(hex.shown(0xef53), "0xef53");
        let bits = Field::new("f", 0, 4, "").show(Show::Bits(&[(1, "a"), (4, "c")]));
        assert_eq!(bits.shown(0x15), "a c 0x10");
        assert_eq!(Field::new("d", 0, 4, "").show(Show::Date).shown(0), "n/a");
        assert_eq!(
            uuid_text(&[0xab; 16]),
            "abababab-abab-abab-abab-abababababab"
        );
        let r = report("t", "t".into(), T, &[1, 0, 2, 0, 0, 0], Endian::Little, 10);
        assert_eq!(r.fields.len(), 2);
        assert_eq!((r.fields[1].offset, r.fields[1].value()), (12, 2));
    }

    #[test]
    fn decodes_both_byte_orders_and_skips_missing_fields() {
        let bytes = [0x12, 0x34, 0, 0, 0, 1];
        let be = decode_table(T, &bytes, Endian::Big, 100);
        assert_eq!(be.len(), 2);
        assert_eq!((be[0].value, be[0].offset), (0x1234, 100));
        assert_eq!((be[1].value, be[1].offset), (1, 102));
        let le = decode_table(T, &bytes, Endian::Little, 0);
        assert_eq!(le[0].value, 0x3412);
        assert_eq!(le[1].value, 0x0100_0000);
    }
}
