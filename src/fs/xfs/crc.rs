//! XFS metadata checksums: CRC-32C over the whole structure (a superblock
//! or AG header sector, an inode, a B+tree or directory block) with its
//! 4-byte CRC field counted as zeros, stored little-endian in that field
//! (the kernel's `xfs_start_cksum_safe` / `xfs_end_cksum`).
//!
//! Both values of a [`Check`] are given as `xfs_db` prints a CRC field:
//! its four bytes read big-endian, like every other XFS field, so the
//! stored value, the computed one and the field's raw value all read the
//! same way.
use super::be::u32_at;
pub use crate::fs::report::Check;

/// The checksum of `buf` whose CRC field is at `crc_off`: as stored and as
/// computed. `None` when the buffer cannot hold the field.
pub fn check(buf: &[u8], crc_off: usize) -> Option<Check> {
    let stored = u32_at(buf, crc_off)?;
    let end = crc_off.checked_add(4)?;
    let crc = crc32c::crc32c(buf.get(..crc_off)?);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    let crc = crc32c::crc32c_append(crc, buf.get(end..)?);
    // The bytes the field holds when right (little-endian), read as
    // xfs_db reads them.
    let computed = u32::from_be_bytes(crc.to_le_bytes());
    Some(Check { stored, computed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_counts_as_zeros_and_is_little_endian() {
        let mut b = b"0123456789abcdef".to_vec();
        let mut zeroed = b.clone();
        zeroed[4..8].fill(0);
        let want = crc32c::crc32c(&zeroed);
        b[4..8].copy_from_slice(&want.to_le_bytes());
        let c = check(&b, 4).unwrap();
        let shown = u32::from_be_bytes(want.to_le_bytes());
        assert_eq!(
            c,
            Check {
                stored: shown,
                computed: shown
            }
        );
        assert!(c.ok());
        b[0] ^= 1;
        assert!(!check(&b, 4).unwrap().ok());
        assert_eq!(check(&b, 14), None);
    }
}
