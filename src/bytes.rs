//! Integers at an offset of a byte slice, `None` past its end: the one
//! place every decoder of untrusted bytes (image headers, partition
//! tables, filesystems, the journal) reads them from, so a short or damaged
//! buffer can never panic and no module keeps its own copy.
// The readers every decoder of disk data uses (issue 11).
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::as_conversions
    )
)]

/// `len` bytes at `at`.
pub fn slice(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

/// An array of `N` bytes at `at`.
pub fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    slice(b, at, N)?.try_into().ok()
}

/// The byte at `at`.
pub fn u8_at(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

/// The little-endian u16 at `at`.
pub fn le16(b: &[u8], at: usize) -> Option<u16> {
    array(b, at).map(u16::from_le_bytes)
}

/// The little-endian u32 at `at`.
pub fn le32(b: &[u8], at: usize) -> Option<u32> {
    array(b, at).map(u32::from_le_bytes)
}

/// The little-endian u64 at `at`.
pub fn le64(b: &[u8], at: usize) -> Option<u64> {
    array(b, at).map(u64::from_le_bytes)
}

/// The big-endian u16 at `at`.
pub fn be16(b: &[u8], at: usize) -> Option<u16> {
    array(b, at).map(u16::from_be_bytes)
}

/// The big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> Option<u32> {
    array(b, at).map(u32::from_be_bytes)
}

/// The big-endian u64 at `at`.
pub fn be64(b: &[u8], at: usize) -> Option<u64> {
    array(b, at).map(u64::from_be_bytes)
}

/// A usize from a disk value: `usize::MAX` where it does not fit (only on
/// 32-bit hosts, where such a value is out of every bound anyway).
pub fn us(v: impl TryInto<usize>) -> usize {
    v.try_into().unwrap_or(usize::MAX)
}

/// A u64 from a usize (lossless on every supported host).
pub fn u64_of(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// `v` rounded down to a multiple of `step` (`v` itself for a step of 0).
pub fn align_down(v: u64, step: u64) -> u64 {
    v.checked_rem(step).map_or(v, |r| v.saturating_sub(r))
}

/// The same 16 bits read as two's complement (C's `(int16_t)` of a
/// field stored unsigned); `cast_signed` is newer than the MSRV.
pub fn signed16(v: u16) -> i16 {
    i16::from_ne_bytes(v.to_ne_bytes())
}

/// The same 32 bits read as two's complement (a `time_t` or id stored
/// unsigned).
pub fn signed32(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

/// The same 64 bits read as two's complement.
pub fn signed64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(be16(&b, 0), Some(0x0102));
        assert_eq!(le16(&b, 0), Some(0x0201));
        assert_eq!(be32(&b, 5), Some(0x0607_0809));
        assert_eq!(le32(&b, 5), Some(0x0908_0706));
        assert_eq!(be32(&b, 6), None);
        assert_eq!(be64(&b, 1), Some(0x0203_0405_0607_0809));
        assert_eq!(le64(&b, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(le64(&b, 2), None);
        assert_eq!(be16(&b, usize::MAX), None);
        assert_eq!(slice(&b, 8, 2), None);
        assert_eq!(slice(&b, 8, 1), Some(&[9u8][..]));
        assert_eq!(u8_at(&b, 9), None);
        assert_eq!(align_down(37, 16), 32);
        assert_eq!(align_down(37, 0), 37);
        assert_eq!(signed16(0xffff), -1);
        assert_eq!(signed32(0x8000_0000), i32::MIN);
        assert_eq!(signed64(u64::MAX - 1), -2);
    }
}
