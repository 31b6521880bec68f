//! Directory data blocks: the single block of a block directory
//! (`XD2B`/`XDB3`, entries then a leaf of hashes and a tail) and the data
//! blocks of larger ones (`XD2D`/`XDD3`). A header (v5: CRC, own address,
//! owner, UUID), three "best free" slots, then 8-byte aligned entries:
//! inode number, name length, name, file type (with ftype), and a tag
//! holding the entry's own offset; or unused space (`0xffff`, length, tag).
use super::super::be::{u16_at, u32_at, u64_at, u64_of, u8_at, us};
use super::super::crc::{self, Check};
use super::Entry;
use crate::fs::FsError;

pub const BLOCK_MAGIC: u32 = 0x5844_3242; // XD2B
pub const BLOCK3_MAGIC: u32 = 0x5844_4233; // XDB3
pub const DATA_MAGIC: u32 = 0x5844_3244; // XD2D
pub const DATA3_MAGIC: u32 = 0x5844_4433; // XDD3
const FREE_TAG: u16 = 0xffff;

/// A data block's header.
#[derive(Clone, Copy, Debug)]
pub struct DataHeader {
    /// A single-block directory (its leaf is in the block's tail).
    pub single: bool,
    pub len: usize,
    pub crc: Option<Check>,
}

/// Checks a data block's header: magic, and on v5 CRC, address, owner and
/// UUID (mismatches go to `problems`).
///
/// # Errors
/// `Corrupt` for a magic that is neither a block nor a data block.
pub fn header(
    block: &[u8],
    v5: bool,
    at: u64,
    ino: u64,
    uuid: &[u8; 16],
    problems: &mut Vec<FsError>,
) -> Result<DataHeader, FsError> {
    let magic = u32_at(block, 0).unwrap_or(0);
    let (single, want) = match (magic, v5) {
        (BLOCK_MAGIC, false) | (BLOCK3_MAGIC, true) => (true, magic),
        (DATA_MAGIC, false) | (DATA3_MAGIC, true) => (false, magic),
        _ => {
            let (b, d) = if v5 {
                (BLOCK3_MAGIC, DATA3_MAGIC)
            } else {
                (BLOCK_MAGIC, DATA_MAGIC)
            };
            return Err(FsError::corrupt(
                "directory data block",
                "magic",
                at,
                format!("inode {ino}: {magic:#010x}, expected {b:#010x} or {d:#010x}"),
            ));
        }
    };
    let _ = want;
    let mut h = DataHeader {
        single,
        len: if v5 { 64 } else { 16 },
        crc: None,
    };
    if v5 {
        h.crc = crc::check(block, 4);
        let bad = |detail: String| FsError::corrupt("directory data block", "header", at, detail);
        if let Some(c) = h.crc.filter(|c| !c.ok()) {
            problems.push(FsError::checksum(
                "directory data block",
                "crc",
                at.saturating_add(4),
                c.stored,
                c.computed,
            ));
        }
        if u64_at(block, 8) != Some(at / 512) {
            problems.push(bad(format!(
                "inode {ino}: its header says sector {}",
                u64_at(block, 8).unwrap_or(0)
            )));
        }
        if u64_at(block, 40) != Some(ino) {
            problems.push(bad(format!(
                "inode {ino}: owned by inode {}",
                u64_at(block, 40).unwrap_or(0)
            )));
        }
        if block.get(24..40) != Some(&uuid[..]) {
            problems.push(bad(format!("inode {ino}: UUID is not the filesystem's")));
        }
    }
    Ok(h)
}

/// Where the entries of a data block end: the block's end, or for a
/// single-block directory the start of its leaf (count from the tail).
pub fn entries_end(
    block: &[u8],
    h: &DataHeader,
    at: u64,
    ino: u64,
    problems: &mut Vec<FsError>,
) -> usize {
    let len = block.len();
    if !h.single {
        return len;
    }
    let tail = len.saturating_sub(8);
    let count = us(u32_at(block, tail).unwrap_or(0));
    match count
        .checked_mul(8)
        .and_then(|c| tail.checked_sub(c))
        .filter(|&s| s >= h.len)
    {
        Some(start) => start,
        None => {
            problems.push(FsError::corrupt(
                "directory block tail",
                "count",
                at.saturating_add(u64_of(tail)),
                format!("inode {ino}: {count} leaf entries do not fit the block"),
            ));
            tail
        }
    }
}

/// Size of an entry with a `namelen`-byte name.
pub fn entry_size(namelen: usize, ftype: bool) -> usize {
    // inumber 8 + namelen 1 + name + ftype + tag 2, rounded up to 8
    let raw = 11usize
        .saturating_add(namelen)
        .saturating_add(usize::from(ftype));
    raw.saturating_add(7) & !7
}

/// Decodes the entry at `off` of a data block at disk offset `at`, or
/// `None` when it is unused space or does not fit.
pub fn entry_at(block: &[u8], off: usize, at: u64, ftype: bool) -> Option<Entry> {
    if u16_at(block, off)? == FREE_TAG {
        return None;
    }
    let ino = u64_at(block, off)?;
    let namelen = usize::from(u8_at(block, off.checked_add(8)?)?);
    let name_at = off.checked_add(9)?;
    let name = block.get(name_at..name_at.checked_add(namelen)?)?;
    Some(Entry {
        name: name.to_vec(),
        ino,
        ftype: if ftype {
            u8_at(block, name_at.checked_add(namelen)?)
        } else {
            None
        },
        at: at.saturating_add(u64_of(off)),
    })
}

/// Calls `each` with the entries of a data block (header already
/// checked), from `start` to `end`; damage stops the block and goes to
/// `problems`. Returns `false` when `each` asked to stop.
#[allow(clippy::too_many_arguments)]
pub fn walk(
    block: &[u8],
    start: usize,
    end: usize,
    at: u64,
    ftype: bool,
    ino: u64,
    problems: &mut Vec<FsError>,
    each: &mut dyn FnMut(Entry) -> bool,
) -> bool {
    let mut off = start;
    let bad = |off: usize, field: &'static str, detail: String| {
        FsError::corrupt(
            "directory data block",
            field,
            at.saturating_add(u64_of(off)),
            format!("inode {ino}: {detail}"),
        )
    };
    while off < end {
        if u16_at(block, off) == Some(FREE_TAG) {
            let len = usize::from(u16_at(block, off.saturating_add(2)).unwrap_or(0));
            if len == 0 || len % 8 != 0 || off.saturating_add(len) > end {
                problems.push(bad(
                    off,
                    "length",
                    format!("unused space of {len} bytes at byte {off} does not fit"),
                ));
                return true;
            }
            off = off.saturating_add(len);
            continue;
        }
        let namelen = usize::from(u8_at(block, off.saturating_add(8)).unwrap_or(0));
        let size = entry_size(namelen, ftype);
        if namelen == 0 || off.saturating_add(size) > end {
            problems.push(bad(
                off,
                "namelen",
                format!("entry at byte {off} with a {namelen}-byte name does not fit the block"),
            ));
            return true;
        }
        let tag = u16_at(block, off.saturating_add(size).saturating_sub(2)).unwrap_or(0);
        if usize::from(tag) != off {
            problems.push(bad(
                off,
                "tag",
                format!("entry at byte {off} is tagged {tag}"),
            ));
        }
        if let Some(e) = entry_at(block, off, at, ftype) {
            if !each(e) {
                return false;
            }
        }
        off = off.saturating_add(size);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes_are_8_aligned() {
        assert_eq!(entry_size(1, true), 16);
        assert_eq!(entry_size(2, false), 16);
        assert_eq!(entry_size(5, true), 24);
    }

    #[test]
    fn walks_entries_and_stops_at_damage() {
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(&DATA_MAGIC.to_be_bytes());
        // entry "ab" -> 7 at 16, size 16
        b[16..24].copy_from_slice(&7u64.to_be_bytes());
        b[24] = 2;
        b[25..27].copy_from_slice(b"ab");
        b[30..32].copy_from_slice(&16u16.to_be_bytes());
        // unused 16 bytes at 32
        b[32..34].copy_from_slice(&0xffffu16.to_be_bytes());
        b[34..36].copy_from_slice(&16u16.to_be_bytes());
        // entry with namelen 200 at 48: damage
        b[56] = 200;
        let mut p = Vec::new();
        let mut seen = Vec::new();
        assert!(walk(&b, 16, 64, 0x4000, false, 5, &mut p, &mut |e| {
            seen.push((e.name, e.ino, e.at));
            true
        }));
        assert_eq!(seen, [(b"ab".to_vec(), 7, 0x4010)]);
        assert_eq!(p.len(), 1);
        assert!(p[0].to_string().contains("at 0x4030: namelen"), "{}", p[0]);
    }
}
