//! Refcounts, read only for one purpose: qemu's detection of metadata
//! preallocation (`qcow2_detect_metadata_preallocation`).
//!
//! An image made with `-o preallocation=metadata` maps every cluster to
//! storage that was never written: the file is sparse. qemu notices that
//! more clusters are referenced than the file really occupies, and then
//! reports data clusters whose storage is a hole as "data, reads as zero".
//! `layerscope map` must do the same to agree with `qemu-img map`.
use crate::block::storage::Storage;

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
    let cluster_size = header.cluster_size();
    let real = allocated / cluster_size;
    let threshold = (real * 10 / 9).max(real + 2);
    let end_cluster = storage.len().div_ceil(cluster_size);
    let bits = u64::from(header.refcount_bits());
    let per_block = cluster_size * 8 / bits;

    let table_len = u64::from(table_clusters) * cluster_size;
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
    let mut table = vec![0u8; table_len as usize];
    if storage.read_exact_at(table_offset, &mut table).is_err() {
        return false;
    }
    let mut block = vec![0u8; cluster_size as usize];
    let mut loaded: Option<u64> = None;
    let mut count = 0u64;
    let mut cluster = 0u64;
    while cluster < end_cluster && count < threshold {
        let index = cluster / per_block;
        let Some(entry) = table.get(index as usize * 8..index as usize * 8 + 8) else {
            return false;
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(entry);
        let block_offset = u64::from_be_bytes(b) & REFT_OFFSET_MASK;
        if block_offset == 0 {
            // No refcount block: all these clusters are free.
            cluster = (index + 1) * per_block;
            continue;
        }
        if loaded != Some(block_offset) {
            if block_offset % cluster_size != 0
                || storage.read_exact_at(block_offset, &mut block).is_err()
            {
                return false;
            }
            loaded = Some(block_offset);
        }
        let slot = cluster % per_block;
        let bit = slot * bits;
        let refcount_nonzero = match bits {
            1 | 2 | 4 => {
                let byte = block[(bit / 8) as usize];
                let shift = bit % 8;
                (byte >> shift) & ((1u16 << bits) - 1) as u8 != 0
            }
            _ => {
                let start = (bit / 8) as usize;
                block[start..start + (bits / 8) as usize]
                    .iter()
                    .any(|&b| b != 0)
            }
        };
        count += u64::from(refcount_nonzero);
        cluster += 1;
    }
    count >= threshold
}
