//! Structure reports: one on-disk structure (a superblock, a group header,
//! an inode) as its fields, each with its offset, raw value, decoded
//! meaning and checksum state. Built once from the structure's field table
//! and rendered by every consumer: the CLI's text and `--json`, the TUI's
//! panes and the hex view's field marks. Nothing here is escaped: the
//! printers escape at the output edge.
use serde::ser::{SerializeMap, Serializer};

/// A checksum as stored and as computed: never a bare "ok" flag, so a
/// reader can always say what was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub stored: u32,
    pub computed: u32,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.stored == self.computed
    }

    /// `0x1234 ok` or `0x1234 BAD (computed 0x5678)`, with `bits` of
    /// hex digits' worth of width (16 or 32).
    pub fn text(&self, bits: u8) -> String {
        let w = usize::from(bits / 4) + 2;
        if self.ok() {
            format!("{:#0w$x} ok", self.stored)
        } else {
            format!(
                "{:#0w$x} BAD (computed {:#0w$x})",
                self.stored, self.computed
            )
        }
    }
}

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

    /// The value as a person reads it: `shown` when the decoder gave
    /// one, else the number or the bytes in hex (unescaped: text fields
    /// are escaped by the printer).
    pub fn text(&self) -> String {
        if !self.shown.is_empty() {
            return self.shown.clone();
        }
        match &self.raw {
            RawValue::Uint(v) => v.to_string(),
            RawValue::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
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
    /// A field by its table name (for callers outside the filesystem's
    /// module, which cannot name its table's entries; inside it, fields
    /// are found through the table at compile time).
    pub fn field(&self, name: &str) -> Option<&ReportField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A raw value in a [`GroupRow`] (what `--json` carries).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    Uint(u64),
    /// An inclusive range of blocks, `[first, last]`.
    Range([u64; 2]),
    Names(Vec<&'static str>),
    Bool(bool),
    Text(String),
    /// Free-form lines (an allocation group's problems).
    Texts(Vec<String>),
}

/// A column of a [`GroupTable`]'s text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub title: &'static str,
    /// Right-aligned to this width; 0: left-aligned (a last, free-form
    /// column such as flags).
    pub width: usize,
}

/// A checksum of a group's structures (its header, its bitmaps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NamedCheck {
    /// `descriptor`, `block bitmap`, `AGF`, …
    pub what: &'static str,
    /// Width of the stored value in bits (16 or 32), for display.
    pub bits: u8,
    pub check: Check,
}

impl NamedCheck {
    /// `block bitmap csum 0x… ok` (or `BAD (computed 0x…)`).
    pub fn text(&self) -> String {
        format!("{} csum {}", self.what, self.check.text(self.bits))
    }
}

/// One row of a [`GroupTable`]: one group's header, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRow {
    pub index: u64,
    /// Where the group's header lies on the volume (None when it could
    /// not be found).
    pub offset: Option<u64>,
    /// One cell per column of the table, as shown (unescaped).
    pub cells: Vec<String>,
    /// Every value of the row, raw, by name: what `--json` carries (and
    /// a detail pane can list), `None` where the row has no such value.
    pub values: Vec<(&'static str, Option<Value>)>,
    /// The checksums of the group's structures, as stored and computed.
    pub checks: Vec<NamedCheck>,
    /// Whether the group's structures are sound: every checksum matches,
    /// copies agree (None: there is nothing to check).
    pub ok: Option<bool>,
    /// Facts the columns leave out (where backup copies are, flags the
    /// filesystem ignores).
    pub notes: Vec<String>,
    /// Why the group's header could not be read (the row has nothing
    /// else then).
    pub error: Option<String>,
    /// The header's fields with their offsets (for the hex view).
    pub fields: Vec<ReportField>,
}

impl GroupRow {
    /// A row that could not be read.
    pub fn failed(index: u64, error: String) -> GroupRow {
        GroupRow {
            index,
            error: Some(error),
            ..GroupRow::default()
        }
    }

    /// A value by name.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_ref())
    }
}

/// As `--json` shows a row: one flat object, `group` first, then the
/// values by name, the error if any, then the header's fields.
impl serde::Serialize for GroupRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("group", &self.index)?;
        for (k, v) in &self.values {
            m.serialize_entry(k, v)?;
        }
        if let Some(e) = &self.error {
            m.serialize_entry("error", e)?;
        }
        if !self.fields.is_empty() {
            m.serialize_entry("fields", &self.fields)?;
        }
        m.end()
    }
}

/// A page of the per-group headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupTable {
    /// What the groups are called (`block group`, `allocation group`).
    pub noun: &'static str,
    pub columns: Vec<Column>,
    /// How many groups the filesystem has.
    pub total: u64,
    pub rows: Vec<GroupRow>,
}

impl GroupTable {
    /// The header line of the text form.
    pub fn header(&self) -> String {
        let mut line = format!("{:>6}", "group");
        for c in &self.columns {
            push_cell(&mut line, c, c.title);
        }
        line
    }

    /// One row in the text form (unescaped: the printer escapes).
    pub fn line(&self, row: &GroupRow) -> String {
        let mut line = format!("{:>6}", row.index);
        if let Some(e) = &row.error {
            line.push_str(" error: ");
            line.push_str(e);
            return line;
        }
        for (c, cell) in self.columns.iter().zip(&row.cells) {
            push_cell(&mut line, c, cell);
        }
        let mut tail: Vec<String> = row.checks.iter().map(NamedCheck::text).collect();
        tail.extend(row.notes.iter().cloned());
        if !tail.is_empty() {
            line.push_str("; ");
            line.push_str(&tail.join(", "));
        }
        line
    }
}

fn push_cell(line: &mut String, c: &Column, text: &str) {
    if c.width == 0 {
        line.push_str("  ");
        line.push_str(text);
    } else {
        line.push_str(&format!(" {text:>w$}", w = c.width));
    }
}
