//! The file allocation table: one entry per data cluster naming the next
//! cluster of its chain. Chains are walked with Brent's cycle detection,
//! so a loop is found after about twice the chain's real length, never
//! after as many steps as the FAT claims clusters, and the walk costs what
//! the chain really holds.
use super::boot::{BootSector, FatType};
use super::FsError;
use crate::block::BlockSource;
use crate::bytes::u64_of;

/// What a FAT entry says about the cluster after this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The chain goes on in this cluster.
    Cluster(u32),
    /// The last cluster of the chain.
    End,
    /// The entry is free (0): a chain that reaches it is broken.
    Free,
    /// The cluster is marked bad.
    Bad,
    /// A value that is no cluster of this volume (1, or past the last).
    Invalid(u32),
}

/// Bytes of the FAT read at once while walking.
const CHUNK: u64 = 4096;

/// What the disk said of the table's bytes so far, for a walk from its
/// start: block status is asked once per run, not once per chunk.
#[derive(Default)]
struct Runs {
    /// Up to here (from the table's start) the bytes read as zeros.
    zeros: u64,
    /// Up to here the disk said data.
    data: u64,
}

impl Runs {
    /// Where the run of zeros holding table byte `at` ends: `at` or less
    /// when `at` is not in one.
    fn zeros_until(&mut self, reader: &FatReader<'_>, at: u64, table_len: u64) -> u64 {
        if at >= self.zeros && at >= self.data {
            let (zeros, end) = reader.zero_run(at, table_len);
            if zeros {
                self.zeros = end;
            } else {
                self.data = end;
            }
        }
        self.zeros
    }
}

/// Reads FAT entries, keeping the last chunk of the table it read.
pub struct FatReader<'a> {
    disk: &'a dyn BlockSource,
    boot: &'a BootSector,
    /// Where the FAT copy being read starts on the volume.
    base: u64,
    chunk: Vec<u8>,
    chunk_at: Option<u64>,
}

impl<'a> FatReader<'a> {
    /// A reader of FAT copy `copy` (0 is the first).
    pub fn new(disk: &'a dyn BlockSource, boot: &'a BootSector, copy: u64) -> FatReader<'a> {
        let fat_bytes = boot.fat_sectors.saturating_mul(boot.bytes_per_sector);
        FatReader {
            disk,
            boot,
            base: boot
                .fat_offset
                .saturating_add(copy.saturating_mul(fat_bytes)),
            chunk: Vec::new(),
            chunk_at: None,
        }
    }

    /// The table's length in bytes (one copy).
    fn table_len(&self) -> u64 {
        self.boot
            .fat_sectors
            .saturating_mul(self.boot.bytes_per_sector)
    }

    /// The bytes of the table at `offset` (from the table's start), `len`
    /// of them (at most 4, never across the table's end).
    fn bytes(&mut self, offset: u64, len: u64) -> Result<[u8; 4], FsError> {
        let mut out = [0u8; 4];
        let table_len = self.table_len();
        for i in 0..len.min(4) {
            let at = offset.saturating_add(i);
            if at >= table_len {
                break;
            }
            let start = at.saturating_sub(at % CHUNK);
            if self.chunk_at != Some(start) {
                let n = CHUNK.min(table_len.saturating_sub(start));
                let abs = self.base.saturating_add(start);
                let n = n.min(self.disk.len().saturating_sub(abs));
                self.chunk = vec![0u8; usize::try_from(n).unwrap_or(0)];
                self.disk.read_at(abs, &mut self.chunk)?;
                self.chunk_at = Some(start);
            }
            let k = usize::try_from(at.saturating_sub(start)).unwrap_or(usize::MAX);
            if let (Some(dst), Some(src)) = (
                out.get_mut(usize::try_from(i).unwrap_or(0)),
                self.chunk.get(k),
            ) {
                *dst = *src;
            }
        }
        Ok(out)
    }

    /// Whether the table's bytes from `at` (from the table's start) read
    /// as zeros, and where that run ends ([`crate::block::zero_run`]).
    fn zero_run(&self, at: u64, table_len: u64) -> (bool, u64) {
        let len = table_len
            .min(self.disk.len().saturating_sub(self.base))
            .saturating_sub(at);
        let (zeros, n) = crate::block::zero_run(self.disk, self.base.saturating_add(at), len);
        (zeros, at.saturating_add(n))
    }

    /// Bytes an entry takes and the mask of its value, for the types whose
    /// entries are whole bytes (FAT16, FAT32); `None` for FAT12.
    fn word(&self) -> Option<(usize, u32)> {
        match self.boot.fat_type {
            FatType::Fat12 => None,
            FatType::Fat16 => Some((2, 0xffff)),
            FatType::Fat32 => Some((4, 0x0fff_ffff)),
        }
    }

    /// The raw entry of `cluster` (masked to 28 bits on FAT32).
    ///
    /// # Errors
    /// Read errors.
    pub fn entry(&mut self, cluster: u32) -> Result<u32, FsError> {
        let n = u64::from(cluster);
        Ok(match self.boot.fat_type {
            FatType::Fat12 => {
                let b = self.bytes(n.saturating_add(n / 2), 2)?;
                let v = u32::from(u16::from_le_bytes([b[0], b[1]]));
                if n % 2 == 1 {
                    v >> 4
                } else {
                    v & 0xfff
                }
            }
            FatType::Fat16 => {
                let b = self.bytes(n.saturating_mul(2), 2)?;
                u32::from(u16::from_le_bytes([b[0], b[1]]))
            }
            FatType::Fat32 => {
                let b = self.bytes(n.saturating_mul(4), 4)?;
                u32::from_le_bytes(b) & 0x0fff_ffff
            }
        })
    }

    /// The entries of clusters `0..count` that are not 0, as `put(cluster,
    /// value)` in cluster order, each as [`FatReader::entry`] reads it (an
    /// entry whose bytes cannot be read is 0). `check` takes the whole
    /// table (up to 2^25 entries): FAT16 and FAT32 are decoded a chunk of
    /// the table at a time (a lookup per entry cost a fuzz input's 16
    /// M-entry FAT16 2-3 s of CPU in the fuzz build), and what the disk
    /// says reads as zeros (a hole of a sparse file, clusters no layer
    /// holds) is neither read nor decoded, so the cost follows the part
    /// of the table that is stored, not its size.
    pub fn nonzero_entries(&mut self, count: usize, mut put: impl FnMut(usize, u32)) {
        let Some((width, mask)) = self.word() else {
            for (i, c) in (0..u32::MAX).take(count).enumerate() {
                let v = self.entry(c).unwrap_or(0);
                if v != 0 {
                    put(i, v);
                }
            }
            return;
        };
        let table_len = self.table_len();
        let per_chunk = usize::try_from(CHUNK)
            .unwrap_or(4096)
            .checked_div(width)
            .unwrap_or(1)
            .max(1);
        let mut buf = Vec::new();
        let mut runs = Runs::default();
        let mut first = 0usize;
        while first < count {
            // Where the chunk read lies in the table, as `bytes` reads it:
            // nothing past the table's or the disk's end.
            let start = u64_of(first).saturating_mul(u64_of(width));
            if start >= table_len {
                return;
            }
            let zeros_until = runs.zeros_until(self, start, table_len);
            // Whole chunks inside a run of zeros are skipped.
            if zeros_until >= start.saturating_add(CHUNK) {
                let whole = zeros_until.saturating_sub(start) / CHUNK;
                first = first.saturating_add(
                    usize::try_from(whole)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(per_chunk),
                );
                continue;
            }
            let abs = self.base.saturating_add(start);
            let len = CHUNK
                .min(table_len.saturating_sub(start))
                .min(self.disk.len().saturating_sub(abs));
            buf.clear();
            buf.resize(usize::try_from(len).unwrap_or(0), 0);
            if !buf.is_empty() && self.disk.read_at(abs, &mut buf).is_err() {
                buf.clear();
            }
            // A chunk cut short (the table's or the disk's end, a read
            // error) reads as zeros past what was read.
            let n = per_chunk.min(count.saturating_sub(first));
            for (i, v) in words(&buf, width, mask).take(n).enumerate() {
                if v != 0 {
                    put(first.saturating_add(i), v);
                }
            }
            first = first.saturating_add(n);
        }
    }

    /// How many entries of clusters `first..=last` are 0 (free), read as
    /// [`FatReader::entry`] reads them: bytes past the table's end read as
    /// zeros. FAT16 and FAT32 are read 64 KiB at a time, so
    /// a 16 M-entry table costs 500 reads and a byte compare, not 16 M
    /// lookups (a fuzzer's slow input); what lies wholly past the table is
    /// counted without reading.
    ///
    /// # Errors
    /// Read errors.
    pub fn count_free(&mut self, first: u32, last: u32) -> Result<u64, FsError> {
        let Some((w, mask)) = self.word() else {
            let mut free = 0u64;
            for c in first..=last {
                if self.entry(c)? == 0 {
                    free = free.saturating_add(1);
                }
            }
            return Ok(free);
        };
        let width = u64_of(w);
        let table_len = self.table_len();
        const STEP: u64 = 64 << 10;
        let mut buf = vec![0u8; usize::try_from(STEP).unwrap_or(0)];
        let (mut c, last) = (u64::from(first), u64::from(last));
        let mut free = 0u64;
        let mut runs = Runs::default();
        while c <= last {
            let at = c.saturating_mul(width);
            let left = last.saturating_sub(c).saturating_add(1);
            if at >= table_len {
                // Every entry from here reads as zeros (a table that runs
                // past the disk's end fails to read there, as `entry` does).
                return Ok(free.saturating_add(left));
            }
            let zeros_until = runs.zeros_until(self, at, table_len);
            // Entries wholly inside a run of zeros (a hole of a sparse
            // file, clusters no layer holds) are free without reading: a
            // table the size a field claims costs what is stored.
            let whole = zeros_until
                .saturating_sub(at)
                .checked_div(width)
                .unwrap_or(0);
            if whole > 0 {
                let n = whole.min(left);
                free = free.saturating_add(n);
                c = c.saturating_add(n);
                continue;
            }
            let n = left.min(STEP.checked_div(width).unwrap_or(1));
            let want = usize::try_from(n.saturating_mul(width)).unwrap_or(0);
            let have = usize::try_from(table_len.saturating_sub(at)).unwrap_or(usize::MAX);
            let Some(chunk) = buf.get_mut(..want) else {
                break;
            };
            chunk.fill(0);
            if let Some(part) = chunk.get_mut(..have.min(want)) {
                self.disk.read_at(self.base.saturating_add(at), part)?;
            }
            let zero = words(chunk, w, mask).filter(|&v| v == 0).count();
            free = free.saturating_add(u64_of(zero));
            c = c.saturating_add(n.max(1));
        }
        Ok(free)
    }

    /// What the entry of `cluster` says.
    ///
    /// # Errors
    /// Read errors.
    pub fn next(&mut self, cluster: u32) -> Result<Next, FsError> {
        let v = self.entry(cluster)?;
        let t = self.boot.fat_type;
        let last = self.boot.cluster_count.saturating_add(1);
        Ok(if v == 0 {
            Next::Free
        } else if v >= t.end_of_chain() {
            Next::End
        } else if v == t.bad() {
            Next::Bad
        } else if v >= 2 && u64::from(v) <= last {
            Next::Cluster(v)
        } else {
            Next::Invalid(v)
        })
    }
}

/// How a chain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    /// At an end-of-chain mark.
    Complete,
    /// The walker asked to stop.
    Stopped,
    /// Damaged: what was wrong, already worded.
    Broken(String),
}

/// The entries in `chunk`, `width` bytes each (little-endian, masked);
/// a partial entry at the end is left out.
fn words(chunk: &[u8], width: usize, mask: u32) -> impl Iterator<Item = u32> + '_ {
    chunk.chunks_exact(width.max(1)).map(move |e| {
        let mut b = [0u8; 4];
        if let Some(dst) = b.get_mut(..e.len()) {
            dst.copy_from_slice(e);
        }
        u32::from_le_bytes(b) & mask
    })
}

/// Walks the chain starting at `first`, calling `each` with runs of
/// consecutive clusters (first cluster, count) in chain order until it
/// returns false. A start that is no cluster of the volume, a free, bad
/// or invalid entry inside the chain, and a loop end the walk as
/// [`ChainEnd::Broken`].
///
/// # Errors
/// Read errors.
pub fn walk(
    fat: &mut FatReader<'_>,
    first: u32,
    each: &mut dyn FnMut(u32, u32) -> bool,
) -> Result<ChainEnd, FsError> {
    let last = fat.boot.cluster_count.saturating_add(1);
    if first < 2 || u64::from(first) > last {
        return Ok(ChainEnd::Broken(format!(
            "the chain starts at cluster {first}, which is not a data cluster (2 to {last})"
        )));
    }
    let (mut run_start, mut run_len) = (first, 1u32);
    let mut current = first;
    // Brent: the tortoise jumps to the hare at powers of two.
    let (mut tortoise, mut power, mut lambda) = (first, 1u64, 0u64);
    loop {
        let next = match fat.next(current)? {
            Next::Cluster(c) => c,
            Next::End => {
                each(run_start, run_len);
                return Ok(ChainEnd::Complete);
            }
            other => {
                each(run_start, run_len);
                let what = match other {
                    Next::Free => "a free entry".to_owned(),
                    Next::Bad => "a bad-cluster mark".to_owned(),
                    Next::Invalid(v) => format!("{v:#x}, not a cluster of the volume"),
                    _ => String::new(),
                };
                return Ok(ChainEnd::Broken(format!(
                    "the chain from cluster {first} breaks at cluster {current}: its FAT entry is {what}"
                )));
            }
        };
        if next == tortoise {
            each(run_start, run_len);
            return Ok(ChainEnd::Broken(format!(
                "the chain from cluster {first} loops: cluster {current} leads back to {next}"
            )));
        }
        if power == lambda {
            tortoise = next;
            power = power.saturating_mul(2);
            lambda = 0;
        }
        lambda = lambda.saturating_add(1);
        if current.checked_add(1) == Some(next) && run_len < u32::MAX {
            run_len = run_len.saturating_add(1);
        } else {
            if !each(run_start, run_len) {
                return Ok(ChainEnd::Stopped);
            }
            run_start = next;
            run_len = 1;
        }
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::block::raw::RawFile;
    use crate::block::storage::MemStorage;

    /// A FAT of 204,800 bytes at 1 KiB (400 sectors of 512) for 200,000
    /// clusters, over whatever disk a test gives it.
    fn boot_of(fat_type: FatType) -> BootSector {
        BootSector {
            fat_type,
            bytes_per_sector: 512,
            sectors_per_cluster: 1,
            cluster_size: 512,
            reserved_sectors: 2,
            num_fats: 1,
            root_entries: 0,
            total_sectors: 0,
            media: 0xf8,
            fat_sectors: 400,
            root_cluster: 2,
            fs_info_sector: 0,
            backup_boot_sector: 0,
            ext_flags: 0,
            volume_id: None,
            label: None,
            fat_offset: 1024,
            root_dir_offset: 0,
            root_dir_bytes: 0,
            data_offset: 0,
            cluster_count: 200_000,
            data_clusters: 200_000,
            problems: Vec::new(),
        }
    }

    /// A xorshift generator from `seed`: the same numbers on every run.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// `nonzero_entries` equals `entry` one by one (0 where it fails), on FAT12,
    /// FAT16 and FAT32 tables of random bytes, for tables the disk holds
    /// whole or cuts short, and counts that pass the table's end.
    #[test]
    fn entries_equal_each_entry() {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d_u64);
        for fat_type in [FatType::Fat12, FatType::Fat16, FatType::Fat32] {
            // The FAT is 204,800 bytes at 1 KiB: whole, cut inside a
            // chunk, cut at a chunk's end, cut inside an entry.
            for disk_len in [300_000u64, 100_001, 1024 + 65536, 1024 + 4097] {
                let bytes: Vec<u8> = (0..disk_len).map(|_| rand() as u8).collect();
                let disk = RawFile::new("mem", Arc::new(MemStorage::new(bytes)));
                let boot = boot_of(fat_type);
                for count in [0usize, 1, 2047, 2049, 150_000] {
                    let mut a = FatReader::new(&disk, &boot, 0);
                    let mut b = FatReader::new(&disk, &boot, 0);
                    let slow: Vec<u32> = (0..u32::try_from(count).unwrap())
                        .map(|c| b.entry(c).unwrap_or(0))
                        .collect();
                    let mut fast = vec![0u32; count];
                    let mut last = None;
                    a.nonzero_entries(count, |i, v| {
                        assert!(v != 0 && last < Some(i), "{i} {v:#x} after {last:?}");
                        last = Some(i);
                        fast[i] = v;
                    });
                    if let Some(i) = (0..count).find(|&i| fast[i] != slow[i]) {
                        panic!(
                            "{fat_type:?} disk {disk_len} count {count}: entry {i} is {:#x}, entry() says {:#x}",
                            fast[i], slow[i]
                        );
                    }
                }
            }
        }
    }

    /// A storage that counts the bytes read from it.
    struct Counted(
        Arc<dyn crate::block::storage::Storage>,
        std::sync::atomic::AtomicU64,
    );

    impl crate::block::storage::Storage for Counted {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.1
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.0.read_exact_at(offset, buf)
        }
        fn next_run(&self, offset: u64) -> std::io::Result<Option<(bool, u64)>> {
            self.0.next_run(offset)
        }
        fn allocated_size(&self) -> Option<u64> {
            self.0.allocated_size()
        }
    }

    /// On a sparse volume (the fuzz targets' form: holes between 4 KiB
    /// blocks of data), `nonzero_entries` equals `entry` one by one and
    /// reads only the table's chunks that meet data: a FAT of 200 KiB
    /// with three small pieces of data costs a few chunks.
    #[test]
    fn nonzero_entries_skip_the_holes_of_a_sparse_table() {
        let mut rand = xorshift(0x1234_5678_9abc_def1_u64);
        let mut input = b"LSFZSPRS".to_vec();
        input.extend_from_slice(&600u32.to_le_bytes());
        for (sector, len) in [(2u32, 600u16), (139, 3000), (400, 100)] {
            input.extend_from_slice(&sector.to_le_bytes());
            input.extend_from_slice(&len.to_le_bytes());
            input.extend((0..len).map(|_| rand() as u8 | 1));
        }
        for fat_type in [FatType::Fat16, FatType::Fat32] {
            let counted = Arc::new(Counted(
                crate::fuzzing::sparse::storage(&input),
                std::sync::atomic::AtomicU64::new(0),
            ));
            let disk = RawFile::new("sparse", counted.clone());
            let boot = boot_of(fat_type);
            for count in [51_200usize, 120_000, 35_000] {
                counted.1.store(0, std::sync::atomic::Ordering::Relaxed);
                let mut fast = vec![0u32; count];
                FatReader::new(&disk, &boot, 0).nonzero_entries(count, |i, v| fast[i] = v);
                let read = counted.1.load(std::sync::atomic::Ordering::Relaxed);
                let mut b = FatReader::new(&disk, &boot, 0);
                for (i, &v) in fast.iter().enumerate() {
                    assert_eq!(
                        v,
                        b.entry(i as u32).unwrap_or(0),
                        "{fat_type:?} count {count} entry {i}"
                    );
                }
                assert!(fast.iter().any(|&v| v != 0));
                // Data meets at most five of the table's 50 chunks.
                assert!(
                    read <= 5 * CHUNK,
                    "{fat_type:?} count {count}: {read} bytes read"
                );
            }
        }
    }

    /// `count_free` equals counting `entry` one by one, on FAT16 and FAT32
    /// tables of random entries (a quarter free), for ranges that start,
    /// end and pass the table's end anywhere.
    #[test]
    fn count_free_equals_counting_each_entry() {
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        for (fat_type, width) in [(FatType::Fat16, 2u64), (FatType::Fat32, 4)] {
            for disk_len in [300_000u64, 262_144] {
                let mut bytes = vec![0u8; usize::try_from(disk_len).unwrap()];
                for b in bytes.chunks_mut(usize::try_from(width).unwrap()) {
                    if rand() % 4 != 0 {
                        let v = rand().to_le_bytes();
                        b.copy_from_slice(&v[..b.len()]);
                    }
                }
                let disk = RawFile::new("mem", Arc::new(MemStorage::new(bytes)));
                let boot = boot_of(fat_type);
                for (first, last) in [
                    (2, 5),
                    (2, 50_000),
                    (1000, 102_399),
                    (2, 150_000),
                    (99_000, 99_001),
                ] {
                    let mut a = FatReader::new(&disk, &boot, 0);
                    let mut b = FatReader::new(&disk, &boot, 0);
                    let slow = (first..=last).filter(|&c| b.entry(c).unwrap() == 0).count();
                    assert_eq!(
                        a.count_free(first, last).unwrap(),
                        u64::try_from(slow).unwrap(),
                        "{fat_type:?} disk {disk_len} clusters {first}..={last}"
                    );
                }
            }
        }
    }
}
