//! L1 and L2 entries: what one (sub)cluster of the virtual disk maps to.
//!
//! Pure functions over entry values, following qemu's
//! `qcow2_get_subcluster_type`: the v3 "reads as zero" state is kept as its
//! own kind, never folded into "unallocated".

/// Offset bits of an L1 entry (bits 9..=55).
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Offset bits of a standard L2 entry.
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits of a compressed cluster descriptor.
pub const L2E_COMPRESSED_MASK: u64 = 0x3fff_ffff_ffff_ffff;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1;
/// The cluster's refcount is exactly one.
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;

/// What one subcluster (or, without extended L2, one cluster) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Data stored at `host` in the image file.
    Normal { host: u64 },
    /// Compressed cluster: the raw descriptor bits (offset and size).
    Compressed { descriptor: u64 },
    /// Reads as zeros, no storage.
    ZeroPlain,
    /// Reads as zeros, storage kept at `host`.
    ZeroAlloc { host: u64 },
    /// Not here: ask the backing file.
    UnallocatedPlain,
    /// Not here, but a host cluster is reserved at `host` (extended L2).
    UnallocatedAlloc { host: u64 },
}

/// Why an entry is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// A data cluster whose host offset is not cluster-aligned.
    Unaligned(u64),
    /// A subcluster bitmap with a bit set in both halves, or allocation bits
    /// on an unallocated cluster.
    Bitmap(u64),
    /// The zero flag in a version 2 image.
    ZeroInV2,
}

/// Classifies subcluster `sc` (below 32) of an L2 entry. `bitmap` is the
/// extended entry's second word (0 without extended L2); `cluster_mask` is
/// the cluster size minus one. The returned host offset is the cluster's,
/// not the subcluster's. With an external data file (`data_file`), host
/// offset 0 is a real one where the copied flag is set (qemu's
/// `qcow2_get_cluster_type`: data-file clusters always have refcount 1).
pub fn classify(
    entry: u64,
    bitmap: u64,
    sc: u32,
    extended: bool,
    cluster_mask: u64,
    version: u32,
    data_file: bool,
) -> Result<Kind, Invalid> {
    if entry & OFLAG_COMPRESSED != 0 {
        return Ok(Kind::Compressed {
            descriptor: entry & L2E_COMPRESSED_MASK,
        });
    }
    let host = entry & L2E_OFFSET_MASK;
    let at_zero = data_file && host == 0 && entry & OFLAG_COPIED != 0;
    let check_aligned = |host: u64| {
        if host & cluster_mask != 0 {
            Err(Invalid::Unaligned(host))
        } else {
            Ok(host)
        }
    };
    if extended {
        // A subcluster number past 31 has neither bit.
        let alloc = 1u64.checked_shl(sc).filter(|_| sc < 32).unwrap_or(0);
        let zero = alloc.checked_shl(32).unwrap_or(0);
        if host != 0 || at_zero {
            if (bitmap >> 32) & bitmap != 0 {
                return Err(Invalid::Bitmap(bitmap));
            }
            let host = check_aligned(host)?;
            Ok(if bitmap & zero != 0 {
                Kind::ZeroAlloc { host }
            } else if bitmap & alloc != 0 {
                Kind::Normal { host }
            } else {
                Kind::UnallocatedAlloc { host }
            })
        } else if bitmap & 0xffff_ffff != 0 {
            Err(Invalid::Bitmap(bitmap))
        } else if bitmap & zero != 0 {
            Ok(Kind::ZeroPlain)
        } else {
            Ok(Kind::UnallocatedPlain)
        }
    } else if entry & OFLAG_ZERO != 0 {
        if version < 3 {
            return Err(Invalid::ZeroInV2);
        }
        if host != 0 {
            Ok(Kind::ZeroAlloc {
                host: check_aligned(host)?,
            })
        } else {
            Ok(Kind::ZeroPlain)
        }
    } else if host == 0 && !at_zero {
        Ok(Kind::UnallocatedPlain)
    } else {
        Ok(Kind::Normal {
            host: check_aligned(host)?,
        })
    }
}

/// Where a compressed cluster's bytes are: `(file offset, length)`, as
/// qemu's `qcow2_parse_compressed_l2_entry` computes them. The length may
/// reach past the end of the file; readers clamp it.
///
/// `cluster_bits` is 9..=21 (checked by the header decoder): the size field
/// has `cluster_bits - 8` bits, so the length is at most 2^13 sectors.
pub fn compressed_location(descriptor: u64, cluster_bits: u32) -> (u64, u64) {
    let size_bits = cluster_bits.saturating_sub(8);
    let csize_shift = 62u32.saturating_sub(size_bits);
    let offset = descriptor & super::low_mask(csize_shift);
    let sectors = ((descriptor >> csize_shift) & super::low_mask(size_bits)).saturating_add(1);
    // `offset & 511` is below 512, and sectors at least 1.
    (offset, (sectors << 9).saturating_sub(offset & 511))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster mask of 64 KiB clusters.
    const C64K: u64 = 65536 - 1;

    #[test]
    fn standard_entries() {
        assert_eq!(
            classify(0, 0, 0, false, C64K, 3, false),
            Ok(Kind::UnallocatedPlain)
        );
        assert_eq!(
            classify(1, 0, 0, false, C64K, 3, false),
            Ok(Kind::ZeroPlain)
        );
        assert_eq!(
            classify(1, 0, 0, false, C64K, 2, false),
            Err(Invalid::ZeroInV2)
        );
        let e = (1u64 << 63) | 0x5_0000;
        assert_eq!(
            classify(e, 0, 0, false, C64K, 3, false),
            Ok(Kind::Normal { host: 0x5_0000 })
        );
        assert_eq!(
            classify(e | 1, 0, 0, false, C64K, 3, false),
            Ok(Kind::ZeroAlloc { host: 0x5_0000 })
        );
        assert_eq!(
            classify(0x5_0200, 0, 0, false, C64K, 3, false),
            Err(Invalid::Unaligned(0x5_0200))
        );
    }

    #[test]
    fn extended_entries() {
        let host = 0x10_0000;
        let bitmap = 0b01 | (0b10 << 32);
        assert_eq!(
            classify(host, bitmap, 0, true, C64K, 3, false),
            Ok(Kind::Normal { host })
        );
        assert_eq!(
            classify(host, bitmap, 1, true, C64K, 3, false),
            Ok(Kind::ZeroAlloc { host })
        );
        assert_eq!(
            classify(host, bitmap, 2, true, C64K, 3, false),
            Ok(Kind::UnallocatedAlloc { host })
        );
        assert_eq!(
            classify(host, 1 | (1 << 32), 0, true, C64K, 3, false),
            Err(Invalid::Bitmap(1 | (1 << 32)))
        );
        assert_eq!(
            classify(0, 1 << 35, 3, true, C64K, 3, false),
            Ok(Kind::ZeroPlain)
        );
        assert_eq!(
            classify(0, 1, 0, true, C64K, 3, false),
            Err(Invalid::Bitmap(1))
        );
    }

    #[test]
    fn compressed_descriptor() {
        // 64 KiB clusters: csize_shift = 54; 3 extra sectors at 0x1234.
        let d = (3u64 << 54) | 0x1234;
        assert_eq!(compressed_location(d, 16), (0x1234, 4 * 512 - 0x34));
    }
}
