//! A layer's map: the L2 tables (read, cached, fetched ahead over a
//! remote file), the run of units one kind covers at a guest offset, the
//! bytes the layer holds, and compressed clusters inflated and kept.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]
use std::sync::Arc;

use super::l2::{self, Invalid, Kind, L1E_OFFSET_MASK};
use super::{compressed, poisoned, zero_prefix, Qcow2Layer, Run, L2_PREFETCH_BYTES};
use crate::block::buffer::AlignedBuf;
use crate::block::BlockError;
use crate::bytes::{be64, u64_of, us};

impl Qcow2Layer {
    /// Guest bytes this layer holds itself (data, compressed and zero
    /// clusters), from the L1/L2 tables alone.
    ///
    /// The cost follows the distinct L2 tables the image really has, not
    /// the size it claims: L1 entries that point to a table already
    /// counted (a hostile image can point all of them at one) reuse its
    /// count, so a small file claiming 16 TiB is summed in a moment.
    ///
    /// # Errors
    /// Invalid L1 or L2 entries (as [`crate::block::BlockSource::block_status`] reports
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

    pub(super) fn l2_table(&self, l1_index: u64) -> Result<Option<Arc<AlignedBuf>>, BlockError> {
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
    pub(super) fn run_at(
        &self,
        offset: u64,
        end: u64,
        merge_compressed: bool,
    ) -> Result<Run, BlockError> {
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
    pub(super) fn decompressed(&self, descriptor: u64) -> Result<Arc<[u8]>, BlockError> {
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
