//! The qcow2 internal snapshot table (qcow2.txt, "Snapshots"): what
//! `qemu-img snapshot -l` lists, and the L1 table that reads the disk as
//! it was when each snapshot was taken.
//!
//! Why a decoder of our own beside the header's: the table lives elsewhere
//! in the file, its entries have variable length (extra data, ID and name),
//! and an image states how many there are. Each entry is read on its own,
//! so the cost follows the entries the file really holds, within qemu's
//! own limits (65,536 snapshots, 64 MiB of table, 1 KiB of extra data).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use serde::Serialize;

use crate::block::storage::Storage;
use crate::block::BlockError;
use crate::bytes::u64_of;
use crate::layout::{decode_table, value_of, Endian, Field, Show};

use super::header::Header;

/// qemu's `QCOW_MAX_SNAPSHOTS`.
pub const MAX_SNAPSHOTS: u32 = 65_536;
/// qemu's `QCOW_MAX_SNAPSHOTS_SIZE`: the whole table.
const MAX_TABLE_BYTES: u64 = 64 << 20;
/// qemu's `QCOW_MAX_SNAPSHOT_EXTRA_DATA`.
const MAX_EXTRA: u32 = 1024;
/// qemu's `QCOW_MAX_L1_SIZE` in entries (32 MiB of 8-byte entries).
const MAX_L1_ENTRIES: u32 = 4 << 20;
/// Bytes of the fixed part of an entry.
const FIXED: usize = 40;

/// The fixed part of a snapshot table entry, in file order.
pub const ENTRY: &[Field] = &[
    Field::new(
        "l1_table_offset",
        0,
        8,
        "file offset of the snapshot's L1 table",
    )
    .show(Show::Hex),
    Field::new("l1_size", 8, 4, "entries in the snapshot's L1 table"),
    Field::new("id_str_size", 12, 2, "length of the unique ID string"),
    Field::new("name_size", 14, 2, "length of the snapshot's name"),
    Field::new("date_sec", 16, 4, "when it was taken, seconds since 1970").show(Show::Date),
    Field::new("date_nsec", 20, 4, "when it was taken, the nanoseconds"),
    Field::new("vm_clock_nsec", 24, 8, "guest run time until then, in ns"),
    Field::new(
        "vm_state_size",
        32,
        4,
        "bytes of saved VM state (0: disk only)",
    ),
    Field::new(
        "extra_data_size",
        36,
        4,
        "bytes of extra data after this part",
    ),
];

/// The extra data's known fields (relative to its start); each exists only
/// when `extra_data_size` covers it.
pub const EXTRA: &[Field] = &[
    Field::new(
        "vm_state_size_large",
        0,
        8,
        "bytes of saved VM state (64-bit)",
    ),
    Field::new("disk_size", 8, 8, "the virtual disk size when it was taken"),
    Field::new("icount", 16, 8, "the guest's instruction count (-1: off)"),
];

/// One internal snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub vm_state_size: u64,
    /// The disk size it records (qemu: the image's size when the entry is
    /// too short to say).
    pub disk_size: u64,
    /// `None` where the guest had no instruction counting (or the entry
    /// is too short to say).
    pub icount: Option<u64>,
    /// Where the entry starts in the file.
    pub entry_offset: u64,
}

/// One snapshot as `qemu-img info --output=json` lists it, key for key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icount: Option<u64>,
    pub vm_clock_nsec: u64,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_sec: u64,
    pub id: String,
    pub vm_state_size: u64,
}

impl Snapshot {
    /// The JSON object qemu-img prints for this snapshot.
    pub fn json(&self) -> SnapshotJson {
        SnapshotJson {
            icount: self.icount,
            vm_clock_nsec: self.vm_clock_nsec % 1_000_000_000,
            name: self.name.clone(),
            date_sec: self.date_sec,
            date_nsec: self.date_nsec,
            vm_clock_sec: self.vm_clock_nsec / 1_000_000_000,
            id: self.id.clone(),
            vm_state_size: self.vm_state_size,
        }
    }

    /// Does `wanted` name this snapshot (its ID or its name)?
    pub fn is(&self, wanted: &str) -> bool {
        self.id == wanted || self.name == wanted
    }
}

/// Reads the snapshot table of the image whose header is `header`.
///
/// # Errors
/// `Corrupt` (naming the entry's offset) for a table outside the file or
/// past qemu's limits, or entries that run past the end of the file; read
/// errors.
pub fn read_table(
    path: &str,
    storage: &dyn Storage,
    header: &Header,
) -> Result<Vec<Snapshot>, BlockError> {
    let table = read_entries(path, storage, header);
    table.end.map(|_| table.snapshots)
}

/// The snapshot table as far as it reads: `check` counts the clusters of
/// the entries before a damaged one, where opening a snapshot needs all.
pub struct Table {
    /// The entries in table order, up to the first damaged one.
    pub snapshots: Vec<Snapshot>,
    /// Where the table ends (the padded end of its last entry; the table's
    /// offset when there are none), or why reading stopped.
    pub end: Result<u64, BlockError>,
}

/// Reads the snapshot table entry by entry (see [`Table`]).
pub fn read_entries(path: &str, storage: &dyn Storage, header: &Header) -> Table {
    let mut snapshots = Vec::new();
    let end = entries(path, storage, header, &mut snapshots);
    Table { snapshots, end }
}

/// Appends the table's entries to `out`; returns where the table ends.
fn entries(
    path: &str,
    storage: &dyn Storage,
    header: &Header,
    out: &mut Vec<Snapshot>,
) -> Result<u64, BlockError> {
    let count = header.nb_snapshots;
    let table = header.snapshots_offset;
    if count == 0 {
        return Ok(table);
    }
    let bad =
        |at: u64, detail: String| BlockError::corrupt(path, "qcow2 snapshot table", at, detail);
    if count > MAX_SNAPSHOTS {
        return Err(bad(
            table,
            format!("{count} snapshots, more than qemu's limit of {MAX_SNAPSHOTS}"),
        ));
    }
    if table & header.cluster_size().saturating_sub(1) != 0 {
        return Err(bad(
            table,
            format!("table offset {table:#x} is not cluster-aligned"),
        ));
    }
    let file_len = storage.len();
    let mut pos = table;
    for n in 0..count {
        let at = pos;
        let used = at.saturating_sub(table);
        if used >= MAX_TABLE_BYTES {
            return Err(bad(
                at,
                format!("the table passes qemu's limit of {MAX_TABLE_BYTES} bytes at entry {n}"),
            ));
        }
        let mut fixed = [0u8; FIXED];
        read(path, storage, at, &mut fixed, file_len, n)?;
        let fields = decode_table(ENTRY, &fixed, Endian::Big, 0);
        let get = |name: &str| value_of(&fields, name).unwrap_or(0);
        let get32 = |name: &str| u32::try_from(get(name)).unwrap_or(u32::MAX);
        let extra_size = get32("extra_data_size");
        if extra_size > MAX_EXTRA {
            return Err(bad(
                at,
                format!(
                    "entry {n}: {extra_size} bytes of extra data, more than qemu's {MAX_EXTRA}"
                ),
            ));
        }
        let id_size = get("id_str_size");
        let name_size = get("name_size");
        // At most 1024 + 2 * 65535 bytes: every size above is bounded.
        let var_len = u64::from(extra_size)
            .saturating_add(id_size)
            .saturating_add(name_size);
        let mut var = vec![0u8; usize::try_from(var_len).unwrap_or(0)];
        let var_at = at.saturating_add(u64_of(FIXED));
        read(path, storage, var_at, &mut var, file_len, n)?;
        let (extra, rest) = var.split_at(usize::try_from(extra_size).unwrap_or(0).min(var.len()));
        let (id, name) = rest.split_at(usize::try_from(id_size).unwrap_or(0).min(rest.len()));
        let extra_fields = decode_table(EXTRA, extra, Endian::Big, 0);
        let extra_get = |f: &str| value_of(&extra_fields, f);
        let l1_table_offset = get("l1_table_offset");
        let l1_size = get32("l1_size");
        let icount = extra_get("icount").filter(|&v| v != u64::MAX);
        out.push(Snapshot {
            id: String::from_utf8_lossy(id).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
            l1_table_offset,
            l1_size,
            date_sec: get32("date_sec"),
            date_nsec: get32("date_nsec"),
            vm_clock_nsec: get("vm_clock_nsec"),
            vm_state_size: extra_get("vm_state_size_large").unwrap_or(get("vm_state_size")),
            disk_size: extra_get("disk_size").unwrap_or(header.size),
            icount,
            entry_offset: at,
        });
        // Entries are padded to 8 bytes; each is at least 40 long, so the
        // loop moves on, and the limit above ends it.
        let len = u64_of(FIXED).saturating_add(var_len);
        pos = at
            .saturating_add(len)
            .checked_next_multiple_of(8)
            .unwrap_or(u64::MAX);
    }
    Ok(pos)
}

/// Checks that `snap`'s L1 table can be one: within qemu's limit,
/// cluster-aligned and inside the file (qemu checks it when the snapshot
/// is loaded, not when the table is read, so a damaged entry still lists).
///
/// # Errors
/// `Corrupt`, naming the entry.
pub fn check_l1(
    path: &str,
    snap: &Snapshot,
    header: &Header,
    file_len: u64,
) -> Result<(), BlockError> {
    let bad = |detail: String| {
        BlockError::corrupt(path, "qcow2 snapshot table", snap.entry_offset, detail)
    };
    let (l1_size, l1_table_offset) = (snap.l1_size, snap.l1_table_offset);
    if l1_size > MAX_L1_ENTRIES {
        return Err(bad(format!(
            "snapshot {}: an L1 table of {l1_size} entries, more than qemu's {MAX_L1_ENTRIES}",
            snap.id
        )));
    }
    let l1_end = u64::from(l1_size)
        .saturating_mul(8)
        .checked_add(l1_table_offset);
    if l1_table_offset & header.cluster_size().saturating_sub(1) != 0
        || l1_end.is_none_or(|e| e > file_len)
    {
        return Err(bad(format!(
            "snapshot {}: L1 table at {l1_table_offset:#x} ({l1_size} entries) is unaligned or passes the end of the file ({file_len} bytes)",
            snap.id
        )));
    }
    Ok(())
}

/// Reads `buf` at `at`, naming entry `n` when the file ends first.
fn read(
    path: &str,
    storage: &dyn Storage,
    at: u64,
    buf: &mut [u8],
    file_len: u64,
    n: u32,
) -> Result<(), BlockError> {
    if at
        .checked_add(u64_of(buf.len()))
        .is_none_or(|e| e > file_len)
    {
        return Err(BlockError::corrupt(
            path,
            "qcow2 snapshot table",
            at,
            format!(
                "entry {n} ({} bytes here) passes the end of the file ({file_len} bytes)",
                buf.len()
            ),
        ));
    }
    storage
        .read_exact_at(at, buf)
        .map_err(|e| BlockError::io(path, "reading the snapshot table", at, e))
}
