//! Big-endian reads at an offset of a byte slice, `None` past its end:
//! every XFS structure is big-endian (CRCs aside), and every read of disk
//! bytes goes through these so a short or damaged buffer can never panic.

/// The byte at `off`.
pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// The big-endian u16 at `off`.
pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes(s.try_into().ok()?))
}

/// The big-endian u32 at `off`.
pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

/// The big-endian u64 at `off`.
pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_be_bytes(s.try_into().ok()?))
}

/// `len` bytes at `off`.
pub fn bytes_at(b: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    b.get(off..off.checked_add(len)?)
}

/// A usize from a disk value (saturating on 32-bit hosts, where such a
/// value is out of every bound anyway).
pub fn us(v: impl TryInto<usize>) -> usize {
    v.try_into().unwrap_or(usize::MAX)
}

/// A u64 from a usize (lossless on every supported host).
pub fn u64_of(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&b, 0), Some(0x0102));
        assert_eq!(u32_at(&b, 5), Some(0x0607_0809));
        assert_eq!(u32_at(&b, 6), None);
        assert_eq!(u64_at(&b, 1), Some(0x0203_0405_0607_0809));
        assert_eq!(u16_at(&b, usize::MAX), None);
        assert_eq!(bytes_at(&b, 8, 2), None);
    }
}
