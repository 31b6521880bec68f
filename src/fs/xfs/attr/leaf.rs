//! Attribute leaf blocks (`struct xfs_attr_leafblock`, magic `0xfbee`, v5
//! `0x3bee` with CRC, address, owner and UUID): entries (hash, where the
//! name lies, flags) packed from the top, names and values from the bottom.
//! A value is local (after the name) or remote (in other blocks of the
//! attribute fork, given by block number and length).
use super::super::be::{u16_at, u32_at, u64_of, u8_at, us};
use super::super::da::BlkInfo;
use crate::fs::FsError;

pub const MAGIC: u16 = 0xfbee;
pub const MAGIC3: u16 = 0x3bee;
/// `XFS_ATTR_LOCAL`: the value follows the name in this block.
const LOCAL: u8 = 0x1;

/// An entry of a leaf block, its value local or remote.
#[derive(Clone, Debug)]
pub struct LeafEntry {
    pub flags: u8,
    pub name: Vec<u8>,
    pub value: Value,
    /// Disk offset of the name/value structure.
    pub at: u64,
}

#[derive(Clone, Debug)]
pub enum Value {
    Local(Vec<u8>),
    /// First block (in the attribute fork) and length.
    Remote {
        block: u32,
        len: u32,
    },
}

/// A decoded leaf block.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub info: BlkInfo,
    pub entries: Vec<LeafEntry>,
}

impl Leaf {
    /// Decodes a leaf block at disk offset `at`; entries that point out of
    /// the block are reported in `problems` and left out.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic or a count past the block.
    pub fn decode(
        block: &[u8],
        v5: bool,
        at: u64,
        ino: u64,
        problems: &mut Vec<FsError>,
    ) -> Result<Leaf, FsError> {
        let info = BlkInfo::decode(block, v5);
        let want = if v5 { MAGIC3 } else { MAGIC };
        if info.magic != want {
            return Err(FsError::corrupt(
                "attribute leaf block",
                "magic",
                at.saturating_add(8),
                format!("inode {ino}: {:#06x}, expected {want:#06x}", info.magic),
            ));
        }
        let hdr = BlkInfo::len(v5);
        let count = us(u16_at(block, hdr).unwrap_or(0));
        let start = if v5 { 80 } else { 32 };
        let room = block.len().saturating_sub(start) / 8;
        if count > room {
            return Err(FsError::corrupt(
                "attribute leaf block",
                "count",
                at.saturating_add(u64_of(hdr)),
                format!("inode {ino}: {count} entries, the block holds at most {room}"),
            ));
        }
        let mut entries = Vec::new();
        for i in 0..count {
            let e = start.saturating_add(i.saturating_mul(8));
            let nameidx = us(u16_at(block, e.saturating_add(4)).unwrap_or(0));
            let flags = u8_at(block, e.saturating_add(6)).unwrap_or(0);
            let decoded = if flags & LOCAL != 0 {
                // valuelen 2, namelen 1, name, value
                let vlen = us(u16_at(block, nameidx).unwrap_or(0));
                let nlen = usize::from(u8_at(block, nameidx.saturating_add(2)).unwrap_or(0));
                let n_at = nameidx.saturating_add(3);
                let v_at = n_at.saturating_add(nlen);
                match (
                    block.get(n_at..v_at),
                    block.get(v_at..v_at.saturating_add(vlen)),
                ) {
                    (Some(n), Some(v)) if nameidx >= start => {
                        Some((n.to_vec(), Value::Local(v.to_vec())))
                    }
                    _ => None,
                }
            } else {
                // valueblk 4, valuelen 4, namelen 1, name
                let blk = u32_at(block, nameidx);
                let vlen = u32_at(block, nameidx.saturating_add(4));
                let nlen = usize::from(u8_at(block, nameidx.saturating_add(8)).unwrap_or(0));
                let n_at = nameidx.saturating_add(9);
                match (blk, vlen, block.get(n_at..n_at.saturating_add(nlen))) {
                    (Some(b), Some(l), Some(n)) if nameidx >= start => {
                        Some((n.to_vec(), Value::Remote { block: b, len: l }))
                    }
                    _ => None,
                }
            };
            match decoded {
                Some((name, value)) if !name.is_empty() => entries.push(LeafEntry {
                    flags,
                    name,
                    value,
                    at: at.saturating_add(u64_of(nameidx)),
                }),
                _ => problems.push(FsError::corrupt(
                    "attribute leaf block",
                    "nameidx",
                    at.saturating_add(u64_of(e)),
                    format!("inode {ino}: entry {i} points to byte {nameidx}, which does not hold a name"),
                )),
            }
        }
        Ok(Leaf { info, entries })
    }
}
