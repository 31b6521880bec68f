//! A read-only VHDX reader: dynamic, fixed and differencing disks
//! (Hyper-V checkpoints, `.avhdx`).
//!
//! Opening follows qemu's block/vhdx.c: the current header, the metadata
//! log (a log holding valid entries is refused, see [`log`], unless the
//! caller asks to read the image as it is on disk), the region table, the
//! metadata items and the BAT, whose entries are checked against the file
//! and the other regions. Reads give what qemu gives for dynamic and fixed
//! disks. qemu refuses differencing disks; here they follow MS-VHDX: the
//! parent is found by the locator's `relative_path` (then by the file names
//! of its absolute paths) and must carry the child's `parent_linkage` as
//! its data write GUID; a partially present block takes each sector from
//! this file when its sector bitmap bit is set (bit 0 of byte 0 first),
//! else from the parent.
//!
//! qemu's vhdx driver has no block status, so `qemu-img map` calls the
//! whole disk data; [`BlockSource::qemu_status`] says the same for
//! `map --json`, while `map` and the hit map see the real blocks.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::block::image::{
    guid_text, held_by, parse_guid, read_exact, read_runs, read_upto, utf16, FormatLayer,
    ImageInfo, ParentRef, Piece,
};
use crate::block::storage::Storage;
use crate::block::table::{Entry, Table};
use crate::block::{check_range, BlockError, BlockSource, Extent, Status};

pub mod header;
pub mod log;
pub mod metadata;
mod open;

use header::Header;
use metadata::{FileParameters, ParentLocator};

/// BAT entry states.
const NOT_PRESENT: u64 = 0;
const UNDEFINED: u64 = 1;
const ZERO: u64 = 2;
const UNMAPPED: u64 = 3;
const UNMAPPED_V095: u64 = 5;
const FULLY_PRESENT: u64 = 6;
const PARTIALLY_PRESENT: u64 = 7;
const SB_PRESENT: u64 = 6;
/// The file offset bits of a BAT entry (whole MiB).
const OFFSET_MASK: u64 = 0xffff_ffff_fff0_0000;
const MIB: u64 = 1 << 20;
/// Sectors one sector bitmap block describes (2^23).
const SECTORS_PER_BITMAP: u64 = 1 << 23;
/// Pages of sector bitmaps kept in memory.
const BITMAP_PAGES: usize = 64;
/// Longest parent locator read.
const MAX_LOCATOR: u32 = 64 << 10;

/// How to open a VHDX image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Read an image whose log needs replaying as it is on disk (the
    /// log's writes left out) instead of refusing it.
    pub log_as_is: bool,
}

/// A VHDX image.
pub struct VhdxImage {
    path: String,
    storage: Arc<dyn Storage>,
    creator: String,
    header: Header,
    header_index: usize,
    dirty_log: Option<log::Dirty>,
    params: FileParameters,
    size: u64,
    logical_sector: u64,
    physical_sector: u32,
    page83: [u8; 16],
    block_size: u64,
    chunk_ratio: u64,
    bat: Table,
    /// Header section, log, BAT, metadata and other regions: (start, end, name).
    regions: Vec<(u64, u64, &'static str)>,
    locator: Option<ParentLocator>,
    parent: Option<ParentRef>,
    bitmaps: Mutex<LruCache<u64, Arc<[u8]>>>,
}

fn corrupt(path: &str, structure: &'static str, at: u64, detail: impl Into<String>) -> BlockError {
    BlockError::corrupt(path, structure, at, detail)
}

/// Reads the two headers and picks the current one.
fn headers(storage: &dyn Storage, path: &str) -> Result<(Header, usize), BlockError> {
    let mut hs = Vec::new();
    for at in [header::HEADER1_AT, header::HEADER2_AT] {
        let raw =
            read_upto(storage, path, "VHDX header", at, header::HEADER_SIZE).unwrap_or_default();
        hs.push(Header::decode(&raw));
    }
    let (h1, h2) = (hs.first().cloned().flatten(), hs.get(1).cloned().flatten());
    let index = header::current(h1.as_ref(), h2.as_ref()).ok_or_else(|| {
        corrupt(
            path,
            "VHDX header",
            header::HEADER1_AT,
            "no valid header (both bad, or equal sequence numbers with different contents)",
        )
    })?;
    let h = if index == 0 { h1 } else { h2 };
    h.map(|h| (h, index))
        .ok_or_else(|| corrupt(path, "VHDX header", header::HEADER1_AT, "no valid header"))
}

/// The data write GUID of a VHDX file (what a child's `parent_linkage`
/// names).
pub fn identity(storage: &dyn Storage) -> Option<[u8; 16]> {
    let sig = read_upto(storage, "", "VHDX file identifier", 0, 8).ok()?;
    if sig != header::SIGNATURE {
        return None;
    }
    headers(storage, "").ok().map(|(h, _)| h.data_write_guid)
}

impl VhdxImage {
    /// Opens a VHDX image.
    ///
    /// # Errors
    /// `Corrupt` naming the structure and offset; `Unsupported` for a log
    /// that needs replaying (unless `opts.log_as_is`) and unknown required
    /// regions or items.
    pub fn open(
        path: &str,
        storage: Arc<dyn Storage>,
        opts: Options,
    ) -> Result<VhdxImage, BlockError> {
        let id = read_upto(storage.as_ref(), path, "VHDX file identifier", 0, 520)?;
        if id.get(..8) != Some(header::SIGNATURE) {
            return Err(corrupt(
                path,
                "VHDX file identifier",
                0,
                "no vhdxfile signature",
            ));
        }
        let creator = utf16(id.get(8..).unwrap_or_default(), false);
        let (h, header_index) = headers(storage.as_ref(), path)?;
        let header_at = if header_index == 0 {
            header::HEADER1_AT
        } else {
            header::HEADER2_AT
        };
        let dirty_log = log::scan(storage.as_ref(), path, &h, header_at)?;
        if let (Some(d), false) = (&dirty_log, opts.log_as_is) {
            return Err(open::dirty_log_refusal(path, storage.len(), d));
        }
        let regions = open::regions(storage.as_ref(), path, &h)?;
        let meta = open::Metadata::read(Arc::clone(&storage), path, &regions.meta)?;
        let g = open::geometry(&meta, path, &regions.bat)?;
        let bat = Table::new(
            Arc::clone(&storage),
            path,
            "VHDX BAT",
            regions.bat.file_offset,
            g.bat_entries,
            Entry::Le64,
        )?;
        let mut img = VhdxImage {
            path: path.to_owned(),
            storage,
            creator,
            header: h,
            header_index,
            dirty_log,
            params: g.params,
            size: g.size,
            logical_sector: g.logical_sector,
            physical_sector: g.physical_sector,
            page83: g.page83,
            block_size: g.block_size,
            chunk_ratio: g.chunk_ratio,
            bat,
            regions: regions.all,
            locator: None,
            parent: None,
            bitmaps: Mutex::new(crate::lazy_lru::bounded(BITMAP_PAGES)),
        };
        img.check_bat()?;
        if g.params.has_parent {
            let it = meta.items.parent_locator;
            let raw = meta.item(it, "VHDX parent locator", MAX_LOCATOR)?;
            let at = meta
                .at
                .saturating_add(u64::from(it.map_or(0, |i| i.offset)));
            let loc = ParentLocator::decode(&raw)
                .map_err(|(o, d)| corrupt(path, "VHDX parent locator", at.saturating_add(o), d))?;
            if loc.locator_type != metadata::PARENT_VHDX {
                return Err(BlockError::unsupported(
                    path,
                    format!("parent locator type {}", guid_text(&loc.locator_type)),
                ));
            }
            img.parent = Some(parent_ref(path, &loc, at)?);
            img.locator = Some(loc);
        }
        Ok(img)
    }

    /// qemu's `vhdx_check_bat_entries`: every present block inside the
    /// file and clear of the other regions (and, here, of the header
    /// section). Scanned in chunks of the table.
    fn check_bat(&self) -> Result<(), BlockError> {
        let file_len = self.storage.len();
        let per_chunk = self.chunk_ratio.saturating_add(1);
        for i in 0..self.bat.len() {
            let e = self.bat.get(i)?.unwrap_or(0);
            let state = e & 7;
            let offset = e & OFFSET_MASK;
            let bitmap_slot = i.checked_rem(per_chunk) == Some(self.chunk_ratio);
            let (present, len) = if bitmap_slot {
                (state == SB_PRESENT, MIB)
            } else {
                let block = i.saturating_sub(i.checked_div(per_chunk).unwrap_or(0));
                let start = block.saturating_mul(self.block_size);
                let len = self.block_size.min(self.size.saturating_sub(start));
                (state == FULLY_PRESENT || state == PARTIALLY_PRESENT, len)
            };
            if !present {
                continue;
            }
            let end = offset.saturating_add(len);
            let what = if end > file_len {
                Some(format!("past the end of the file ({file_len} bytes): the image has probably been truncated"))
            } else {
                self.regions
                    .iter()
                    .find(|(s, e, _)| offset < *e && *s < end)
                    .map(|(_, _, name)| format!("over {name}"))
            };
            if let Some(what) = what {
                let kind = if bitmap_slot {
                    "sector bitmap"
                } else {
                    "block"
                };
                return Err(corrupt(
                    &self.path,
                    "VHDX BAT entry",
                    self.bat.entry_offset(i),
                    format!("entry {i} ({kind} at {offset:#x}..{end:#x}) lies {what}"),
                ));
            }
        }
        Ok(())
    }

    /// The sector bitmap bit of `sector` (counted from the disk's start).
    fn bitmap_bit(&self, sector: u64) -> Result<bool, BlockError> {
        let chunk = sector.checked_div(SECTORS_PER_BITMAP).unwrap_or(0);
        let in_chunk = sector.checked_rem(SECTORS_PER_BITMAP).unwrap_or(0);
        let sb_index = chunk
            .saturating_mul(self.chunk_ratio.saturating_add(1))
            .saturating_add(self.chunk_ratio);
        let e = self.bat.get(sb_index)?.unwrap_or(0);
        if e & 7 != SB_PRESENT {
            return Err(corrupt(
                &self.path,
                "VHDX BAT entry",
                self.bat.entry_offset(sb_index),
                format!(
                    "a partially present block's chunk has no sector bitmap (state {})",
                    e & 7
                ),
            ));
        }
        let byte = in_chunk / 8;
        let page = byte / 4096;
        let key = sb_index.saturating_mul(256).saturating_add(page);
        let data = {
            let mut cache = self.bitmaps.lock().map_err(|_| BlockError::Internal {
                what: "a VHDX cache lock was poisoned".into(),
            })?;
            match cache.get(&key) {
                Some(d) => Arc::clone(d),
                None => {
                    let mut buf = vec![0u8; 4096];
                    let at = (e & OFFSET_MASK).saturating_add(page.saturating_mul(4096));
                    read_exact(
                        self.storage.as_ref(),
                        &self.path,
                        "VHDX sector bitmap",
                        at,
                        &mut buf,
                    )?;
                    let d: Arc<[u8]> = buf.into();
                    cache.put(key, Arc::clone(&d));
                    d
                }
            }
        };
        let i = usize::try_from(byte % 4096).unwrap_or(0);
        Ok(data.get(i).is_some_and(|b| (b >> (in_chunk % 8)) & 1 == 1))
    }

    /// What block `block` maps to at `in_block`.
    fn piece(&self, block: u64, in_block: u64) -> Result<Piece, BlockError> {
        let index = block.saturating_add(block.checked_div(self.chunk_ratio).unwrap_or(0));
        let e = self.bat.get(index)?.unwrap_or(0);
        let host = (e & OFFSET_MASK).saturating_add(in_block);
        Ok(match e & 7 {
            NOT_PRESENT if self.params.has_parent => Piece::Unallocated,
            NOT_PRESENT | UNDEFINED | ZERO | UNMAPPED | UNMAPPED_V095 => Piece::Zero,
            FULLY_PRESENT => Piece::Data { file: 0, host },
            PARTIALLY_PRESENT if self.params.has_parent => {
                let sector = block
                    .saturating_mul(self.block_size)
                    .saturating_add(in_block)
                    .checked_div(self.logical_sector)
                    .unwrap_or(0);
                if self.bitmap_bit(sector)? {
                    Piece::Data { file: 0, host }
                } else {
                    Piece::Unallocated
                }
            }
            state => {
                return Err(corrupt(
                    &self.path,
                    "VHDX BAT entry",
                    self.bat.entry_offset(index),
                    format!(
                        "block {block} has state {state}, invalid in a disk {} parent",
                        if self.params.has_parent {
                            "with a"
                        } else {
                            "without a"
                        }
                    ),
                ))
            }
        })
    }

    /// What `[offset, end)` maps to, for as long as it stays the same.
    fn run(&self, offset: u64, end: u64) -> Result<(Piece, u64), BlockError> {
        let bs = self.block_size;
        let block = offset.checked_div(bs).unwrap_or(0);
        let in_block = offset.checked_rem(bs).unwrap_or(0);
        let first = self.piece(block, in_block)?;
        let step = |pos: u64| -> u64 {
            let e = self.bat.get(
                pos.checked_div(bs).unwrap_or(0).saturating_add(
                    pos.checked_div(bs)
                        .unwrap_or(0)
                        .checked_div(self.chunk_ratio)
                        .unwrap_or(0),
                ),
            );
            let partial = matches!(e, Ok(Some(v)) if v & 7 == PARTIALLY_PRESENT);
            if partial {
                self.logical_sector
                    .saturating_sub(pos.checked_rem(self.logical_sector).unwrap_or(0))
            } else {
                bs.saturating_sub(pos.checked_rem(bs).unwrap_or(0))
            }
        };
        let mut pos = offset.saturating_add(step(offset)).min(end);
        while pos < end {
            let next = self.piece(
                pos.checked_div(bs).unwrap_or(0),
                pos.checked_rem(bs).unwrap_or(0),
            )?;
            if !first.continues(pos.saturating_sub(offset), next) {
                break;
            }
            pos = pos.saturating_add(step(pos)).min(end);
        }
        Ok((first, pos.saturating_sub(offset)))
    }

    /// Opens the image as a chain layer.
    ///
    /// # Errors
    /// As [`VhdxImage::open`].
    pub fn layer(
        path: &str,
        storage: Arc<dyn Storage>,
        opts: Options,
    ) -> Result<FormatLayer, BlockError> {
        let img = Arc::new(VhdxImage::open(path, storage, opts)?);
        Ok(FormatLayer {
            parent: img.parent.clone(),
            identity: Some(img.header.data_write_guid),
            source: img.clone(),
            info: img,
        })
    }
}

/// The parent named by a locator: `relative_path`, then the file names of
/// `absolute_win32_path` and `volume_path`; its identity is
/// `parent_linkage`.
fn parent_ref(path: &str, loc: &ParentLocator, at: u64) -> Result<ParentRef, BlockError> {
    let linkage = loc
        .get("parent_linkage")
        .ok_or_else(|| corrupt(path, "VHDX parent locator", at, "no parent_linkage"))?;
    let identity = parse_guid(linkage).ok_or_else(|| {
        corrupt(
            path,
            "VHDX parent locator",
            at,
            format!("parent_linkage {linkage:?} is not a GUID"),
        )
    })?;
    let mut names = Vec::new();
    let mut display = None;
    if let Some(rel) = loc.get("relative_path") {
        display = Some(rel.to_owned());
        let p = rel.replace('\\', "/");
        names.push(p.strip_prefix("./").map(str::to_owned).unwrap_or(p));
    }
    for key in ["absolute_win32_path", "volume_path"] {
        if let Some(abs) = loc.get(key) {
            display.get_or_insert_with(|| abs.to_owned());
            if let Some(name) = abs.rsplit(['\\', '/']).next().filter(|n| !n.is_empty()) {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
    }
    Ok(ParentRef {
        display: display.unwrap_or_else(|| format!("(parent {})", guid_text(&identity))),
        names,
        format: Some(crate::block::probe::Format::Vhdx),
        identity: Some(identity),
        search_siblings: false,
    })
}

impl BlockSource for VhdxImage {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let run = |pos, end| self.run(pos, end).map(|(piece, n)| (piece, n, ()));
        read_runs(
            &self.path,
            self.size,
            offset,
            buf,
            run,
            |piece, _, (), out| match piece {
                Piece::Data { host, .. } => read_exact(
                    self.storage.as_ref(),
                    &self.path,
                    "VHDX payload block",
                    host,
                    out,
                ),
                _ => {
                    out.fill(0);
                    Ok(())
                }
            },
        )
    }

    /// Payload blocks lie as-is in the file: a bulk copy has the kernel
    /// copy them. A run past the end of the file is left to `read_at`,
    /// which reports it.
    fn stored(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<crate::block::HostRun<'_>>, BlockError> {
        check_range(&self.path, self.size, offset, len)?;
        let (piece, n) = self.run(offset, offset.saturating_add(len))?;
        let Piece::Data { host, .. } = piece else {
            return Ok(None);
        };
        let end = host.checked_add(n.min(len));
        if end.is_none_or(|e| e > self.storage.len()) {
            return Ok(None);
        }
        crate::block::image::stored_plain(self.storage.as_ref(), &self.path, (piece, n), len)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        Ok(vec![self.locate(offset, len)?])
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.path, self.size, offset, len)?;
        let (piece, n) = self.run(offset, offset.saturating_add(len))?;
        Ok(piece.extent(offset, n))
    }

    fn qemu_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        // qemu refuses differencing disks: no answer of its to match, so
        // the real one.
        if self.params.has_parent {
            return self.block_status(offset, len);
        }
        check_range(&self.path, self.size, offset, len)?;
        // qemu's vhdx has no block status: the generic answer is "data",
        // for the whole request, with no offset.
        Ok(vec![Extent {
            offset,
            len,
            status: Status::Data,
            compressed: false,
            host_offset: None,
            reads_zero: false,
        }])
    }
}

impl ImageInfo for VhdxImage {
    fn cluster_size(&self) -> Option<u64> {
        Some(self.block_size)
    }

    fn summary(&self) -> String {
        let kind = if self.params.has_parent {
            "differencing"
        } else if self.params.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        };
        format!(
            "VHDX {kind}, {} blocks, {}-byte sectors",
            crate::units::human(self.block_size),
            self.logical_sector
        )
    }

    fn facts(&self) -> Vec<(String, String)> {
        let h = &self.header;
        let mut v = vec![
            ("creator".to_owned(), self.creator.clone()),
            (
                "header".to_owned(),
                format!(
                    "{} of 2, sequence {}",
                    self.header_index.saturating_add(1),
                    h.sequence
                ),
            ),
            ("data write ID".to_owned(), guid_text(&h.data_write_guid)),
            ("page 83 ID".to_owned(), guid_text(&self.page83)),
            (
                "sectors".to_owned(),
                format!(
                    "{} logical, {} physical",
                    self.logical_sector, self.physical_sector
                ),
            ),
        ];
        v.push((
            "log".to_owned(),
            match &self.dirty_log {
                Some(d) => format!(
                    "NOT REPLAYED: {} entries (newest sequence {}); read as it is on disk, without them",
                    d.entries, d.sequence
                ),
                None if h.log_guid == [0; 16] => "empty".to_owned(),
                None => "no valid entries".to_owned(),
            },
        ));
        if let Some(l) = &self.locator {
            for (k, val) in &l.entries {
                v.push((format!("parent {k}"), val.clone()));
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
