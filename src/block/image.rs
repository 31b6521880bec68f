//! What every image format reader shares: the facts `chain` prints about a
//! layer ([`ImageInfo`]), how a layer names its parent ([`ParentRef`]), the
//! kinds of ranges a layer maps ([`Piece`]), bounded reads that name the
//! structure they were after, and qemu's "recurse into the file" rule for
//! data whose storage is a hole.
//!
//! What this module does not own: any one format's structures (they live
//! in `vmdk/`, `vhd/`, `vhdx/`, `vdi/`, `qcow2/`), and stacking layers.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::Arc;

use crate::block::probe::Format;
use crate::block::storage::Storage;
use crate::block::{BlockError, BlockSource, Extent, HostRun, Status, Stored};

/// Facts about one opened layer, for `chain` (text and JSON) and the UI.
/// Implemented by each format reader beside its [`BlockSource`].
pub trait ImageInfo: Send + Sync {
    /// `qemu-img info`'s `cluster-size`, when qemu reports one.
    fn cluster_size(&self) -> Option<u64>;

    /// `qemu-img info`'s `format-specific` object (`{"type", "data"}`),
    /// when qemu prints one for this format.
    fn format_specific(&self) -> Option<serde_json::Value> {
        None
    }

    /// One line naming the format's variant: `VMDK monolithicSparse, 64 KiB
    /// grains`.
    fn summary(&self) -> String;

    /// More facts for the text output, as (label, value) pairs; values are
    /// raw (the caller escapes them).
    fn facts(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Bytes all the layer's files occupy on disk (`qemu-img info`'s
    /// `actual-size`), when known.
    fn actual_size(&self) -> Option<u64>;

    /// Guest bytes this layer holds itself (data and zero ranges), from
    /// its metadata alone.
    ///
    /// # Errors
    /// Metadata errors.
    fn held_bytes(&self) -> Result<u64, BlockError>;

    /// The image says it was not closed cleanly.
    fn dirty(&self) -> bool {
        false
    }

    /// VMDK content IDs: this image's CID and the parent CID it records.
    fn content_ids(&self) -> Option<(Option<u32>, Option<u32>)> {
        None
    }
}

/// Walks a layer's [`BlockSource::block_status`] over the whole disk and
/// adds what it holds: the default way to answer
/// [`ImageInfo::held_bytes`].
///
/// # Errors
/// Metadata errors.
pub fn held_by(source: &dyn BlockSource) -> Result<u64, BlockError> {
    let mut held = 0u64;
    let mut pos = 0u64;
    let size = source.len();
    while pos < size {
        let e = source.locate(pos, size.saturating_sub(pos))?;
        if e.status != Status::Unallocated {
            held = held.saturating_add(e.len);
        }
        pos = pos.saturating_add(e.len.max(1));
    }
    Ok(held)
}

/// How a layer names its parent (backing file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    /// The name as the image writes it (shown as the backing file name).
    pub display: String,
    /// Names to try, in order, as local paths; each is resolved against
    /// the child's directory when it is not absolute.
    pub names: Vec<String>,
    /// The parent's format, when the child says it (VMDK parents are
    /// VMDK); else probed.
    pub format: Option<Format>,
    /// The parent must carry this identity ([`FormatLayer::identity`]):
    /// a VHD's footer UUID, a VHDX's data write GUID, a VDI's creation
    /// UUID. Candidates with another identity are skipped.
    pub identity: Option<[u8; 16]>,
    /// Also search the child's directory for a file with `identity`
    /// (VirtualBox keeps VDI parents in its media registry, not in the
    /// child).
    pub search_siblings: bool,
}

impl ParentRef {
    /// A parent named by one file name (qcow2, VMDK).
    pub fn named(name: &str, format: Option<Format>) -> ParentRef {
        ParentRef {
            display: name.to_owned(),
            names: vec![name.to_owned()],
            format,
            identity: None,
            search_siblings: false,
        }
    }
}

/// A layer opened by a format reader other than qcow2.
pub struct FormatLayer {
    pub source: Arc<dyn BlockSource>,
    pub info: Arc<dyn ImageInfo>,
    pub parent: Option<ParentRef>,
    /// What a child names this layer by, for formats that link by
    /// identity (see [`ParentRef::identity`]).
    pub identity: Option<[u8; 16]>,
}

/// What one range of a layer maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Stored at `host` in file `file` (0 is the image file itself; formats
    /// with several files number the others).
    Data { file: usize, host: u64 },
    /// Stored compressed; `host` is where the compressed unit starts.
    Compressed { file: usize, host: u64 },
    /// Reads as zeros and hides the layers below.
    Zero,
    /// Not in this layer: ask the layer below (zeros when there is none).
    Unallocated,
}

impl Piece {
    /// The status a [`BlockSource`] reports for the piece.
    pub fn status(self) -> Status {
        match self {
            Piece::Data { .. } | Piece::Compressed { .. } => Status::Data,
            Piece::Zero => Status::Zero,
            Piece::Unallocated => Status::Unallocated,
        }
    }

    /// An extent of `len` bytes at `offset` for this piece.
    pub fn extent(self, offset: u64, len: u64) -> Extent {
        Extent {
            offset,
            len,
            status: self.status(),
            compressed: matches!(self, Piece::Compressed { .. }),
            host_offset: match self {
                Piece::Data { host, .. } => Some(host),
                _ => None,
            },
            reads_zero: false,
        }
    }

    /// True when `next` continues this piece `len` bytes on: the same kind
    /// and, for stored data, the next bytes of the same file.
    pub fn continues(self, len: u64, next: Piece) -> bool {
        match (self, next) {
            (Piece::Data { file: a, host: h }, Piece::Data { file: b, host: n }) => {
                a == b && h.checked_add(len) == Some(n)
            }
            (a, b) => a == b,
        }
    }
}

/// Reads exactly `buf.len()` bytes at `offset` of `storage`; a range past
/// the end of the file is `Corrupt`, naming `structure`.
///
/// # Errors
/// `Corrupt` (past the end), `Io`.
pub fn read_exact(
    storage: &dyn Storage,
    path: &str,
    structure: &'static str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), BlockError> {
    let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
    let file_len = storage.len();
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(BlockError::corrupt(
            path,
            structure,
            offset,
            format!("{len} bytes at {offset:#x} pass the end of the file ({file_len} bytes)"),
        ));
    }
    storage
        .read_exact_at(offset, buf)
        .map_err(|e| BlockError::io(path, structure_action(structure), offset, e))
}

/// Reads `out.len()` bytes of data at `host`; what lies past the end of
/// the file reads as zeros (qemu reads a fixed VHD, a static VDI or a flat
/// VMDK extent shorter than its size so).
///
/// # Errors
/// `Io`, naming `action` and the offset.
pub fn read_or_zeros(
    storage: &dyn Storage,
    path: &str,
    action: &'static str,
    host: u64,
    out: &mut [u8],
) -> Result<(), BlockError> {
    let have = storage
        .len()
        .saturating_sub(host)
        .min(u64::try_from(out.len()).unwrap_or(u64::MAX));
    let (head, tail) = out.split_at_mut(usize::try_from(have).unwrap_or(0));
    storage
        .read_exact_at(host, head)
        .map_err(|e| BlockError::io(path, action, host, e))?;
    tail.fill(0);
    Ok(())
}

/// [`BlockSource::stored`] for a data run stored as plain bytes of
/// `storage` (VDI and VHD blocks as [`read_plain_runs`] reads them, VMDK
/// extents, VHDX payload blocks): `run` is what the format's map says at the offset, cut to
/// `len`. A data run
/// lies in the file up to the file's next hole, or in that hole; past
/// the end of the file it reads as zeros (as `read_or_zeros` reads it).
///
/// # Errors
/// `Io` from asking the kernel for holes.
pub fn stored_plain<'a>(
    storage: &'a dyn Storage,
    path: &str,
    (piece, n): (Piece, u64),
    len: u64,
) -> Result<Option<HostRun<'a>>, BlockError> {
    let (Piece::Data { host, .. }, Some(file)) = (piece, storage.local_file()) else {
        return Ok(None);
    };
    let n = n.min(len);
    let in_file = storage.len().saturating_sub(host).min(n);
    if n == 0 {
        return Ok(None);
    }
    if in_file == 0 {
        return Ok(Some(HostRun::Hole(n)));
    }
    let next = storage
        .next_run(host)
        .map_err(|e| BlockError::io(path, "asking for holes", host, e))?;
    let stored = |len: u64| HostRun::Stored(Stored { file, host, len });
    Ok(match next {
        Some((true, end)) => Some(stored(in_file.min(end.saturating_sub(host)))),
        Some((false, end)) => Some(HostRun::Hole(in_file.min(end.saturating_sub(host)))),
        None => Some(stored(in_file)),
    }
    .filter(|r| !r.is_empty()))
}

/// `read_at` for a format whose map is a sequence of runs: `run(pos, end)`
/// says what the image holds at `pos` (a [`Piece`], its length, and
/// whatever the format needs to read it); `fill` reads a data or
/// compressed run into its part of `buf`; zero and unallocated runs read
/// as zeros (the layered reader asks the layer below for unallocated
/// ranges through block status, never through this).
///
/// # Errors
/// A range outside the disk; the errors of `run` and `fill`.
pub fn read_runs<T>(
    path: &str,
    size: u64,
    offset: u64,
    buf: &mut [u8],
    run: impl Fn(u64, u64) -> Result<(Piece, u64, T), BlockError>,
    fill: impl Fn(Piece, u64, T, &mut [u8]) -> Result<(), BlockError>,
) -> Result<(), BlockError> {
    let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
    crate::block::check_range(path, size, offset, len)?;
    let end = offset.saturating_add(len);
    let mut pos = offset;
    while pos < end {
        let (piece, n, context) = run(pos, end)?;
        let from = usize::try_from(pos.saturating_sub(offset)).unwrap_or(usize::MAX);
        let to = from.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        let out = buf.get_mut(from..to).ok_or_else(|| BlockError::Internal {
            what: format!("{path}: a run of {n} bytes at {pos:#x} passes the read"),
        })?;
        match piece {
            Piece::Data { .. } | Piece::Compressed { .. } => fill(piece, pos, context, out)?,
            Piece::Zero | Piece::Unallocated => out.fill(0),
        }
        pos = pos.saturating_add(n.max(1));
    }
    Ok(())
}

/// [`read_runs`] for a format whose data runs are plain bytes of its file
/// (VDI, VHD): a data run that the file ends inside reads as zeros past
/// the end, as qemu reads a static VDI or a fixed VHD; any other run reads
/// as zeros.
///
/// # Errors
/// Those of [`read_runs`], `run` and [`read_or_zeros`].
pub fn read_plain_runs(
    storage: &dyn Storage,
    path: &str,
    size: u64,
    action: &'static str,
    offset: u64,
    buf: &mut [u8],
    run: impl Fn(u64, u64) -> Result<(Piece, u64), BlockError>,
) -> Result<(), BlockError> {
    read_runs(
        path,
        size,
        offset,
        buf,
        |pos, end| run(pos, end).map(|(piece, n)| (piece, n, ())),
        |piece, _, (), out| match piece {
            Piece::Data { host, .. } => read_or_zeros(storage, path, action, host, out),
            _ => {
                out.fill(0);
                Ok(())
            }
        },
    )
}

/// The `Io` error's action for a structure (a fixed word: `Io` wants a
/// `'static str`).
fn structure_action(_structure: &'static str) -> &'static str {
    "reading image metadata"
}

/// Reads a structure of at most `max` bytes at `offset`: what the file has
/// of it (shorter at the end of the file).
///
/// # Errors
/// `Io`; `Corrupt` when `offset` is past the end.
pub fn read_upto(
    storage: &dyn Storage,
    path: &str,
    structure: &'static str,
    offset: u64,
    max: usize,
) -> Result<Vec<u8>, BlockError> {
    let file_len = storage.len();
    let have = file_len.checked_sub(offset).ok_or_else(|| {
        BlockError::corrupt(
            path,
            structure,
            offset,
            format!("starts past the end of the file ({file_len} bytes)"),
        )
    })?;
    let n = usize::try_from(have).unwrap_or(usize::MAX).min(max);
    let mut buf = vec![0u8; n];
    read_exact(storage, path, structure, offset, &mut buf)?;
    Ok(buf)
}

/// A format whose map gives plain runs of its one file (VDI, VHD): the
/// [`BlockSource`] methods they share, from the map (`run`: the piece
/// at an offset and how far it reaches before an end) and the file.
pub struct PlainMap<'a, F: Fn(u64, u64) -> Result<(Piece, u64), BlockError>> {
    pub storage: &'a dyn Storage,
    pub path: &'a str,
    pub size: u64,
    /// Data answers as qemu's `BDRV_BLOCK_RECURSE` (a static VDI, a
    /// fixed VHD: [`recurse_into_file`]).
    pub recurse: bool,
    pub run: F,
}

impl<'a, F: Fn(u64, u64) -> Result<(Piece, u64), BlockError>> PlainMap<'a, F> {
    /// [`BlockSource::read_at`] ([`read_plain_runs`]; `action` names the
    /// read in errors).
    ///
    /// # Errors
    /// Those of [`read_plain_runs`].
    pub fn read_at(
        &self,
        action: &'static str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), BlockError> {
        read_plain_runs(
            self.storage,
            self.path,
            self.size,
            action,
            offset,
            buf,
            &self.run,
        )
    }

    /// [`BlockSource::block_status`]: one extent, the piece at `offset`.
    ///
    /// # Errors
    /// Out of range; the map's errors; asking the kernel for holes.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        crate::block::check_range(self.path, self.size, offset, len)?;
        let (piece, n) = (self.run)(offset, offset.saturating_add(len))?;
        let mut e = piece.extent(offset, n);
        if let (true, Piece::Data { host, .. }) = (self.recurse, piece) {
            recurse_into_file(self.storage, self.path, &mut e, host)?;
        }
        Ok(vec![e])
    }

    /// [`BlockSource::locate`]: what the map says at `offset`.
    ///
    /// # Errors
    /// Out of range; the map's errors.
    pub fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        crate::block::check_range(self.path, self.size, offset, len)?;
        let (piece, n) = (self.run)(offset, offset.saturating_add(len))?;
        Ok(piece.extent(offset, n))
    }

    /// [`BlockSource::stored`]: data blocks are plain bytes of the file,
    /// which a bulk copy has the kernel copy ([`stored_plain`]).
    ///
    /// # Errors
    /// Out of range; the map's errors; asking the kernel for holes.
    pub fn stored(&self, offset: u64, len: u64) -> Result<Option<HostRun<'a>>, BlockError> {
        crate::block::check_range(self.path, self.size, offset, len)?;
        let run = (self.run)(offset, offset.saturating_add(len))?;
        stored_plain(self.storage, self.path, run, len)
    }

    /// [`BlockSource::locate_exact`]: exact about holes in the file
    /// ([`PlainMap::block_status`] asks the kernel), so streams skip them
    /// instead of reading gigabytes of zeros.
    ///
    /// # Errors
    /// As [`PlainMap::block_status`].
    pub fn locate_exact(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        crate::block::first_extent(self.block_status(offset, len)?, self.path, offset)
    }
}

/// qemu's `BDRV_BLOCK_RECURSE` (block/io.c): data stored at `host` of a
/// file whose storage is a hole reads as zero (qemu reports it as data and
/// zero), and the answer stops where the file's hole or data run ends. A
/// hole that runs to the end of the file, or storage past it, does not
/// shorten the answer.
///
/// # Errors
/// `Io` from asking the kernel for holes.
pub fn recurse_into_file(
    storage: &dyn Storage,
    path: &str,
    e: &mut Extent,
    host: u64,
) -> Result<(), BlockError> {
    let file_len = storage.len();
    if host >= file_len {
        e.reads_zero = true;
        return Ok(());
    }
    let run = storage
        .next_run(host)
        .map_err(|err| BlockError::io(path, "asking for holes", host, err))?;
    let Some((data, run_end)) = run else {
        return Ok(());
    };
    let in_run = run_end.saturating_sub(host);
    let at_eof = host.saturating_add(in_run.min(e.len)) >= file_len;
    if !data && at_eof {
        e.reads_zero = true;
    } else {
        e.len = e.len.min(in_run.max(1));
        e.reads_zero = !data;
    }
    Ok(())
}

/// A UUID as text, bytes in order (RFC 4122 layout, as VHD and qemu print
/// them).
pub fn uuid_text(b: &[u8; 16]) -> String {
    let hex = |r: std::ops::Range<usize>| -> String {
        b.get(r)
            .unwrap_or_default()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// A Microsoft GUID as text: the first three fields are little-endian
/// (VHDX and VDI store them so).
pub fn guid_text(b: &[u8; 16]) -> String {
    let mut r = *b;
    r[..4].reverse();
    r[4..6].reverse();
    r[6..8].reverse();
    uuid_text(&r)
}

/// Parses a GUID written as text (`{xxxxxxxx-xxxx-…}`, braces optional)
/// into its on-disk Microsoft byte order.
pub fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .chars()
        .filter(|&c| c != '-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, slot) in b.iter_mut().enumerate() {
        let at = i.checked_mul(2)?;
        *slot = u8::from_str_radix(hex.get(at..at.checked_add(2)?)?, 16).ok()?;
    }
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// Decodes UTF-16 (little- or big-endian) up to the first NUL; unpaired
/// surrogates become U+FFFD.
pub fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|c| {
        let pair = [
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ];
        if big_endian {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    });
    char::decode_utf16(units.take_while(|&u| u != 0))
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

pub use crate::bytes::{be16, be32, be64, le16, le32, le64};

/// A 16-byte field.
pub fn bytes16(b: &[u8], at: usize) -> Option<[u8; 16]> {
    b.get(at..at.checked_add(16)?)?.try_into().ok()
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    #[test]
    fn guids_round_trip_in_microsoft_order() {
        let g = parse_guid("{2DC27766-F623-4200-9D64-115E9BFD4A08}").unwrap();
        assert_eq!(&g[..4], &[0x66, 0x77, 0xc2, 0x2d]);
        assert_eq!(guid_text(&g), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert!(parse_guid("nope").is_none());
    }

    #[test]
    fn utf16_stops_at_nul_and_survives_garbage() {
        let le: Vec<u8> = "a\\b.vhd\0zz"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(utf16(&le, false), "a\\b.vhd");
        assert_eq!(utf16(&[0x00, 0xd8, 0x41, 0x00], false), "\u{fffd}A");
        assert_eq!(utf16(&[0x41], false), "");
    }

    #[test]
    fn pieces_continue_only_on_the_next_bytes() {
        let a = Piece::Data { file: 0, host: 100 };
        assert!(a.continues(10, Piece::Data { file: 0, host: 110 }));
        assert!(!a.continues(10, Piece::Data { file: 1, host: 110 }));
        assert!(!a.continues(10, Piece::Data { file: 0, host: 111 }));
        assert!(Piece::Zero.continues(5, Piece::Zero));
        assert!(!Piece::Zero.continues(5, Piece::Unallocated));
    }
}
