//! The steps of opening a VHDX file, in qemu's order (`vhdx_open`): the
//! log's state, the region table, the metadata items, and the geometry
//! they give (block size, sector size, the BAT's length). Each step checks
//! what it reads and names the structure and offset when it refuses.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::Arc;

use crate::block::image::{bytes16, guid_text, read_exact, read_upto};
use crate::block::storage::Storage;
use crate::block::BlockError;

use super::header::{self, Header, Region, BAT_GUID, METADATA_GUID};
use super::metadata::{self, FileParameters, Item, Items};
use super::{corrupt, log, MIB, SECTORS_PER_BITMAP};

/// The refusal of a log that holds writes not yet replayed.
pub(super) fn dirty_log_refusal(path: &str, file_len: u64, d: &log::Dirty) -> BlockError {
    let eof = d
        .past_eof
        .map(|o| {
            format!("; one entry writes at {o:#x}, past the end of the file ({file_len} bytes)")
        })
        .unwrap_or_default();
    BlockError::unsupported(
        path,
        format!(
            "the VHDX log holds {} entr{} not yet replayed (newest: sequence {} at {:#x}){eof}. Its writes belong to the disk: replay them on a copy (qemu-img check -r all COPY), or read the image as it is on disk, without them, with --log-as-is",
            d.entries,
            if d.entries == 1 { "y" } else { "ies" },
            d.sequence,
            d.at
        ),
    )
}

/// The regions of the file: the BAT, the metadata region, and every
/// region with its extent and name (for the BAT check and `facts`).
pub(super) struct Regions {
    pub bat: Region,
    pub meta: Region,
    /// (start, end, name), the header section first.
    pub all: Vec<(u64, u64, &'static str)>,
}

/// Reads the region table: no two regions overlap (nor the log), one BAT,
/// one metadata region, no unknown required region.
pub(super) fn regions(
    storage: &dyn Storage,
    path: &str,
    h: &Header,
) -> Result<Regions, BlockError> {
    let mut all: Vec<(u64, u64, &'static str)> =
        vec![(0, header::HEADER_SECTION, "the header section")];
    if h.log_guid != [0; 16] || h.log_length != 0 {
        all.push((
            h.log_offset,
            h.log_offset.saturating_add(u64::from(h.log_length)),
            "the log",
        ));
    }
    let rt = read_upto(
        storage,
        path,
        "VHDX region table",
        header::REGION_TABLE_AT,
        header::REGION_TABLE_SIZE,
    )?;
    let entries = header::regions(&rt).map_err(|e| {
        corrupt(
            path,
            "VHDX region table",
            header::REGION_TABLE_AT.saturating_add(e.at),
            e.detail,
        )
    })?;
    let (mut bat, mut meta): (Option<Region>, Option<Region>) = (None, None);
    for (i, r) in entries.iter().enumerate() {
        let at = header::REGION_TABLE_AT
            .saturating_add(u64::try_from(i).unwrap_or(0).saturating_mul(32))
            .saturating_add(16);
        let end = r.file_offset.saturating_add(u64::from(r.length));
        let entry_error = |detail: String| corrupt(path, "VHDX region table entry", at, detail);
        if let Some((_, _, what)) = all
            .iter()
            .skip(1)
            .find(|(s, e, _)| r.file_offset < *e && *s < end)
        {
            return Err(entry_error(format!(
                "region {:#x}..{end:#x} overlaps {what}",
                r.file_offset
            )));
        }
        let name = match r.guid {
            BAT_GUID if bat.is_some() => return Err(entry_error("a second BAT region".into())),
            METADATA_GUID if meta.is_some() => {
                return Err(entry_error("a second metadata region".into()))
            }
            BAT_GUID => {
                bat = Some(r.clone());
                "the BAT"
            }
            METADATA_GUID => {
                meta = Some(r.clone());
                "the metadata region"
            }
            _ if r.required => {
                return Err(BlockError::unsupported(
                    path,
                    format!("required VHDX region {}", guid_text(&r.guid)),
                ))
            }
            _ => "a region",
        };
        all.push((r.file_offset, end, name));
    }
    let (Some(bat), Some(meta)) = (bat, meta) else {
        return Err(corrupt(
            path,
            "VHDX region table",
            header::REGION_TABLE_AT,
            "no BAT or no metadata region",
        ));
    };
    Ok(Regions { bat, meta, all })
}

/// The metadata region: its table of items, and reads of each item
/// (bounded by the item's own maximum, and refused outside the region).
pub(super) struct Metadata<'a> {
    storage: Arc<dyn Storage>,
    path: &'a str,
    /// The region's file offset and length.
    pub at: u64,
    len: u64,
    pub items: Items,
}

impl<'a> Metadata<'a> {
    /// Reads and decodes the metadata table at the start of `region`.
    pub fn read(
        storage: Arc<dyn Storage>,
        path: &'a str,
        region: &Region,
    ) -> Result<Metadata<'a>, BlockError> {
        let at = region.file_offset;
        let table = read_upto(
            storage.as_ref(),
            path,
            "VHDX metadata table",
            at,
            metadata::TABLE_MAX,
        )?;
        let items = metadata::items(&table).map_err(|b| {
            if b.unsupported {
                BlockError::unsupported(path, b.detail)
            } else {
                corrupt(
                    path,
                    "VHDX metadata table",
                    at.saturating_add(b.at),
                    b.detail,
                )
            }
        })?;
        Ok(Metadata {
            storage,
            path,
            at,
            len: u64::from(region.length),
            items,
        })
    }

    /// The bytes of one item, at most `max` of them.
    pub fn item(
        &self,
        it: Option<Item>,
        name: &'static str,
        max: u32,
    ) -> Result<Vec<u8>, BlockError> {
        let path = self.path;
        let it = it.ok_or_else(|| {
            corrupt(
                path,
                "VHDX metadata table",
                self.at,
                format!("no {name} item"),
            )
        })?;
        let end = u64::from(it.offset).saturating_add(u64::from(it.length));
        if end > self.len {
            return Err(corrupt(
                path,
                "VHDX metadata table",
                self.at,
                format!(
                    "the {name} item ({:#x}+{}) is outside the metadata region ({} bytes)",
                    it.offset, it.length, self.len
                ),
            ));
        }
        let mut buf = vec![0u8; usize::try_from(it.length.min(max)).unwrap_or(0)];
        read_exact(
            self.storage.as_ref(),
            path,
            name,
            self.at.saturating_add(u64::from(it.offset)),
            &mut buf,
        )?;
        Ok(buf)
    }

    /// A fixed-size item decoded by `decode`; refused, naming the item,
    /// when it is shorter than `width` bytes.
    fn integer<T>(
        &self,
        it: Option<Item>,
        name: &'static str,
        width: u32,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<T, BlockError> {
        decode(&self.item(it, name, width)?).ok_or_else(|| {
            corrupt(
                self.path,
                name,
                self.at,
                format!("item shorter than {width} bytes"),
            )
        })
    }
}

/// What the metadata items say about the disk's shape, checked.
pub(super) struct Geometry {
    pub params: FileParameters,
    pub size: u64,
    pub logical_sector: u64,
    pub physical_sector: u32,
    pub page83: [u8; 16],
    pub block_size: u64,
    /// Data blocks per sector bitmap block.
    pub chunk_ratio: u64,
    pub bat_entries: u64,
}

/// Decodes and checks the geometry items, and that the BAT region can
/// hold the entries the disk needs (qemu's checks, with its messages'
/// facts).
pub(super) fn geometry(meta: &Metadata, path: &str, bat: &Region) -> Result<Geometry, BlockError> {
    let items = &meta.items;
    let params = meta.integer(
        items.file_parameters,
        "VHDX file parameters",
        8,
        FileParameters::decode,
    )?;
    let size = meta.integer(
        items.virtual_disk_size,
        "VHDX virtual disk size",
        8,
        metadata::u64_item,
    )?;
    let logical = meta.integer(
        items.logical_sector,
        "VHDX logical sector size",
        4,
        metadata::u32_item,
    )?;
    let physical_sector =
        metadata::u32_item(&meta.item(items.physical_sector, "VHDX physical sector size", 4)?)
            .unwrap_or(0);
    let page83 = bytes16(&meta.item(items.page83, "VHDX page 83 data", 16)?, 0).unwrap_or([0; 16]);
    let block_size = u64::from(params.block_size);
    if !(MIB..=256 * MIB).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(corrupt(
            path,
            "VHDX file parameters",
            meta.at
                .saturating_add(u64::from(items.file_parameters.map_or(0, |i| i.offset))),
            format!("block size {block_size} is not a power of two from 1 MiB to 256 MiB"),
        ));
    }
    if logical != 512 && logical != 4096 {
        return Err(corrupt(
            path,
            "VHDX logical sector size",
            meta.at,
            format!("{logical}, expected 512 or 4096"),
        ));
    }
    let logical_sector = u64::from(logical);
    if size.checked_rem(logical_sector) != Some(0) || i64::try_from(size).is_err() {
        return Err(corrupt(
            path,
            "VHDX virtual disk size",
            meta.at,
            format!("{size} is not a whole number of {logical}-byte sectors"),
        ));
    }
    let chunk_ratio = SECTORS_PER_BITMAP
        .saturating_mul(logical_sector)
        .checked_div(block_size)
        .unwrap_or(1)
        .max(1);
    let data_blocks = size.div_ceil(block_size);
    let bat_entries = if params.has_parent {
        data_blocks
            .div_ceil(chunk_ratio)
            .saturating_mul(chunk_ratio.saturating_add(1))
    } else if data_blocks == 0 {
        0
    } else {
        data_blocks.saturating_add(
            (data_blocks.saturating_sub(1))
                .checked_div(chunk_ratio)
                .unwrap_or(0),
        )
    };
    if bat_entries.saturating_mul(8) > u64::from(bat.length) {
        return Err(corrupt(
            path,
            "VHDX region table",
            header::REGION_TABLE_AT,
            format!(
                "the BAT region ({} bytes) cannot hold {bat_entries} entries",
                bat.length
            ),
        ));
    }
    Ok(Geometry {
        params,
        size,
        logical_sector,
        physical_sector,
        page83,
        block_size,
        chunk_ratio,
        bat_entries,
    })
}
