//! A read-only VMDK reader: monolithicSparse, streamOptimized (compressed
//! grains, with or without the footer), monolithicFlat, the
//! twoGbMaxExtent* split files, vmfs/vmfsSparse (COWD) and seSparse
//! extents, and delta disks (`parentFileNameHint`).
//!
//! It opens what qemu's block/vmdk.c opens and sees the disk qemu sees
//! (the same extents, sizes and grain lookups; see [`descriptor`] for the
//! parsing quirks kept on purpose). Extent files are opened through the
//! chain's [`Opener`], relative to the descriptor's directory, so a VMDK
//! served from an NBD server or the demo's memory resolves the same way.
//!
//! What it does not own: the parent. A delta disk says `parentFileNameHint`
//! and its unallocated grains report [`Status::Unallocated`]; the chain
//! opens the parent and the layered reader falls through to it.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::collections::HashMap;
use std::sync::Arc;

use crate::block::chain::Opener;
use crate::block::image::{
    read_exact, read_or_zeros, read_runs, read_upto, recurse_into_file, FormatLayer, ImageInfo,
    ParentRef, Piece,
};
use crate::block::probe::Format;
use crate::block::storage::Storage;
use crate::block::{check_range, BlockError, BlockSource, Extent};

pub mod descriptor;
pub mod grain;
pub mod header;
pub mod sparse;

mod info;
mod open;
use open::{open_sesparse, open_sparse};

use descriptor::Descriptor;
use header::{SeSparse, Vmdk3, Vmdk4, GD_AT_END, VMDK3_MAGIC, VMDK4_MAGIC};
use sparse::{Flavor, Params, SparseExtent};

/// qemu reads at most this much of a descriptor file.
const MAX_DESCRIPTOR: usize = (1 << 20) - 1;
/// qemu reads an embedded descriptor's keys from this many bytes at 0x200.
const EMBEDDED_DESC_LEN: usize = 20 * 512;
/// The create types qemu accepts in a descriptor file.
const DESCRIPTOR_TYPES: &[&str] = &[
    "monolithicFlat",
    "vmfs",
    "vmfsSparse",
    "seSparse",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
];

/// One extent: a range of the virtual disk stored in one file.
struct VmdkExtent {
    /// Range of the virtual disk, in bytes.
    start: u64,
    end: u64,
    /// The file as opened (resolved against the descriptor's directory).
    name: String,
    /// The descriptor's type word (`FLAT`, `SPARSE`, …), empty for a
    /// monolithic sparse file.
    label: String,
    kind: Kind,
}

enum Kind {
    Flat {
        storage: Arc<dyn Storage>,
        file: usize,
        /// Where the extent starts in its file, in bytes.
        start: u64,
    },
    Sparse(Box<SparseExtent>),
}

/// A VMDK image: its descriptor and extents.
pub struct VmdkImage {
    path: String,
    size: u64,
    create_type: String,
    desc: Descriptor,
    /// Version of the (first) sparse header, for the summary.
    version: Option<u32>,
    extents: Vec<VmdkExtent>,
    /// Every file of the image; 0 is the image file itself.
    files: Vec<Arc<dyn Storage>>,
}

/// Joins an extent name to the descriptor's directory as qemu does
/// (`bdrv_dirname` + name; absolute names stay).
fn join(dir_of: &str, name: &str) -> String {
    if name.starts_with('/') {
        return name.to_owned();
    }
    let dir_len = dir_of.rfind('/').map_or(0, |i| i.saturating_add(1));
    format!("{}{name}", dir_of.get(..dir_len).unwrap_or_default())
}

impl VmdkImage {
    /// Opens a VMDK image (descriptor file or monolithic sparse file) and
    /// its extents; `opener` opens extent files.
    ///
    /// # Errors
    /// `Corrupt` naming the file, structure and offset; `Unsupported`;
    /// open errors of extent files.
    pub fn open(
        path: &str,
        storage: Arc<dyn Storage>,
        opener: &dyn Opener,
    ) -> Result<VmdkImage, BlockError> {
        if storage.len() < 4 {
            return Err(BlockError::corrupt(
                path,
                "VMDK header",
                0,
                "file is too small to be a VMDK image",
            ));
        }
        let head = read_upto(storage.as_ref(), path, "VMDK header", 0, 512)?;
        let mut img = VmdkImage {
            path: path.to_owned(),
            size: 0,
            create_type: String::new(),
            desc: Descriptor::default(),
            version: None,
            extents: Vec::new(),
            files: vec![Arc::clone(&storage)],
        };
        match crate::bytes::be32(&head, 0) {
            Some(VMDK4_MAGIC) => {
                let h = Vmdk4::decode(&head).ok_or_else(|| {
                    BlockError::corrupt(path, "VMDK header", 0, "header truncated")
                })?;
                if h.capacity == 0 && h.desc_offset != 0 {
                    // A descriptor inside a sparse header (no grains).
                    let at = h.desc_offset.saturating_mul(512);
                    let text = read_upto(
                        storage.as_ref(),
                        path,
                        "VMDK descriptor",
                        at,
                        MAX_DESCRIPTOR,
                    )?;
                    img.open_descriptor(descriptor::text(&text), at, opener)?;
                } else {
                    img.create_type = "monolithicSparse".into();
                    let e = open_sparse(path, Arc::clone(&storage), 0, &head, false)?;
                    if e.params.compressed {
                        img.create_type = "streamOptimized".into();
                    }
                    img.version = match e.params.flavor {
                        Flavor::Vmdk4 { version } => Some(version),
                        _ => None,
                    };
                    img.push(path.to_owned(), String::new(), Kind::Sparse(Box::new(e)));
                    img.read_embedded_descriptor(&storage)?;
                }
            }
            Some(VMDK3_MAGIC) => {
                img.create_type = "monolithicSparse".into();
                let e = open_sparse(path, Arc::clone(&storage), 0, &head, false)?;
                img.push(path.to_owned(), String::new(), Kind::Sparse(Box::new(e)));
                img.read_embedded_descriptor(&storage)?;
            }
            _ => {
                let text = read_upto(storage.as_ref(), path, "VMDK descriptor", 0, MAX_DESCRIPTOR)?;
                img.open_descriptor(descriptor::text(&text), 0, opener)?;
            }
        }
        if img.extents.is_empty() {
            return Err(BlockError::corrupt(
                path,
                "VMDK descriptor",
                0,
                "no usable extent (no RW line of a known type)",
            ));
        }
        Ok(img)
    }

    /// The keys (CID, parent) of a monolithic sparse file, read where qemu
    /// reads them: 20 sectors at 0x200.
    fn read_embedded_descriptor(&mut self, storage: &Arc<dyn Storage>) -> Result<(), BlockError> {
        if storage.len() <= 0x200 {
            return Ok(());
        }
        let bytes = read_upto(
            storage.as_ref(),
            &self.path,
            "VMDK descriptor",
            0x200,
            EMBEDDED_DESC_LEN,
        )?;
        let mut d = descriptor::parse(descriptor::text(&bytes)).map_err(|e| {
            BlockError::corrupt(
                &self.path,
                "VMDK descriptor",
                e.at.saturating_add(0x200),
                e.detail,
            )
        })?;
        // qemu ignores the extent lines of an embedded descriptor.
        d.extents.clear();
        self.desc = d;
        Ok(())
    }

    fn push(&mut self, name: String, label: String, kind: Kind) {
        let sectors = match &kind {
            Kind::Sparse(s) => s.params.sectors,
            Kind::Flat { .. } => 0,
        };
        self.push_sized(name, label, kind, sectors);
    }

    fn push_sized(&mut self, name: String, label: String, kind: Kind, sectors: u64) {
        let start = self.size;
        let end = start.saturating_add(sectors.saturating_mul(512));
        self.size = end;
        self.extents.push(VmdkExtent {
            start,
            end,
            name,
            label,
            kind,
        });
    }

    /// Parses a descriptor and opens its extents.
    fn open_descriptor(
        &mut self,
        text: &[u8],
        at: u64,
        opener: &dyn Opener,
    ) -> Result<(), BlockError> {
        let path = self.path.clone();
        let desc = descriptor::parse(text).map_err(|e| {
            BlockError::corrupt(&path, "VMDK descriptor", e.at.saturating_add(at), e.detail)
        })?;
        let ct = desc.create_type.clone().ok_or_else(|| {
            BlockError::corrupt(
                &path,
                "VMDK descriptor",
                at,
                "no createType (invalid VMDK image descriptor)",
            )
        })?;
        if !DESCRIPTOR_TYPES.contains(&ct.as_str()) {
            return Err(BlockError::unsupported(
                &path,
                format!("VMDK image type {ct:?} in a descriptor file"),
            ));
        }
        self.create_type = ct;
        let mut opened: HashMap<String, usize> = HashMap::new();
        for line in &desc.extents {
            // An absolute name stays on the opener's host (ssh); a
            // relative one is beside the descriptor.
            let name = if line.file.starts_with('/') {
                opener
                    .resolve_backing(&path, &line.file)
                    .unwrap_or_else(|_| line.file.clone())
            } else {
                join(&path, &line.file)
            };
            let line_at = line.at.saturating_add(at);
            let file = match opened.get(&name) {
                Some(&i) => i,
                None => {
                    let o = opener.open(&name).map_err(|e| BlockError::MissingExtent {
                        descriptor: path.clone(),
                        line: line_at,
                        name: line.file.clone(),
                        tried: name.clone(),
                        reason: e.to_string(),
                    })?;
                    self.files.push(o.storage);
                    let i = self.files.len().saturating_sub(1);
                    opened.insert(name.clone(), i);
                    i
                }
            };
            let storage = self
                .files
                .get(file)
                .cloned()
                .ok_or_else(|| BlockError::Internal {
                    what: "VMDK extent file index".into(),
                })?;
            match line.kind.as_str() {
                "FLAT" | "VMFS" => {
                    let start = line.start_sector.checked_mul(512).ok_or_else(|| {
                        BlockError::corrupt(
                            &path,
                            "VMDK descriptor",
                            line_at,
                            "flat extent offset overflows",
                        )
                    })?;
                    self.push_sized(
                        name,
                        line.kind.clone(),
                        Kind::Flat {
                            storage,
                            file,
                            start,
                        },
                        line.sectors,
                    );
                }
                "SPARSE" | "VMFSSPARSE" => {
                    let head = read_upto(storage.as_ref(), &name, "VMDK sparse header", 0, 512)?;
                    let e = open_sparse(&name, storage, file, &head, true)?;
                    if self.version.is_none() {
                        self.version = match e.params.flavor {
                            Flavor::Vmdk4 { version } => Some(version),
                            _ => None,
                        };
                    }
                    self.push(name, line.kind.clone(), Kind::Sparse(Box::new(e)));
                }
                "SESPARSE" => {
                    let e = open_sesparse(&name, storage, file)?;
                    self.push(name, line.kind.clone(), Kind::Sparse(Box::new(e)));
                }
                other => {
                    return Err(BlockError::unsupported(
                        &path,
                        format!("extent type {other:?}"),
                    ));
                }
            }
            if i64::try_from(self.size).is_err() {
                return Err(BlockError::corrupt(
                    &path,
                    "VMDK descriptor",
                    line_at,
                    "the extents add up to more than 2^63 bytes",
                ));
            }
        }
        self.desc = desc;
        Ok(())
    }

    /// The extent holding byte `offset`.
    fn extent_at(&self, offset: u64) -> Result<&VmdkExtent, BlockError> {
        let i = self.extents.partition_point(|e| e.end <= offset);
        self.extents.get(i).ok_or_else(|| BlockError::OutOfRange {
            name: self.path.clone(),
            offset,
            len: 0,
            size: self.size,
        })
    }

    /// What `[offset, end)` maps to, for as long as it stays the same kind
    /// (never past the extent). Compressed grains are merged only when
    /// `merge_compressed` (block status); reads take one grain at a time.
    fn run(
        &self,
        offset: u64,
        end: u64,
        merge_compressed: bool,
    ) -> Result<(Piece, u64, &VmdkExtent), BlockError> {
        let ext = self.extent_at(offset)?;
        let stop = end.min(ext.end);
        let rel = offset.saturating_sub(ext.start);
        match &ext.kind {
            Kind::Flat { file, start, .. } => Ok((
                Piece::Data {
                    file: *file,
                    host: start.saturating_add(rel),
                },
                stop.saturating_sub(offset),
                ext,
            )),
            Kind::Sparse(s) => {
                let g = s.grain_bytes;
                let first = s.grain(rel)?;
                let in_grain = rel.checked_rem(g).unwrap_or(0);
                let mut pos = offset.saturating_add(g.saturating_sub(in_grain)).min(stop);
                let mut len = pos.saturating_sub(offset);
                let merge = match first {
                    Piece::Compressed { .. } => merge_compressed,
                    _ => true,
                };
                while merge && pos < stop {
                    if first == Piece::Unallocated {
                        // An empty grain directory entry: its whole span.
                        if let Some(e) = s.unallocated_span_end(pos.saturating_sub(ext.start))? {
                            let to = ext.start.saturating_add(e).min(stop).max(pos);
                            len = len.saturating_add(to.saturating_sub(pos));
                            pos = to;
                            continue;
                        }
                        // Zero entries of a present table: up to the next
                        // grain it maps.
                        let rel = pos.saturating_sub(ext.start);
                        if let Some(e) = s.unallocated_in_table_end(rel)? {
                            let to = ext.start.saturating_add(e).min(stop);
                            if to > pos {
                                len = len.saturating_add(to.saturating_sub(pos));
                                pos = to;
                                continue;
                            }
                        }
                    }
                    let next = s.grain(pos.saturating_sub(ext.start))?;
                    let same = match (first, next) {
                        (Piece::Compressed { .. }, Piece::Compressed { .. }) => true,
                        (a, b) => a.continues(len, b),
                    };
                    if !same {
                        break;
                    }
                    let step = g.min(stop.saturating_sub(pos));
                    pos = pos.saturating_add(step);
                    len = len.saturating_add(step);
                }
                Ok((first, len, ext))
            }
        }
    }
}

impl BlockSource for VmdkImage {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let run = |pos, end| self.run(pos, end, false);
        read_runs(
            &self.path,
            self.size,
            offset,
            buf,
            run,
            |piece, pos, ext, out| {
                match (piece, &ext.kind) {
                    // Like qemu, a flat file shorter than its extent reads as
                    // zeros past its end.
                    (Piece::Data { host, .. }, Kind::Flat { storage, .. }) => read_or_zeros(
                        storage.as_ref(),
                        &ext.name,
                        "reading a flat extent",
                        host,
                        out,
                    ),
                    (Piece::Data { host, .. }, Kind::Sparse(s)) => {
                        read_exact(s.storage().as_ref(), &ext.name, "VMDK grain", host, out)
                    }
                    (Piece::Compressed { host, .. }, Kind::Sparse(s)) => {
                        let rel = pos.saturating_sub(ext.start);
                        let grain = s.decompressed(host, rel)?;
                        let at = usize::try_from(rel.checked_rem(s.grain_bytes).unwrap_or(0))
                            .unwrap_or(usize::MAX);
                        let src = grain.get(at..at.saturating_add(out.len())).ok_or_else(|| {
                            BlockError::corrupt(
                                &ext.name,
                                "VMDK compressed grain",
                                host,
                                "grain shorter than the read",
                            )
                        })?;
                        out.copy_from_slice(src);
                        Ok(())
                    }
                    _ => {
                        out.fill(0);
                        Ok(())
                    }
                }
            },
        )
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        check_range(&self.path, self.size, offset, len)?;
        let (piece, n, ext) = self.run(offset, offset.saturating_add(len), true)?;
        let mut e = piece.extent(offset, n);
        if let (Piece::Data { host, .. }, Kind::Flat { storage, .. }) = (piece, &ext.kind) {
            // qemu's BDRV_BLOCK_RECURSE for flat extents: holes of the
            // extent file read as zero.
            recurse_into_file(storage.as_ref(), &ext.name, &mut e, host)?;
        }
        Ok(vec![e])
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.path, self.size, offset, len)?;
        let (piece, n, _) = self.run(offset, offset.saturating_add(len), true)?;
        Ok(piece.extent(offset, n))
    }

    /// Exact about holes in the file (`block_status` asks the kernel), so
    /// streams skip them instead of reading gigabytes of zeros.
    fn locate_exact(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        crate::block::first_extent(self.block_status(offset, len)?, &self.path, offset)
    }

    /// A flat extent's bytes and a sparse extent's plain grains lie as-is
    /// in their files: a bulk copy has the kernel copy them. A grain that
    /// passes the end of its file is left to `read_at`, which reports it.
    fn stored(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<crate::block::HostRun<'_>>, BlockError> {
        check_range(&self.path, self.size, offset, len)?;
        let (piece, n, ext) = self.run(offset, offset.saturating_add(len), false)?;
        let storage = match (&ext.kind, piece) {
            (Kind::Flat { storage, .. }, _) => storage,
            (Kind::Sparse(s), Piece::Data { host, .. }) => {
                let storage = s.storage();
                let end = host.checked_add(n.min(len));
                if end.is_none_or(|e| e > storage.len()) {
                    return Ok(None);
                }
                storage
            }
            _ => return Ok(None),
        };
        crate::block::image::stored_plain(storage.as_ref(), &ext.name, (piece, n), len)
    }
}

impl VmdkImage {
    /// The content ID, and the parent's content ID as this image records it.
    pub fn cids(&self) -> (Option<u32>, Option<u32>) {
        (self.desc.cid, self.desc.parent_cid)
    }

    /// The parent named by `parentFileNameHint`.
    pub fn parent(&self) -> Option<ParentRef> {
        // qemu opens a VMDK's parent as VMDK.
        self.desc
            .parent_hint
            .as_ref()
            .map(|name| ParentRef::named(name, Some(Format::Vmdk)))
    }

    /// Opens the image as a chain layer.
    ///
    /// # Errors
    /// As [`VmdkImage::open`].
    pub fn layer(
        path: &str,
        storage: Arc<dyn Storage>,
        opener: &dyn Opener,
    ) -> Result<FormatLayer, BlockError> {
        let img = Arc::new(VmdkImage::open(path, storage, opener)?);
        Ok(FormatLayer {
            parent: img.parent(),
            source: img.clone(),
            info: img,
            identity: None,
        })
    }
}
