//! The directory/attribute B+tree ("da btree") shared by large directories
//! and attribute forks: the common block header (`struct xfs_da_blkinfo`,
//! and on v5 `xfs_da3_blkinfo` with CRC, own address, UUID and owner),
//! interior nodes (`struct xfs_da_intnode`: hash value -> child block), and
//! the name hash both use (`xfs_da_hashname`).
use super::be::{bytes_at, u16_at, u32_at, u64_at, us};
use super::crc::{self, Check};
use crate::fs::FsError;

/// Node block magics (v4, v5).
pub const NODE_MAGIC: u16 = 0xfebe;
pub const NODE3_MAGIC: u16 = 0x3ebe;
/// The deepest a da btree may be (the kernel's `XFS_DA_NODE_MAXDEPTH`).
pub const MAX_DEPTH: u16 = 5;

/// The name hash of directories and attributes (`xfs_da_hashname`).
pub fn hashname(name: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    let mut chunks = name.chunks_exact(4);
    for c in &mut chunks {
        let [a, b, c, d] =
            [c.first(), c.get(1), c.get(2), c.get(3)].map(|x| u32::from(x.copied().unwrap_or(0)));
        hash = (a << 21) ^ (b << 14) ^ (c << 7) ^ d ^ hash.rotate_left(7 * 4);
    }
    let rest: Vec<u32> = chunks.remainder().iter().map(|&b| u32::from(b)).collect();
    match rest.as_slice() {
        [a, b, c] => (a << 14) ^ (b << 7) ^ c ^ hash.rotate_left(7 * 3),
        [a, b] => (a << 7) ^ b ^ hash.rotate_left(7 * 2),
        [a] => a ^ hash.rotate_left(7),
        _ => hash,
    }
}

/// The common header of da btree blocks (and of directory leaf and
/// attribute leaf blocks).
#[derive(Clone, Copy, Debug)]
pub struct BlkInfo {
    pub forw: u32,
    pub back: u32,
    pub magic: u16,
    /// v5 only.
    pub crc: Option<Check>,
    pub blkno: Option<u64>,
    pub owner: Option<u64>,
}

impl BlkInfo {
    /// Size of the header (v4 12 bytes, v5 56).
    pub fn len(v5: bool) -> usize {
        if v5 {
            56
        } else {
            12
        }
    }

    /// Decodes the header of `block` (v5: CRC at byte 12 over the block).
    pub fn decode(block: &[u8], v5: bool) -> BlkInfo {
        BlkInfo {
            forw: u32_at(block, 0).unwrap_or(0),
            back: u32_at(block, 4).unwrap_or(0),
            magic: u16_at(block, 8).unwrap_or(0),
            crc: if v5 { crc::check(block, 12) } else { None },
            blkno: if v5 { u64_at(block, 16) } else { None },
            owner: if v5 { u64_at(block, 48) } else { None },
        }
    }

    /// The v5 self-description against what it should be; one message per
    /// mismatch, naming `what` and the block's disk offset.
    pub fn problems(
        &self,
        what: &str,
        at: u64,
        ino: u64,
        uuid: &[u8; 16],
        block: &[u8],
    ) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = self.crc.filter(|c| !c.ok()) {
            out.push(format!(
                "{what} at {at:#x}: CRC {:#010x} does not match the computed {:#010x}",
                c.stored, c.computed
            ));
        }
        if let Some(b) = self.blkno.filter(|&b| b != at / 512) {
            out.push(format!("{what} at {at:#x}: its header says sector {b}"));
        }
        if let Some(o) = self.owner.filter(|&o| o != ino) {
            out.push(format!("{what} at {at:#x}: owned by inode {o}, not {ino}"));
        }
        if self.crc.is_some() && bytes_at(block, 32, 16) != Some(&uuid[..]) {
            out.push(format!("{what} at {at:#x}: UUID is not the filesystem's"));
        }
        out
    }
}

/// An interior node: (hash value, child block) pairs.
#[derive(Clone, Debug)]
pub struct Node {
    pub info: BlkInfo,
    pub level: u16,
    pub entries: Vec<(u32, u32)>,
}

impl Node {
    /// Decodes a node block at disk offset `at`.
    ///
    /// # Errors
    /// `Corrupt` for a wrong magic, a level past [`MAX_DEPTH`] or a count
    /// past the block.
    pub fn decode(block: &[u8], v5: bool, at: u64) -> Result<Node, FsError> {
        let info = BlkInfo::decode(block, v5);
        let want = if v5 { NODE3_MAGIC } else { NODE_MAGIC };
        if info.magic != want {
            return Err(FsError::corrupt(
                "da btree node",
                "magic",
                at.saturating_add(8),
                format!("{:#06x}, expected {want:#06x}", info.magic),
            ));
        }
        let hdr = BlkInfo::len(v5);
        let count = us(u16_at(block, hdr).unwrap_or(0));
        let level = u16_at(block, hdr.saturating_add(2)).unwrap_or(0);
        let start = if v5 { 64 } else { 16 };
        let room = block.len().saturating_sub(start) / 8;
        if level == 0 || level > MAX_DEPTH {
            return Err(FsError::corrupt(
                "da btree node",
                "level",
                at.saturating_add(super::be::u64_of(hdr).saturating_add(2)),
                format!("{level}, expected 1 to {MAX_DEPTH}"),
            ));
        }
        if count == 0 || count > room {
            return Err(FsError::corrupt(
                "da btree node",
                "count",
                at.saturating_add(super::be::u64_of(hdr)),
                format!("{count} entries, the block holds 1 to {room}"),
            ));
        }
        let entries = (0..count)
            .filter_map(|i| {
                let off = start.checked_add(i.checked_mul(8)?)?;
                Some((u32_at(block, off)?, u32_at(block, off.checked_add(4)?)?))
            })
            .collect();
        Ok(Node {
            info,
            level,
            entries,
        })
    }

    /// The child to follow for `hash`: the first entry whose hash is not
    /// below it (the last one if all are).
    pub fn child_for(&self, hash: u32) -> Option<u32> {
        let i = self.entries.partition_point(|&(h, _)| h < hash);
        self.entries
            .get(i)
            .or_else(|| self.entries.last())
            .map(|&(_, b)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_xfs_db() {
        // `xfs_db -c 'ls /'` prints these hashes.
        assert_eq!(hashname(b"."), 0x2e);
        assert_eq!(hashname(b".."), 0x172e);
        assert_eq!(hashname(b"hello"), 0x8cbb_3669);
        assert_eq!(hashname(b"big"), 0x0018_b4e7);
        assert_eq!(hashname(b"sub"), 0x001c_fae2);
        assert_eq!(hashname(b"link"), 0x0d9a_776b);
    }
}
