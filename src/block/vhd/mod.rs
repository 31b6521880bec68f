//! A read-only VHD ("vpc") reader: fixed, dynamic and differencing disks.
//!
//! Fixed and dynamic disks read exactly as qemu's block/vpc.c reads them:
//! the size from the CHS geometry or the footer's current size (by creator
//! application, see [`footer::Footer::size_sectors`]), a dynamic block is
//! read whole once allocated (qemu ignores the sector bitmaps), and
//! `block_status` answers like `vpc_co_block_status`, so `map --json`
//! equals `qemu-img map -f vpc`.
//!
//! qemu does not know differencing disks (it reads them as dynamic disks
//! with no parent). Here they follow the VHD specification: the parent is
//! found through the parent locators (relative `W2ru` first, then the
//! parent's file name, then absolute locators by their file name) and must
//! carry the footer unique ID the child records; each sector of an
//! allocated block comes from this file when its bitmap bit is set
//! (most significant bit first), else from the parent.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::image::{
    held_by, read_exact, read_upto, uuid_text, FormatLayer, ImageInfo, ParentRef, Piece, PlainMap,
};
use crate::block::storage::Storage;
use crate::block::table::{Entry, Table};
use crate::block::{BlockError, BlockSource, Extent};

pub mod footer;

use footer::{DynamicHeader, Footer, MAX_SECTORS, TYPE_DIFFERENCING};

/// A BAT entry of a block that is not stored.
const UNALLOCATED: u64 = 0xffff_ffff;
/// Longest parent locator read (UTF-16 paths of Windows' 32 Ki limit).
const MAX_LOCATOR: u64 = 64 << 10;
/// Sector bitmaps kept in memory.
const BITMAP_CACHE: usize = 64;

/// What kind of VHD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhdKind {
    Fixed,
    Dynamic,
    Differencing,
}

/// The block structures of a dynamic or differencing disk.
struct Blocks {
    header: DynamicHeader,
    /// Where the dynamic header is.
    header_at: u64,
    block_size: u64,
    bitmap_size: u64,
    bat: Table,
    bitmaps: Mutex<LruCache<u64, Arc<[u8]>>>,
}

/// A VHD image.
pub struct VhdImage {
    path: String,
    storage: Arc<dyn Storage>,
    footer: Footer,
    /// The footer was found at the end of the file only (a fixed disk).
    footer_at_end: bool,
    kind: VhdKind,
    size: u64,
    size_by_chs: bool,
    blocks: Option<Blocks>,
    parent: Option<ParentRef>,
}

impl VhdImage {
    /// Opens a VHD image.
    ///
    /// # Errors
    /// `Corrupt` naming the structure and offset (a bad checksum, a BAT
    /// past the end of the file, a truncated image), `Unsupported` for
    /// disks over 2040 GiB.
    pub fn open(path: &str, storage: Arc<dyn Storage>) -> Result<VhdImage, BlockError> {
        let file_len = storage.len();
        let head = read_upto(storage.as_ref(), path, "VHD footer", 0, 512)?;
        let (raw, at, at_end) = if head.starts_with(footer::COOKIE) && head.len() == 512 {
            (head, 0, false)
        } else {
            let at = file_len.checked_sub(512).ok_or_else(|| {
                BlockError::corrupt(path, "VHD footer", 0, "file too small for a VHD footer")
            })?;
            let tail = read_upto(storage.as_ref(), path, "VHD footer", at, 512)?;
            if !tail.starts_with(footer::COOKIE) {
                return Err(BlockError::corrupt(
                    path,
                    "VHD footer",
                    at,
                    "no conectix cookie at the start or the end (invalid VPC image)",
                ));
            }
            (tail, at, true)
        };
        let f = Footer::decode(&raw)
            .ok_or_else(|| BlockError::corrupt(path, "VHD footer", at, "truncated"))?;
        if f.checksum != f.computed_checksum {
            return Err(BlockError::corrupt(
                path,
                "VHD footer",
                at.saturating_add(64),
                format!(
                    "checksum {:#010x}, the footer's bytes give {:#010x} (incorrect header checksum)",
                    f.checksum, f.computed_checksum
                ),
            ));
        }
        let (sectors, by_chs) = f.size_sectors();
        if sectors > MAX_SECTORS {
            return Err(BlockError::unsupported(
                path,
                format!("VHD of {sectors} sectors, more than qemu's 2040 GiB"),
            ));
        }
        let size = sectors.saturating_mul(512);
        // Like qemu, the place of the footer decides: a copy at the start
        // means a dynamic (or differencing) disk.
        let kind = match (at_end, f.disk_type) {
            (true, _) => VhdKind::Fixed,
            (false, TYPE_DIFFERENCING) => VhdKind::Differencing,
            (false, _) => VhdKind::Dynamic,
        };
        let mut img = VhdImage {
            path: path.to_owned(),
            storage: Arc::clone(&storage),
            footer: f,
            footer_at_end: at_end,
            kind,
            size,
            size_by_chs: by_chs,
            blocks: None,
            parent: None,
        };
        if kind != VhdKind::Fixed {
            img.blocks = Some(img.open_blocks()?);
        }
        if kind == VhdKind::Differencing {
            img.parent = Some(img.parent_ref()?);
        }
        Ok(img)
    }

    /// Reads and checks the dynamic header and the BAT (qemu's checks).
    fn open_blocks(&self) -> Result<Blocks, BlockError> {
        let path = &self.path;
        let at = self.footer.data_offset;
        let raw = read_upto(self.storage.as_ref(), path, "VHD dynamic header", at, 1024)?;
        let h = DynamicHeader::decode(&raw).ok_or_else(|| {
            BlockError::corrupt(
                path,
                "VHD dynamic header",
                at,
                "no cxsparse cookie (invalid header magic)",
            )
        })?;
        let bad = |field: u64, detail: String| {
            BlockError::corrupt(path, "VHD dynamic header", at.saturating_add(field), detail)
        };
        let block_size = u64::from(h.block_size);
        if !block_size.is_power_of_two() || block_size < 512 {
            return Err(bad(
                32,
                format!("block size {block_size} is not a power of two of at least 512"),
            ));
        }
        let bitmap_size = (block_size / 4096).saturating_add(511) & !511;
        let blocks_needed = self.size.checked_div(block_size).unwrap_or(0);
        if blocks_needed > 0xffff_ffff {
            return Err(bad(28, "too many blocks".into()));
        }
        let entries = u64::from(h.max_table_entries);
        if entries.saturating_mul(block_size) < self.size {
            return Err(bad(
                28,
                format!("{entries} BAT entries of {block_size} bytes cannot hold {} bytes (page table too small)", self.size),
            ));
        }
        if entries > u64::from(i32::MAX.unsigned_abs() / 4) {
            return Err(bad(28, format!("max table entries too large ({entries})")));
        }
        let bat = Table::new(
            Arc::clone(&self.storage),
            path,
            "VHD block allocation table",
            h.table_offset,
            entries,
            Entry::Be32,
        )?;
        self.check_blocks_in_file(&h, block_size, bitmap_size)?;
        Ok(Blocks {
            header_at: at,
            block_size,
            bitmap_size,
            bat,
            bitmaps: Mutex::new(crate::lazy_lru::bounded(BITMAP_CACHE)),
            header: h,
        })
    }

    /// qemu's truncation check: every allocated block must end inside the
    /// file. The BAT is scanned in chunks (its size is bounded by the
    /// file's, which Table::new checked).
    fn check_blocks_in_file(
        &self,
        h: &DynamicHeader,
        block_size: u64,
        bitmap_size: u64,
    ) -> Result<(), BlockError> {
        let file_len = self.storage.len();
        let entries = u64::from(h.max_table_entries);
        let chunk = 64u64 << 10;
        let mut index = 0u64;
        while index < entries {
            let n = (entries.saturating_sub(index)).min(chunk);
            let at = h.table_offset.saturating_add(index.saturating_mul(4));
            let mut buf = vec![0u8; usize::try_from(n.saturating_mul(4)).unwrap_or(0)];
            read_exact(
                self.storage.as_ref(),
                &self.path,
                "VHD block allocation table",
                at,
                &mut buf,
            )?;
            for (i, e) in buf.chunks_exact(4).enumerate() {
                let entry = u64::from(u32::from_be_bytes(e.try_into().unwrap_or([0xff; 4])));
                if entry == UNALLOCATED {
                    continue;
                }
                let end = entry
                    .saturating_mul(512)
                    .saturating_add(bitmap_size)
                    .saturating_add(block_size);
                if end > file_len {
                    let i = index.saturating_add(u64::try_from(i).unwrap_or(0));
                    return Err(BlockError::corrupt(
                        &self.path,
                        "VHD BAT entry",
                        h.table_offset.saturating_add(i.saturating_mul(4)),
                        format!(
                            "block {i} at sector {entry} ends at {end:#x}, past the end of the file ({file_len} bytes): the image has been truncated"
                        ),
                    ));
                }
            }
            index = index.saturating_add(n);
        }
        Ok(())
    }

    /// The parent, from the dynamic header of a differencing disk.
    fn parent_ref(&self) -> Result<ParentRef, BlockError> {
        let b = self.blocks.as_ref().ok_or_else(|| BlockError::Internal {
            what: "differencing VHD without blocks".into(),
        })?;
        let h = &b.header;
        let mut names = Vec::new();
        let mut display = None;
        // Relative locators first, then the stored file name, then the
        // absolute ones by their last component.
        let mut with_name: Vec<(u8, String, String)> = Vec::new();
        for l in &h.locators {
            let len = u64::from(l.data_length).min(MAX_LOCATOR);
            if len == 0 {
                continue;
            }
            let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
            read_exact(
                self.storage.as_ref(),
                &self.path,
                "VHD parent locator",
                l.data_offset,
                &mut data,
            )?;
            if let Some((text, local)) = footer::locator_path(&l.platform, &data) {
                let rank = match &l.platform {
                    b"W2ru" | b"Wi2r" => 0,
                    b"MacX" => 2,
                    _ => 3,
                };
                with_name.push((rank, text, local));
            }
        }
        if !h.parent_name.is_empty() {
            with_name.push((1, h.parent_name.clone(), h.parent_name.clone()));
        }
        with_name.sort_by_key(|(rank, ..)| *rank);
        for (_, text, local) in with_name {
            display.get_or_insert(text);
            if !names.contains(&local) {
                names.push(local);
            }
        }
        Ok(ParentRef {
            display: display.unwrap_or_else(|| format!("(parent {})", uuid_text(&h.parent_uuid))),
            names,
            format: Some(crate::block::probe::Format::Vpc),
            identity: Some(h.parent_uuid),
            search_siblings: false,
        })
    }

    /// The sector bitmap of block `index` stored at `host` (sector offset
    /// of the block in bytes).
    fn bitmap(&self, b: &Blocks, index: u64, host: u64) -> Result<Arc<[u8]>, BlockError> {
        let mut cache = b.bitmaps.lock().map_err(|_| poisoned())?;
        if let Some(m) = cache.get(&index) {
            return Ok(Arc::clone(m));
        }
        let mut raw = vec![0u8; usize::try_from(b.bitmap_size).unwrap_or(0)];
        read_exact(
            self.storage.as_ref(),
            &self.path,
            "VHD block bitmap",
            host,
            &mut raw,
        )?;
        let m: Arc<[u8]> = raw.into();
        cache.put(index, Arc::clone(&m));
        Ok(m)
    }

    /// What `[offset, end)` maps to, for as long as it stays the same.
    fn run(&self, offset: u64, end: u64) -> Result<(Piece, u64), BlockError> {
        let Some(b) = &self.blocks else {
            return Ok((
                Piece::Data {
                    file: 0,
                    host: offset,
                },
                end.saturating_sub(offset),
            ));
        };
        let bs = b.block_size;
        let index = offset.checked_div(bs).unwrap_or(0);
        let in_block = offset.checked_rem(bs).unwrap_or(0);
        let block_end = offset.saturating_add(bs.saturating_sub(in_block)).min(end);
        let entry = b.bat.get(index)?.unwrap_or(UNALLOCATED);
        if entry == UNALLOCATED {
            let piece = match self.kind {
                VhdKind::Differencing => Piece::Unallocated,
                _ => Piece::Zero,
            };
            // Unallocated blocks merge, as in vpc_co_block_status.
            let mut pos = block_end;
            while pos < end {
                let i = pos.checked_div(bs).unwrap_or(0);
                if b.bat.get(i)?.unwrap_or(UNALLOCATED) != UNALLOCATED {
                    break;
                }
                pos = pos.saturating_add(bs).min(end);
            }
            return Ok((piece, pos.saturating_sub(offset)));
        }
        let block_at = entry.saturating_mul(512);
        self.check_block(b, index, block_at)?;
        let data = block_at.saturating_add(b.bitmap_size);
        if self.kind != VhdKind::Differencing {
            return Ok((
                Piece::Data {
                    file: 0,
                    host: data.saturating_add(in_block),
                },
                block_end.saturating_sub(offset),
            ));
        }
        let bitmap = self.bitmap(b, index, block_at)?;
        // MSB first: bit 7 of byte 0 is the block's first sector.
        let bit = |sector: u64| -> bool {
            let byte = usize::try_from(sector / 8).unwrap_or(usize::MAX);
            let shift = 7u64.saturating_sub(sector % 8);
            bitmap.get(byte).is_some_and(|v| (v >> shift) & 1 == 1)
        };
        let first = bit(in_block / 512);
        let mut pos = offset;
        while pos < block_end {
            let rel = pos.saturating_sub(offset).saturating_add(in_block);
            if bit(rel / 512) != first {
                break;
            }
            pos = pos
                .saturating_add(512u64.saturating_sub(pos % 512))
                .min(block_end);
        }
        let piece = if first {
            Piece::Data {
                file: 0,
                host: data.saturating_add(in_block),
            }
        } else {
            Piece::Unallocated
        };
        Ok((piece, pos.saturating_sub(offset)))
    }

    /// A block must lie inside the file and clear of the dynamic header
    /// and the BAT.
    fn check_block(&self, b: &Blocks, index: u64, at: u64) -> Result<(), BlockError> {
        let end = at
            .saturating_add(b.bitmap_size)
            .saturating_add(b.block_size);
        let bat_start = b.header.table_offset;
        let bat_end = bat_start.saturating_add(b.bat.len().saturating_mul(4));
        let header_end = b.header_at.saturating_add(1024);
        let overlaps = |s: u64, e: u64| at < e && s < end;
        let what = if overlaps(bat_start, bat_end) {
            Some("the block allocation table")
        } else if overlaps(b.header_at, header_end) || at < 512 {
            Some("the footer copy and dynamic header")
        } else if end > self.storage.len() {
            Some("the end of the file")
        } else {
            None
        };
        match what {
            None => Ok(()),
            Some(what) => Err(BlockError::corrupt(
                &self.path,
                "VHD BAT entry",
                b.bat.entry_offset(index),
                format!("block {index} at {at:#x}..{end:#x} overlaps {what}"),
            )),
        }
    }

    /// The kind of VHD.
    pub fn kind(&self) -> VhdKind {
        self.kind
    }

    /// Opens the image as a chain layer.
    ///
    /// # Errors
    /// As [`VhdImage::open`].
    pub fn layer(path: &str, storage: Arc<dyn Storage>) -> Result<FormatLayer, BlockError> {
        let img = Arc::new(VhdImage::open(path, storage)?);
        Ok(FormatLayer {
            parent: img.parent.clone(),
            identity: Some(img.footer.uuid),
            source: img.clone(),
            info: img,
        })
    }
}

/// The footer unique ID of a VHD file (what a child names it by).
pub fn identity(storage: &dyn Storage) -> Option<[u8; 16]> {
    let head = read_upto(storage, "", "VHD footer", 0, 512).ok()?;
    if let Some(f) = Footer::decode(&head) {
        return Some(f.uuid);
    }
    let at = storage.len().checked_sub(512)?;
    Footer::decode(&read_upto(storage, "", "VHD footer", at, 512).ok()?).map(|f| f.uuid)
}

fn poisoned() -> BlockError {
    BlockError::Internal {
        what: "a VHD cache lock was poisoned".into(),
    }
}

impl VhdImage {
    /// The map as plain runs of the file, for the [`BlockSource`] methods.
    fn plain(&self) -> PlainMap<'_, impl Fn(u64, u64) -> Result<(Piece, u64), BlockError> + '_> {
        PlainMap {
            storage: self.storage.as_ref(),
            path: &self.path,
            size: self.size,
            recurse: self.kind == VhdKind::Fixed,
            run: |pos, end| self.run(pos, end),
        }
    }
}

impl BlockSource for VhdImage {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        // A fixed disk's data may stop short of its size: zeros, as qemu
        // reads past the end of a file (qemu: fixed disks answer
        // BDRV_BLOCK_RECURSE).
        self.plain().read_at("reading a VHD block", offset, buf)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        self.plain().block_status(offset, len)
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        self.plain().locate(offset, len)
    }

    fn stored(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<crate::block::HostRun<'_>>, BlockError> {
        self.plain().stored(offset, len)
    }

    fn locate_exact(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        self.plain().locate_exact(offset, len)
    }
}

impl ImageInfo for VhdImage {
    fn cluster_size(&self) -> Option<u64> {
        // qemu's vpc_get_info: the block size, except for fixed disks.
        self.blocks.as_ref().map(|b| b.block_size)
    }

    fn summary(&self) -> String {
        let kind = match self.kind {
            VhdKind::Fixed => "fixed",
            VhdKind::Dynamic => "dynamic",
            VhdKind::Differencing => "differencing",
        };
        match &self.blocks {
            Some(b) => format!("VHD {kind}, {} blocks", crate::units::human(b.block_size)),
            None => format!("VHD {kind}"),
        }
    }

    fn facts(&self) -> Vec<(String, String)> {
        let f = &self.footer;
        let app = String::from_utf8_lossy(&f.creator_app).into_owned();
        let os = String::from_utf8_lossy(&f.creator_os).into_owned();
        let mut v = vec![
            (
                "creator".to_owned(),
                format!(
                    "{app:?} {}.{} on {os:?}",
                    f.creator_version >> 16,
                    f.creator_version & 0xffff
                ),
            ),
            (
                "size from".to_owned(),
                if self.size_by_chs {
                    format!(
                        "CHS geometry {}/{}/{} (current size says {} bytes)",
                        f.cylinders, f.heads, f.sectors, f.current_size
                    )
                } else {
                    format!(
                        "current size (CHS {}/{}/{} gives {} bytes)",
                        f.cylinders,
                        f.heads,
                        f.sectors,
                        f.chs_sectors().saturating_mul(512)
                    )
                },
            ),
            ("unique ID".to_owned(), uuid_text(&f.uuid)),
        ];
        if self.footer_at_end {
            v.push((
                "footer".to_owned(),
                "at the end only (qemu probes such a file as raw; give -f vpc to qemu)".to_owned(),
            ));
        }
        if f.saved_state {
            v.push(("saved state".to_owned(), "yes".to_owned()));
        }
        if let Some(b) = &self.blocks {
            let h = &b.header;
            if let Some(c) = h.computed_checksum.filter(|&c| c != h.checksum) {
                v.push((
                    "header sum".to_owned(),
                    format!("BAD: stored {:#010x}, computed {c:#010x}", h.checksum),
                ));
            }
            if self.kind == VhdKind::Differencing {
                v.push(("parent ID".to_owned(), uuid_text(&h.parent_uuid)));
                if !h.parent_name.is_empty() {
                    v.push(("parent name".to_owned(), h.parent_name.clone()));
                }
                for l in &h.locators {
                    v.push((
                        "locator".to_owned(),
                        format!(
                            "{} at {:#x}, {} bytes",
                            String::from_utf8_lossy(&l.platform),
                            l.data_offset,
                            l.data_length
                        ),
                    ));
                }
            }
        }
        v
    }

    fn actual_size(&self) -> Option<u64> {
        self.storage.allocated_size()
    }

    fn held_bytes(&self) -> Result<u64, BlockError> {
        held_by(self)
    }
}
