//! Short-form attributes (`struct xfs_attr_shortform`): a few small
//! attributes kept in the inode's attribute fork. A header (total size,
//! count), then entries: name length, value length, namespace flags, name,
//! value.
use super::super::be::{u16_at, u64_of, u8_at};
use super::Attr;
use crate::fs::FsError;

/// Decodes the short-form attributes in `fork` (at disk offset `at`);
/// entries that do not fit are reported and the ones before them kept.
pub fn decode(fork: &[u8], at: u64, ino: u64, problems: &mut Vec<FsError>) -> Vec<Attr> {
    let total = usize::from(u16_at(fork, 0).unwrap_or(0));
    let count = u8_at(fork, 2).unwrap_or(0);
    if total > fork.len() || total < 4 {
        problems.push(FsError::corrupt(
            "short-form attributes",
            "totsize",
            at,
            format!("inode {ino}: {total} bytes in a fork of {}", fork.len()),
        ));
    }
    let bytes = fork.get(..total.min(fork.len())).unwrap_or_default();
    let mut out = Vec::new();
    let mut off = 4usize;
    for i in 0..count {
        let namelen = usize::from(u8_at(bytes, off).unwrap_or(0));
        let valuelen = usize::from(u8_at(bytes, off.saturating_add(1)).unwrap_or(0));
        let flags = u8_at(bytes, off.saturating_add(2)).unwrap_or(0);
        let name_at = off.saturating_add(3);
        let value_at = name_at.saturating_add(namelen);
        let end = value_at.saturating_add(valuelen);
        match (bytes.get(name_at..value_at), bytes.get(value_at..end)) {
            (Some(name), Some(value)) if namelen > 0 => {
                out.push(Attr {
                    flags,
                    name: name.to_vec(),
                    value: value.to_vec(),
                    at: at.saturating_add(u64_of(off)),
                });
                off = end;
            }
            _ => {
                problems.push(FsError::corrupt(
                    "short-form attributes",
                    "count",
                    at,
                    format!(
                        "inode {ino}: the header counts {count} attributes, but attribute {i} at byte {off} does not fit {} bytes",
                        bytes.len()
                    ),
                ));
                break;
            }
        }
    }
    out
}
