//! The fast-commit area: the journal's last blocks (`s_num_fc_blks`, 256
//! by default), where ext4 logs small changes (a file's new extents, an
//! inode, a name added or removed) as tag-length-value records instead of
//! whole blocks. A run of them starts with a HEAD naming the transaction
//! it follows and ends with a TAIL holding a crc32c of the tags before it;
//! the kernel replays the tags up to the last TAIL whose transaction and
//! checksum match (`ext4_fc_replay_scan`).
//!
//! Decoded and checked here, and listed; layerscope does not apply them
//! (that takes ext4's allocator: new extents, bitmaps, directory
//! entries), so the replayed view says how many tags it left out.
use crate::bytes::{le16, le32};
use crate::fs::ext::checksum::crc32c_raw;
use crate::layout::Field;

use super::log::Log;
use super::Geometry;

/// `struct ext4_fc_tl`: every record's header (little-endian, unlike the
/// rest of the journal).
pub const TL: &[Field] = &[
    Field::new(
        "fc_tag",
        0x0,
        2,
        "1 add range, 2 del range, 3 create, 4 link, 5 unlink, 6 inode, 7 pad, 8 tail, 9 head",
    ),
    Field::new("fc_len", 0x2, 2, "bytes of the value that follows"),
];

pub const TAG_ADD_RANGE: u16 = 1;
pub const TAG_DEL_RANGE: u16 = 2;
pub const TAG_CREAT: u16 = 3;
pub const TAG_LINK: u16 = 4;
pub const TAG_UNLINK: u16 = 5;
pub const TAG_INODE: u16 = 6;
pub const TAG_PAD: u16 = 7;
pub const TAG_TAIL: u16 = 8;
pub const TAG_HEAD: u16 = 9;
/// `EXT4_FC_SUPPORTED_FEATURES`.
pub const SUPPORTED_FEATURES: u32 = 0;

/// What one fast-commit record says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "tag", rename_all = "snake_case")]
pub enum Value {
    AddRange {
        ino: u32,
        lblk: u32,
        pblk: u64,
        len: u32,
        unwritten: bool,
    },
    DelRange {
        ino: u32,
        lblk: u32,
        len: u32,
    },
    Create {
        parent: u32,
        ino: u32,
        #[serde(skip)]
        name: Vec<u8>,
    },
    Link {
        parent: u32,
        ino: u32,
        #[serde(skip)]
        name: Vec<u8>,
    },
    Unlink {
        parent: u32,
        ino: u32,
        #[serde(skip)]
        name: Vec<u8>,
    },
    Inode {
        ino: u32,
    },
    Pad,
    Tail {
        tid: u32,
        crc: u32,
    },
    Head {
        features: u32,
        tid: u32,
    },
    Unknown {
        code: u16,
    },
}

impl Value {
    /// The name debugfs logdump gives the tag.
    pub fn name(&self) -> &'static str {
        match self {
            Value::AddRange { .. } => "ADD_RANGE",
            Value::DelRange { .. } => "DEL_RANGE",
            Value::Create { .. } => "CREAT_DENTRY",
            Value::Link { .. } => "ADD_ENTRY",
            Value::Unlink { .. } => "DEL_ENTRY",
            Value::Inode { .. } => "INODE",
            Value::Pad => "PAD",
            Value::Tail { .. } => "TAIL",
            Value::Head { .. } => "HEAD",
            Value::Unknown { .. } => "ERROR",
        }
    }
}

/// One record of the area.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    /// Journal block and offset in it.
    pub block: u64,
    pub offset: usize,
    #[serde(flatten)]
    pub value: Value,
}

/// The fast-commit area, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Area {
    /// Its journal blocks (inclusive).
    pub first: u64,
    pub last: u64,
    /// The transaction its records must follow (the first one not
    /// replayed from the main log).
    pub expected_tid: u32,
    pub records: Vec<Record>,
    /// Records the kernel would replay: those up to the last TAIL whose
    /// transaction and checksum match.
    pub valid: usize,
    /// Why the scan stopped, when not at an empty block.
    pub notes: Vec<String>,
}

/// Decodes a record's value.
fn value(tag: u16, v: &[u8]) -> Option<Value> {
    let dentry = |v: &[u8]| -> Option<(u32, u32, Vec<u8>)> {
        Some((le32(v, 0)?, le32(v, 4)?, v.get(8..)?.to_vec()))
    };
    Some(match tag {
        TAG_ADD_RANGE => {
            // fc_ino, then an ext4_extent: ee_block, ee_len, ee_start_hi, ee_start_lo.
            let raw_len = le16(v, 8)?;
            let unwritten = raw_len > 32768;
            Value::AddRange {
                ino: le32(v, 0)?,
                lblk: le32(v, 4)?,
                len: u32::from(if unwritten {
                    raw_len.saturating_sub(32768)
                } else {
                    raw_len
                }),
                pblk: u64::from(le32(v, 12)?)
                    | u64::from(le16(v, 10)?).checked_shl(32).unwrap_or(0),
                unwritten,
            }
        }
        TAG_DEL_RANGE => Value::DelRange {
            ino: le32(v, 0)?,
            lblk: le32(v, 4)?,
            len: le32(v, 8)?,
        },
        TAG_CREAT => {
            let (parent, ino, name) = dentry(v)?;
            Value::Create { parent, ino, name }
        }
        TAG_LINK => {
            let (parent, ino, name) = dentry(v)?;
            Value::Link { parent, ino, name }
        }
        TAG_UNLINK => {
            let (parent, ino, name) = dentry(v)?;
            Value::Unlink { parent, ino, name }
        }
        TAG_INODE => Value::Inode { ino: le32(v, 0)? },
        TAG_PAD => Value::Pad,
        TAG_TAIL => Value::Tail {
            tid: le32(v, 0)?,
            crc: le32(v, 4)?,
        },
        TAG_HEAD => Value::Head {
            features: le32(v, 0)?,
            tid: le32(v, 4)?,
        },
        other => Value::Unknown { code: other },
    })
}

/// Scans the fast-commit area as `ext4_fc_replay_scan` does, block by
/// block, for records following transaction `expected_tid`.
pub fn scan(geo: &Geometry, log: &Log, expected_tid: u32) -> Option<Area> {
    let (first, last) = geo.fc_area()?;
    let mut area = Area {
        first,
        last,
        expected_tid,
        ..Area::default()
    };
    let mut crc = 0u32;
    let mut tags = 0usize;
    'blocks: for (off, b) in (first..=last).enumerate() {
        let Ok(block) = log.read(b) else {
            // The kernel's jread fails past the journal: the scan ends.
            break;
        };
        if off == 0 && le16(&block, 0) != Some(TAG_HEAD) {
            break;
        }
        let end = block.len().saturating_sub(1);
        let mut cur = 0usize;
        while cur < end {
            let (Some(tag), Some(len)) = (le16(&block, cur), le16(&block, cur.saturating_add(2)))
            else {
                break;
            };
            let vstart = cur.saturating_add(4);
            let vend = vstart.saturating_add(usize::from(len));
            let Some(v) = block.get(vstart..vend) else {
                area.notes.push(format!(
                    "journal block {b} offset {cur}: a record runs past the block"
                ));
                break 'blocks;
            };
            let Some(val) = value(tag, v) else {
                area.notes.push(format!(
                    "journal block {b} offset {cur}: a {len}-byte value is too short for tag {tag}"
                ));
                break 'blocks;
            };
            let whole = block.get(cur..vend).unwrap_or_default();
            let mut stop = false;
            match &val {
                Value::Tail { tid, crc: stored } => {
                    tags = tags.saturating_add(1);
                    let head = block.get(cur..cur.saturating_add(8)).unwrap_or_default();
                    crc = crc32c_raw(crc, head);
                    if *tid == expected_tid && *stored == crc {
                        area.valid = tags;
                    } else {
                        area.notes.push(format!(
                            "journal block {b}: a fast-commit tail for transaction {tid} does not match (expected transaction {expected_tid}, checksum {crc:#010x}, stored {stored:#010x})"
                        ));
                        stop = true;
                    }
                    crc = 0;
                }
                Value::Head { features, tid } => {
                    if features & !SUPPORTED_FEATURES != 0 {
                        area.notes.push(format!("journal block {b}: fast commits with unsupported features {features:#x}"));
                        stop = true;
                    } else if *tid != expected_tid {
                        area.notes.push(format!(
                            "journal block {b}: fast commits of transaction {tid}, not {expected_tid}: stale, not replayed"
                        ));
                        stop = true;
                    } else {
                        tags = tags.saturating_add(1);
                        crc = crc32c_raw(crc, whole);
                    }
                }
                Value::Unknown { code: 0 } => {
                    // Zeros: the end of what was written.
                    break 'blocks;
                }
                Value::Unknown { code } => {
                    area.notes.push(format!(
                        "journal block {b} offset {cur}: unknown fast-commit tag {code}"
                    ));
                    stop = true;
                }
                _ => {
                    tags = tags.saturating_add(1);
                    crc = crc32c_raw(crc, whole);
                }
            }
            area.records.push(Record {
                block: b,
                offset: cur,
                value: val,
            });
            if stop {
                break 'blocks;
            }
            cur = vend;
        }
    }
    Some(area)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_add_range_and_a_dentry() {
        let mut v = vec![0u8; 16];
        v[0..4].copy_from_slice(&12u32.to_le_bytes());
        v[4..8].copy_from_slice(&3u32.to_le_bytes());
        v[8..10].copy_from_slice(&(32768u16 + 5).to_le_bytes());
        v[10..12].copy_from_slice(&1u16.to_le_bytes());
        v[12..16].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            value(TAG_ADD_RANGE, &v),
            Some(Value::AddRange {
                ino: 12,
                lblk: 3,
                pblk: (1 << 32) | 100,
                len: 5,
                unwritten: true
            })
        );
        let mut d = vec![0u8; 8];
        d[0..4].copy_from_slice(&2u32.to_le_bytes());
        d[4..8].copy_from_slice(&13u32.to_le_bytes());
        d.extend_from_slice(b"name");
        assert_eq!(
            value(TAG_LINK, &d),
            Some(Value::Link {
                parent: 2,
                ino: 13,
                name: b"name".to_vec()
            })
        );
        assert_eq!(value(TAG_INODE, &[1, 2]), None, "too short");
    }
}
