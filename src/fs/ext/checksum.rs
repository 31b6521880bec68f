//! The two checksum functions ext4 uses, in the kernel's raw form (no
//! final inversion): crc32c for metadata_csum, crc16 for the older
//! uninit_bg/gdt_csum group descriptor checksum.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // CRC-32C("123456789") = 0xe3069283 (standard, inverted form).
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xe306_9283);
        // CRC-16/ARC("123456789") = 0xbb3d with seed 0.
        assert_eq!(crc16(0, b"123456789"), 0xbb3d);
    }
}
