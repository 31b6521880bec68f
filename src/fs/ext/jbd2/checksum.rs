//! The journal's checksums. v2 and v3 (`journal_checksum_v2/v3`):
//! crc32c seeded with the journal UUID over each descriptor, revoke and
//! commit block (the checksum field zeroed) and, per tag, over the
//! transaction's sequence then the logged block (v2 keeps 16 bits of
//! it). v1 (`journal_checksum`): one crc32 (big-endian, `crc32_be`) over
//! a transaction's descriptor and data blocks, stored in its commit
//! block. Also the journal superblock's own crc32c.
use crate::fs::ext::checksum::{crc32c_raw, Check};

use super::{be32, Geometry};

/// The kernel's `crc32_be(seed, data)`: CRC-32 with polynomial
/// 0x04c11db7, most significant bit first, no final inversion (so it
/// chains across blocks).
pub fn crc32_be(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// crc32c of `block` with the 4 bytes at `at` taken as zero.
fn crc_without(seed: u32, block: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let head = block.get(..at)?;
    let tail = block.get(end..)?;
    let c = crc32c_raw(seed, head);
    let c = crc32c_raw(c, &[0; 4]);
    Some(crc32c_raw(c, tail))
}

/// The tail checksum of a descriptor or revoke block (v2/v3; `None`
/// without those features).
pub fn tail(geo: &Geometry, block: &[u8]) -> Option<Check> {
    if !geo.csum_v2or3() {
        return None;
    }
    let at = block.len().checked_sub(4)?;
    Some(Check {
        stored: be32(block, at)?,
        computed: crc_without(geo.csum_seed(), block, at)?,
    })
}

/// The commit block's checksum (v2/v3): `h_chksum[0]`.
pub fn commit(geo: &Geometry, block: &[u8]) -> Option<Check> {
    if !geo.csum_v2or3() {
        return None;
    }
    Some(Check {
        stored: be32(block, 0x10)?,
        computed: crc_without(geo.csum_seed(), block, 0x10)?,
    })
}

/// A data block's tag checksum (v2: the low 16 bits; v3: all 32).
pub fn tag(geo: &Geometry, sequence: u32, block: &[u8], stored: u32) -> Option<Check> {
    if !geo.csum_v2or3() {
        return None;
    }
    let c = crc32c_raw(geo.csum_seed(), &sequence.to_be_bytes());
    let c = crc32c_raw(c, block);
    Some(Check {
        stored,
        computed: if geo.csum_v3() { c } else { c & 0xffff },
    })
}

/// The journal superblock's checksum (v2/v3): crc32c over its 1024
/// bytes with `s_checksum` zeroed, seeded with all ones.
pub fn superblock(geo: &Geometry, sb: &[u8]) -> Option<Check> {
    if !geo.csum_v2or3() {
        return None;
    }
    let sb = sb.get(..1024)?;
    Some(Check {
        stored: be32(sb, 0xfc)?,
        computed: crc_without(!0, sb, 0xfc)?,
    })
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]
mod tests {
    use super::*;

    #[test]
    fn crc32_be_is_the_msb_first_crc() {
        // CRC-32/MPEG-2 (init all ones, no final xor) of "123456789".
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_e6e7);
        // It chains: two halves give the whole.
        let c = crc32_be(!0, b"1234");
        assert_eq!(crc32_be(c, b"56789"), 0x0376_e6e7);
    }

    #[test]
    fn zeroed_field_checksum_equals_the_plain_crc_of_the_zeroed_block() {
        let mut b: Vec<u8> = (0..64u8).collect();
        let c = crc_without(7, &b, 8).unwrap();
        b[8..12].fill(0);
        assert_eq!(c, crc32c_raw(7, &b));
    }
}
