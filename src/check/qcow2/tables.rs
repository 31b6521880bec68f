//! The tables `check` reads beside L1/L2: the stored refcounts, the
//! snapshot table (each snapshot's L1 table) and the persistent bitmaps'
//! directory. Layouts from qemu's `docs/interop/qcow2.txt`; every size is
//! bounded by qemu's own limits before anything is read.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use super::{
    Checker, EXT_BITMAPS, EXT_END, MAX_BITMAPS, MAX_BITMAP_DIRECTORY, MAX_REFTABLE_BYTES,
    MAX_SNAPSHOTS, MAX_SNAPSHOT_EXTRA,
};

/// A big-endian u64 from the first 8 bytes (0 when shorter).
pub fn be64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_be_bytes)
}

fn be32(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, |a| u64::from(u32::from_be_bytes(a)))
}

fn be16(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(2))
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map_or(0, |a| u64::from(u16::from_be_bytes(a)))
}

fn us(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A snapshot's L1 table, as the snapshot table gives it.
pub struct Snapshot {
    /// `ID (name)`, as `qemu-img snapshot -l` shows them.
    pub name: String,
    pub l1_offset: u64,
    pub l1_size: u64,
}

/// A persistent bitmap's table.
pub struct Bitmap {
    pub name: String,
    pub table_offset: u64,
    pub table_size: u64,
}

/// The stored refcounts, read one refcount block at a time.
pub struct Refcounts {
    pub table: Vec<u64>,
    /// log2 of the refcounts one block holds.
    block_bits: u32,
    order: u32,
    cached: Option<(u64, Vec<u8>)>,
}

impl Checker<'_> {
    /// Loads the refcount table (qemu refuses to open an image whose table
    /// is past the end of the file or larger than 8 MiB; so does this).
    pub(super) fn load_refcounts(&mut self) {
        let offset = self.h.refcount_table_offset;
        let bytes = u64::from(self.h.refcount_table_clusters).saturating_mul(self.cluster_size);
        if bytes > MAX_REFTABLE_BYTES {
            self.check_error(format!(
                "the refcount table ({bytes} bytes) is larger than qemu's limit of {MAX_REFTABLE_BYTES}"
            ));
            return;
        }
        if offset.checked_add(bytes).is_none_or(|e| e > self.file_len) {
            self.check_error(format!(
                "the refcount table at {offset:#x} ({bytes} bytes) passes the end of the file"
            ));
            return;
        }
        let raw = match self.read(offset, bytes) {
            Ok(r) => r,
            Err(e) => {
                self.check_error(format!("refcount table: {e}"));
                return;
            }
        };
        let order = self.h.refcount_order;
        self.refcounts = Some(Refcounts {
            table: raw.chunks_exact(8).map(be64).collect(),
            block_bits: self.cluster_bits.saturating_add(3).saturating_sub(order),
            order,
            cached: None,
        });
    }

    /// The refcount stored for cluster `k` (qemu's `qcow2_get_refcount`).
    pub(super) fn stored_refcount(&mut self, k: u64) -> Result<u64, String> {
        let cluster_size = self.cluster_size;
        let file_len = self.file_len;
        let storage = self.storage;
        let Some(r) = self.refcounts.as_mut() else {
            return Err("the refcount table could not be read".into());
        };
        let index = k >> r.block_bits;
        let Some(&entry) = r.table.get(us(index)) else {
            return Ok(0);
        };
        let block = entry & super::REFT_OFFSET_MASK;
        if block == 0 {
            return Ok(0);
        }
        if block & cluster_size.saturating_sub(1) != 0 {
            return Err(format!(
                "refcount block {index} at {block:#x} is not cluster aligned"
            ));
        }
        if r.cached.as_ref().map(|(o, _)| *o) != Some(block) {
            let mut buf = vec![0u8; us(cluster_size)];
            let avail = us(file_len.saturating_sub(block).min(cluster_size));
            if let Some(part) = buf.get_mut(..avail) {
                storage
                    .read_exact_at(block, part)
                    .map_err(|e| format!("reading refcount block {index} at {block:#x}: {e}"))?;
            }
            r.cached = Some((block, buf));
        }
        let Some((_, data)) = r.cached.as_ref() else {
            return Ok(0);
        };
        let slot = k & 1u64
            .checked_shl(r.block_bits)
            .map_or(u64::MAX, |v| v.saturating_sub(1));
        Ok(match r.order {
            0..=2 => {
                let bits = 1u64 << r.order;
                let bit = slot.saturating_mul(bits);
                let byte = data.get(us(bit / 8)).copied().map_or(0, u64::from);
                (byte >> (bit % 8)) & ((1u64 << bits).saturating_sub(1))
            }
            3 => data.get(us(slot)).copied().map_or(0, u64::from),
            4 => be16(data, us(slot.saturating_mul(2))),
            5 => be32(data, us(slot.saturating_mul(4))),
            _ => be64(data.get(us(slot.saturating_mul(8))..).unwrap_or(&[])),
        })
    }

    /// Reads the snapshot table: each snapshot's L1 table, and the table's
    /// size (qemu counts its clusters as used).
    pub(super) fn load_snapshots(&mut self) {
        let count = u64::from(self.h.nb_snapshots);
        if count == 0 {
            return;
        }
        let start = self.header_value("snapshots_offset");
        if count > MAX_SNAPSHOTS {
            self.check_error(format!(
                "{count} snapshots, more than qemu's limit of {MAX_SNAPSHOTS}"
            ));
            return;
        }
        if start & self.cluster_size.saturating_sub(1) != 0 || start >= self.file_len {
            self.check_error(format!("the snapshot table offset {start:#x} is not cluster aligned or is past the end of the file"));
            return;
        }
        let mut pos = start;
        for n in 0..count {
            let head = match self.read(pos, 40) {
                Ok(h) => h,
                Err(e) => {
                    self.check_error(format!("snapshot table entry {n}: {e}"));
                    return;
                }
            };
            let l1_offset = be64(&head);
            let l1_size = be32(&head, 8);
            let id_len = be16(&head, 12);
            let name_len = be16(&head, 14);
            let extra = be32(&head, 36);
            if extra > MAX_SNAPSHOT_EXTRA {
                self.check_error(format!(
                    "snapshot table entry {n} at {pos:#x}: {extra} bytes of extra data, more than qemu's limit of {MAX_SNAPSHOT_EXTRA}"
                ));
                return;
            }
            let strings_at = pos.saturating_add(40).saturating_add(extra);
            let strings = self
                .read(strings_at, id_len.saturating_add(name_len))
                .unwrap_or_default();
            let (id, name) = strings.split_at(us(id_len).min(strings.len()));
            let next = strings_at
                .saturating_add(id_len)
                .saturating_add(name_len)
                .checked_next_multiple_of(8)
                .unwrap_or(u64::MAX);
            if next > self.file_len {
                self.check_error(format!(
                    "snapshot table entry {n} at {pos:#x} passes the end of the file"
                ));
                return;
            }
            self.snapshots.push(Snapshot {
                name: format!(
                    "{} ({})",
                    String::from_utf8_lossy(id),
                    String::from_utf8_lossy(name)
                ),
                l1_offset,
                l1_size,
            });
            pos = next;
        }
        self.snapshots_size = pos.saturating_sub(start);
    }

    /// Finds the bitmaps extension and reads the bitmap directory (only
    /// when the header's autoclear bit says the bitmaps are consistent, as
    /// qemu does).
    pub(super) fn load_bitmaps(&mut self) {
        if !self.h.has_bitmaps || self.header_value("autoclear_features") & 1 == 0 {
            return;
        }
        let Ok(first) = self.read(0, self.cluster_size.min(self.file_len)) else {
            return;
        };
        let mut pos = us(u64::from(self.h.header_length));
        let backing = self.header_value("backing_file_offset");
        let end = if backing != 0 {
            us(backing).min(first.len())
        } else {
            first.len()
        };
        let mut ext = None;
        while pos.saturating_add(8) <= end {
            let kind = be32(&first, pos);
            let len = us(be32(&first, pos.saturating_add(4)));
            if u32::try_from(kind).ok() == Some(EXT_END) {
                break;
            }
            let data = pos.saturating_add(8);
            if u32::try_from(kind).ok() == Some(EXT_BITMAPS) {
                ext = first
                    .get(data..data.saturating_add(len).min(end))
                    .map(<[u8]>::to_vec);
                break;
            }
            pos = data
                .saturating_add(len)
                .checked_next_multiple_of(8)
                .unwrap_or(usize::MAX);
        }
        let Some(ext) = ext else { return };
        let nb = be32(&ext, 0);
        let dir_size = be64(ext.get(8..).unwrap_or(&[]));
        let dir_offset = be64(ext.get(16..).unwrap_or(&[]));
        if nb > MAX_BITMAPS || dir_size > MAX_BITMAP_DIRECTORY {
            self.check_error(format!("bitmaps extension: {nb} bitmaps in a {dir_size}-byte directory is past qemu's limits"));
            return;
        }
        self.bitmap_directory = Some((dir_offset, dir_size));
        let dir = match self.read(dir_offset, dir_size) {
            Ok(d) => d,
            Err(e) => {
                self.check_error(format!("bitmap directory: {e}"));
                return;
            }
        };
        let mut at = 0usize;
        for _ in 0..nb {
            let Some(entry) = dir.get(at..) else { break };
            if entry.len() < 24 {
                self.check_error("the bitmap directory ends inside an entry".into());
                break;
            }
            let table_offset = be64(entry);
            let table_size = be32(entry, 8);
            let name_len = us(be16(entry, 18));
            let extra = us(be32(entry, 20));
            let name_at = 24usize.saturating_add(extra);
            let name = entry
                .get(name_at..name_at.saturating_add(name_len))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            self.bitmaps.push(Bitmap {
                name,
                table_offset,
                table_size,
            });
            at = at
                .saturating_add(name_at.saturating_add(name_len))
                .checked_next_multiple_of(8)
                .unwrap_or(usize::MAX);
        }
    }
}
