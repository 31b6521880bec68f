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

/// One field of an on-disk structure: an unsigned integer of 1 to 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    /// Offset from the start of the structure.
    pub offset: usize,
    /// Size in bytes (1..=8).
    pub size: usize,
    /// One line saying what the field means.
    pub doc: &'static str,
}

impl Field {
    /// A field description for a table.
    pub const fn new(name: &'static str, offset: usize, size: usize, doc: &'static str) -> Self {
        Field {
            name,
            offset,
            size,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FieldValue {
    pub name: &'static str,
    /// Absolute byte offset in the file or disk.
    pub offset: u64,
    pub size: usize,
    pub value: u64,
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
            let value = f.read(bytes, endian)?;
            let offset = base.checked_add(u64::try_from(f.offset).ok()?)?;
            Some(FieldValue {
                name: f.name,
                offset,
                size: f.size,
                value,
            })
        })
        .collect()
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
