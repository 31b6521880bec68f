//! The VHDX metadata region (MS-VHDX 2.6): a table of items by GUID, and
//! the items layerscope needs: file parameters (block size, whether there
//! is a parent), the virtual disk size, the sector sizes, the disk's page
//! 83 identifier and, for differencing disks, the parent locator (UTF-16
//! key/value pairs). Pure decoders over bytes, with qemu's checks.
use crate::block::image::{bytes16, le16, le32, le64, utf16};

/// `metadata`.
pub const SIGNATURE: &[u8; 8] = b"metadata";
/// qemu reads this much of the table.
pub const TABLE_MAX: usize = 64 << 10;

const FILE_PARAMETERS: [u8; 16] = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
const PAGE83: [u8; 16] = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
const LOGICAL_SECTOR: [u8; 16] = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
const PHYSICAL_SECTOR: [u8; 16] = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
const PARENT_LOCATOR: [u8; 16] = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);
/// The locator type of a VHDX parent.
pub const PARENT_VHDX: [u8; 16] = guid(
    0xb04a_efb7,
    0xd19e,
    0x4a81,
    [0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13],
);

/// A GUID in its on-disk (Microsoft, mixed-endian) byte order.
pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// One table entry: where an item is, relative to the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub offset: u32,
    pub length: u32,
}

/// The items found in the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Items {
    pub file_parameters: Option<Item>,
    pub virtual_disk_size: Option<Item>,
    pub page83: Option<Item>,
    pub logical_sector: Option<Item>,
    pub physical_sector: Option<Item>,
    pub parent_locator: Option<Item>,
}

/// Why the metadata is refused: offset within the table, what, and
/// whether it is "not supported" rather than corrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bad {
    pub at: u64,
    pub detail: String,
    pub unsupported: bool,
}

fn bad(at: u64, detail: impl Into<String>) -> Bad {
    Bad {
        at,
        detail: detail.into(),
        unsupported: false,
    }
}

/// Decodes the metadata table (`vhdx_parse_metadata`).
///
/// # Errors
/// A bad signature, too many entries, an item twice, an unknown required
/// item, a required item missing.
pub fn items(b: &[u8]) -> Result<Items, Bad> {
    if b.get(..8) != Some(SIGNATURE) {
        return Err(bad(0, "no metadata signature"));
    }
    let count = usize::from(le16(b, 10).ok_or_else(|| bad(10, "truncated"))?);
    if count.saturating_mul(32) > TABLE_MAX.saturating_sub(32) {
        return Err(bad(
            10,
            format!("{count} entries do not fit in the 64 KiB table"),
        ));
    }
    let mut it = Items::default();
    for i in 0..count {
        let at = i.saturating_mul(32).saturating_add(32);
        let at64 = u64::try_from(at).unwrap_or(0);
        let id = bytes16(b, at).ok_or_else(|| bad(at64, "truncated"))?;
        let item = Item {
            offset: le32(b, at.saturating_add(16)).ok_or_else(|| bad(at64, "truncated"))?,
            length: le32(b, at.saturating_add(20)).ok_or_else(|| bad(at64, "truncated"))?,
        };
        let flags = le32(b, at.saturating_add(24)).unwrap_or(0);
        let slot = match id {
            FILE_PARAMETERS => &mut it.file_parameters,
            VIRTUAL_DISK_SIZE => &mut it.virtual_disk_size,
            PAGE83 => &mut it.page83,
            LOGICAL_SECTOR => &mut it.logical_sector,
            PHYSICAL_SECTOR => &mut it.physical_sector,
            PARENT_LOCATOR => &mut it.parent_locator,
            _ if flags & 4 != 0 => {
                return Err(Bad {
                    at: at64,
                    detail: format!(
                        "unknown required metadata item {}",
                        crate::block::image::guid_text(&id)
                    ),
                    unsupported: true,
                })
            }
            _ => continue,
        };
        if slot.is_some() {
            return Err(bad(at64, "a metadata item appears twice"));
        }
        *slot = Some(item);
    }
    if it.file_parameters.is_none()
        || it.virtual_disk_size.is_none()
        || it.page83.is_none()
        || it.logical_sector.is_none()
        || it.physical_sector.is_none()
    {
        return Err(Bad {
            at: 0,
            detail: "a required metadata item is missing".into(),
            unsupported: true,
        });
    }
    Ok(it)
}

/// File parameters: block size and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileParameters {
    pub block_size: u32,
    pub leave_blocks_allocated: bool,
    pub has_parent: bool,
}

impl FileParameters {
    /// Decodes the 8-byte item.
    pub fn decode(b: &[u8]) -> Option<FileParameters> {
        let bits = le32(b, 4)?;
        Some(FileParameters {
            block_size: le32(b, 0)?,
            leave_blocks_allocated: bits & 1 != 0,
            has_parent: bits & 2 != 0,
        })
    }
}

/// Reads a little-endian integer item.
pub fn u64_item(b: &[u8]) -> Option<u64> {
    le64(b, 0)
}

/// See [`u64_item`].
pub fn u32_item(b: &[u8]) -> Option<u32> {
    le32(b, 0)
}

/// The parent locator: its type and key/value pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentLocator {
    pub locator_type: [u8; 16],
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    /// Decodes the item (its bytes, offsets relative to its start).
    ///
    /// # Errors
    /// (offset within the item, what).
    pub fn decode(b: &[u8]) -> Result<ParentLocator, (u64, String)> {
        let locator_type = bytes16(b, 0).ok_or((0, "truncated".to_owned()))?;
        let count = usize::from(le16(b, 18).ok_or((18, "truncated".to_owned()))?);
        let mut entries = Vec::new();
        for i in 0..count {
            let at = i.saturating_mul(12).saturating_add(20);
            let at64 = u64::try_from(at).unwrap_or(0);
            let field = |o: usize| {
                le32(b, at.saturating_add(o)).ok_or((at64, "entry truncated".to_owned()))
            };
            let (ko, vo) = (field(0)?, field(4)?);
            let kl = le16(b, at.saturating_add(8)).ok_or((at64, "entry truncated".to_owned()))?;
            let vl = le16(b, at.saturating_add(10)).ok_or((at64, "entry truncated".to_owned()))?;
            let text = |off: u32, len: u16| -> Result<String, (u64, String)> {
                let s = usize::try_from(off).unwrap_or(usize::MAX);
                let e = s.saturating_add(usize::from(len));
                b.get(s..e).map(|x| utf16(x, false)).ok_or((
                    at64,
                    format!("key or value at {off:#x}+{len} is outside the locator"),
                ))
            };
            entries.push((text(ko, kl)?, text(vo, vl)?));
        }
        Ok(ParentLocator {
            locator_type,
            entries,
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
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
    fn guids_match_qemu() {
        assert_eq!(&FILE_PARAMETERS[..4], &[0x37, 0x67, 0xa1, 0xca]);
        assert_eq!(
            crate::block::image::guid_text(&PARENT_LOCATOR),
            "a8d35f2d-b30b-454d-abf7-d3d84834ab0c"
        );
    }

    #[test]
    fn locator_entries() {
        let k: Vec<u8> = "relative_path"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let v: Vec<u8> = "..\\b.vhdx"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut b = vec![0u8; 32];
        b[..16].copy_from_slice(&PARENT_VHDX);
        b[18..20].copy_from_slice(&1u16.to_le_bytes());
        let ko = b.len() as u32;
        b.extend_from_slice(&k);
        let vo = b.len() as u32;
        b.extend_from_slice(&v);
        b[20..24].copy_from_slice(&ko.to_le_bytes());
        b[24..28].copy_from_slice(&vo.to_le_bytes());
        b[28..30].copy_from_slice(&(k.len() as u16).to_le_bytes());
        b[30..32].copy_from_slice(&(v.len() as u16).to_le_bytes());
        let l = ParentLocator::decode(&b).unwrap();
        assert_eq!(l.get("relative_path"), Some("..\\b.vhdx"));
        b[24..28].copy_from_slice(&9999u32.to_le_bytes());
        assert!(ParentLocator::decode(&b).is_err());
    }
}
