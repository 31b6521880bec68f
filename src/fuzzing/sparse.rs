//! A compact form for fuzz inputs that stand for large, mostly empty
//! volumes: a filesystem of a few MiB (an ext4 with a journal, XFS's
//! 300 MiB minimum) is a few KiB of metadata among zeros. Given whole,
//! the fuzzer spends its mutations and its time on the zeros; given as
//! the non-zero pieces, every mutation lands on metadata.
//!
//! The form (`fuzz/sparse.py` writes it from an image):
//!
//! ```text
//! "LSFZSPRS"                      8 bytes, the magic
//! size: u32 le                    the volume's size in 512-byte sectors
//! then pieces until the input ends:
//!   offset: u32 le                in 512-byte sectors
//!   length: u16 le                in bytes
//!   bytes                         `length` bytes (fewer if the input ends)
//! ```
//!
//! Pieces past the size are cut; later pieces win where they overlap;
//! pieces after the 4096th are ignored.
//! An input without the magic is the volume itself, byte for byte.
use std::io;
use std::sync::Arc;

use crate::block::storage::{MemStorage, Storage};

const MAGIC: &[u8; 8] = b"LSFZSPRS";
const SECTOR: u64 = 512;
/// Pieces taken at most (each read looks at all of them).
const MAX_PIECES: usize = 4096;

/// The volume `bytes` stand for.
pub fn storage(bytes: &[u8]) -> Arc<dyn Storage> {
    match decode(bytes) {
        Some(sparse) => Arc::new(sparse),
        None => Arc::new(MemStorage::new(bytes)),
    }
}

/// A volume of zeros with pieces of data, read as one file.
struct Sparse {
    len: u64,
    /// (offset, bytes), in input order.
    pieces: Vec<(u64, Vec<u8>)>,
    /// Where data lies, as a filesystem would report it for a sparse
    /// file: the pieces rounded out to [`BLOCK`]s, merged, sorted.
    data: Vec<(u64, u64)>,
}

/// The granularity of the holes the volume reports (a filesystem's block).
const BLOCK: u64 = 4096;

/// The pieces' blocks as sorted, merged `(start, end)` runs within `len`.
fn data_runs(pieces: &[(u64, Vec<u8>)], len: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = pieces
        .iter()
        .map(|(at, bytes)| {
            let end = at.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
            let start = at.saturating_sub(at % BLOCK);
            let end = end.saturating_add(BLOCK.saturating_sub(1));
            (start, end.saturating_sub(end % BLOCK).min(len))
        })
        .filter(|(a, b)| a < b)
        .collect();
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (a, b) in runs {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

fn decode(bytes: &[u8]) -> Option<Sparse> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (size, mut rest) = rest.split_first_chunk::<4>()?;
    let len = u64::from(u32::from_le_bytes(*size)).saturating_mul(SECTOR);
    let mut pieces = Vec::new();
    while pieces.len() < MAX_PIECES {
        let Some((head, tail)) = rest.split_first_chunk::<6>() else {
            break;
        };
        let [o0, o1, o2, o3, l0, l1] = *head;
        let offset = u64::from(u32::from_le_bytes([o0, o1, o2, o3])).saturating_mul(SECTOR);
        let length = usize::from(u16::from_le_bytes([l0, l1])).min(tail.len());
        let (data, next) = tail.split_at(length);
        rest = next;
        let room = usize::try_from(len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let data = data.get(..room.min(data.len())).unwrap_or(&[]);
        if !data.is_empty() {
            pieces.push((offset, data.to_vec()));
        }
    }
    let data = data_runs(&pieces, len);
    Some(Sparse { len, pieces, data })
}

impl Storage for Sparse {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let want = u64::try_from(buf.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = offset
            .checked_add(want)
            .filter(|&e| e <= self.len)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.fill(0);
        for (at, data) in &self.pieces {
            let piece_end = at.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
            let from = offset.max(*at);
            let to = end.min(piece_end);
            if from >= to {
                continue;
            }
            let (Ok(src), Ok(dst), Ok(n)) = (
                usize::try_from(from.saturating_sub(*at)),
                usize::try_from(from.saturating_sub(offset)),
                usize::try_from(to.saturating_sub(from)),
            ) else {
                continue;
            };
            if let (Some(d), Some(s)) = (
                buf.get_mut(dst..dst.saturating_add(n)),
                data.get(src..src.saturating_add(n)),
            ) {
                d.copy_from_slice(s);
            }
        }
        Ok(())
    }

    /// Holes between the pieces' blocks, as SEEK_DATA/SEEK_HOLE report
    /// them for a sparse file: the harness sees what a real one shows.
    fn next_run(&self, offset: u64) -> io::Result<Option<(bool, u64)>> {
        if offset >= self.len {
            return Ok(Some((false, self.len)));
        }
        // The first run ending after offset.
        let i = self.data.partition_point(|&(_, end)| end <= offset);
        Ok(Some(match self.data.get(i) {
            Some(&(start, end)) if start <= offset => (true, end),
            Some(&(start, _)) => (false, start),
            None => (false, self.len),
        }))
    }

    fn allocated_size(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_land_at_their_sectors_among_zeros_and_later_ones_win() {
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(&4u32.to_le_bytes()); // 2 KiB
        input.extend_from_slice(&1u32.to_le_bytes());
        input.extend_from_slice(&3u16.to_le_bytes());
        input.extend_from_slice(b"abc");
        input.extend_from_slice(&1u32.to_le_bytes());
        input.extend_from_slice(&1u16.to_le_bytes());
        input.extend_from_slice(b"X");
        // Past the end: cut away.
        input.extend_from_slice(&9u32.to_le_bytes());
        input.extend_from_slice(&2u16.to_le_bytes());
        input.extend_from_slice(b"zz");
        let s = storage(&input);
        assert_eq!(s.len(), 2048);
        let mut buf = [0xffu8; 6];
        s.read_exact_at(510, &mut buf).unwrap();
        assert_eq!(&buf, b"\0\0Xbc\0");
        let mut past = [0u8; 2];
        assert!(s.read_exact_at(2047, &mut past).is_err());
        // Without the magic, the bytes are the volume.
        assert_eq!(storage(b"plain").len(), 5);
    }

    /// Data and holes as a filesystem reports a sparse file's: the
    /// pieces rounded out to 4 KiB blocks, merged, the rest holes.
    #[test]
    fn holes_lie_between_the_pieces_blocks() {
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(&128u32.to_le_bytes()); // 64 KiB
        for (sector, len) in [(40u32, 1u16), (1, 3), (16, 5000)] {
            input.extend_from_slice(&sector.to_le_bytes());
            input.extend_from_slice(&len.to_le_bytes());
            input.extend(std::iter::repeat_n(7u8, usize::from(len)));
        }
        let s = storage(&input);
        for (at, run) in [
            (0, (true, 4096)),
            (4095, (true, 4096)),
            (4096, (false, 8192)),
            (9000, (true, 16384)),
            (16384, (false, 20480)),
            (20480, (true, 24576)),
            (30000, (false, 65536)),
            (65536, (false, 65536)),
        ] {
            assert_eq!(s.next_run(at).unwrap(), Some(run), "at {at}");
        }
        // Every byte outside the data runs reads as zero.
        let mut all = vec![0u8; 65536];
        s.read_exact_at(0, &mut all).unwrap();
        let data = |i: usize| i < 4096 || (8192..16384).contains(&i) || (20480..24576).contains(&i);
        assert!(all.iter().enumerate().all(|(i, &b)| b == 0 || data(i)));
    }
}
