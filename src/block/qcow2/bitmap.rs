//! qcow2 persistent dirty bitmaps (qcow2.txt, "Bitmaps"): the directory
//! `qemu-img info` lists, and each bitmap's dirty ranges, the ones
//! `nbdinfo --map=qemu:dirty-bitmap:NAME` shows through `qemu-nbd -B`.
//! They are what an incremental backup will copy.
//!
//! Why the cost stays bounded: the directory is at most qemu's 64 MiB and
//! never more than the file; a bitmap table is read in pieces of at most
//! [`TABLE_PIECE`] entries, one data cluster at a time, and the ranges are
//! streamed to the caller, merged, never collected.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use crate::block::storage::Storage;
use crate::block::BlockError;
use crate::bytes::{be64, u64_of, us};
use crate::layout::{decode_table, value_of, Endian, Field, Show};

use super::header::Header;

/// qemu's `QCOW2_MAX_BITMAPS`.
const MAX_BITMAPS: u32 = 65_535;
/// qemu's `QCOW2_MAX_BITMAP_DIRECTORY_SIZE`.
const MAX_DIRECTORY: u64 = 64 << 20;
/// qemu's `BME_MAX_NAME_SIZE`.
const MAX_NAME: u64 = 1023;
/// qemu's `BME_MIN_GRANULARITY_BITS` and `BME_MAX_GRANULARITY_BITS`.
const GRANULARITY_BITS: std::ops::RangeInclusive<u32> = 9..=31;
/// Bitmap table entries read at once.
const TABLE_PIECE: u64 = 4096;
/// Entry bits 9-55: the data cluster's offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Entry bit 0 with no offset: the cluster reads as all ones.
const ALL_ONES: u64 = 1;
/// Bits a table entry must leave clear (qemu's
/// `BME_TABLE_ENTRY_RESERVED_MASK`).
const RESERVED: u64 = 0xff00_0000_0000_01fe;

/// A bitmap directory entry's fixed part, in file order.
pub const ENTRY: &[Field] = &[
    Field::new(
        "bitmap_table_offset",
        0,
        8,
        "file offset of the bitmap table",
    )
    .show(Show::Hex),
    Field::new("bitmap_table_size", 8, 4, "entries in the bitmap table"),
    Field::new("flags", 12, 4, "in_use, auto, extra_data_compatible").show(Show::Bits(&[
        (1, "in_use"),
        (2, "auto"),
        (4, "extra_data_compatible"),
    ])),
    Field::new("type", 16, 1, "1: dirty tracking bitmap"),
    Field::new(
        "granularity_bits",
        17,
        1,
        "log2 of the bytes one bit covers",
    ),
    Field::new("name_size", 18, 2, "length of the name"),
    Field::new(
        "extra_data_size",
        20,
        4,
        "bytes of extra data after this part",
    ),
];
const FIXED: usize = 24;

/// One persistent bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    pub name: String,
    pub table_offset: u64,
    pub table_size: u32,
    /// Bit 0 in use (qemu had it open: its content is not to be trusted),
    /// bit 1 auto (enabled: tracks writes).
    pub flags: u32,
    pub granularity_bits: u32,
    /// Where its directory entry is in the file.
    pub entry_offset: u64,
}

impl Bitmap {
    /// Bytes one bit covers.
    pub fn granularity(&self) -> u64 {
        1u64 << self.granularity_bits.min(63)
    }

    /// qemu was writing to it and never closed it: not usable.
    pub fn in_use(&self) -> bool {
        self.flags & 1 != 0
    }

    /// The JSON object `qemu-img info` prints for it.
    pub fn json(&self) -> serde_json::Value {
        let mut flags = Vec::new();
        if self.in_use() {
            flags.push("in-use");
        }
        if self.flags & 2 != 0 {
            flags.push("auto");
        }
        serde_json::json!({"flags": flags, "name": self.name, "granularity": self.granularity()})
    }
}

/// Reads the bitmap directory: none when the image has no bitmaps, or
/// when the header says they are inconsistent (as qemu ignores them).
///
/// # Errors
/// `Corrupt`, naming the structure and offset, for a directory past
/// qemu's limits or the file, or an entry that runs past it.
pub fn read_directory(
    path: &str,
    storage: &dyn Storage,
    header: &Header,
) -> Result<Vec<Bitmap>, BlockError> {
    let Some((count, size, offset)) = header.bitmaps_extension else {
        return Ok(Vec::new());
    };
    if !header.bitmaps_consistent {
        return Ok(Vec::new());
    }
    let bad =
        |at: u64, detail: String| BlockError::corrupt(path, "qcow2 bitmap directory", at, detail);
    if count == 0 || count > MAX_BITMAPS || size > MAX_DIRECTORY {
        return Err(bad(
            offset,
            format!("{count} bitmaps in a {size}-byte directory: past qemu's limits ({MAX_BITMAPS}, {MAX_DIRECTORY} bytes)"),
        ));
    }
    let file_len = storage.len();
    if offset & header.cluster_size().saturating_sub(1) != 0
        || offset.checked_add(size).is_none_or(|e| e > file_len)
    {
        return Err(bad(
            offset,
            format!("the {size}-byte directory at {offset:#x} is unaligned or passes the end of the file ({file_len} bytes)"),
        ));
    }
    let mut dir = vec![0u8; us(size)];
    storage
        .read_exact_at(offset, &mut dir)
        .map_err(|e| BlockError::io(path, "reading the bitmap directory", offset, e))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for n in 0..count {
        let entry_offset = offset.saturating_add(u64_of(at));
        let fixed = dir.get(at..).and_then(|d| d.get(..FIXED)).ok_or_else(|| {
            bad(
                entry_offset,
                format!("entry {n} passes the end of the directory"),
            )
        })?;
        let fields = decode_table(ENTRY, fixed, Endian::Big, 0);
        let get = |name: &str| value_of(&fields, name).unwrap_or(0);
        let granularity_bits = u32::try_from(get("granularity_bits")).unwrap_or(u32::MAX);
        let name_size = get("name_size");
        let extra = get("extra_data_size");
        if name_size > MAX_NAME || !GRANULARITY_BITS.contains(&granularity_bits) {
            return Err(bad(
                entry_offset,
                format!("entry {n}: a {name_size}-byte name or granularity 2^{granularity_bits}, past qemu's limits"),
            ));
        }
        let name_at = us(u64_of(FIXED).saturating_add(extra));
        let name = dir
            .get(at..)
            .and_then(|d| d.get(name_at..))
            .and_then(|d| d.get(..us(name_size)))
            .ok_or_else(|| {
                bad(
                    entry_offset,
                    format!("entry {n}: its name passes the end of the directory"),
                )
            })?;
        out.push(Bitmap {
            name: String::from_utf8_lossy(name).into_owned(),
            table_offset: get("bitmap_table_offset"),
            table_size: u32::try_from(get("bitmap_table_size")).unwrap_or(u32::MAX),
            flags: u32::try_from(get("flags")).unwrap_or(u32::MAX),
            granularity_bits,
            entry_offset,
        });
        // Entries are padded to 8 bytes and at least 24 long: `at` grows.
        at = at
            .saturating_add(name_at)
            .saturating_add(us(name_size))
            .checked_next_multiple_of(8)
            .unwrap_or(usize::MAX);
    }
    Ok(out)
}

/// Calls `each(offset, length, dirty)` for the runs of `bitmap` over a
/// disk of `disk_size` bytes, in order, merged, covering the whole disk.
///
/// # Errors
/// `Corrupt` for a bitmap table that is too small for the disk, lies
/// outside the file or points outside it; an `in use` bitmap (qemu
/// refuses to export one); read errors; errors from `each`.
pub fn dirty_runs(
    path: &str,
    storage: &dyn Storage,
    header: &Header,
    bitmap: &Bitmap,
    disk_size: u64,
    each: &mut dyn FnMut(u64, u64, bool) -> Result<(), BlockError>,
) -> Result<(), BlockError> {
    let bad = |at: u64, detail: String| BlockError::corrupt(path, "qcow2 bitmap table", at, detail);
    if bitmap.in_use() {
        return Err(BlockError::unsupported(
            path,
            format!(
                "bitmap {:?} is in use (qemu did not close it): its content cannot be trusted",
                bitmap.name
            ),
        ));
    }
    let cluster = header.cluster_size();
    let gran = bitmap.granularity();
    // Bits in one data cluster, and the guest bytes they cover.
    let bits_per_cluster = cluster.saturating_mul(8);
    let span = bits_per_cluster.saturating_mul(gran);
    let needed = disk_size.div_ceil(span.max(1));
    let file_len = storage.len();
    let table_bytes = u64::from(bitmap.table_size).saturating_mul(8);
    if u64::from(bitmap.table_size) < needed
        || bitmap.table_offset & cluster.saturating_sub(1) != 0
        || bitmap
            .table_offset
            .checked_add(table_bytes)
            .is_none_or(|e| e > file_len)
    {
        return Err(bad(
            bitmap.entry_offset,
            format!(
                "bitmap {:?}: a table of {} entries at {:#x} (the disk needs {needed}) is too small, unaligned or past the end of the file ({file_len} bytes)",
                bitmap.name, bitmap.table_size, bitmap.table_offset
            ),
        ));
    }
    let mut runs = Merger::new(each);
    let mut data = vec![0u8; us(cluster)];
    let mut piece = Vec::new();
    let mut index = 0u64;
    while index < needed {
        let count = (needed.saturating_sub(index)).min(TABLE_PIECE);
        piece.resize(us(count.saturating_mul(8)), 0);
        let at = bitmap.table_offset.saturating_add(index.saturating_mul(8));
        storage
            .read_exact_at(at, &mut piece)
            .map_err(|e| BlockError::io(path, "reading a bitmap table", at, e))?;
        for k in 0..count {
            let entry = be64(&piece, us(k.saturating_mul(8))).unwrap_or(0);
            let i = index.saturating_add(k);
            let start = i.saturating_mul(span);
            let end = start.saturating_add(span).min(disk_size);
            let host = entry & OFFSET_MASK;
            // qemu's `check_table_entry`: it refuses the image for these.
            if entry & RESERVED != 0
                || (host != 0 && (entry & ALL_ONES != 0 || host & cluster.saturating_sub(1) != 0))
            {
                return Err(bad(
                    at.saturating_add(k.saturating_mul(8)),
                    format!(
                        "bitmap {:?}: table entry {i} ({entry:#x}) has reserved bits, or both a data cluster and the all-ones flag, or an unaligned cluster",
                        bitmap.name
                    ),
                ));
            }
            if host == 0 {
                runs.push(start, end.saturating_sub(start), entry & ALL_ONES != 0)?;
                continue;
            }
            if host.checked_add(cluster).is_none_or(|e| e > file_len) {
                return Err(bad(
                    at.saturating_add(k.saturating_mul(8)),
                    format!(
                        "bitmap {:?}: data cluster {host:#x} passes the end of the file",
                        bitmap.name
                    ),
                ));
            }
            storage
                .read_exact_at(host, &mut data)
                .map_err(|e| BlockError::io(path, "reading a bitmap data cluster", host, e))?;
            // qcow2.txt: bit j of byte i is bit 8i + j (least significant
            // first) of the bitmap.
            let mut pos = start;
            for &byte in &data {
                if pos >= end {
                    break;
                }
                if byte == 0 || byte == 0xff {
                    // Eight bits alike: one run (the common case).
                    let len = gran.saturating_mul(8).min(end.saturating_sub(pos));
                    runs.push(pos, len, byte != 0)?;
                    pos = pos.saturating_add(len);
                    continue;
                }
                for bit in 0..8u32 {
                    if pos >= end {
                        break;
                    }
                    let len = gran.min(end.saturating_sub(pos));
                    runs.push(pos, len, byte >> bit & 1 != 0)?;
                    pos = pos.saturating_add(len);
                }
            }
        }
        index = index.saturating_add(count);
    }
    runs.finish()
}

/// Merges adjacent runs of the same state before handing them on.
struct Merger<'a> {
    each: &'a mut dyn FnMut(u64, u64, bool) -> Result<(), BlockError>,
    open: Option<(u64, u64, bool)>,
}

impl<'a> Merger<'a> {
    fn new(each: &'a mut dyn FnMut(u64, u64, bool) -> Result<(), BlockError>) -> Self {
        Merger { each, open: None }
    }

    fn push(&mut self, offset: u64, len: u64, dirty: bool) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        match &mut self.open {
            Some((_, l, d)) if *d == dirty => *l = l.saturating_add(len),
            open => {
                if let Some((o, l, d)) = open.replace((offset, len, dirty)) {
                    (self.each)(o, l, d)?;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), BlockError> {
        if let Some((o, l, d)) = self.open.take() {
            (self.each)(o, l, d)?;
        }
        Ok(())
    }
}
