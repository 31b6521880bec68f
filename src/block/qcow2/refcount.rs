//! Refcounts, read only for one purpose: qemu's detection of metadata
//! preallocation (`qcow2_detect_metadata_preallocation`).
//!
//! An image made with `-o preallocation=metadata` maps every cluster to
//! storage that was never written: the file is sparse. qemu notices that
//! more clusters are referenced than the file really occupies, and then
//! reports data clusters whose storage is a hole as "data, reads as zero".
//! `layerscope map` must do the same to agree with `qemu-img map`.
use crate::block::buffer::AlignedBuf;
use crate::block::storage::Storage;
use crate::bytes::{be64, slice, us};

use super::header::Header;

/// Offset bits of a refcount table entry.
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;

/// qemu's rule: at least max(real * 10 / 9, real + 2) clusters have a
/// non-zero refcount, where `real` is the clusters the file occupies on
/// disk. Any error reading refcounts means "no" (as in qemu).
pub fn detect_metadata_preallocation(
    storage: &dyn Storage,
    header: &Header,
    table_offset: u64,
    table_clusters: u32,
) -> bool {
    let Some(allocated) = storage.allocated_size() else {
        return false;
    };
    let cluster_bits = header.cluster_bits;
    let cluster_size = header.cluster_size();
    let cluster_mask = super::low_mask(cluster_bits);
    let real = allocated >> cluster_bits;
    // `real` is below 2^55: neither saturates.
    let threshold = (real.saturating_mul(10) / 9).max(real.saturating_add(2));
    let end_cluster = storage.len().div_ceil(cluster_size);
    let bits = u64::from(header.refcount_bits());
    // log2 of the refcounts in one block: cluster_size * 8 / bits, where
    // cluster_bits >= 9 and refcount_order <= 6 (checked by the decoder).
    let per_block_bits = cluster_bits
        .saturating_add(3)
        .saturating_sub(header.refcount_order.min(6));
    let slot_mask = super::low_mask(per_block_bits);

    let Some(table_len) = u64::from(table_clusters).checked_mul(cluster_size) else {
        return false;
    };
    if table_offset
        .checked_add(table_len)
        .is_none_or(|e| e > storage.len())
    {
        return false;
    }
    // Bounded by the file's length (checked above) and qemu's 8 MiB limit.
    if table_len > 8 << 20 {
        return false;
    }
    // Only the entries and refcounts of the file's own clusters are
    // looked at (the loop below stops at `end_cluster`): a small
    // overlay's check reads a few bytes of each, not two whole clusters
    // (fresh memory to fault in at every open). A block past the file's
    // end is still "no", as reading all of it was.
    let entries = end_cluster
        .saturating_sub(1)
        .checked_shr(per_block_bits)
        .unwrap_or(0)
        .saturating_add(1);
    let table_need = entries.saturating_mul(8).min(table_len);
    // Page-aligned, as the kernel copies into them fastest.
    let mut table = AlignedBuf::new(us(table_need));
    if storage.read_exact_at(table_offset, &mut table).is_err() {
        return false;
    }
    // As much of a block as the first one's clusters need (a later
    // block holds the refcounts of fewer of the file's clusters).
    let most = end_cluster
        .min(1u64.checked_shl(per_block_bits).unwrap_or(u64::MAX))
        .saturating_mul(bits)
        .div_ceil(8)
        .min(cluster_size);
    let mut block = AlignedBuf::new(us(most));
    let mut loaded: Option<u64> = None;
    let mut count = 0u64;
    let mut cluster = 0u64;
    while cluster < end_cluster && count < threshold {
        let index = cluster >> per_block_bits;
        let Some(entry) = us(index).checked_mul(8).and_then(|at| be64(&table, at)) else {
            return false;
        };
        let block_offset = entry & REFT_OFFSET_MASK;
        if block_offset == 0 {
            // No refcount block: all these clusters are free.
            let Some(next) = index
                .checked_add(1)
                .and_then(|i| i.checked_mul(1u64 << per_block_bits))
            else {
                return false;
            };
            cluster = next;
            continue;
        }
        if loaded != Some(block_offset) {
            // The refcounts of this block's clusters below `end_cluster`.
            let first = index.checked_shl(per_block_bits).unwrap_or(u64::MAX);
            let clusters = end_cluster
                .saturating_sub(first)
                .min(1u64.checked_shl(per_block_bits).unwrap_or(u64::MAX));
            let need = us(clusters.saturating_mul(bits).div_ceil(8)).min(block.len());
            if block_offset & cluster_mask != 0
                || block_offset
                    .checked_add(cluster_size)
                    .is_none_or(|e| e > storage.len())
                || block
                    .get_mut(..need)
                    .is_none_or(|b| storage.read_exact_at(block_offset, b).is_err())
            {
                return false;
            }
            loaded = Some(block_offset);
        }
        // The refcount's first bit in its block: below cluster_size * 8.
        let bit = (cluster & slot_mask).saturating_mul(bits);
        let refcount_nonzero = match bits {
            1 | 2 | 4 => {
                let Some(byte) = block.get(us(bit >> 3)) else {
                    return false;
                };
                u64::from(byte >> (bit & 7)) & super::low_mask(header.refcount_bits()) != 0
            }
            _ => {
                let Some(refcount) = slice(&block, us(bit >> 3), us(bits >> 3)) else {
                    return false;
                };
                refcount.iter().any(|&b| b != 0)
            }
        };
        count = count.saturating_add(u64::from(refcount_nonzero));
        cluster = cluster.saturating_add(1);
    }
    count >= threshold
}
