//! The block layer: everything that turns image files into a virtual disk.
//!
//! One seam, [`BlockSource`], is implemented by every kind of layer (a raw
//! file, a qcow2 layer opened alone) and by the [`layered::LayeredReader`]
//! that stacks them, so the filesystem code above never knows what it reads.
//!
//! What this module does not own: the filesystem inside the disk, and the
//! user interface. Nothing here ever writes to an image.
use serde::Serialize;

pub mod buffer;
pub mod cache;
pub mod chain;
pub mod error;
pub mod formats;
pub mod hitmap;
pub mod image;
pub mod layered;
pub mod map;
pub mod nbd;
pub mod nbd_files;
pub mod origin;
pub mod page_store;
pub mod percent;
pub mod probe;
pub mod qcow2;
pub mod raw;
pub mod ssh;
pub mod storage;
pub mod storage_cache;
pub mod stream;
pub mod table;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

pub use error::BlockError;

/// What a layer says about a range of the virtual disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The layer holds data for the range.
    Data,
    /// The layer says the range reads as zeros (a qcow2 zero cluster, a hole
    /// in a raw file). It still *holds* the range: layers below are hidden.
    Zero,
    /// The layer does not hold the range: ask the layer below.
    Unallocated,
}

/// A run of the virtual disk with one [`Status`] in one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Start in the virtual disk.
    pub offset: u64,
    /// Length in bytes (never 0).
    pub len: u64,
    pub status: Status,
    /// The data is stored compressed (qcow2 compressed clusters).
    pub compressed: bool,
    /// Where the range lives in the layer's own file, when the format stores
    /// it at a known, contiguous place (what `qemu-img map` prints as
    /// `offset`).
    pub host_offset: Option<u64>,
    /// `Data` whose storage is a hole in the layer's file, so it reads as
    /// zeros (qemu reports such ranges as both data and zero).
    pub reads_zero: bool,
}

#[cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
impl Extent {
    /// The end of the extent in the virtual disk.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// The part of this extent from `offset` on, if `offset` is inside it:
    /// a suffix of a run is a run with the same status.
    pub fn remainder(&self, offset: u64) -> Option<Extent> {
        if offset < self.offset || offset >= self.end() {
            return None;
        }
        // offset is inside the extent (checked above): delta < len.
        let delta = offset.saturating_sub(self.offset);
        Some(Extent {
            offset,
            len: self.len.saturating_sub(delta),
            host_offset: self.host_offset.map(|h| h.saturating_add(delta)),
            ..*self
        })
    }
}

/// A readable, fixed-size virtual disk: one layer or a whole stack.
///
/// Implementations must be safe to share between threads: the UI's workers
/// and the CLI read through the same source.
pub trait BlockSource: Send + Sync {
    /// A short name for messages and the UI (usually the file path).
    fn name(&self) -> &str;

    /// The size of the virtual disk in bytes.
    fn len(&self) -> u64;

    /// True for a zero-length disk.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset`.
    ///
    /// # Errors
    /// [`BlockError::OutOfRange`] when the range passes the end of the disk;
    /// I/O and corruption errors name the file and offset.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError>;

    /// Fills every `(offset, buf)`. A source that pays a round trip per
    /// request (NBD, files over ssh) sends them together, many in flight;
    /// the default reads them one after another.
    ///
    /// # Errors
    /// As [`BlockSource::read_at`], for the first range that fails.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        for (offset, buf) in reqs.iter_mut() {
            self.read_at(*offset, buf)?;
        }
        Ok(())
    }

    /// Bytes at `offset` the source already holds in memory, up to `max`
    /// of them, handed out without a read: an NBD client's recent reads,
    /// shared where they are one large buffer (a tree walk's head of the
    /// disk, megabytes that the block cache's page store would otherwise
    /// copy, page-faulting a fresh buffer), copied where they are a small
    /// read's. `None` where the byte at `offset` is not held; the bytes
    /// returned may be fewer than `max` (one held piece). Taking them
    /// counts as reading them (a chain's hit map).
    fn held(&self, _offset: u64, _max: u64) -> Option<bytes::Bytes> {
        None
    }

    /// True when each request pays a round trip (an NBD server, a file
    /// over ssh): readers then batch what they will need
    /// ([`BlockSource::read_many`]) instead of asking piece by piece.
    fn remote(&self) -> bool {
        false
    }

    /// How many bulk readers the source serves at once to advantage: an
    /// NBD export allowing multi-conn, one per connection (each reader
    /// then keeps its own connection's pipeline full). Bulk copies
    /// ([`crate::block::stream`]) use at least this many reader threads.
    fn bulk_readers(&self) -> usize {
        1
    }

    /// Whether locating `offset` would first read metadata from a remote
    /// source that is not held yet (a qcow2 layer's L2 table): a chain
    /// then fetches it for every such layer at once
    /// ([`BlockSource::warm_map`]) instead of one layer after another.
    /// No I/O; false for local sources.
    fn map_missing(&self, _offset: u64) -> bool {
        false
    }

    /// Fetches what locating `offset` reads (see
    /// [`BlockSource::map_missing`]). A hint: errors are left for the
    /// locate that follows.
    fn warm_map(&self, _offset: u64) {}

    /// Describes a prefix of `[offset, offset + len)`: a non-empty list of
    /// contiguous extents in order, starting at `offset`. Like qemu's
    /// `block_status`, it may stop early (at the end of a metadata table, or
    /// after a bounded number of extents); callers loop.
    ///
    /// # Errors
    /// As [`BlockSource::read_at`]; `len` must be non-zero and the range
    /// inside the disk.
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError>;

    /// What qemu's block status says about a prefix of the range, for
    /// `map --json` (qemu's `qemu-img map`): the same as
    /// [`BlockSource::block_status`] except for formats whose qemu driver
    /// answers less precisely (qemu's vhdx calls everything data).
    ///
    /// # Errors
    /// As [`BlockSource::block_status`].
    fn qemu_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        self.block_status(offset, len)
    }

    /// Where a read of a prefix of the range would be served from. May be
    /// coarser than [`BlockSource::block_status`]: a raw file answers `Data`
    /// for holes too, because they read as zeros anyway and asking the
    /// kernel costs two syscalls.
    ///
    /// # Errors
    /// As [`BlockSource::block_status`].
    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        first_extent(self.block_status(offset, len)?, self.name(), offset)
    }

    /// [`BlockSource::locate`] exact about what reads as zeros: bulk copies
    /// (`read`) skip those ranges instead of reading and writing them, so
    /// a source whose `locate` is coarse to save system calls (a raw file
    /// answers `Data` for holes) answers precisely here. Called once per
    /// extent of a stream, where the cost of asking is repaid.
    ///
    /// # Errors
    /// As [`BlockSource::block_status`].
    fn locate_exact(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        self.locate(offset, len)
    }

    /// Where a prefix of `[offset, offset + len)`, which this layer holds
    /// as data, lies unchanged and contiguous in a local file: a bulk copy
    /// (`read` to a file) then has the kernel move those bytes from file
    /// to file, with no copy through user space; or that the prefix lies
    /// in a hole of that file, so it reads as zeros and is not copied at
    /// all. `None` when the layer cannot say (compressed or encoded data,
    /// remote storage): the caller reads the range instead.
    ///
    /// # Errors
    /// As [`BlockSource::block_status`].
    fn stored(&self, _offset: u64, _len: u64) -> Result<Option<HostRun<'_>>, BlockError> {
        Ok(None)
    }
}

/// Where a layer keeps a prefix of a data run (see [`BlockSource::stored`]).
#[derive(Clone, Copy, Debug)]
pub enum HostRun<'a> {
    /// Its bytes lie as-is in a local file.
    Stored(Stored<'a>),
    /// This many bytes lie in a hole of the layer's file (a qcow2 image
    /// with preallocated metadata, a discarded range): they read as zeros.
    Hole(u64),
}

impl HostRun<'_> {
    /// The prefix's length.
    pub fn len(&self) -> u64 {
        match self {
            HostRun::Stored(s) => s.len,
            HostRun::Hole(n) => *n,
        }
    }

    /// True for an empty prefix (which callers never act on).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A run of the virtual disk stored as-is in a local file (see
/// [`BlockSource::stored`]).
#[derive(Clone, Copy, Debug)]
pub struct Stored<'a> {
    /// The layer's file (or its external data file), opened read-only.
    pub file: &'a std::fs::File,
    /// Where the run starts in `file`.
    pub host: u64,
    /// Its length (never 0), inside the file.
    pub len: u64,
}

/// The first extent of a block status answer at `offset` (a source
/// answering nothing is an internal error, never an empty range that a
/// reader would loop on).
///
/// # Errors
/// `Internal` for an empty answer.
pub fn first_extent(extents: Vec<Extent>, name: &str, offset: u64) -> Result<Extent, BlockError> {
    extents
        .into_iter()
        .next()
        .ok_or_else(|| BlockError::Internal {
            what: format!("{name}: block status returned no extent at {offset:#x}"),
        })
}

/// Whether the `len` bytes of `disk` at `at` read as zeros, as its block
/// status says (holes of a sparse file, clusters no layer holds), and for
/// how many (at most `len`, at least 1). An error, an empty answer, an
/// extent not starting at `at` or a range past the end is "data, for one
/// byte": the caller reads it. Lets a walk over what a field claims (a FAT
/// of the size the boot sector says, a diff's chunks over a base's holes)
/// cost what is stored.
pub fn zero_run(disk: &dyn BlockSource, at: u64, len: u64) -> (bool, u64) {
    let len = len.min(disk.len().saturating_sub(at));
    if len == 0 {
        return (false, 1);
    }
    match disk.locate_exact(at, len) {
        Ok(e) if e.len > 0 && e.offset == at => (e.status != Status::Data, e.len.min(len)),
        _ => (false, 1),
    }
}

/// Byte ranges `(offset, len)` sorted, with overlapping and touching
/// ones joined.
pub fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    merge_in_place(&mut ranges);
    ranges
}

/// [`merge_ranges`] in place: no second vector (`blame -R` merges a
/// few ranges per file).
pub fn merge_in_place(ranges: &mut Vec<(u64, u64)>) {
    ranges.sort_unstable();
    let mut kept = 0usize;
    for i in 0..ranges.len() {
        let Some(&(s, l)) = ranges.get(i) else {
            break;
        };
        match kept.checked_sub(1).and_then(|k| ranges.get_mut(k)) {
            Some(last) if s <= last.0.saturating_add(last.1) => {
                last.1 = last.1.max(s.saturating_add(l).saturating_sub(last.0));
            }
            _ => {
                if let Some(slot) = ranges.get_mut(kept) {
                    *slot = (s, l);
                }
                kept = kept.saturating_add(1);
            }
        }
    }
    ranges.truncate(kept);
}

/// Checks that `[offset, offset + len)` lies inside a disk of `size` bytes.
///
/// # Errors
/// [`BlockError::OutOfRange`] naming `name`.
pub fn check_range(name: &str, size: u64, offset: u64, len: u64) -> Result<(), BlockError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange {
            name: name.to_owned(),
            offset,
            len,
            size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::merge_ranges;

    /// The bytes `ranges` cover, in a small domain.
    fn covered(ranges: &[(u64, u64)]) -> Vec<bool> {
        let mut on = vec![false; 64];
        for &(s, l) in ranges {
            for b in s..s + l {
                on[b as usize] = true;
            }
        }
        on
    }

    #[test]
    fn merged_ranges_cover_the_same_bytes_sorted_and_apart() {
        // A fixed pseudo-random sequence of range sets in 0..64.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..2000 {
            let n = next(6);
            let ranges: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let s = next(60);
                    (s, next(64 - s))
                })
                .collect();
            let merged = merge_ranges(ranges.clone());
            // Empty ranges cover nothing but may stay as their own entry
            // when they touch nothing.
            assert_eq!(covered(&merged), covered(&ranges), "{ranges:?}");
            for w in merged.windows(2) {
                assert!(w[0].0 + w[0].1 < w[1].0, "{ranges:?} -> {merged:?}");
            }
        }
    }
}
