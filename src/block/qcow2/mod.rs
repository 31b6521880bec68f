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
//! ranges report [`crate::block::Status::Unallocated`] and read as zeros. Stacking is the
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
use crate::block::BlockError;
use crate::bytes::{be64, u64_of, us};

pub mod bitmap;
pub mod compressed;
pub mod header;
mod l1;
pub mod l2;
mod lookup;
pub mod refcount;
pub mod snapshot;
mod source;

use header::Header;
use l2::{Kind, L1E_OFFSET_MASK, OFLAG_COPIED};

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

fn poisoned() -> BlockError {
    BlockError::Internal {
        what: "a cache lock was poisoned by a panic in another thread".into(),
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
