//! Short-form directories (`struct xfs_dir2_sf_hdr`): a small directory
//! kept in the inode's data fork. A header (entry count, count of 8-byte
//! inode numbers, parent inode), then entries: name length, a 2-byte
//! offset (the entry's place in the equivalent block directory), the name,
//! the file type (with ftype), and the inode number (4 bytes, or 8 when
//! `i8count` is set).
use super::super::be::{u32_at, u64_at, u64_of, u8_at};
use super::Entry;
use crate::fs::FsError;

/// A decoded short-form directory.
#[derive(Clone, Debug, Default)]
pub struct ShortForm {
    pub parent: u64,
    pub entries: Vec<Entry>,
}

/// Decodes the short-form directory in `fork` (the inode's data fork at
/// disk offset `at`, of which `size` bytes, the inode's `di_size`, are the
/// directory). Entries that do not fit are reported in `problems` and the
/// ones before them kept.
pub fn decode(
    fork: &[u8],
    size: u64,
    at: u64,
    ftype: bool,
    ino: u64,
    problems: &mut Vec<FsError>,
) -> ShortForm {
    let limit = usize::try_from(size).unwrap_or(usize::MAX).min(fork.len());
    let bytes = fork.get(..limit).unwrap_or_default();
    let count = u8_at(bytes, 0).unwrap_or(0);
    let i8 = u8_at(bytes, 1).unwrap_or(0) != 0;
    let ino_len = if i8 { 8 } else { 4 };
    let read_ino = |off: usize| -> Option<u64> {
        if i8 {
            u64_at(bytes, off)
        } else {
            u32_at(bytes, off).map(u64::from)
        }
    };
    let mut sf = ShortForm::default();
    let Some(parent) = read_ino(2) else {
        problems.push(FsError::corrupt(
            "short-form directory",
            "parent",
            at,
            format!("inode {ino}: {limit} bytes cannot hold the header"),
        ));
        return sf;
    };
    sf.parent = parent;
    let mut off = 2usize.saturating_add(ino_len);
    for i in 0..count {
        let namelen = usize::from(u8_at(bytes, off).unwrap_or(0));
        let name_at = off.saturating_add(3);
        let ft_at = name_at.saturating_add(namelen);
        let ino_at = ft_at.saturating_add(usize::from(ftype));
        let end = ino_at.saturating_add(ino_len);
        let child = read_ino(ino_at);
        let name = bytes.get(name_at..ft_at);
        match (child, name) {
            (Some(child), Some(name)) if namelen > 0 => {
                let file_type = if ftype { u8_at(bytes, ft_at) } else { None };
                sf.entries.push(Entry {
                    name: name.to_vec(),
                    ino: child,
                    ftype: file_type,
                    at: at.saturating_add(u64_of(off)),
                });
                off = end;
            }
            _ => {
                problems.push(FsError::corrupt(
                    "short-form directory",
                    "count",
                    at,
                    format!(
                        "inode {ino}: the header counts {count} entries, but entry {i} at byte {off} does not fit the directory's {limit} bytes"
                    ),
                ));
                break;
            }
        }
    }
    sf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(count: u8) -> Vec<u8> {
        let mut b = vec![count, 0, 0, 0, 0, 128];
        // "a" -> 131, ftype 1
        b.extend([1, 0, 0x60, b'a', 1, 0, 0, 0, 131]);
        // "bc" -> 132, ftype 2
        b.extend([2, 0, 0x70, b'b', b'c', 2, 0, 0, 0, 132]);
        b
    }

    #[test]
    fn decodes_entries_and_reports_a_count_past_the_size() {
        let b = sample(2);
        let mut p = Vec::new();
        let sf = decode(&b, b.len() as u64, 0x1000, true, 128, &mut p);
        assert!(p.is_empty());
        assert_eq!(sf.parent, 128);
        assert_eq!(sf.entries.len(), 2);
        assert_eq!(sf.entries[1].name, b"bc");
        assert_eq!(sf.entries[1].ino, 132);
        assert_eq!(sf.entries[1].ftype, Some(2));
        assert_eq!(sf.entries[1].at, 0x1000 + 15);
        let b = sample(200);
        let sf = decode(&b, b.len() as u64, 0x1000, true, 128, &mut p);
        assert_eq!(sf.entries.len(), 2);
        assert_eq!(
            p[0].to_string(),
            "corrupt short-form directory at 0x1000: count: inode 128: the header counts 200 entries, but entry 2 at byte 25 does not fit the directory's 25 bytes"
        );
    }
}
