//! Partition tables (MBR with logical partitions, GPT) and [`Slice`], one
//! partition as a block source of its own. Real VM disks are partitioned:
//! the filesystem commands look inside a partition with `--partition N`.
//!
//! Every entry is checked against the disk's size; chains of extended
//! partitions and GPT entry arrays are bounded.
use std::sync::Arc;

use serde::Serialize;

use crate::block::{check_range, BlockError, BlockSource, Extent};

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based, as Linux numbers them (logical MBR partitions from 5).
    pub index: usize,
    /// Byte offset and length on the disk.
    pub start: u64,
    pub len: u64,
    /// MBR type byte as hex (`83`), or the GPT type GUID.
    pub kind: String,
    /// GPT partition name (escaped), empty for MBR.
    pub name: String,
}

/// A partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    /// `dos` or `gpt`, as sfdisk says.
    pub label: &'static str,
    pub partitions: Vec<Partition>,
    /// Entries that could not be used (outside the disk, a loop), said in
    /// words.
    pub problems: Vec<String>,
}

const SECTOR: u64 = 512;
const MAX_LOGICAL: usize = 128;
const MAX_GPT_ARRAY: u64 = 1 << 20;

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

fn guid(b: &[u8]) -> String {
    // Mixed-endian: the first three groups are little-endian.
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

/// Reads the partition table of `disk`, if it has one.
///
/// # Errors
/// Read errors only; a damaged table is reported in `problems`.
pub fn read_table(disk: &dyn BlockSource) -> Result<Option<Table>, BlockError> {
    let size = disk.len();
    if size < 2 * SECTOR {
        return Ok(None);
    }
    let mut mbr = vec![0u8; SECTOR as usize];
    disk.read_at(0, &mut mbr)?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Ok(None);
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + i * 16..462 + i * 16]).collect();
    if entries.iter().any(|e| e[4] == 0xee) {
        return gpt(disk).map(Some);
    }
    // A FAT/NTFS boot sector also ends in 55 AA: demand sane entries.
    if entries.iter().any(|e| e[0] != 0 && e[0] != 0x80) {
        return Ok(None);
    }
    let mut t = Table {
        label: "dos",
        partitions: Vec::new(),
        problems: Vec::new(),
    };
    for (i, e) in entries.iter().enumerate() {
        let (kind, start, sectors) = (e[4], le32(e, 8), le32(e, 12));
        if kind == 0 || sectors == 0 {
            continue;
        }
        if matches!(kind, 0x05 | 0x0f | 0x85) {
            logical(disk, start, &mut t)?;
            continue;
        }
        push(
            &mut t,
            size,
            i + 1,
            start * SECTOR,
            sectors * SECTOR,
            format!("{kind:x}"),
            String::new(),
        );
    }
    Ok(Some(t))
}

fn push(t: &mut Table, size: u64, index: usize, start: u64, len: u64, kind: String, name: String) {
    if start.checked_add(len).is_some_and(|e| e <= size) {
        t.partitions.push(Partition {
            index,
            start,
            len,
            kind,
            name,
        });
    } else {
        t.problems.push(format!(
            "partition {index} ({start:#x}+{len:#x}) passes the end of the disk ({size} bytes)"
        ));
    }
}

/// Logical partitions: a chain of extended boot records, each relative to
/// the first.
fn logical(disk: &dyn BlockSource, ext_start: u64, t: &mut Table) -> Result<(), BlockError> {
    let size = disk.len();
    let mut next = ext_start;
    let mut seen = std::collections::HashSet::new();
    for n in 0..MAX_LOGICAL {
        let at = next * SECTOR;
        if at + SECTOR > size || !seen.insert(next) {
            t.problems.push(format!(
                "extended boot record at sector {next}: outside the disk or a loop"
            ));
            return Ok(());
        }
        let mut ebr = vec![0u8; SECTOR as usize];
        disk.read_at(at, &mut ebr)?;
        if ebr[510..512] != [0x55, 0xaa] {
            t.problems.push(format!(
                "extended boot record at sector {next}: no signature"
            ));
            return Ok(());
        }
        let (e, link) = (&ebr[446..462], &ebr[462..478]);
        if e[4] != 0 && le32(e, 12) != 0 {
            push(
                t,
                size,
                5 + n,
                (next + le32(e, 8)) * SECTOR,
                le32(e, 12) * SECTOR,
                format!("{:x}", e[4]),
                String::new(),
            );
        }
        if link[4] == 0 || le32(link, 12) == 0 {
            return Ok(());
        }
        next = ext_start + le32(link, 8);
    }
    t.problems
        .push(format!("more than {MAX_LOGICAL} logical partitions"));
    Ok(())
}

fn gpt(disk: &dyn BlockSource) -> Result<Table, BlockError> {
    let size = disk.len();
    let mut t = Table {
        label: "gpt",
        partitions: Vec::new(),
        problems: Vec::new(),
    };
    // 512-byte sectors, or 4096 on 4Kn disks.
    for lba in [512u64, 4096] {
        if lba * 2 > size {
            break;
        }
        let mut h = vec![0u8; 92];
        disk.read_at(lba, &mut h)?;
        if &h[0..8] != b"EFI PART" {
            continue;
        }
        let (entries_lba, count, entry_size) = (le64(&h, 72), le32(&h, 80), le32(&h, 84));
        let bytes = count.saturating_mul(entry_size);
        if entry_size < 128
            || bytes > MAX_GPT_ARRAY
            || entries_lba.saturating_mul(lba).saturating_add(bytes) > size
        {
            t.problems.push(format!(
                "GPT entry array ({count} x {entry_size} at LBA {entries_lba}) is not readable"
            ));
            return Ok(t);
        }
        let mut array = vec![0u8; bytes as usize];
        disk.read_at(entries_lba * lba, &mut array)?;
        for (i, e) in array.chunks_exact(entry_size as usize).enumerate() {
            if e[0..16].iter().all(|&b| b == 0) {
                continue;
            }
            let (first, last) = (le64(e, 32), le64(e, 40));
            if last < first {
                t.problems.push(format!(
                    "partition {}: last LBA {last} before first {first}",
                    i + 1
                ));
                continue;
            }
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            let name = crate::escape::printable(&String::from_utf16_lossy(&units));
            push(
                &mut t,
                size,
                i + 1,
                first * lba,
                (last - first + 1) * lba,
                guid(&e[0..16]),
                name,
            );
        }
        return Ok(t);
    }
    t.problems.push("protective MBR but no GPT header".into());
    Ok(t)
}

/// One partition of a disk, as a disk of its own.
pub struct Slice {
    inner: Arc<dyn BlockSource>,
    start: u64,
    len: u64,
    name: String,
}

impl Slice {
    /// The range `[start, start + len)` of `inner`.
    pub fn new(inner: Arc<dyn BlockSource>, start: u64, len: u64, name: String) -> Slice {
        Slice {
            inner,
            start,
            len,
            name,
        }
    }

    /// Where the slice starts on the underlying disk.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockSource for Slice {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_range(&self.name, self.len, offset, buf.len() as u64)?;
        self.inner.read_at(self.start + offset, buf)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, BlockError> {
        check_range(&self.name, self.len, offset, len)?;
        Ok(self
            .inner
            .block_status(self.start + offset, len)?
            .into_iter()
            .map(|e| Extent {
                offset: e.offset - self.start,
                ..e
            })
            .collect())
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Extent, BlockError> {
        check_range(&self.name, self.len, offset, len)?;
        let e = self.inner.locate(self.start + offset, len)?;
        Ok(Extent { offset, ..e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::raw::RawFile;
    use crate::block::storage::MemStorage;

    fn disk(bytes: Vec<u8>) -> RawFile {
        RawFile::new("mem", Arc::new(MemStorage::new(bytes)))
    }

    fn entry(b: &mut [u8], at: usize, kind: u8, start: u32, sectors: u32) {
        b[at + 4] = kind;
        b[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        b[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    }

    #[test]
    fn logical_partitions_and_a_looping_chain() {
        let mut b = vec![0u8; 1 << 20];
        b[510] = 0x55;
        b[511] = 0xaa;
        entry(&mut b, 446, 0x83, 8, 100);
        entry(&mut b, 462, 0x05, 200, 1000);
        // EBR at sector 200: a logical partition, then a link to itself.
        let ebr = 200 * 512;
        b[ebr + 510] = 0x55;
        b[ebr + 511] = 0xaa;
        entry(&mut b, ebr + 446, 0x83, 2, 50);
        entry(&mut b, ebr + 462, 0x05, 0, 10);
        let t = read_table(&disk(b)).unwrap().unwrap();
        assert_eq!(t.label, "dos");
        let found: Vec<(usize, u64, u64)> = t
            .partitions
            .iter()
            .map(|p| (p.index, p.start, p.len))
            .collect();
        assert_eq!(
            found,
            vec![(1, 8 * 512, 100 * 512), (5, 202 * 512, 50 * 512)]
        );
        assert!(
            t.problems.iter().any(|p| p.contains("loop")),
            "{:?}",
            t.problems
        );
    }

    #[test]
    fn entries_outside_the_disk_and_absurd_gpt_arrays_are_problems() {
        let mut b = vec![0u8; 64 << 10];
        b[510] = 0x55;
        b[511] = 0xaa;
        entry(&mut b, 446, 0x83, 8, u32::MAX);
        let t = read_table(&disk(b.clone())).unwrap().unwrap();
        assert!(
            t.partitions.is_empty() && t.problems[0].contains("passes the end"),
            "{:?}",
            t.problems
        );
        // Protective MBR, GPT header claiming 2^32 entries.
        entry(&mut b, 446, 0xee, 1, 100);
        b[512..520].copy_from_slice(b"EFI PART");
        b[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        b[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        b[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let t = read_table(&disk(b)).unwrap().unwrap();
        assert_eq!(t.label, "gpt");
        assert!(t.problems[0].contains("not readable"), "{:?}", t.problems);
        // No signature: no table; a tiny disk: no table.
        assert!(read_table(&disk(vec![0u8; 4096])).unwrap().is_none());
        assert!(read_table(&disk(vec![0u8; 100])).unwrap().is_none());
    }
}
