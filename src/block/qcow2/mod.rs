//! A read-only qcow2 reader of our own (versions 2 and 3; standard and
//! extended L2 entries; zero, compressed (zlib, zstd) and subclusters).
//!
//! Why not the `qcow2-rs` crate: on damaged images it panics, reads
//! uninitialised memory and allocates gigabytes, and it lacks zstd and raw
//! backing files. An inspector of untrusted images cannot ship that. Here
//! every table offset and size is checked against the file before use, and
//! every allocation is bounded by the file's own size or a fixed cap.
//!
//! A layer opened here knows nothing about its backing file: unallocated
//! ranges report [`Status::Unallocated`] and read as zeros. Stacking is the
//! job of [`crate::block::layered`].
//!
//! Offsets computed from the file are checked (`checked_*`, or masks and
//! shifts by bit counts the header decoder bounded); clippy enforces it.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;

use crate::block::buffer::AlignedBuf;
use crate::block::storage::Storage;
use crate::block::{check_range, BlockError, BlockSource, Extent, HostRun, Status, Stored};
use crate::bytes::{be64, u64_of, us};

pub mod bitmap;
pub mod compressed;
pub mod header;
mod l1;
pub mod l2;
pub mod refcount;
pub mod snapshot;

use header::Header;
use l2::{Invalid, Kind, L1E_OFFSET_MASK, OFLAG_COPIED};

/// Bytes of L2 tables each layer keeps decoded in memory.
const L2_CACHE_BYTES: u64 = 4 << 20;
/// Bytes of L2 tables asked for together when one is missing (remote
/// storage fetches them in one round trip: 32 tables of 64 KiB).
const L2_PREFETCH_BYTES: u64 = 2 << 20;
/// Decompressed clusters kept per layer (reads are often smaller than a
/// cluster, and each piece would otherwise decompress it again).
const DECOMPRESSED_CACHE: usize = 8;
/// Most bytes of an L1 table fetched with the header over a remote file:
/// the first slice a lookup reads (see `l1.rs`); the rest is read as
/// lookups reach it.
const L1_HINT_BYTES: u64 = 64 << 10;

/// One qcow2 file, opened alone.
pub struct Qcow2Layer {
    path: String,
    storage: Arc<dyn Storage>,
    header: Header,
    cluster_size: u64,
    /// `cluster_size - 1`: the offset inside a cluster.
    cluster_mask: u64,
    /// log2 of the bytes one L1 entry maps.
    l1_shift: u32,
    /// The offset inside the span of one L1 entry.
    l1_mask: u64,
    /// The index of an entry inside its L2 table, once shifted down by
    /// `cluster_bits`.
    l2_mask: u64,
    /// log2 of the smallest unit with its own state (a subcluster with
    /// extended L2 entries, else a cluster).
    unit_bits: u32,
    /// The offset inside one unit.
    unit_mask: u64,
    /// Read a slice at a time as lookups reach it.
    l1: l1::L1,
    /// qemu's metadata-preallocation heuristic said yes: block status looks
    /// for holes in the file under data clusters. Decided on the first
    /// block status call: it reads the refcounts, which reading data and
    /// the filesystem commands never need (a tenth of `info`'s time).
    metadata_prealloc: OnceLock<bool>,
    /// The external data file, where the header names one: data clusters'
    /// host offsets are offsets into it.
    data: Option<Arc<dyn Storage>>,
    /// The internal snapshot this layer reads as, where one was chosen.
    snapshot: Option<snapshot::Snapshot>,
    l2_cache: Mutex<LruCache<u64, Arc<AlignedBuf>>>,
    zcache: Mutex<LruCache<u64, Arc<[u8]>>>,
}

/// A run of units with one kind; `host` is the host offset of the run's
/// first byte where the kind has one.
struct Run {
    kind: Kind,
    host: Option<u64>,
    len: u64,
}

impl Qcow2Layer {
    /// Opens a qcow2 image: decodes and checks the header (the L1 table is
    /// read a slice at a time as lookups reach it). `path` names the file
    /// in messages.
    ///
    /// # Errors
    /// I/O errors, `Corrupt` headers and tables, `Unsupported` features.
    pub fn open(path: &str, storage: Arc<dyn Storage>) -> Result<Self, BlockError> {
        let file_len = storage.len();
        let mut fixed = vec![0u8; us(file_len.min(128))];
        storage
            .read_exact_at(0, &mut fixed)
            .map_err(|e| BlockError::io(path, "reading the qcow2 header", 0, e))?;
        // At most 2 MiB + 1 KiB: wanted_len clamps the cluster size.
        let want = Header::wanted_len(&fixed).min(file_len);
        if storage.remote() {
            // The rest of the header and the L1 table's first slice in
            // one round trip: a hint taken from the header as it is
            // (decoded and checked below).
            let l1_size = crate::bytes::be32(&fixed, 36).unwrap_or(0);
            let l1_at = crate::bytes::be64(&fixed, 40).unwrap_or(0);
            let l1_len = u64::from(l1_size).saturating_mul(8).min(L1_HINT_BYTES);
            storage.prefetch(&[(0, want), (l1_at, l1_len)]);
        }
        let mut head = vec![0u8; us(want)];
        storage
            .read_exact_at(0, &mut head)
            .map_err(|e| BlockError::io(path, "reading the qcow2 header", 0, e))?;
        let header = Header::decode(path, &head, file_len)?;
        if header.crypt_method != 0 {
            return Err(BlockError::unsupported(
                path,
                encryption_note(storage.as_ref(), &header),
            ));
        }

        let cluster_bits = header.cluster_bits;
        let cluster_size = header.cluster_size();
        let l2_bits = header.l2_bits();
        // Extended L2 needs cluster_bits >= 14 (checked by Header::decode):
        // 32 subclusters of at least 512 bytes.
        let unit_bits = if header.extended_l2() {
            cluster_bits.saturating_sub(5)
        } else {
            cluster_bits
        };
        // At most 21 + 18: both checked by Header::decode.
        let l1_shift = cluster_bits.saturating_add(l2_bits);

        // Header::decode checked l1_size against qemu's 32 MiB cap and the
        // table against the file's length.
        let l1 = l1::L1::new(
            path,
            Arc::clone(&storage),
            header.l1_table_offset,
            header.l1_size,
            "reading the L1 table",
        );

        let tables = us((L2_CACHE_BYTES >> cluster_bits).max(4));
        Ok(Qcow2Layer {
            path: path.to_owned(),
            storage,
            cluster_size,
            cluster_mask: low_mask(cluster_bits),
            l1_shift,
            l1_mask: low_mask(l1_shift),
            l2_mask: low_mask(l2_bits),
            unit_bits,
            unit_mask: low_mask(unit_bits),
            l1,
            metadata_prealloc: OnceLock::new(),
            snapshot: None,
            data: None,
            l2_cache: Mutex::new(crate::lazy_lru::bounded(tables)),
            zcache: Mutex::new(crate::lazy_lru::bounded(DECOMPRESSED_CACHE)),
            header,
        })
    }

    /// qemu's metadata-preallocation heuristic, run once.
    fn metadata_prealloc(&self) -> bool {
        *self.metadata_prealloc.get_or_init(|| {
            refcount::detect_metadata_preallocation(
                self.storage.as_ref(),
                &self.header,
                self.header.refcount_table_offset,
                self.header.refcount_table_clusters,
            )
        })
    }

    /// The internal snapshots (`qemu-img snapshot -l`).
    ///
    /// # Errors
    /// A damaged snapshot table (see [`snapshot::read_table`]).
    pub fn snapshots(&self) -> Result<Vec<snapshot::Snapshot>, BlockError> {
        snapshot::read_table(&self.path, self.storage.as_ref(), &self.header)
    }

    /// The persistent dirty bitmaps (none when the header marks them
    /// inconsistent, as qemu ignores them then).
    ///
    /// # Errors
    /// A damaged bitmap directory (see [`bitmap::read_directory`]).
    pub fn bitmaps(&self) -> Result<Vec<bitmap::Bitmap>, BlockError> {
        bitmap::read_directory(&self.path, self.storage.as_ref(), &self.header)
    }

    /// Calls `each(offset, length, dirty)` for the merged runs of the
    /// bitmap named `name` over the whole disk.
    ///
    /// # Errors
    /// No such bitmap (the message lists those there are); a bitmap in
    /// use; a damaged bitmap; errors from `each`.
    pub fn bitmap_runs(
        &self,
        name: &str,
        each: &mut dyn FnMut(u64, u64, bool) -> Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        let all = self.bitmaps()?;
        let Some(found) = all.iter().find(|b| b.name == name) else {
            let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
            return Err(BlockError::unsupported(
                &self.path,
                format!(
                    "no bitmap {name:?} (bitmaps here: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        };
        bitmap::dirty_runs(
            &self.path,
            self.storage.as_ref(),
            &self.header,
            found,
            self.header.size,
            each,
        )
    }

    /// The snapshot this layer reads as (see [`Qcow2Layer::at_snapshot`]).
    pub fn snapshot(&self) -> Option<&snapshot::Snapshot> {
        self.snapshot.as_ref()
    }

    /// This layer as it was when the internal snapshot `wanted` (an ID,
    /// else a name, as `qemu-img convert -l` takes it) was taken: its L1
    /// table and disk size. Unallocated clusters still read from the
    /// backing file, as in qemu.
    ///
    /// # Errors
    /// No such snapshot (the message lists those there are); a damaged
    /// snapshot table or L1 table.
    pub fn at_snapshot(mut self, wanted: &str) -> Result<Self, BlockError> {
        let all = self.snapshots()?;
        let found = all
            .iter()
            .find(|s| s.id == wanted)
            .or_else(|| all.iter().find(|s| s.name == wanted));
        let Some(found) = found.cloned() else {
            let names: Vec<String> = all
                .iter()
                .map(|s| format!("{} ({})", s.id, s.name))
                .collect();
            return Err(BlockError::unsupported(
                &self.path,
                format!(
                    "no internal snapshot {wanted:?} (there {}: {})",
                    if names.len() == 1 { "is" } else { "are" },
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        };
        snapshot::check_l1(&self.path, &found, &self.header, self.storage.len())?;
        self.l1 = l1::L1::new(
            &self.path,
            Arc::clone(&self.storage),
            found.l1_table_offset,
            found.l1_size,
            "reading a snapshot's L1 table",
        );
        // Read now, as the whole table was before it was read lazily: a
        // snapshot that cannot be read is refused here, not on first use.
        self.l1.get(0)?;
        self.header.l1_table_offset = found.l1_table_offset;
        self.header.l1_size = found.l1_size;
        self.header.size = found.disk_size & !511;
        self.l2_cache.lock().map_err(|_| poisoned())?.clear();
        self.snapshot = Some(found);
        Ok(self)
    }

    /// The guest ranges where this view and `other` (the same file as of
    /// another internal snapshot, or as it is now) may read differently:
    /// the clusters whose L2 entries differ (the copied flag aside), and
    /// what lies between the two disk sizes. A table both views share
    /// (equal L1 entries) is not read: qemu copies a cluster a snapshot
    /// shares before writing it, so an equal entry maps equal bytes. Costs
    /// the L2 tables that differ, not the disk. Sorted and merged.
    ///
    /// # Errors
    /// Damaged L1 entries or L2 tables of either view.
    pub fn differs_from(&self, other: &Qcow2Layer) -> Result<Vec<(u64, u64)>, BlockError> {
        let size = self.header.size.max(other.header.size);
        let small = self.header.size.min(other.header.size);
        if self.header.cluster_bits != other.header.cluster_bits
            || self.header.extended_l2() != other.header.extended_l2()
        {
            // Not two views of one file: everything may differ.
            return Ok(vec![(0, size)]);
        }
        let extended = self.header.extended_l2();
        let width: usize = if extended { 16 } else { 8 };
        let entries = 1u64 << self.header.l2_bits();
        let mut out: Vec<(u64, u64)> = Vec::new();
        // An entry as compared: the mapping without the copied flag (it
        // only says whether the refcount is 1), and the subcluster bitmap.
        let entry = |t: &Option<Arc<AlignedBuf>>, j: u64| -> (u64, u64) {
            let Some(t) = t.as_ref() else {
                return (0, 0);
            };
            let at = us(j.saturating_mul(u64_of(width)));
            let e = be64(t, at).unwrap_or(0) & !OFLAG_COPIED;
            let b = if extended {
                be64(t, at.saturating_add(8)).unwrap_or(0)
            } else {
                0
            };
            (e, b)
        };
        // A slice of both tables at a time (slices start at the same
        // indexes in both; a shorter table reads as empty entries).
        let mut next = 0u64;
        'tables: while next < self.l1.len().max(other.l1.len()) {
            let (ra, rb) = (self.l1.rest_of_slice(next)?, other.l1.rest_of_slice(next)?);
            let (ea, eb) = (ra.entries(), rb.entries());
            let step = match (ea.len(), eb.len()) {
                (0, n) | (n, 0) => n,
                (x, y) => x.min(y),
            };
            if step == 0 {
                break;
            }
            let first = next;
            next = next.saturating_add(u64_of(step));
            for k in 0..step {
                let i = first.saturating_add(u64_of(k));
                let a = ea.get(k).map_or(0, |e| e & L1E_OFFSET_MASK);
                let b = eb.get(k).map_or(0, |e| e & L1E_OFFSET_MASK);
                if a == b {
                    continue;
                }
                let base = i.checked_shl(self.l1_shift).unwrap_or(u64::MAX);
                if base >= size {
                    break 'tables;
                }
                let (ta, tb) = (self.l2_table(i)?, other.l2_table(i)?);
                for j in 0..entries {
                    if entry(&ta, j) != entry(&tb, j) {
                        let at = base.saturating_add(j << self.header.cluster_bits);
                        if at < size {
                            // Joined as they come (in guest order): a large
                            // difference stays one range, not one per cluster.
                            let n = self.cluster_size.min(size.saturating_sub(at));
                            match out.last_mut() {
                                Some(last) if last.0.saturating_add(last.1) == at => {
                                    last.1 = last.1.saturating_add(n);
                                }
                                _ => out.push((at, n)),
                            }
                        }
                    }
                }
            }
        }
        if small < size {
            out.push((small, size.saturating_sub(small)));
        }
        Ok(crate::block::merge_ranges(out))
    }

    /// Reads guest data from `data` (the image's external data file,
    /// opened by the caller the way qemu finds it).
    pub fn set_data_file(&mut self, data: Arc<dyn Storage>) {
        self.data = Some(data);
    }

    /// Where data clusters live: the external data file, else this file.
    fn data_storage(&self) -> &Arc<dyn Storage> {
        self.data.as_ref().unwrap_or(&self.storage)
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The underlying file.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Guest bytes this layer holds itself (data, compressed and zero
    /// clusters), from the L1/L2 tables alone.
    ///
    /// The cost follows the distinct L2 tables the image really has, not
    /// the size it claims: L1 entries that point to a table already
    /// counted (a hostile image can point all of them at one) reuse its
    /// count, so a small file claiming 16 TiB is summed in a moment.
    ///
    /// # Errors
    /// Invalid L1 or L2 entries (as [`BlockSource::block_status`] reports
    /// them) in the part of a table that maps the disk; read errors.
    pub fn held_bytes(&self) -> Result<u64, BlockError> {
        let size = self.header.size;
        let span = 1u64 << self.l1_shift;
        let mut by_table: std::collections::HashMap<u64, u64> = Default::default();
        let mut held = 0u64;
        let mut index = 0u64;
        'slices: while index < self.l1.len() {
            let rest = self.l1.rest_of_slice(index)?;
            if rest.entries().is_empty() {
                break;
            }
            for &entry in rest.entries() {
                let this = index;
                index = index.saturating_add(1);
                let Some(start) = this.checked_mul(span).filter(|&s| s < size) else {
                    break 'slices;
                };
                let table = entry & L1E_OFFSET_MASK;
                if table == 0 {
                    continue;
                }
                let end = start.saturating_add(span).min(size);
                let whole = end.saturating_sub(start) == span;
                let bytes = match by_table.get(&table) {
                    Some(&b) if whole => b,
                    _ => {
                        let b = self.table_held(this, start, end)?;
                        if whole {
                            by_table.insert(table, b);
                        }
                        b
                    }
                };
                held = held.saturating_add(bytes);
            }
        }
        Ok(held)
    }

    /// Bytes of `[start, end)` (inside the span of L1 entry `index`) that
    /// the entry's L2 table holds.
    fn table_held(&self, index: u64, start: u64, end: u64) -> Result<u64, BlockError> {
        let Some(table) = self.l2_table(index)? else {
            return Ok(0);
        };
        let unit = 1u64 << self.unit_bits;
        let mut held = 0u64;
        let mut pos = start;
        while pos < end {
            let (kind, _) = self.unit_kind(&table, pos)?;
            let next = pos.saturating_add(unit).min(end);
            if !matches!(kind, Kind::UnallocatedPlain | Kind::UnallocatedAlloc { .. }) {
                held = held.saturating_add(next.saturating_sub(pos));
            }
            pos = next;
        }
        Ok(held)
    }

    fn l2_table(&self, l1_index: u64) -> Result<Option<Arc<AlignedBuf>>, BlockError> {
        let offset = self.l1.get(l1_index)? & L1E_OFFSET_MASK;
        if offset == 0 {
            return Ok(None);
        }
        // For messages only.
        let l1_entry_at = self.l1.entry_at(l1_index);
        if offset & self.cluster_mask != 0 {
            return Err(BlockError::corrupt(
                &self.path,
                "L1 entry",
                l1_entry_at,
                format!("L2 table offset {offset:#x} (L1 index {l1_index}) is not cluster-aligned"),
            ));
        }
        if offset
            .checked_add(self.cluster_size)
            .is_none_or(|e| e > self.storage.len())
        {
            return Err(BlockError::corrupt(
                &self.path,
                "L1 entry",
                l1_entry_at,
                format!(
                    "L2 table at {offset:#x} (L1 index {l1_index}) passes the end of the file ({} bytes)",
                    self.storage.len()
                ),
            ));
        }
        if let Some(t) = self.l2_cache.lock().map_err(|_| poisoned())?.get(&offset) {
            return Ok(Some(Arc::clone(t)));
        }
        // Walks go forward: remote storage fetches the next tables with this
        // one, in one round trip (local files ignore the hint). The tables
        // the L1 slice at hand names (it is read already).
        let rest = self.l1.rest_of_slice(l1_index)?;
        let ahead: Vec<(u64, u64)> = rest
            .entries()
            .iter()
            .map(|e| e & L1E_OFFSET_MASK)
            .filter(|&o| o != 0 && o & self.cluster_mask == 0)
            .take(us(L2_PREFETCH_BYTES >> self.header.cluster_bits))
            .map(|o| (o, self.cluster_size))
            .collect();
        if ahead.len() > 1 {
            self.storage.prefetch(&ahead);
        }
        // Read straight into the shared table (a walk of a large disk
        // reads thousands of tables: no second copy of each), page-aligned:
        // the kernel copies into an unaligned buffer ~3x slower.
        let mut table = Arc::new(AlignedBuf::new(us(self.cluster_size)));
        let raw = Arc::get_mut(&mut table).ok_or_else(|| BlockError::Internal {
            what: format!("{}: a new L2 table is shared", self.path),
        })?;
        self.storage
            .read_exact_at(offset, raw)
            .map_err(|e| BlockError::io(&self.path, "reading an L2 table", offset, e))?;
        // Kept as raw bytes: entries are decoded when looked at, so a walk
        // over a sparse table does not convert thousands of empty entries.
        self.l2_cache
            .lock()
            .map_err(|_| poisoned())?
            .put(offset, Arc::clone(&table));
        Ok(Some(table))
    }

    /// The kind of the unit at `offset` and how far the same kind goes (up
    /// to `end`, and never past the L1 entry's span). Normal and zero-alloc
    /// runs also need contiguous host offsets; compressed clusters are
    /// merged only when `merge_compressed` (block status), never for reads.
    fn run_at(&self, offset: u64, end: u64, merge_compressed: bool) -> Result<Run, BlockError> {
        // Offsets here are below the disk size (< 2^63) and hosts below
        // 2^56 + a cluster, so the saturating additions never saturate.
        let l1_index = offset >> self.l1_shift;
        let span_end = (offset | self.l1_mask).saturating_add(1).min(end);
        let Some(table) = self.l2_table(l1_index)? else {
            // The empty L1 entries that follow are one run with this one
            // (a sparse disk of terabytes has tens of thousands of them),
            // found a slice at a time and no further than `end`.
            let guest = |i: u64| i.checked_shl(self.l1_shift).unwrap_or(u64::MAX);
            let mut next = l1_index.saturating_add(1);
            let stop = loop {
                if guest(next) >= end {
                    break end;
                }
                let rest = self.l1.rest_of_slice(next)?;
                let entries = rest.entries();
                if entries.is_empty() {
                    // Past the table: nothing more is held.
                    break end;
                }
                let empty = rest.empty_prefix(L1E_OFFSET_MASK);
                next = next.saturating_add(u64_of(empty));
                if empty < entries.len() {
                    break guest(next).min(end);
                }
            };
            return Ok(Run {
                kind: Kind::UnallocatedPlain,
                host: None,
                len: stop.max(span_end).saturating_sub(offset),
            });
        };
        let unit = 1u64 << self.unit_bits;
        let (first, first_host) = self.unit_kind(&table, offset)?;
        // A host offset is a cluster-aligned offset plus the guest offset's
        // place in its cluster: the next unit starts at the next unit
        // boundary in both.
        let mut next_host = first_host.map(|h| (h | self.unit_mask).saturating_add(1));
        let mut pos = (offset | self.unit_mask).saturating_add(1);
        // Empty entries (all bits clear; without an external data file,
        // where host offset 0 is data) are unallocated clusters: a run of
        // them is found a slice of the table at a time, not decoded entry
        // by entry (a sparse table of a large disk is mostly empty).
        let skip_empty = first == Kind::UnallocatedPlain && self.data.is_none();
        while pos < span_end {
            if skip_empty && pos & self.cluster_mask == 0 {
                pos = self.skip_empty_entries(&table, pos, span_end);
                if pos >= span_end {
                    break;
                }
            }
            let (kind, host) = self.unit_kind(&table, pos)?;
            let same = match (first, kind) {
                (Kind::Compressed { .. }, Kind::Compressed { .. }) => merge_compressed,
                (Kind::Normal { .. }, Kind::Normal { .. })
                | (Kind::ZeroAlloc { .. }, Kind::ZeroAlloc { .. })
                | (Kind::UnallocatedAlloc { .. }, Kind::UnallocatedAlloc { .. }) => {
                    host == next_host
                }
                (a, b) => a == b,
            };
            if !same {
                break;
            }
            next_host = next_host.map(|h| h.saturating_add(unit));
            pos = pos.saturating_add(unit);
        }
        Ok(Run {
            kind: first,
            host: first_host,
            len: pos.min(span_end).saturating_sub(offset),
        })
    }

    /// The first cluster from cluster-aligned `pos` (before `end`, in the
    /// same L2 table) whose entry in `table` is not empty, or `end`.
    fn skip_empty_entries(&self, table: &[u8], pos: u64, end: u64) -> u64 {
        let bits = self.header.cluster_bits;
        let width: u64 = if self.header.extended_l2() { 16 } else { 8 };
        let first = (pos >> bits) & self.l2_mask;
        let clusters = end.saturating_sub(pos).div_ceil(self.cluster_size);
        let from = us(first.saturating_mul(width));
        let to = us(first.saturating_add(clusters).saturating_mul(width)).min(table.len());
        let entries = table.get(from..to).unwrap_or_default();
        let empty = u64_of(zero_prefix(entries)).checked_div(width).unwrap_or(0);
        pos.saturating_add(empty << bits).min(end)
    }

    /// Kind of the unit containing `offset`, and the host offset of the byte
    /// at `offset` where the kind stores one.
    fn unit_kind(&self, table: &[u8], offset: u64) -> Result<(Kind, Option<u64>), BlockError> {
        let h = &self.header;
        let in_cluster = offset & self.cluster_mask;
        let index = (offset >> h.cluster_bits) & self.l2_mask;
        // The entry's byte offset in its table: 8 or 16 bytes an entry.
        let width_bits = if h.extended_l2() { 4 } else { 3 };
        let at = us(index << width_bits);
        // A table holds exactly the entries `l2_mask` can index, so these
        // reads are inside it; a short table is a bug, reported as one.
        let entry = be64(table, at);
        let bitmap = if h.extended_l2() {
            be64(table, at | 8)
        } else {
            Some(0)
        };
        let (Some(entry), Some(bitmap)) = (entry, bitmap) else {
            return Err(BlockError::Internal {
                what: format!(
                    "{}: L2 entry {index} is past its {}-byte table",
                    self.path,
                    table.len()
                ),
            });
        };
        // Below 32: the offset in a cluster shifted down by its subcluster
        // bits.
        let sc = u32::try_from(in_cluster >> self.unit_bits).unwrap_or(u32::MAX);
        let kind = l2::classify(
            entry,
            bitmap,
            sc,
            h.extended_l2(),
            self.cluster_mask,
            h.version,
            self.data.is_some(),
        )
            .map_err(|why| {
                let l1_index = offset >> self.l1_shift;
                let l2_offset = self.l1.get(l1_index).map_or(0, |e| e & L1E_OFFSET_MASK);
                let at = l2_offset.saturating_add(u64_of(at));
                let detail = match why {
                    Invalid::Unaligned(host) => {
                        format!("cluster offset {host:#x} is not cluster-aligned (guest offset {offset:#x})")
                    }
                    Invalid::Bitmap(b) => format!("invalid subcluster bitmap {b:#018x} (guest offset {offset:#x})"),
                    Invalid::ZeroInV2 => format!("zero cluster flag in a version 2 image (guest offset {offset:#x})"),
                };
                BlockError::corrupt(&self.path, "L2 entry", at, detail)
            })?;
        let host = match kind {
            // Hosts are cluster-aligned (classify checked it): `|` adds.
            Kind::Normal { host } | Kind::ZeroAlloc { host } | Kind::UnallocatedAlloc { host } => {
                Some(host | in_cluster)
            }
            _ => None,
        };
        Ok((kind, host))
    }

    /// The decompressed bytes of the compressed cluster `descriptor`.
    fn decompressed(&self, descriptor: u64) -> Result<Arc<[u8]>, BlockError> {
        if let Some(c) = self.zcache.lock().map_err(|_| poisoned())?.get(&descriptor) {
            return Ok(Arc::clone(c));
        }
        let (offset, len) = l2::compressed_location(descriptor, self.header.cluster_bits);
        let file_len = self.storage.len();
        let Some(in_file) = file_len.checked_sub(offset).filter(|&n| n > 0) else {
            return Err(BlockError::corrupt(
                &self.path,
                "compressed cluster",
                offset,
                format!("starts past the end of the file ({file_len} bytes)"),
            ));
        };
        // The stored length is rounded up to sectors and may pass the end
        // of the file when the cluster is the last thing in it. At most
        // 2^(cluster_bits - 8) sectors: 4 MiB.
        let len = len.min(in_file);
        let mut input = vec![0u8; us(len)];
        self.storage
            .read_exact_at(offset, &mut input)
            .map_err(|e| BlockError::io(&self.path, "reading a compressed cluster", offset, e))?;
        let mut out = vec![0u8; us(self.cluster_size)];
        compressed::decompress(self.header.compression, &input, &mut out).map_err(|detail| {
            BlockError::corrupt(&self.path, "compressed cluster", offset, detail)
        })?;
        let out: Arc<[u8]> = out.into();
        self.zcache
            .lock()
            .map_err(|_| poisoned())?
            .put(descriptor, Arc::clone(&out));
        Ok(out)
    }
}

/// What an encrypted image uses, in `qemu-img info`'s words (layerscope
/// holds no keys and reads no encrypted data).
fn encryption_note(storage: &dyn Storage, header: &Header) -> String {
    if header.crypt_method == 1 {
        return "encrypted image (qemu's legacy AES-128-CBC encryption): layerscope does not decrypt".into();
    }
    let Some((offset, len)) = header.luks_header else {
        return "encrypted image (LUKS), but no crypto header extension says where its LUKS header is".into();
    };
    // LUKS1: magic, version, cipher name and mode, hash, payload offset,
    // key bytes (at 108).
    let mut raw = [0u8; 112];
    let luks = if len >= 112
        && offset.checked_add(112).is_some_and(|e| e <= storage.len())
        && storage.read_exact_at(offset, &mut raw).is_ok()
        && raw.starts_with(b"LUKS\xba\xbe")
    {
        let text = |from: usize, to: usize| {
            let b = raw.get(from..to).unwrap_or(&[]);
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned()
        };
        let (cipher, mode, hash) = (text(8, 40), text(40, 72), text(72, 104));
        let key_bits = crate::bytes::be32(&raw, 108).map_or(0, |k| u64::from(k).saturating_mul(8));
        let (mode, ivgen) = mode.split_once('-').unwrap_or((mode.as_str(), ""));
        // XTS splits the key in two.
        let bits = if mode == "xts" {
            key_bits / 2
        } else {
            key_bits
        };
        format!(
            "cipher alg {cipher}-{bits}, cipher mode {mode}, ivgen alg {ivgen}, hash alg {hash}"
        )
    } else {
        format!("no LUKS header at {offset:#x}")
    };
    format!("encrypted image (LUKS: {luks}): layerscope does not decrypt")
}

/// A mask of the `bits` low bits (all of them from 64 on).
pub(crate) fn low_mask(bits: u32) -> u64 {
    !u64::MAX.checked_shl(bits).unwrap_or(0)
}

/// A read that could not go on: a run that is empty or does not fit where
/// it must (a bug, not bad input, but never a panic or an endless loop).
fn stalled(path: &str, pos: u64) -> BlockError {
    BlockError::Internal {
        what: format!("{path}: a read made no progress at guest offset {pos:#x}"),
    }
}

fn poisoned() -> BlockError {
    BlockError::Internal {
        what: "a cache lock was poisoned by a panic in another thread".into(),
    }
}

fn status_of(run: &Run) -> Extent {
    let (status, compressed) = match run.kind {
        Kind::Normal { .. } => (Status::Data, false),
        Kind::Compressed { .. } => (Status::Data, true),
        Kind::ZeroPlain | Kind::ZeroAlloc { .. } => (Status::Zero, false),
        Kind::UnallocatedPlain | Kind::UnallocatedAlloc { .. } => (Status::Unallocated, false),
    };
    Extent {
        offset: 0,
        len: run.len,
        status,
        compressed,
        host_offset: run.host,
        reads_zero: false,
    }
}

impl Qcow2Layer {
    /// `piece` (at guest offset `pos`) from the compressed cluster
    /// `descriptor` names.
    fn fill_compressed(
        &self,
        descriptor: u64,
        pos: u64,
        piece: &mut [u8],
    ) -> Result<(), BlockError> {
        if self.data.is_some() {
            return Err(BlockError::corrupt(
                &self.path,
                "L2 entry",
                pos,
                "a compressed cluster in an image with an external data file (qemu refuses these)",
            ));
        }
        let cluster = self.decompressed(descriptor)?;
        // A read's compressed run stays in one cluster (runs merge
        // compressed units only for block status).
        let at = us(pos & self.cluster_mask);
        let from = cluster
            .get(at..)
            .and_then(|c| c.get(..piece.len()))
            .ok_or_else(|| BlockError::Internal {
                what: format!(
                    "{}: a compressed run at guest offset {pos:#x} passes its cluster",
                    self.path
                ),
            })?;
        piece.copy_from_slice(from);
        Ok(())
    }
}

impl BlockSource for Qcow2Layer {
    fn name(&self) -> &str {
        &self.path
    }

    fn len(&self) -> u64 {
        self.header.size
    }

    fn map_missing(&self, offset: u64) -> bool {
        if !self.storage.remote() {
            return false;
        }
        // An L1 slice not held is a read too.
        let Some(entry) = self.l1.peek(offset >> self.l1_shift) else {
            return true;
        };
        let table = entry & L1E_OFFSET_MASK;
        table != 0 && self.l2_cache.lock().is_ok_and(|c| !c.contains(&table))
    }

    fn warm_map(&self, offset: u64) {
        if let Err(e) = self.l2_table(offset >> self.l1_shift) {
            tracing::debug!("{}: fetching a map ahead: {e}", self.path);
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.path, self.header.size, offset, u64_of(buf.len()))?;
        // check_range proved the sum fits.
        let end = offset.saturating_add(u64_of(buf.len()));
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let run = self.run_at(pos, end, false)?;
            let n = us(run.len).min(rest.len());
            // n <= rest.len(): the line above.
            let (piece, tail) = rest.split_at_mut(n);
            rest = tail;
            if n == 0 {
                return Err(stalled(&self.path, pos));
            }
            match run.kind {
                Kind::Normal { .. } => {
                    let host = run.host.unwrap_or(0);
                    let data = self.data_storage();
                    data.read_exact_at(host, piece).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            BlockError::corrupt(
                                &self.path,
                                "data cluster",
                                host,
                                format!(
                                    "guest offset {pos:#x} maps past the end of the {} ({} bytes)",
                                    if self.data.is_some() {
                                        "data file"
                                    } else {
                                        "file"
                                    },
                                    data.len()
                                ),
                            )
                        } else {
                            BlockError::io(&self.path, "reading a data cluster", host, e)
                        }
                    })?;
                }
                Kind::Compressed { descriptor } => self.fill_compressed(descriptor, pos, piece)?,
                _ => piece.fill(0),
            }
            pos = pos.saturating_add(u64_of(n));
        }
        Ok(())
    }

    /// The ranges mapped as [`Qcow2Layer::read_at`] maps them; the data
    /// clusters of all of them read in one [`Storage::read_many`] (in
    /// flight together over a remote file).
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Result<(), BlockError> {
        let mut batch: Vec<(u64, &mut [u8])> = Vec::new();
        for (offset, buf) in reqs.iter_mut() {
            let offset = *offset;
            check_range(&self.path, self.header.size, offset, u64_of(buf.len()))?;
            let end = offset.saturating_add(u64_of(buf.len()));
            let mut pos = offset;
            let mut rest: &mut [u8] = buf;
            while !rest.is_empty() {
                let run = self.run_at(pos, end, false)?;
                let n = us(run.len).min(rest.len());
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                if n == 0 {
                    return Err(stalled(&self.path, pos));
                }
                match run.kind {
                    Kind::Normal { .. } => batch.push((run.host.unwrap_or(0), piece)),
                    Kind::Compressed { descriptor } => {
                        self.fill_compressed(descriptor, pos, piece)?
                    }
                    _ => piece.fill(0),
                }
                pos = pos.saturating_add(u64_of(n));
            }
        }
        let first = batch.first().map_or(0, |b| b.0);
        let data = self.data_storage();
        let file_len = data.len();
        if let Some((host, _)) = batch
            .iter()
            .find(|(h, b)| h.checked_add(u64_of(b.len())).is_none_or(|e| e > file_len))
        {
            return Err(BlockError::corrupt(
                &self.path,
                "data cluster",
                *host,
                format!("a data cluster maps past the end of the file ({file_len} bytes)"),
            ));
        }
        data.read_many(&mut batch)
            .map_err(|e| BlockError::io(&self.path, "reading data clusters", first, e))
    }

    fn remote(&self) -> bool {
        self.storage.remote()
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        // One run per call: callers loop, and a run never costs more than
        // the units it covers (qemu's block_status does the same).
        let mut e = self.locate(offset, len)?;
        // The heuristic counts this file's refcounts; with an external data
        // file the data clusters are not among them.
        if e.status == Status::Data
            && !e.compressed
            && self.data.is_none()
            && self.metadata_prealloc()
        {
            if let Some(host) = e.host_offset {
                // qemu's recursion into the file for preallocated
                // metadata (`BDRV_BLOCK_RECURSE`), as for the other formats.
                crate::block::image::recurse_into_file(
                    self.storage.as_ref(),
                    &self.path,
                    &mut e,
                    host,
                )?;
            }
        }
        Ok(vec![e])
    }

    /// A run of plain data clusters with contiguous host offsets, in a
    /// local file, cut where the host file has a hole; a run that starts
    /// in a hole (metadata preallocation, a discarded range) is that hole,
    /// which reads as zeros. A run that passes the end of the file is left
    /// to `read_at`, which reports it.
    fn stored(&self, offset: u64, len: u64) -> Result<Option<HostRun<'_>>, BlockError> {
        check_range(&self.path, self.header.size, offset, len)?;
        // check_range proved the sum fits.
        let run = self.run_at(offset, offset.saturating_add(len), false)?;
        let (Kind::Normal { .. }, Some(host)) = (run.kind, run.host) else {
            return Ok(None);
        };
        let data = self.data_storage();
        let Some(file) = data.local_file() else {
            return Ok(None);
        };
        let n = run.len.min(len);
        if n == 0 || host.checked_add(n).is_none_or(|end| end > data.len()) {
            return Ok(None);
        }
        let stored = |n: u64| Stored { file, host, len: n };
        let next = data
            .next_run(host)
            .map_err(|e| BlockError::io(&self.path, "asking for holes", host, e))?;
        Ok(match next {
            Some((true, end)) => Some(HostRun::Stored(stored(n.min(end.saturating_sub(host))))),
            Some((false, end)) => Some(HostRun::Hole(n.min(end.saturating_sub(host)))),
            // The filesystem cannot tell: all of it is data.
            None => Some(HostRun::Stored(stored(n))),
        }
        .filter(|r| !r.is_empty()))
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.path, self.header.size, offset, len)?;
        // check_range proved the sum fits.
        let run = self.run_at(offset, offset.saturating_add(len), true)?;
        let mut e = status_of(&run);
        e.offset = offset;
        Ok(e)
    }
}

/// How many bytes at the start of `b` are zero (a block of bytes is
/// or-ed at a time, which compilers turn into vector instructions).
fn zero_prefix(b: &[u8]) -> usize {
    let mut n = 0usize;
    for c in b.chunks(256) {
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return n.saturating_add(c.iter().position(|&x| x != 0).unwrap_or(0));
        }
        n = n.saturating_add(c.len());
    }
    n
}
