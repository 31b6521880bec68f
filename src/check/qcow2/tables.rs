//! The tables `check` reads beside L1/L2: the stored refcounts, the
//! snapshot table (each snapshot's L1 table) and the persistent bitmaps'
//! directory. Layouts from qemu's `docs/interop/qcow2.txt`; every size is
//! bounded by qemu's own limits before anything is read.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use std::sync::Arc;

use super::{Checker, MAX_REFTABLE_BYTES};
use crate::block::qcow2::{bitmap, snapshot};

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

/// Characters of a snapshot's ID or name that problems show.
const NAME_SHOWN: usize = 64;

/// `s` cut to [`NAME_SHOWN`] characters, `…` marking a cut.
fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(NAME_SHOWN) {
        Some((at, _)) => format!("{}…", s.get(..at).unwrap_or_default()).into(),
        None => s.into(),
    }
}

/// A snapshot's L1 table, as the snapshot table gives it.
pub struct Snapshot {
    /// `ID (name)`, as `qemu-img snapshot -l` shows them, each cut to
    /// [`NAME_SHOWN`] characters (a name may be 64 KiB, and problems name
    /// the snapshot).
    pub name: Arc<str>,
    pub l1_offset: u64,
    pub l1_size: u64,
}

/// A persistent bitmap's table.
pub struct Bitmap {
    pub name: Arc<str>,
    pub table_offset: u64,
    pub table_size: u64,
}

/// The stored refcounts, read one refcount block at a time.
pub struct Refcounts {
    pub table: Vec<u64>,
    /// log2 of the refcounts one block holds.
    block_bits: u32,
    order: u32,
    cached: Option<(u64, Result<Vec<u8>, String>)>,
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

    /// Where the run of clusters from `k` whose refcount block is absent
    /// ends (the first cluster past it, at most `end`), or `None` when
    /// `k`'s block is present. Those clusters' refcounts are 0 without
    /// reading anything: a file claiming terabytes over a reftable of
    /// zeros is compared a block's worth of clusters at a time, not one
    /// lookup per cluster (a fuzzer's 2 TiB sparse qcow2 took 1.5 s).
    pub(super) fn absent_refcounts_end(&self, k: u64, end: u64) -> Option<u64> {
        let r = self.refcounts.as_ref()?;
        let mut index = k >> r.block_bits;
        let absent = |i: u64| {
            r.table
                .get(us(i))
                .is_none_or(|&e| e & super::REFT_OFFSET_MASK == 0)
        };
        if !absent(index) {
            return None;
        }
        // Past the table every block is absent: jump straight to `end`.
        let table_len = u64::try_from(r.table.len()).unwrap_or(u64::MAX);
        while index < table_len && absent(index) {
            let next = index.saturating_add(1);
            if next.checked_shl(r.block_bits).is_none_or(|c| c >= end) {
                return Some(end);
            }
            index = next;
        }
        if index >= table_len {
            return Some(end);
        }
        Some(index.checked_shl(r.block_bits).map_or(end, |c| c.min(end)))
    }

    /// The first cluster past `k`'s refcount block (at most `end`): the
    /// clusters one lookup error stands for, since every cluster of a
    /// block that cannot be read meets the same error.
    pub(super) fn refcount_block_end(&self, k: u64, end: u64) -> u64 {
        let Some(r) = self.refcounts.as_ref() else {
            return end;
        };
        (k >> r.block_bits)
            .saturating_add(1)
            .checked_shl(r.block_bits)
            .map_or(end, |c| c.min(end))
            .max(k.saturating_add(1))
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
        // A block that is misaligned or cannot be read is remembered too:
        // each of its clusters asks again, and re-reading (a cluster-sized
        // buffer each) or re-formatting the message made a fuzzer's qcow2
        // take seconds.
        if r.cached.as_ref().map(|(o, _)| *o) != Some(block) {
            let loaded = if block & cluster_size.saturating_sub(1) != 0 {
                Err(format!(
                    "refcount block {index} at {block:#x} is not cluster aligned"
                ))
            } else {
                let mut buf = vec![0u8; us(cluster_size)];
                let avail = us(file_len.saturating_sub(block).min(cluster_size));
                match buf.get_mut(..avail) {
                    Some(part) => storage
                        .read_exact_at(block, part)
                        .map_err(|e| format!("reading refcount block {index} at {block:#x}: {e}")),
                    None => Ok(()),
                }
                .map(|()| buf)
            };
            r.cached = Some((block, loaded));
        }
        let data = match r.cached.as_ref() {
            Some((_, Ok(data))) => data,
            Some((_, Err(e))) => return Err(e.clone()),
            None => return Ok(0),
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

    /// Reads the snapshot table (`block::qcow2::snapshot`'s reader): each
    /// snapshot's L1 table, and the table's size (qemu counts its clusters
    /// as used). A damaged entry is a check error; the entries before it
    /// are still walked.
    pub(super) fn load_snapshots(&mut self) {
        let table = snapshot::read_entries(&self.path, self.storage, self.h);
        for s in table.snapshots {
            self.snapshots.push(Snapshot {
                name: format!("{} ({})", clip(&s.id), clip(&s.name)).into(),
                l1_offset: s.l1_table_offset,
                l1_size: u64::from(s.l1_size),
            });
        }
        match table.end {
            Ok(end) => self.snapshots_size = end.saturating_sub(self.h.snapshots_offset),
            Err(e) => self.check_error(e.to_string()),
        }
    }

    /// Reads the bitmap directory (`block::qcow2::bitmap`'s reader; none
    /// unless the header's autoclear bit says the bitmaps are consistent,
    /// as qemu does).
    pub(super) fn load_bitmaps(&mut self) {
        let Some((_, size, offset)) = self.h.bitmaps_extension else {
            return;
        };
        match bitmap::read_directory(&self.path, self.storage, self.h) {
            Ok(list) if !list.is_empty() => {
                self.bitmap_directory = Some((offset, size));
                self.bitmaps = list
                    .into_iter()
                    .map(|b| Bitmap {
                        name: b.name.into(),
                        table_offset: b.table_offset,
                        table_size: u64::from(b.table_size),
                    })
                    .collect();
            }
            Ok(_) => {}
            Err(e) => self.check_error(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long ID or name is cut to 64 characters and marked; a short
    /// one, or one of multi-byte characters, is cut on a character.
    #[test]
    fn snapshot_names_in_problems_are_clipped() {
        assert_eq!(clip("snap-1"), "snap-1");
        let long = "n".repeat(65_535);
        assert_eq!(clip(&long), format!("{}…", "n".repeat(64)));
        let wide = "é".repeat(100);
        assert_eq!(clip(&wide), format!("{}…", "é".repeat(64)));
        assert_eq!(clip(&"x".repeat(64)), "x".repeat(64));
    }
}
