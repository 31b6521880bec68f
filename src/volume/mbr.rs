//! The MBR (DOS) partition table: four entries in sector 0, and logical
//! partitions in a chain of extended boot records (EBRs) inside the
//! extended partition.
//!
//! The EBR chain is followed at most [`MAX_LOGICAL`] links, each EBR once
//! (a chain that comes back to an EBR is a loop, reported, not followed);
//! every sector number is checked against the disk before it is read.
use crate::block::{BlockError, BlockSource};
use crate::layout::Field;

use super::bytes::{slice, us};
use super::gpt_types::{mbr_name, mbr_role, Role};
use super::table::{Partition, Problem, Table};
use super::Text;

/// Bytes per sector of an MBR (the format has no field for it; disks with
/// 4096-byte sectors and an MBR are not handled).
pub const SECTOR: u64 = 512;
/// How many logical partitions are read at most.
pub const MAX_LOGICAL: u32 = 128;

/// The 32-bit disk signature.
pub const DISK_SIGNATURE: Field = Field::new("disk_signature", 440, 4, "disk identifier");
/// Where the four entries start.
pub const ENTRIES: usize = 446;
/// `55 AA` at 510.
pub const BOOT_SIGNATURE: Field = Field::new("boot_signature", 510, 2, "0xaa55");

/// One 16-byte partition entry.
pub const STATUS: Field = Field::new("status", 0, 1, "0x80: active (bootable)");
pub const TYPE: Field = Field::new("type", 4, 1, "partition type");
pub const LBA_START: Field = Field::new("lba_start", 8, 4, "first sector");
pub const SECTORS: Field = Field::new("sectors", 12, 4, "number of sectors");
/// The entry's fields, for display.
pub const ENTRY: &[Field] = &[STATUS, TYPE, LBA_START, SECTORS];

/// An entry as read.
#[derive(Clone, Copy, Debug)]
struct Entry {
    status: u64,
    kind: u8,
    start: u64,
    sectors: u64,
}

fn entry(sector: &[u8], i: usize) -> Option<Entry> {
    let at = ENTRIES.checked_add(i.checked_mul(16)?)?;
    let e = slice(sector, at, 16)?;
    let read = |f: Field| f.read(e, crate::layout::Endian::Little);
    Some(Entry {
        status: read(STATUS)?,
        kind: u8::try_from(read(TYPE)?).ok()?,
        start: read(LBA_START)?,
        sectors: read(SECTORS)?,
    })
}

/// True when sector 0 carries a boot signature and four entries that look
/// like a table (status bytes 0 or 0x80): a FAT or NTFS boot sector ends in
/// 55 AA too, with code where the entries would be.
pub fn looks_like_table(sector: &[u8]) -> bool {
    if BOOT_SIGNATURE.read(sector, crate::layout::Endian::Little) != Some(0xaa55) {
        return false;
    }
    (0..4).all(|i| entry(sector, i).is_some_and(|e| e.status == 0 || e.status == 0x80))
}

/// True when one of the four entries is a GPT protective entry (0xEE).
pub fn is_protective(sector: &[u8]) -> bool {
    BOOT_SIGNATURE.read(sector, crate::layout::Endian::Little) == Some(0xaa55)
        && (0..4).any(|i| entry(sector, i).is_some_and(|e| e.kind == 0xee))
}

/// Decodes the table of `sector` (sector 0 of `disk`), following the
/// extended partition's EBR chain.
///
/// # Errors
/// Read errors only; a damaged table is reported in `problems`.
pub fn read(disk: &dyn BlockSource, sector: &[u8]) -> Result<Table, BlockError> {
    let size = disk.len();
    let mut t = Table {
        label: "dos",
        sector_size: SECTOR,
        id: format!(
            "0x{:08x}",
            DISK_SIGNATURE
                .read(sector, crate::layout::Endian::Little)
                .unwrap_or(0)
        ),
        partitions: Vec::new(),
        gpt: None,
        problems: Vec::new(),
    };
    let mut extended_seen = false;
    for i in 0..4usize {
        let Some(e) = entry(sector, i) else { continue };
        if e.kind == 0 || e.sectors == 0 {
            continue;
        }
        let number = u32::try_from(i).unwrap_or(0).saturating_add(1);
        let entry_offset = u64::try_from(ENTRIES.saturating_add(i.saturating_mul(16))).unwrap_or(0);
        push(&mut t, size, number, e, 0, false, entry_offset);
        if mbr_role(e.kind) == Role::Extended {
            if extended_seen {
                t.problems.push(Problem::new(
                    format!("MBR entry {number}"),
                    Some(entry_offset),
                    "a second extended partition: its logical partitions are not read",
                ));
                continue;
            }
            extended_seen = true;
            logical(disk, e, &mut t)?;
        }
    }
    t.check_overlaps();
    Ok(t)
}

/// Adds the partition of entry `e` (whose start counts from sector
/// `base`), if it lies inside the disk.
fn push(
    t: &mut Table,
    size: u64,
    number: u32,
    e: Entry,
    base: u64,
    logical: bool,
    entry_offset: u64,
) {
    let place = format!("dos partition {number}");
    let Some(first) = base.checked_add(e.start) else {
        return;
    };
    let range = first
        .checked_mul(SECTOR)
        .and_then(|s| Some((s, e.sectors.checked_mul(SECTOR)?)))
        .filter(|(s, l)| s.checked_add(*l).is_some_and(|end| end <= size));
    let Some((start, len)) = range else {
        t.problems.push(Problem::new(
            place,
            Some(entry_offset),
            format!(
                "sectors {first}+{} pass the end of the disk ({size} bytes): not used",
                e.sectors
            ),
        ));
        return;
    };
    t.partitions.push(Partition {
        number,
        start,
        len,
        first_sector: first,
        sectors: e.sectors,
        kind: format!("{:x}", e.kind),
        type_name: mbr_name(e.kind),
        name: Text::default(),
        uuid: None,
        bootable: e.status == 0x80,
        attributes: 0,
        logical,
        role: mbr_role(e.kind),
        entry_offset,
    });
}

/// Logical partitions: a chain of EBRs. Each EBR's first entry is a
/// logical partition counted from the EBR's own sector; its second entry
/// links to the next EBR, counted from the start of the extended
/// partition.
fn logical(disk: &dyn BlockSource, ext: Entry, t: &mut Table) -> Result<(), BlockError> {
    let size = disk.len();
    let ext_end = ext.start.saturating_add(ext.sectors);
    let mut next = ext.start;
    let mut seen = std::collections::HashSet::new();
    let mut number = 5u32;
    for _ in 0..MAX_LOGICAL {
        let at = next
            .checked_mul(SECTOR)
            .filter(|a| a.checked_add(SECTOR).is_some_and(|end| end <= size));
        let place = format!("extended boot record at sector {next}");
        let Some(at) = at else {
            t.problems.push(Problem::new(
                place,
                None,
                "outside the disk: the chain stops here",
            ));
            return Ok(());
        };
        if !seen.insert(next) {
            t.problems.push(Problem::new(
                place,
                Some(at),
                "already read: the EBR chain loops; it stops here",
            ));
            return Ok(());
        }
        if next < ext.start || next >= ext_end {
            t.problems.push(Problem::new(
                place.clone(),
                Some(at),
                "outside the extended partition",
            ));
        }
        let mut ebr = vec![0u8; us(SECTOR).unwrap_or(512)];
        disk.read_at(at, &mut ebr)?;
        if BOOT_SIGNATURE.read(&ebr, crate::layout::Endian::Little) != Some(0xaa55) {
            t.problems.push(Problem::new(
                place,
                Some(at),
                "no 55 AA signature: the chain stops here",
            ));
            return Ok(());
        }
        // Linux reads all four entries of an EBR: data entries become
        // logical partitions, an extended entry is the link.
        let mut link = None;
        for i in 0..4usize {
            let Some(e) = entry(&ebr, i) else { continue };
            if e.kind == 0 || e.sectors == 0 {
                continue;
            }
            let entry_offset = at.saturating_add(
                u64::try_from(ENTRIES.saturating_add(i.saturating_mul(16))).unwrap_or(0),
            );
            if mbr_role(e.kind) == Role::Extended {
                link.get_or_insert(e);
                continue;
            }
            push(t, size, number, e, next, true, entry_offset);
            number = number.saturating_add(1);
        }
        match link {
            Some(l) => match ext.start.checked_add(l.start) {
                Some(n) => next = n,
                None => return Ok(()),
            },
            None => return Ok(()),
        }
    }
    t.problems.push(Problem::new(
        "extended partition",
        None,
        format!("more than {MAX_LOGICAL} extended boot records: the rest are not read"),
    ));
    Ok(())
}
