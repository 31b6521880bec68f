//! Structure reports: one on-disk structure (a superblock, a group header,
//! an inode) as its fields, each with its offset, raw value, decoded
//! meaning and checksum state. Built once from the structure's field table
//! and rendered by every consumer: the CLI's text and `--json`, the TUI's
//! panes and the hex view's field marks. Nothing here is escaped: the
//! printers escape at the output edge.
pub use super::ext::checksum::Check;

/// A field's raw value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum RawValue {
    /// An unsigned integer field.
    Uint(u64),
    /// Bytes (labels, paths, UUIDs, arrays), as stored.
    Bytes(Vec<u8>),
}

/// One field of a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReportField {
    pub name: &'static str,
    /// Byte offset on the volume.
    pub offset: u64,
    pub size: u64,
    pub raw: RawValue,
    /// The value in words: `0xef53`, a date, feature names, `4096 bytes`;
    /// empty when the raw value says it all.
    pub shown: String,
    /// A checksum field: as stored and as computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

impl ReportField {
    /// The integer value (0 for byte fields).
    pub fn value(&self) -> u64 {
        match self.raw {
            RawValue::Uint(v) => v,
            RawValue::Bytes(_) => 0,
        }
    }
}

/// One on-disk structure, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// What it is: `superblock`, `group descriptor`, `inode`, `AGF`.
    pub structure: &'static str,
    /// A title for a pane: `group 3`, `inode 12`.
    pub title: String,
    /// Where it lies on the volume.
    pub offset: u64,
    pub len: u64,
    pub fields: Vec<ReportField>,
    /// What is wrong with it (bad checksums, impossible values).
    pub problems: Vec<String>,
}

impl Report {
    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&ReportField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// One row of a [`GroupTable`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupRow {
    pub index: u64,
    /// Where the group's header lies on the volume.
    pub offset: u64,
    /// One cell per column, unescaped.
    pub cells: Vec<String>,
    /// The header's checksums all match (None: it has none).
    pub ok: Option<bool>,
}

/// A page of the per-group headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupTable {
    /// What the groups are called (`block group`, `allocation group`).
    pub noun: &'static str,
    pub columns: Vec<&'static str>,
    /// How many groups the filesystem has.
    pub total: u64,
    pub rows: Vec<GroupRow>,
}
