//! The VHDX header section (MS-VHDX 2.2): the file identifier, the two
//! headers (the current one has the higher sequence number) and the region
//! table naming where the BAT and the metadata are. Little-endian; each
//! header and region table carries a CRC-32C over its whole block. Pure
//! decoders over bytes, with qemu's checks (block/vhdx.c).
use crate::block::image::{bytes16, le16, le32, le64};
use crate::layout::{Field, Kind};

/// `vhdxfile`.
pub const SIGNATURE: &[u8; 8] = b"vhdxfile";
/// The two headers, 4 KiB each.
pub const HEADER1_AT: u64 = 64 << 10;
pub const HEADER2_AT: u64 = 128 << 10;
pub const HEADER_SIZE: usize = 4 << 10;
/// The region table (qemu reads the first copy only), 64 KiB.
pub const REGION_TABLE_AT: u64 = 192 << 10;
pub const REGION_TABLE_SIZE: usize = 64 << 10;
/// The header section takes the first MiB.
pub const HEADER_SECTION: u64 = 1 << 20;

/// The BAT region's GUID, `2DC27766-F623-4200-9D64-115E9BFD4A08`, as stored.
pub const BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];
/// The metadata region's GUID, `8B7CA206-4790-4B9A-B8FE-575F050F886E`.
pub const METADATA_GUID: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];

/// The header's fields.
pub const HEADER: &[Field] = &[
    Field::of(Kind::Text, "Signature", 0, 4, "head"),
    Field::new(
        "Checksum",
        4,
        4,
        "CRC-32C of the 4 KiB header, this field as zero",
    ),
    Field::new(
        "SequenceNumber",
        8,
        8,
        "the current header has the higher one",
    ),
    Field::of(
        Kind::Uuid,
        "FileWriteGuid",
        16,
        16,
        "changes when the file is first written",
    ),
    Field::of(
        Kind::Uuid,
        "DataWriteGuid",
        32,
        16,
        "changes when the disk's data is first written; children name their parent by it",
    ),
    Field::of(Kind::Uuid, "LogGuid", 48, 16, "zero when the log is empty"),
    Field::new("LogVersion", 64, 2, "0"),
    Field::new("Version", 66, 2, "1"),
    Field::new("LogLength", 68, 4, "bytes of the log, a multiple of 1 MiB"),
    Field::new("LogOffset", 72, 8, "where the log is, a multiple of 1 MiB"),
];

/// CRC-32C of `bytes` with the 4 bytes at `field` counted as zero (how
/// VHDX checksums every structure).
pub fn crc(bytes: &[u8], field: usize) -> u32 {
    let before = bytes.get(..field).unwrap_or_default();
    let after = bytes.get(field.saturating_add(4)..).unwrap_or_default();
    let c = crc32c::crc32c_append(0, before);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, after)
}

/// A decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub checksum: u32,
    pub sequence: u64,
    pub file_write_guid: [u8; 16],
    pub data_write_guid: [u8; 16],
    pub log_guid: [u8; 16],
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

impl Header {
    /// Decodes a 4 KiB header block; `None` unless its signature, version
    /// and checksum are right (qemu then ignores it).
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_SIZE || b.get(..4)? != b"head" {
            return None;
        }
        let h = Header {
            checksum: le32(b, 4)?,
            sequence: le64(b, 8)?,
            file_write_guid: bytes16(b, 16)?,
            data_write_guid: bytes16(b, 32)?,
            log_guid: bytes16(b, 48)?,
            log_version: le16(b, 64)?,
            version: le16(b, 66)?,
            log_length: le32(b, 68)?,
            log_offset: le64(b, 72)?,
        };
        (h.version == 1 && crc(b.get(..HEADER_SIZE)?, 4) == h.checksum).then_some(h)
    }
}

/// Chooses the current header as qemu does: the valid one, or the one
/// with the higher sequence number; equal numbers are fine only when the
/// headers are identical (Disk2VHD writes them so). Returns the index.
pub fn current(h1: Option<&Header>, h2: Option<&Header>) -> Option<usize> {
    match (h1, h2) {
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (None, None) => None,
        (Some(a), Some(b)) if a.sequence > b.sequence => Some(0),
        (Some(a), Some(b)) if b.sequence > a.sequence => Some(1),
        (Some(a), Some(b)) => (a == b).then_some(0),
    }
}

/// One region table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub guid: [u8; 16],
    pub file_offset: u64,
    pub length: u32,
    pub required: bool,
}

/// Why a region table is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRegion {
    /// Offset within the table.
    pub at: u64,
    pub detail: String,
}

/// Decodes the 64 KiB region table (checksum, signature, at most 2047
/// entries).
///
/// # Errors
/// What is wrong, and where in the table.
pub fn regions(b: &[u8]) -> Result<Vec<Region>, BadRegion> {
    let bad = |at: u64, detail: &str| BadRegion {
        at,
        detail: detail.to_owned(),
    };
    if b.get(..4) != Some(b"regi") {
        return Err(bad(0, "no regi signature"));
    }
    let stored = le32(b, 4).ok_or_else(|| bad(4, "truncated"))?;
    let table = b
        .get(..REGION_TABLE_SIZE)
        .ok_or_else(|| bad(0, "truncated"))?;
    let computed = crc(table, 4);
    if stored != computed {
        return Err(BadRegion {
            at: 4,
            detail: format!("checksum {stored:#010x}, the table gives {computed:#010x}"),
        });
    }
    let count = le32(b, 8).ok_or_else(|| bad(8, "truncated"))?;
    if count > 2047 {
        return Err(BadRegion {
            at: 8,
            detail: format!("{count} entries, more than 2047"),
        });
    }
    let mut out = Vec::new();
    for i in 0..usize::try_from(count).unwrap_or(0) {
        let at = i
            .checked_mul(32)
            .and_then(|o| o.checked_add(16))
            .ok_or_else(|| bad(8, "overflow"))?;
        out.push(Region {
            guid: bytes16(b, at).ok_or_else(|| bad(8, "truncated"))?,
            file_offset: le64(b, at.saturating_add(16)).ok_or_else(|| bad(8, "truncated"))?,
            length: le32(b, at.saturating_add(24)).ok_or_else(|| bad(8, "truncated"))?,
            required: le32(b, at.saturating_add(28)).is_some_and(|d| d & 1 != 0),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    fn header(seq: u64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[..4].copy_from_slice(b"head");
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[66..68].copy_from_slice(&1u16.to_le_bytes());
        let c = crc(&b, 4);
        b[4..8].copy_from_slice(&c.to_le_bytes());
        b
    }

    #[test]
    fn the_current_header() {
        let a = Header::decode(&header(5)).unwrap();
        let b = Header::decode(&header(6)).unwrap();
        assert_eq!(current(Some(&a), Some(&b)), Some(1));
        assert_eq!(current(Some(&a), None), Some(0));
        assert_eq!(current(Some(&a), Some(&a)), Some(0));
        let mut other = a.clone();
        other.log_length = 1;
        assert_eq!(current(Some(&a), Some(&other)), None);
        let mut bad = header(7);
        bad[100] = 1;
        assert!(Header::decode(&bad).is_none());
    }

    #[test]
    fn region_tables() {
        let mut t = vec![0u8; REGION_TABLE_SIZE];
        t[..4].copy_from_slice(b"regi");
        t[8..12].copy_from_slice(&1u32.to_le_bytes());
        t[16..32].copy_from_slice(&BAT_GUID);
        t[32..40].copy_from_slice(&(3u64 << 20).to_le_bytes());
        t[40..44].copy_from_slice(&(1u32 << 20).to_le_bytes());
        t[44..48].copy_from_slice(&1u32.to_le_bytes());
        let c = crc(&t, 4);
        t[4..8].copy_from_slice(&c.to_le_bytes());
        let r = regions(&t).unwrap();
        assert_eq!(r[0].file_offset, 3 << 20);
        assert!(r[0].required);
        t[200] = 1;
        assert_eq!(regions(&t).unwrap_err().at, 4);
    }
}
