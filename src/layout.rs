//! Field tables: one table per on-disk structure, naming each field with its
//! byte offset and size. A table drives decoding, the text and JSON output,
//! and (in the UI) the hex view's field highlight, so no second list of the
//! same fields exists anywhere.
use serde::Serialize;

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

/// One field of an on-disk structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    /// Offset from the start of the structure.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    pub kind: Kind,
    /// One line saying what the field means.
    pub doc: &'static str,
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
        }
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
        let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
        Some(match endian {
            Endian::Big => raw.iter().fold(0, fold),
            Endian::Little => raw.iter().rev().fold(0, fold),
        })
    }
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
            crate::escape::printable(&String::from_utf8_lossy(&raw[..end]))
        }
        Kind::Uuid if raw.len() == 16 => {
            let h: Vec<String> = raw.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                h[0..4].concat(),
                h[4..6].concat(),
                h[6..8].concat(),
                h[8..10].concat(),
                h[10..16].concat()
            )
        }
        _ => raw.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Looks a field up by name in a decoded list.
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
