//! The VHD footer (512 bytes, big-endian, at the end of every VHD and
//! copied at the start of dynamic ones) and the dynamic disk header (1024
//! bytes), as the "Virtual Hard Disk Image Format Specification" lays
//! them out. Pure decoders over bytes.
use crate::block::image::{be16, be32, be64, bytes16, utf16};
use crate::layout::{Field, Kind};

/// `conectix`.
pub const COOKIE: &[u8; 8] = b"conectix";
/// `cxsparse`.
pub const DYNAMIC_COOKIE: &[u8; 8] = b"cxsparse";
/// Disk types.
pub const TYPE_FIXED: u32 = 2;
pub const TYPE_DYNAMIC: u32 = 3;
pub const TYPE_DIFFERENCING: u32 = 4;
/// qemu's largest geometry: 65535 cylinders, 16 heads, 255 sectors.
pub const MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// qemu's largest disk: 2040 GiB, in sectors.
pub const MAX_SECTORS: u64 = 0xff00_0000;

/// The footer's fields.
pub const FOOTER: &[Field] = &[
    Field::of(Kind::Text, "cookie", 0, 8, "conectix"),
    Field::new("features", 8, 4, "bit 1 reserved, always set"),
    Field::new("file_format_version", 12, 4, "0x00010000"),
    Field::new(
        "data_offset",
        16,
        8,
        "dynamic disk header, all ones for fixed disks",
    ),
    Field::new("time_stamp", 24, 4, "seconds since 2000-01-01 UTC"),
    Field::of(
        Kind::Text,
        "creator_application",
        28,
        4,
        "vpc , win , qemu, qem2, d2v , …",
    ),
    Field::new("creator_version", 32, 4, "major.minor of the creator"),
    Field::of(Kind::Text, "creator_host_os", 36, 4, "Wi2k or Mac "),
    Field::new("original_size", 40, 8, "size at creation, bytes"),
    Field::new("current_size", 48, 8, "size now, bytes"),
    Field::new("disk_geometry_cylinders", 56, 2, "CHS cylinders"),
    Field::new("disk_geometry_heads", 58, 1, "CHS heads"),
    Field::new("disk_geometry_sectors", 59, 1, "CHS sectors per track"),
    Field::new("disk_type", 60, 4, "2 fixed, 3 dynamic, 4 differencing"),
    Field::new("checksum", 64, 4, "ones' complement of the byte sum"),
    Field::of(
        Kind::Uuid,
        "unique_id",
        68,
        16,
        "identifies the disk to its children",
    ),
    Field::new("saved_state", 84, 1, "1 when saved state is stored"),
];

/// The dynamic disk header's fields.
pub const DYNAMIC_HEADER: &[Field] = &[
    Field::of(Kind::Text, "cookie", 0, 8, "cxsparse"),
    Field::new("data_offset", 8, 8, "unused, all ones"),
    Field::new("table_offset", 16, 8, "the block allocation table"),
    Field::new("header_version", 24, 4, "0x00010000"),
    Field::new("max_table_entries", 28, 4, "BAT entries"),
    Field::new("block_size", 32, 4, "bytes per block (2 MiB by default)"),
    Field::new("checksum", 36, 4, "ones' complement of the byte sum"),
    Field::of(
        Kind::Uuid,
        "parent_unique_id",
        40,
        16,
        "the parent's footer unique_id",
    ),
    Field::new("parent_time_stamp", 56, 4, "the parent's modification time"),
    Field::of(
        Kind::Bytes,
        "parent_unicode_name",
        64,
        512,
        "UTF-16BE file name of the parent",
    ),
    Field::of(
        Kind::Bytes,
        "parent_locator_entries",
        576,
        192,
        "8 locators of 24 bytes",
    ),
];

/// The VHD checksum: ones' complement of the sum of all bytes, the
/// checksum field (4 bytes at `field`) counted as zero.
pub fn checksum(bytes: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &b) in bytes.iter().enumerate() {
        if !(field..field.saturating_add(4)).contains(&i) {
            sum = sum.wrapping_add(u32::from(b));
        }
    }
    !sum
}

/// A decoded footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub data_offset: u64,
    pub timestamp: u32,
    pub creator_app: [u8; 4],
    pub creator_version: u32,
    pub creator_os: [u8; 4],
    pub original_size: u64,
    pub current_size: u64,
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
    pub disk_type: u32,
    pub checksum: u32,
    pub computed_checksum: u32,
    pub uuid: [u8; 16],
    pub saved_state: bool,
}

impl Footer {
    /// Decodes 512 bytes that start with the cookie.
    pub fn decode(b: &[u8]) -> Option<Footer> {
        if b.get(..8)? != COOKIE {
            return None;
        }
        let four =
            |at: usize| -> Option<[u8; 4]> { b.get(at..at.checked_add(4)?)?.try_into().ok() };
        Some(Footer {
            data_offset: be64(b, 16)?,
            timestamp: be32(b, 24)?,
            creator_app: four(28)?,
            creator_version: be32(b, 32)?,
            creator_os: four(36)?,
            original_size: be64(b, 40)?,
            current_size: be64(b, 48)?,
            cylinders: be16(b, 56)?,
            heads: *b.get(58)?,
            sectors: *b.get(59)?,
            disk_type: be32(b, 60)?,
            checksum: be32(b, 64)?,
            computed_checksum: checksum(b.get(..512)?, 64),
            uuid: bytes16(b, 68)?,
            saved_state: b.get(84).is_some_and(|&s| s != 0),
        })
    }

    /// Sectors by the CHS geometry.
    pub fn chs_sectors(&self) -> u64 {
        u64::from(self.cylinders)
            .saturating_mul(u64::from(self.heads))
            .saturating_mul(u64::from(self.sectors))
    }

    /// qemu's rule for the disk size: Virtual PC and qemu's own `qemu`
    /// images use the CHS geometry; Hyper-V (`win `), qemu's `qem2`,
    /// Disk2vhd (`d2v `), XenConverter (`CTXS`) and XenServer (`tap\0`)
    /// use `current_size`, and so does any image at the largest geometry.
    /// Returns (sectors, whether the geometry decided).
    pub fn size_sectors(&self) -> (u64, bool) {
        let by_size =
            [*b"win ", *b"qem2", *b"d2v ", *b"CTXS", *b"tap\0"].contains(&self.creator_app);
        let chs = self.chs_sectors();
        if by_size || chs == MAX_GEOMETRY {
            (self.current_size / 512, false)
        } else {
            (chs, true)
        }
    }
}

/// One parent locator entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locator {
    pub platform: [u8; 4],
    pub data_space: u32,
    pub data_length: u32,
    pub data_offset: u64,
}

/// A decoded dynamic disk header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    pub table_offset: u64,
    pub max_table_entries: u32,
    pub block_size: u32,
    pub checksum: u32,
    /// Computed over the 1024 bytes, when all were read.
    pub computed_checksum: Option<u32>,
    pub parent_uuid: [u8; 16],
    pub parent_timestamp: u32,
    pub parent_name: String,
    pub locators: Vec<Locator>,
}

impl DynamicHeader {
    /// Decodes the header (at least its first 512 bytes; the parent name
    /// and locators need all 1024).
    pub fn decode(b: &[u8]) -> Option<DynamicHeader> {
        if b.get(..8)? != DYNAMIC_COOKIE {
            return None;
        }
        let mut locators = Vec::new();
        for i in 0..8usize {
            let at = i.checked_mul(24)?.checked_add(576)?;
            let (Some(code), Some(space), Some(len), Some(off)) = (
                b.get(at..at.checked_add(4)?),
                be32(b, at.checked_add(4)?),
                be32(b, at.checked_add(8)?),
                be64(b, at.checked_add(16)?),
            ) else {
                break;
            };
            let platform: [u8; 4] = code.try_into().ok()?;
            if platform != [0; 4] {
                locators.push(Locator {
                    platform,
                    data_space: space,
                    data_length: len,
                    data_offset: off,
                });
            }
        }
        Some(DynamicHeader {
            table_offset: be64(b, 16)?,
            max_table_entries: be32(b, 28)?,
            block_size: be32(b, 32)?,
            checksum: be32(b, 36)?,
            computed_checksum: b.get(..1024).map(|h| checksum(h, 36)),
            parent_uuid: bytes16(b, 40)?,
            parent_timestamp: be32(b, 56)?,
            parent_name: b.get(64..576).map(|n| utf16(n, true)).unwrap_or_default(),
            locators,
        })
    }
}

/// A locator's path as a local path to try, or `None` when it cannot be
/// one (a Mac alias blob). Windows separators become `/`; an absolute
/// Windows path (`C:\dir\p.vhd`) is tried as its last component beside
/// the child.
pub fn locator_path(platform: &[u8; 4], data: &[u8]) -> Option<(String, String)> {
    let text = match platform {
        b"W2ru" | b"W2ku" => utf16(data, false),
        b"Wi2r" | b"Wi2k" | b"MacX" => {
            let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
            String::from_utf8_lossy(data.get(..end)?).into_owned()
        }
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    let local = match platform {
        b"W2ru" | b"Wi2r" => {
            let p = text.replace('\\', "/");
            p.strip_prefix("./").map(str::to_owned).unwrap_or(p)
        }
        b"W2ku" | b"Wi2k" => text.rsplit(['\\', '/']).next()?.to_owned(),
        _ => {
            // file://host/path: the path, percent-decoding left alone.
            let rest = text.strip_prefix("file://")?;
            let path = rest.find('/').and_then(|i| rest.get(i..))?;
            path.to_owned()
        }
    };
    Some((text, local))
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
    fn checksums_and_size_rules() {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(COOKIE);
        f[28..32].copy_from_slice(b"qemu");
        f[48..56].copy_from_slice(&(100u64 << 20).to_be_bytes());
        f[56..58].copy_from_slice(&203u16.to_be_bytes());
        f[58] = 16;
        f[59] = 63;
        f[60..64].copy_from_slice(&TYPE_DYNAMIC.to_be_bytes());
        let c = checksum(&f, 64);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        let footer = Footer::decode(&f).unwrap();
        assert_eq!(footer.checksum, footer.computed_checksum);
        assert_eq!(footer.size_sectors(), (203 * 16 * 63, true));
        f[28..32].copy_from_slice(b"win ");
        assert_eq!(Footer::decode(&f).unwrap().size_sectors(), (204_800, false));
    }

    #[test]
    fn locators_become_local_paths() {
        let w: Vec<u8> = ".\\dir\\base.vhd"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(locator_path(b"W2ru", &w).unwrap().1, "dir/base.vhd");
        let w: Vec<u8> = "C:\\vms\\base.vhd"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(locator_path(b"W2ku", &w).unwrap().1, "base.vhd");
        assert_eq!(
            locator_path(b"MacX", b"file://localhost/Users/a/base.vhd\0")
                .unwrap()
                .1,
            "/Users/a/base.vhd"
        );
        assert!(locator_path(b"Mac ", b"alias").is_none());
    }
}
