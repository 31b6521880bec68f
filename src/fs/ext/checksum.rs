//! The two checksum functions ext4 uses, in the kernel's raw form (no
//! final inversion): crc32c for metadata_csum, crc16 for the older
//! uninit_bg/gdt_csum group descriptor checksum; and the seeds metadata
//! checksums start from.

/// The kernel's `ext4_chksum(seed, data)`: crc32c without the final xor.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    // crc32c_append continues a finished (inverted) crc.
    !crc32c::crc32c_append(!seed, data)
}

/// e2fsprogs' `ext2fs_crc16`: CRC-16/ARC (reflected 0x8005), seeded.
pub fn crc16(seed: u16, data: &[u8]) -> u16 {
    let mut crc = seed;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xa001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The filesystem's checksum seed (`s_csum_seed` in the kernel):
/// `s_checksum_seed` with metadata_csum_seed, else crc32c of the UUID.
pub fn fs_seed(uuid: &[u8; 16], stored_seed: Option<u32>) -> u32 {
    stored_seed.unwrap_or_else(|| crc32c_raw(!0, uuid))
}

/// The seed of one inode's checksums (inode, extent blocks, directory
/// blocks): the filesystem seed, then the inode number and generation
/// (the kernel's `ei->i_csum_seed`).
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    // One pass over both: crc32c_raw(crc32c_raw(s, a), b) is
    // crc32c_raw(s, a ++ b).
    let [a, b, c, d] = ino.to_le_bytes();
    let [e, f, g, h] = generation.to_le_bytes();
    crc32c_raw(fs_seed, &[a, b, c, d, e, f, g, h])
}

/// A checksum as stored and as computed (shared with every filesystem's
/// reports).
pub use crate::fs::report::Check;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // CRC-32C("123456789") = 0xe3069283 (standard, inverted form).
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xe306_9283);
        // CRC-16/ARC("123456789") = 0xbb3d with seed 0.
        assert_eq!(crc16(0, b"123456789"), 0xbb3d);
        // The seed is the raw crc of the UUID, continued per inode.
        let uuid = [7u8; 16];
        assert_eq!(fs_seed(&uuid, None), crc32c_raw(!0, &uuid));
        assert_eq!(fs_seed(&uuid, Some(5)), 5);
        let mut both = 12u32.to_le_bytes().to_vec();
        both.extend(3u32.to_le_bytes());
        assert_eq!(inode_seed(9, 12, 3), crc32c_raw(9, &both));
    }
}
