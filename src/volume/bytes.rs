//! Small readers over untrusted bytes: every access is `.get()`, so a short
//! buffer gives `None`, never a panic.

pub use crate::bytes::slice;

// Partition tables and LVM compute in u64 sectors and bytes: these widen.

pub fn u8_at(b: &[u8], at: usize) -> Option<u64> {
    crate::bytes::u8_at(b, at).map(u64::from)
}

pub fn le16(b: &[u8], at: usize) -> Option<u64> {
    crate::bytes::le16(b, at).map(u64::from)
}

pub fn le32(b: &[u8], at: usize) -> Option<u64> {
    crate::bytes::le32(b, at).map(u64::from)
}

pub use crate::bytes::le64;

pub fn be32(b: &[u8], at: usize) -> Option<u64> {
    crate::bytes::be32(b, at).map(u64::from)
}

pub use crate::bytes::be64;

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
