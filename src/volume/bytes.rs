//! Small readers over untrusted bytes: every access is `.get()`, so a short
//! buffer gives `None`, never a panic.

/// `len` bytes at `at`.
pub fn slice(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

/// An array of `N` bytes at `at`.
pub fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    slice(b, at, N)?.try_into().ok()
}

pub fn u8_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at).map(|&x| u64::from(x))
}

pub fn le16(b: &[u8], at: usize) -> Option<u64> {
    array::<2>(b, at).map(|a| u64::from(u16::from_le_bytes(a)))
}

pub fn le32(b: &[u8], at: usize) -> Option<u64> {
    array::<4>(b, at).map(|a| u64::from(u32::from_le_bytes(a)))
}

pub fn le64(b: &[u8], at: usize) -> Option<u64> {
    array::<8>(b, at).map(u64::from_le_bytes)
}

pub fn be32(b: &[u8], at: usize) -> Option<u64> {
    array::<4>(b, at).map(|a| u64::from(u32::from_be_bytes(a)))
}

pub fn be64(b: &[u8], at: usize) -> Option<u64> {
    array::<8>(b, at).map(u64::from_be_bytes)
}

/// A NUL-padded text field, without the padding.
pub fn text(b: &[u8], at: usize, len: usize) -> Option<Vec<u8>> {
    let raw = slice(b, at, len)?;
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    Some(raw.get(..end)?.to_vec())
}

/// A UUID stored as 16 bytes, in the usual text form.
pub fn uuid(b: &[u8], at: usize) -> Option<String> {
    let r = slice(b, at, 16)?;
    let hex: String = r.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8)?,
        hex.get(8..12)?,
        hex.get(12..16)?,
        hex.get(16..20)?,
        hex.get(20..32)?
    ))
}

/// The usize of a u64 offset (on 64-bit targets always).
pub fn us(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}
