//! A read-only VDI (VirtualBox) reader: dynamic ("normal"), static
//! ("fixed") and differencing images.
//!
//! Dynamic and static images open with qemu's checks (block/vdi.c: version
//! 1.1, 512-byte sectors, 1 MiB blocks, a block map that covers the disk)
//! and read and map as qemu does them: a free or discarded block reads as
//! zeros, and a static image's blocks recurse into the file's holes.
//!
//! qemu refuses images that link to a parent. Here a differencing image
//! (type 4, or any image with a link UUID) names its parent only by UUID,
//! as VirtualBox keeps the paths in its media registry: the parent is the
//! VDI beside the child (or in the directory above, where VirtualBox keeps
//! the base of a `Snapshots/` directory) whose creation UUID is the child's
//! link UUID. A free block then comes from the parent; a discarded one
//! reads as zeros.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::Arc;

use crate::block::image::{
    bytes16, guid_text, held_by, le32, le64, read_upto, FormatLayer, ImageInfo, ParentRef, Piece,
    PlainMap,
};
use crate::block::storage::Storage;
use crate::block::table::{Entry, Table};
use crate::block::{BlockError, BlockSource, Extent};
use crate::layout::{Field, Kind};

/// `0xbeda107f` at offset 64.
pub const SIGNATURE: u32 = 0xbeda_107f;
const VERSION_1_1: u32 = 0x0001_0001;
const TYPE_DYNAMIC: u32 = 1;
const TYPE_STATIC: u32 = 2;
const TYPE_DIFF: u32 = 4;
/// A block never written (from the parent, or zeros).
const FREE: u64 = 0xffff_ffff;
/// A block discarded: zeros.
const DISCARDED: u64 = 0xffff_fffe;
const BLOCK_SIZE: u64 = 1 << 20;
/// qemu's limits: the block map read in one piece must fit in an int.
const MAX_BLOCKS: u64 = (0x8000_0000 - 512) / 4;

/// The header's fields (version 1.1, little-endian).
pub const HEADER: &[Field] = &[
    Field::of(Kind::Text, "szFileInfo", 0, 64, "<<< … Disk Image >>>"),
    Field::new("u32Signature", 64, 4, "0xbeda107f"),
    Field::new("u32Version", 68, 4, "0x00010001"),
    Field::new("cbHeader", 72, 4, "0x180"),
    Field::new(
        "u32Type",
        76,
        4,
        "1 normal, 2 fixed, 3 undo, 4 differencing",
    ),
    Field::new("fFlags", 80, 4, "image flags"),
    Field::of(Kind::Text, "szComment", 84, 256, "description"),
    Field::new("offBlocks", 340, 4, "the block map"),
    Field::new("offData", 344, 4, "the first block"),
    Field::new("cCylinders", 348, 4, "legacy geometry"),
    Field::new("cHeads", 352, 4, "legacy geometry"),
    Field::new("cSectors", 356, 4, "legacy geometry"),
    Field::new("cbSector", 360, 4, "512"),
    Field::new("cbDisk", 368, 8, "disk size in bytes"),
    Field::new("cbBlock", 376, 4, "block size, 1 MiB"),
    Field::new("cbBlockExtra", 380, 4, "bytes before each block's data"),
    Field::new("cBlocks", 384, 4, "block map entries"),
    Field::new("cBlocksAllocated", 388, 4, "blocks stored"),
    Field::of(
        Kind::Uuid,
        "uuidCreate",
        392,
        16,
        "this image; children link to it",
    ),
    Field::of(Kind::Uuid, "uuidModify", 408, 16, "changes on every write"),
    Field::of(
        Kind::Uuid,
        "uuidLinkage",
        424,
        16,
        "the parent's uuidCreate",
    ),
    Field::of(
        Kind::Uuid,
        "uuidParentModify",
        440,
        16,
        "the parent's uuidModify when linked",
    ),
];

/// A decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub text: String,
    pub version: u32,
    pub image_type: u32,
    pub offset_bmap: u32,
    pub offset_data: u32,
    pub sector_size: u32,
    pub disk_size: u64,
    pub block_size: u32,
    pub block_extra: u32,
    pub blocks_in_image: u32,
    pub blocks_allocated: u32,
    pub uuid_image: [u8; 16],
    pub uuid_last_snap: [u8; 16],
    pub uuid_link: [u8; 16],
    pub uuid_parent: [u8; 16],
}

impl Header {
    /// Decodes the 512-byte header; `None` without the signature.
    pub fn decode(b: &[u8]) -> Option<Header> {
        if le32(b, 64)? != SIGNATURE {
            return None;
        }
        let text = b.get(..64)?;
        let end = text.iter().position(|&c| c == 0).unwrap_or(64);
        Some(Header {
            text: String::from_utf8_lossy(text.get(..end)?)
                .trim_end()
                .to_owned(),
            version: le32(b, 68)?,
            image_type: le32(b, 76)?,
            offset_bmap: le32(b, 340)?,
            offset_data: le32(b, 344)?,
            sector_size: le32(b, 360)?,
            disk_size: le64(b, 368)?,
            block_size: le32(b, 376)?,
            block_extra: le32(b, 380)?,
            blocks_in_image: le32(b, 384)?,
            blocks_allocated: le32(b, 388)?,
            uuid_image: bytes16(b, 392)?,
            uuid_last_snap: bytes16(b, 408)?,
            uuid_link: bytes16(b, 424)?,
            uuid_parent: bytes16(b, 440)?,
        })
    }

    /// The image links to a parent.
    pub fn differencing(&self) -> bool {
        self.image_type == TYPE_DIFF || self.uuid_link != [0; 16]
    }
}

/// A VDI image.
pub struct VdiImage {
    path: String,
    storage: Arc<dyn Storage>,
    header: Header,
    size: u64,
    bmap: Table,
}

fn field_at(name: &str) -> u64 {
    HEADER
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| u64::try_from(f.offset).ok())
        .unwrap_or(0)
}

impl VdiImage {
    /// Opens a VDI image.
    ///
    /// # Errors
    /// `Corrupt` naming the header field; `Unsupported` for versions,
    /// sector and block sizes qemu does not read.
    pub fn open(path: &str, storage: Arc<dyn Storage>) -> Result<VdiImage, BlockError> {
        let raw = read_upto(storage.as_ref(), path, "VDI header", 0, 512)?;
        let h = Header::decode(&raw).ok_or_else(|| {
            BlockError::corrupt(path, "VDI header", 64, "no VDI signature (0xbeda107f)")
        })?;
        let bad = |field: &str, detail: String| {
            BlockError::corrupt(
                path,
                "VDI header",
                field_at(field),
                format!("{field}: {detail}"),
            )
        };
        if h.version != VERSION_1_1 {
            return Err(BlockError::unsupported(
                path,
                format!("VDI version {}.{}", h.version >> 16, h.version & 0xffff),
            ));
        }
        if h.offset_bmap % 512 != 0 {
            return Err(bad(
                "offBlocks",
                format!("{:#x} is not sector-aligned", h.offset_bmap),
            ));
        }
        if h.offset_data % 512 != 0 {
            return Err(bad(
                "offData",
                format!("{:#x} is not sector-aligned", h.offset_data),
            ));
        }
        if h.sector_size != 512 {
            return Err(BlockError::unsupported(
                path,
                format!("VDI sector size {} (only 512)", h.sector_size),
            ));
        }
        if u64::from(h.block_size) != BLOCK_SIZE {
            return Err(BlockError::unsupported(
                path,
                format!("VDI block size {} (only 1 MiB, as qemu)", h.block_size),
            ));
        }
        if h.block_extra != 0 {
            return Err(BlockError::unsupported(
                path,
                format!("VDI blocks with {} extra bytes each", h.block_extra),
            ));
        }
        let blocks = u64::from(h.blocks_in_image);
        if blocks > MAX_BLOCKS {
            return Err(bad(
                "cBlocks",
                format!("{blocks} blocks, more than {MAX_BLOCKS}"),
            ));
        }
        let size = h.disk_size.div_ceil(512).saturating_mul(512);
        if size > blocks.saturating_mul(BLOCK_SIZE) {
            return Err(bad(
                "cbDisk",
                format!(
                    "{} bytes, but the block map has room for {}",
                    h.disk_size,
                    blocks.saturating_mul(BLOCK_SIZE)
                ),
            ));
        }
        if !matches!(h.image_type, TYPE_DYNAMIC | TYPE_STATIC | TYPE_DIFF) {
            return Err(BlockError::unsupported(
                path,
                format!("VDI image type {}", h.image_type),
            ));
        }
        if h.differencing() && h.uuid_link == [0; 16] {
            return Err(bad(
                "uuidLinkage",
                "a differencing image that names no parent".into(),
            ));
        }
        let bmap = Table::new(
            Arc::clone(&storage),
            path,
            "VDI block map",
            u64::from(h.offset_bmap),
            blocks,
            Entry::Le32,
        )?;
        Ok(VdiImage {
            path: path.to_owned(),
            storage,
            size,
            bmap,
            header: h,
        })
    }

    /// What block `block` maps to at `in_block`.
    fn piece(&self, block: u64, in_block: u64) -> Result<Piece, BlockError> {
        let e = self.bmap.get(block)?.unwrap_or(FREE);
        Ok(match e {
            FREE if self.header.differencing() => Piece::Unallocated,
            FREE | DISCARDED => Piece::Zero,
            index => {
                let start = u64::from(self.header.offset_data)
                    .saturating_add(index.saturating_mul(BLOCK_SIZE));
                let end = start.saturating_add(BLOCK_SIZE);
                let file_len = self.storage.len();
                let map_start = u64::from(self.header.offset_bmap);
                let map_end = map_start.saturating_add(self.bmap.len().saturating_mul(4));
                let what = if start >= file_len {
                    Some(format!("past the end of the file ({file_len} bytes)"))
                } else if start < map_end && map_start < end {
                    Some("over the block map".to_owned())
                } else if start < 512 {
                    Some("over the header".to_owned())
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(BlockError::corrupt(
                        &self.path,
                        "VDI block map entry",
                        self.bmap.entry_offset(block),
                        format!("block {block} is stored at {start:#x}..{end:#x}, {what}"),
                    ));
                }
                Piece::Data {
                    file: 0,
                    host: start.saturating_add(in_block),
                }
            }
        })
    }

    fn run(&self, offset: u64, end: u64) -> Result<(Piece, u64), BlockError> {
        let block = offset / BLOCK_SIZE;
        let first = self.piece(block, offset % BLOCK_SIZE)?;
        let mut pos = offset
            .saturating_add(BLOCK_SIZE.saturating_sub(offset % BLOCK_SIZE))
            .min(end);
        // A stretch of free (or discarded) entries like the first: found
        // a page of the map at a time, not a lookup per block.
        if matches!(first, Piece::Unallocated | Piece::Zero) {
            if let Some(e) = self.bmap.get(block)? {
                let next = self.bmap.run_end(block.saturating_add(1), e)?;
                pos = next.saturating_mul(BLOCK_SIZE).min(end).max(pos);
            }
        }
        while pos < end {
            let next = self.piece(pos / BLOCK_SIZE, 0)?;
            if !first.continues(pos.saturating_sub(offset), next) {
                break;
            }
            pos = pos.saturating_add(BLOCK_SIZE).min(end);
        }
        Ok((first, pos.saturating_sub(offset)))
    }

    /// Opens the image as a chain layer.
    ///
    /// # Errors
    /// As [`VdiImage::open`].
    pub fn layer(path: &str, storage: Arc<dyn Storage>) -> Result<FormatLayer, BlockError> {
        let img = Arc::new(VdiImage::open(path, storage)?);
        let parent = img.header.differencing().then(|| ParentRef {
            display: format!("(by UUID {})", guid_text(&img.header.uuid_link)),
            names: Vec::new(),
            format: Some(crate::block::probe::Format::Vdi),
            identity: Some(img.header.uuid_link),
            search_siblings: true,
        });
        Ok(FormatLayer {
            parent,
            identity: Some(img.header.uuid_image),
            source: img.clone(),
            info: img,
        })
    }
}

/// The creation UUID of a VDI file (what a child links to).
pub fn identity(storage: &dyn Storage) -> Option<[u8; 16]> {
    Header::decode(&read_upto(storage, "", "VDI header", 0, 512).ok()?).map(|h| h.uuid_image)
}

impl VdiImage {
    /// The map as plain runs of the file, for the [`BlockSource`] methods.
    fn plain(&self) -> PlainMap<'_, impl Fn(u64, u64) -> Result<(Piece, u64), BlockError> + '_> {
        PlainMap {
            storage: self.storage.as_ref(),
            path: &self.path,
            size: self.size,
            recurse: self.header.image_type == TYPE_STATIC,
            run: |pos, end| self.run(pos, end),
        }
    }
}

impl BlockSource for VdiImage {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        // A static image's last block may stop at the end of the file: zeros
        // past it, as qemu reads.
        self.plain().read_at("reading a VDI block", offset, buf)
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

impl ImageInfo for VdiImage {
    fn cluster_size(&self) -> Option<u64> {
        Some(u64::from(self.header.block_size))
    }

    fn summary(&self) -> String {
        let kind = match self.header.image_type {
            TYPE_STATIC => "static",
            TYPE_DIFF => "differencing",
            _ if self.header.differencing() => "linked",
            _ => "dynamic",
        };
        format!(
            "VDI {kind}, {} blocks",
            crate::units::human(u64::from(self.header.block_size))
        )
    }

    fn facts(&self) -> Vec<(String, String)> {
        let h = &self.header;
        let mut v = vec![
            ("creator".to_owned(), h.text.clone()),
            (
                "blocks".to_owned(),
                format!("{} allocated of {}", h.blocks_allocated, h.blocks_in_image),
            ),
            ("image UUID".to_owned(), guid_text(&h.uuid_image)),
            ("modify UUID".to_owned(), guid_text(&h.uuid_last_snap)),
        ];
        if h.differencing() {
            v.push(("parent UUID".to_owned(), guid_text(&h.uuid_link)));
            v.push(("parent modify".to_owned(), guid_text(&h.uuid_parent)));
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
