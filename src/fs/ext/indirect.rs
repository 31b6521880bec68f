//! Indirect block maps (ext2, ext3): `i_block` holds 12 direct pointers,
//! then one single, one double and one triple indirect block; each
//! indirect block is an array of 32-bit block numbers, 0 for a hole.
//! Walked like e2fsprogs' `ext2fs_block_iterate3`: every non-zero pointer,
//! each indirect block listed before the blocks it points to.
use std::collections::HashSet;

use super::blockmap::{le32, BlockMap, Geometry, ReadBlock, Run};
use super::error::FsError;

/// Direct pointers in `i_block`.
pub const DIRECT: u64 = 12;

/// Walks the map in `i_block` (at disk offset `root_offset`) of inode
/// `ino`.
///
/// # Errors
/// I/O errors only: bad pointers and cycles are skipped and reported in
/// the map's `skipped`.
pub fn walk(
    ino: u64,
    i_block: &[u8; 60],
    root_offset: u64,
    geo: &Geometry,
    read: &mut ReadBlock,
) -> Result<BlockMap, FsError> {
    let mut w = Walker {
        ino,
        geo,
        per: geo.block_size / 4,
        read,
        map: BlockMap::default(),
        seen: HashSet::new(),
    };
    // i_block: 12 direct pointers, then the single, double and triple
    // indirect ones.
    let mut slots = i_block.chunks_exact(4).zip((0u64..).step_by(4));
    for ((ptr, at), logical) in slots.by_ref().take(12).zip(0..DIRECT) {
        w.data(
            logical,
            u64::from(le32(ptr, 0)),
            root_offset.saturating_add(at),
        );
    }
    let mut first = DIRECT;
    for ((ptr, at), level) in slots.zip(1..=3u32) {
        let ptr = u64::from(le32(ptr, 0));
        if ptr != 0 {
            w.indirect(ptr, level, first, root_offset.saturating_add(at))?;
        }
        first = first.saturating_add(w.per.saturating_pow(level));
    }
    Ok(w.map)
}

struct Walker<'a, 'r> {
    ino: u64,
    geo: &'a Geometry,
    /// Pointers per indirect block.
    per: u64,
    read: &'a mut ReadBlock<'r>,
    map: BlockMap,
    seen: HashSet<u64>,
}

impl Walker<'_, '_> {
    fn bad(&mut self, what: &str, ptr: u64, at: u64, detail: &str) {
        self.map.skip(FsError::corrupt(
            "block map",
            "block pointer",
            at,
            format!("inode {}: {what} points to block {ptr}, {detail}", self.ino),
        ));
    }

    /// Data block `logical` at `physical`, the pointer being at disk
    /// offset `at`.
    fn data(&mut self, logical: u64, physical: u64, at: u64) {
        if physical == 0 {
            return;
        }
        if !self.geo.contains(physical, 1) {
            let range = format!(
                "expected inside {}..{}",
                self.geo.first_data_block, self.geo.blocks_count
            );
            self.bad(&format!("logical block {logical}"), physical, at, &range);
            return;
        }
        match self.map.runs.last_mut() {
            Some(r)
                if !r.meta
                    && r.logical.checked_add(r.len) == Some(logical)
                    && r.physical.checked_add(r.len) == Some(physical) =>
            {
                r.len = r.len.saturating_add(1);
            }
            _ => {
                if self.map.room(self.ino, at) {
                    self.map.runs.push(Run {
                        logical,
                        physical,
                        len: 1,
                        uninit: false,
                        meta: false,
                        level: 0,
                    });
                }
            }
        }
    }

    /// The indirect block `block` of `level` (1 single, 2 double, 3
    /// triple) mapping logical blocks from `first`.
    fn indirect(&mut self, block: u64, level: u32, first: u64, at: u64) -> Result<(), FsError> {
        let name = match level {
            1 => "indirect block",
            2 => "double indirect block",
            _ => "triple indirect block",
        };
        if !self.geo.contains(block, 1) {
            let range = format!(
                "expected inside {}..{}",
                self.geo.first_data_block, self.geo.blocks_count
            );
            self.bad(name, block, at, &range);
            self.map.skipped_map_blocks = self.map.skipped_map_blocks.saturating_add(1);
            return Ok(());
        }
        if self.map.truncated || !self.map.room(self.ino, at) {
            return Ok(());
        }
        if !self.seen.insert(block) {
            self.bad(name, block, at, "already used in this map (a cycle)");
            self.map.skipped_map_blocks = self.map.skipped_map_blocks.saturating_add(1);
            return Ok(());
        }
        self.map.runs.push(Run {
            logical: first,
            physical: block,
            len: 1,
            uninit: false,
            meta: true,
            level: u8::try_from(level).unwrap_or(u8::MAX),
        });
        let data = (self.read)(block)?;
        let base = block.saturating_mul(self.geo.block_size);
        let span = self.per.saturating_pow(level.saturating_sub(1));
        for (i, chunk) in (0u64..).zip(data.chunks_exact(4)) {
            let ptr = u64::from(le32(chunk, 0));
            if ptr == 0 {
                continue;
            }
            if self.map.truncated {
                break;
            }
            let logical = first.saturating_add(i.saturating_mul(span));
            let at = base.saturating_add(i.saturating_mul(4));
            if level <= 1 {
                self.data(logical, ptr, at);
            } else {
                self.indirect(ptr, level.saturating_sub(1), logical, at)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: Geometry = Geometry {
        block_size: 1024,
        first_data_block: 1,
        blocks_count: 10_000,
        csum_seed: None,
    };

    fn root(ptrs: &[(usize, u32)]) -> [u8; 60] {
        let mut r = [0u8; 60];
        for &(i, p) in ptrs {
            r[i * 4..i * 4 + 4].copy_from_slice(&p.to_le_bytes());
        }
        r
    }

    fn ind(ptrs: &[(usize, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        for &(i, p) in ptrs {
            b[i * 4..i * 4 + 4].copy_from_slice(&p.to_le_bytes());
        }
        b
    }

    #[test]
    fn direct_single_double_triple() {
        let r = root(&[
            (0, 100),
            (1, 101),
            (2, 103),
            (12, 500),
            (13, 600),
            (14, 700),
        ]);
        let blocks = |b: u64| -> Vec<u8> {
            match b {
                500 => ind(&[(0, 104), (1, 105)]),
                600 => ind(&[(3, 601)]),
                601 => ind(&[(0, 900)]),
                700 => ind(&[(0, 701)]),
                701 => ind(&[(0, 702)]),
                702 => ind(&[(255, 999)]),
                _ => panic!("read of {b}"),
            }
        };
        let map = walk(12, &r, 0, &GEO, &mut |b| Ok(blocks(b))).unwrap();
        assert!(map.is_clean(), "{map:?}");
        let runs: Vec<(u64, u64, u64, bool, u8)> = map
            .runs
            .iter()
            .map(|r| (r.logical, r.physical, r.len, r.meta, r.level))
            .collect();
        let dind_start = 12 + 256;
        let tind_start = dind_start + 256 * 256;
        assert_eq!(
            runs,
            [
                (0, 100, 2, false, 0),
                (2, 103, 1, false, 0),
                (12, 500, 1, true, 1),
                (12, 104, 2, false, 0),
                (dind_start, 600, 1, true, 2),
                (dind_start + 3 * 256, 601, 1, true, 1),
                (dind_start + 3 * 256, 900, 1, false, 0),
                (tind_start, 700, 1, true, 3),
                (tind_start, 701, 1, true, 2),
                (tind_start, 702, 1, true, 1),
                (tind_start + 255, 999, 1, false, 0),
            ]
        );
    }

    #[test]
    fn self_pointing_and_out_of_range_blocks_are_skipped() {
        // The double indirect block lists itself as a child.
        let r = root(&[(0, 50_000), (13, 600)]);
        let map = walk(7, &r, 0x1028, &GEO, &mut |_| Ok(ind(&[(0, 600), (1, 0)]))).unwrap();
        let msgs: Vec<String> = map.skipped.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(
            msgs[0],
            "corrupt block map at 0x1028: block pointer: inode 7: logical block 0 points to block 50000, expected inside 1..10000"
        );
        assert!(msgs[1].contains("a cycle"), "{}", msgs[1]);
        assert_eq!(map.runs.len(), 1);
    }
}
