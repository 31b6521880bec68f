//! The GUID partition table: a header at LBA 1 (and a backup at the last
//! LBA), each with a CRC32 of itself and of the entry array it points to.
//!
//! Both CRCs are checked and kept (stored and computed). A primary header
//! that fails (no signature, a bad CRC, an entry array that cannot be read
//! or whose CRC fails) gives way to the backup, with a problem saying so;
//! when neither holds, no partition is guessed. Every LBA is multiplied
//! and added with checked arithmetic, and the entry array is bounded
//! ([`MAX_ARRAY`]), so a header claiming 2^32 entries or entries of 2^31
//! bytes is a clear problem rather than a huge read.
use crate::block::{BlockError, BlockSource};
use crate::layout::{Endian, Field, Kind};

use super::bytes::{le64, slice, us};
use super::gpt_types::{gpt_name, gpt_role};
use super::table::{Crc, GptHeader, GptState, Partition, Problem, Table};
use super::Text;

/// The largest entry array read (8192 entries of 128 bytes; the spec's
/// minimum is 16 KiB, and tools write 16 KiB).
pub const MAX_ARRAY: u64 = 1 << 20;
/// The largest entry size accepted.
pub const MAX_ENTRY_SIZE: u64 = 4096;

// The header (UEFI 2.10, 5.3.2).
pub const SIGNATURE: Field = Field::of(Kind::Bytes, "signature", 0, 8, "\"EFI PART\"");
pub const REVISION: Field = Field::new("revision", 8, 4, "0x00010000");
pub const HEADER_SIZE: Field = Field::new("header_size", 12, 4, "bytes covered by the header CRC");
pub const HEADER_CRC32: Field = Field::new(
    "header_crc32",
    16,
    4,
    "CRC32 of the header, this field zeroed",
);
pub const MY_LBA: Field = Field::new("my_lba", 24, 8, "the LBA of this header");
pub const ALTERNATE_LBA: Field = Field::new("alternate_lba", 32, 8, "the LBA of the other header");
pub const FIRST_USABLE_LBA: Field =
    Field::new("first_usable_lba", 40, 8, "first LBA partitions may use");
pub const LAST_USABLE_LBA: Field =
    Field::new("last_usable_lba", 48, 8, "last LBA partitions may use");
pub const DISK_GUID: Field = Field::of(Kind::Bytes, "disk_guid", 56, 16, "the disk's GUID");
pub const ENTRIES_LBA: Field =
    Field::new("partition_entry_lba", 72, 8, "first LBA of the entry array");
pub const ENTRY_COUNT: Field = Field::new("num_partition_entries", 80, 4, "entries in the array");
pub const ENTRY_SIZE: Field = Field::new(
    "sizeof_partition_entry",
    84,
    4,
    "bytes per entry (128 x 2^n)",
);
pub const ENTRIES_CRC32: Field = Field::new(
    "partition_entry_array_crc32",
    88,
    4,
    "CRC32 of the entry array",
);
/// The header's fields, for display.
pub const HEADER: &[Field] = &[
    SIGNATURE,
    REVISION,
    HEADER_SIZE,
    HEADER_CRC32,
    MY_LBA,
    ALTERNATE_LBA,
    FIRST_USABLE_LBA,
    LAST_USABLE_LBA,
    DISK_GUID,
    ENTRIES_LBA,
    ENTRY_COUNT,
    ENTRY_SIZE,
    ENTRIES_CRC32,
];

// An entry (5.3.3).
pub const TYPE_GUID: Field = Field::of(
    Kind::Bytes,
    "partition_type_guid",
    0,
    16,
    "type (zero: unused)",
);
pub const UNIQUE_GUID: Field = Field::of(
    Kind::Bytes,
    "unique_partition_guid",
    16,
    16,
    "this partition's GUID",
);
pub const STARTING_LBA: Field = Field::new("starting_lba", 32, 8, "first LBA");
pub const ENDING_LBA: Field = Field::new("ending_lba", 40, 8, "last LBA (inclusive)");
pub const ATTRIBUTES: Field = Field::new("attributes", 48, 8, "attribute bits");
pub const PARTITION_NAME: Field = Field::of(Kind::Bytes, "partition_name", 56, 72, "UTF-16LE name");
/// The entry's fields, for display.
pub const ENTRY: &[Field] = &[
    TYPE_GUID,
    UNIQUE_GUID,
    STARTING_LBA,
    ENDING_LBA,
    ATTRIBUTES,
    PARTITION_NAME,
];

const HEADER_MIN: u64 = 92;

fn get(f: Field, b: &[u8]) -> u64 {
    f.read(b, Endian::Little).unwrap_or(0)
}

/// A GUID in its text form: the first three groups are little-endian.
pub fn guid(b: &[u8]) -> Option<String> {
    let g = slice(b, 0, 16)?;
    let hex = |r: &[u8]| r.iter().map(|x| format!("{x:02X}")).collect::<String>();
    let rev = |r: &[u8]| hex(&r.iter().rev().copied().collect::<Vec<u8>>());
    Some(format!(
        "{}-{}-{}-{}-{}",
        rev(g.get(0..4)?),
        rev(g.get(4..6)?),
        rev(g.get(6..8)?),
        hex(g.get(8..10)?),
        hex(g.get(10..16)?)
    ))
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// A header read at `lba`, with its entry array when it could be read.
struct Read {
    header: GptHeader,
    array: Option<Vec<u8>>,
}

/// Reads and checks the header at `lba` and its entry array.
fn read_header(disk: &dyn BlockSource, lba: u64, sector: u64) -> Result<Read, BlockError> {
    let mut h = GptHeader {
        lba,
        error: None,
        header_crc: None,
        entries_crc: None,
        my_lba: 0,
        alternate_lba: 0,
        first_usable_lba: 0,
        last_usable_lba: 0,
        disk_guid: String::new(),
        entries_lba: 0,
        entry_count: 0,
        entry_size: 0,
    };
    let fail = |mut h: GptHeader, why: String| {
        h.error = Some(why);
        Ok(Read {
            header: h,
            array: None,
        })
    };
    let at = match lba
        .checked_mul(sector)
        .filter(|a| a.checked_add(sector).is_some_and(|e| e <= disk.len()))
    {
        Some(a) => a,
        None => return fail(h, "outside the disk".into()),
    };
    let mut b = vec![0u8; us(sector).unwrap_or(512)];
    disk.read_at(at, &mut b)?;
    if b.get(0..8) != Some(b"EFI PART".as_slice()) {
        return fail(h, "no \"EFI PART\" signature".into());
    }
    h.my_lba = get(MY_LBA, &b);
    h.alternate_lba = get(ALTERNATE_LBA, &b);
    h.first_usable_lba = get(FIRST_USABLE_LBA, &b);
    h.last_usable_lba = get(LAST_USABLE_LBA, &b);
    h.disk_guid = slice(&b, DISK_GUID.offset, 16)
        .and_then(guid)
        .unwrap_or_default();
    h.entries_lba = get(ENTRIES_LBA, &b);
    h.entry_count = get(ENTRY_COUNT, &b);
    h.entry_size = get(ENTRY_SIZE, &b);
    let size = get(HEADER_SIZE, &b);
    if size < HEADER_MIN || size > sector {
        return fail(
            h,
            format!("header size {size} (must be {HEADER_MIN} to {sector})"),
        );
    }
    let covered = b.get(..us(size).unwrap_or(0)).unwrap_or(&[]);
    let (before, rest) = covered.split_at(16.min(covered.len()));
    let after = rest.get(4..).unwrap_or(&[]);
    let stored = u32::try_from(get(HEADER_CRC32, &b)).unwrap_or(0);
    let computed = crc32(&[before, &[0u8; 4], after]);
    h.header_crc = Some(Crc { stored, computed });
    if stored != computed {
        return fail(
            h,
            format!("header CRC {stored:#010x} stored, {computed:#010x} computed"),
        );
    }
    if h.my_lba != lba {
        let why = format!("says it is at LBA {}, read at LBA {lba}", h.my_lba);
        return fail(h, why);
    }
    if h.entry_size < 128 || h.entry_size % 128 != 0 || h.entry_size > MAX_ENTRY_SIZE {
        return fail(
            h.clone(),
            format!(
                "entry size {} (must be a multiple of 128 from 128 to {MAX_ENTRY_SIZE})",
                h.entry_size
            ),
        );
    }
    let bytes = match h
        .entry_count
        .checked_mul(h.entry_size)
        .filter(|&n| n <= MAX_ARRAY)
    {
        Some(n) => n,
        None => {
            return fail(
                h.clone(),
                format!(
                "{} entries of {} bytes: more than the {MAX_ARRAY}-byte limit of an entry array",
                h.entry_count, h.entry_size
            ),
            )
        }
    };
    let array_at = h
        .entries_lba
        .checked_mul(sector)
        .filter(|a| a.checked_add(bytes).is_some_and(|e| e <= disk.len()));
    let Some(array_at) = array_at else {
        return fail(
            h.clone(),
            format!(
                "entry array at LBA {} ({bytes} bytes) passes the end of the disk",
                h.entries_lba
            ),
        );
    };
    let mut array = vec![0u8; us(bytes).unwrap_or(0)];
    disk.read_at(array_at, &mut array)?;
    let stored = u32::try_from(get(ENTRIES_CRC32, &b)).unwrap_or(0);
    let computed = crc32(&[&array]);
    h.entries_crc = Some(Crc { stored, computed });
    if stored != computed {
        return fail(
            h,
            format!("entry array CRC {stored:#010x} stored, {computed:#010x} computed"),
        );
    }
    Ok(Read {
        header: h,
        array: Some(array),
    })
}

/// The sector size of a GPT disk: where the primary header's signature
/// is (LBA 1 at 512 or at 4096), else where the backup's is; 512 when
/// neither is found.
fn sector_size(disk: &dyn BlockSource) -> Result<u64, BlockError> {
    let size = disk.len();
    let mut sig = [0u8; 8];
    for s in [512u64, 4096] {
        if s.checked_mul(2).is_some_and(|n| n <= size) {
            disk.read_at(s, &mut sig)?;
            if &sig == b"EFI PART" {
                return Ok(s);
            }
        }
    }
    for s in [512u64, 4096] {
        if let Some(at) = size.checked_sub(s).filter(|&a| a >= s) {
            disk.read_at(at, &mut sig)?;
            if &sig == b"EFI PART" {
                return Ok(s);
            }
        }
    }
    Ok(512)
}

/// Reads the GPT of a disk whose MBR is protective.
///
/// # Errors
/// Read errors only; damage is reported in the table's problems.
pub fn read(disk: &dyn BlockSource) -> Result<Table, BlockError> {
    let sector = sector_size(disk)?;
    let last_lba = disk
        .len()
        .checked_div(sector)
        .unwrap_or(0)
        .saturating_sub(1);
    let primary = read_header(disk, 1, sector)?;
    let mut problems = Vec::new();
    // The backup: where the primary says, else the last LBA.
    let alt = match primary.header.error {
        None if primary.header.alternate_lba != 0 => primary.header.alternate_lba,
        _ => last_lba,
    };
    let backup = read_header(disk, alt, sector)?;
    let place = |h: &GptHeader, what: &str| format!("GPT {what} header at LBA {}", h.lba);
    let offset = |h: &GptHeader| h.lba.checked_mul(sector);
    let (used, chosen) = match (&primary.header.error, &backup.header.error) {
        (None, b) => {
            if let Some(why) = b {
                problems.push(Problem::new(
                    place(&backup.header, "backup"),
                    offset(&backup.header),
                    format!("{why}; the primary is used"),
                ));
            }
            ("primary", Some(&primary))
        }
        (Some(why), None) => {
            problems.push(Problem::new(
                place(&primary.header, "primary"),
                offset(&primary.header),
                format!(
                    "{why}; using the backup header at LBA {}",
                    backup.header.lba
                ),
            ));
            ("backup", Some(&backup))
        }
        (Some(p), Some(b)) => {
            problems.push(Problem::new(
                place(&primary.header, "primary"),
                offset(&primary.header),
                p.clone(),
            ));
            problems.push(Problem::new(
                place(&backup.header, "backup"),
                offset(&backup.header),
                format!("{b}; no partition is read"),
            ));
            ("none", None)
        }
    };
    let mut t = Table {
        label: "gpt",
        sector_size: sector,
        id: chosen
            .map(|c| c.header.disk_guid.clone())
            .unwrap_or_default(),
        partitions: Vec::new(),
        gpt: None,
        problems,
    };
    if let Some(c) = chosen {
        entries(
            disk.len(),
            sector,
            &c.header,
            c.array.as_deref().unwrap_or(&[]),
            &mut t,
        );
    }
    t.gpt = Some(GptState {
        primary: primary.header,
        backup: Some(backup.header),
        used,
    });
    t.check_overlaps();
    Ok(t)
}

/// The partitions of a checked entry array.
fn entries(size: u64, sector: u64, h: &GptHeader, array: &[u8], t: &mut Table) {
    let Some(step) = us(h.entry_size).filter(|&s| s >= 128) else {
        return;
    };
    let array_at = h.entries_lba.saturating_mul(sector);
    for (i, e) in array.chunks_exact(step).enumerate() {
        let number = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        if e.get(0..16).is_none_or(|g| g.iter().all(|&b| b == 0)) {
            continue;
        }
        let entry_offset =
            array_at.saturating_add(u64::try_from(i).unwrap_or(0).saturating_mul(h.entry_size));
        let place = format!("gpt partition {number}");
        let (first, last) = (get(STARTING_LBA, e), get(ENDING_LBA, e));
        if last < first {
            t.problems.push(Problem::new(
                place,
                Some(entry_offset),
                format!("ending LBA {last} is before starting LBA {first}: not used"),
            ));
            continue;
        }
        let sectors = last.checked_sub(first).and_then(|n| n.checked_add(1));
        let range = sectors.and_then(|n| {
            let start = first.checked_mul(sector)?;
            let len = n.checked_mul(sector)?;
            start.checked_add(len).filter(|&end| end <= size)?;
            Some((start, len, n))
        });
        let Some((start, len, sectors)) = range else {
            t.problems.push(Problem::new(
                place,
                Some(entry_offset),
                format!(
                    "LBA {first}..{last} passes the end of the disk ({} sectors): not used",
                    size.checked_div(sector).unwrap_or(0)
                ),
            ));
            continue;
        };
        if first < h.first_usable_lba || last > h.last_usable_lba {
            t.problems.push(Problem::new(
                place.clone(),
                Some(entry_offset),
                format!(
                    "LBA {first}..{last} is outside the usable LBAs {}..{}",
                    h.first_usable_lba, h.last_usable_lba
                ),
            ));
        }
        let kind = slice(e, 0, 16).and_then(guid).unwrap_or_default();
        let units: Vec<u16> = slice(e, PARTITION_NAME.offset, PARTITION_NAME.size)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect();
        t.partitions.push(Partition {
            number,
            start,
            len,
            first_sector: first,
            sectors,
            type_name: gpt_name(&kind),
            role: gpt_role(&kind),
            kind,
            name: Text::from(String::from_utf16_lossy(&units).into_bytes()),
            uuid: slice(e, 16, 16).and_then(guid),
            bootable: false,
            attributes: le64(e, ATTRIBUTES.offset).unwrap_or(0),
            logical: false,
            entry_offset,
        });
    }
}
