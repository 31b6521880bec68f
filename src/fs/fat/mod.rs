//! FAT12, FAT16 and FAT32 (with VFAT long names), read-only: the EFI
//! system partition of every UEFI disk, and old images.
//!
//! One module per on-disk structure: [`boot`] (the BPB), [`fsinfo`],
//! [`table`] (the FAT and its cluster chains), [`dir`] (short and long
//! directory entries); [`filesystem`] puts them behind
//! [`crate::fs::Filesystem`].
//!
//! FAT has no inodes: a file is named by the volume offset of its short
//! directory entry, which is where its metadata lives (the root, which has
//! no entry, is node [`ROOT`]). Nothing is trusted: every cluster number
//! is checked against the volume, chains are walked with cycle detection,
//! and directories are bounded at 2 MiB (65,536 entries, the limit of the
//! specification and of Linux).
use std::sync::{Arc, Mutex};

use crate::block::cache::BlockCache;
use crate::block::BlockSource;

mod ahead;
pub mod boot;
pub mod dir;
pub mod filesystem;
pub mod fsinfo;
pub mod table;

pub use crate::fs::FsError;
use boot::{BootSector, FatType};
use dir::{Assembler, Item, ShortEntry};
use fsinfo::FsInfo;
use table::{ChainEnd, FatReader};

/// The root directory's node.
pub const ROOT: u64 = 0;
/// The most bytes of one directory that are read.
pub const MAX_DIR_BYTES: u64 = 2 << 20;
/// Metadata cache.
const CACHE_BYTES: u64 = 8 << 20;
/// Runs of the last file read kept for the next read (a file fragmented
/// into more runs is walked again on each read).
const MAX_CACHED_RUNS: usize = 1 << 16;

/// Runs of a cluster chain: (first cluster, count).
pub type ClusterRuns = Vec<(u32, u32)>;
/// Byte ranges (volume offset, length).
type Ranges = Vec<(u64, u64)>;

/// An opened FAT filesystem.
pub struct Fat {
    disk: BlockCache,
    boot: BootSector,
    /// The FSInfo sector (FAT32), with its volume offset.
    fsinfo: Option<(FsInfo, u64)>,
    /// The label from the root directory's label entry.
    root_label: Option<[u8; 11]>,
    /// Clusters of the last file read: (first cluster, runs).
    runs_cache: Mutex<Option<(u32, Arc<ClusterRuns>)>>,
    /// Whether the FAT was fetched ahead ([`Fat::prefetch_dirs`]).
    fat_ahead: std::sync::atomic::AtomicBool,
}

impl Fat {
    /// Opens the FAT filesystem at the start of `source`.
    ///
    /// # Errors
    /// `NotThisFs` without a FAT boot sector; `Corrupt` for impossible
    /// geometry; read errors.
    pub fn open(source: Arc<dyn BlockSource>) -> Result<Fat, FsError> {
        let len = source.len();
        if len < 512 {
            return Err(FsError::NotThisFs {
                fs: "FAT",
                detail: format!("the volume has only {len} bytes"),
            });
        }
        let disk = BlockCache::new(source, CACHE_BYTES);
        let mut raw = vec![0u8; boot::SIZE];
        disk.read_at(0, &mut raw)?;
        let boot = BootSector::decode(&raw, len)?;
        let fsinfo = if boot.fat_type == FatType::Fat32
            && boot.fs_info_sector != 0
            && boot.fs_info_sector != 0xffff
        {
            let at = boot.fs_info_sector.saturating_mul(boot.bytes_per_sector);
            let mut b = vec![0u8; 512];
            match at.checked_add(512).filter(|&e| e <= len) {
                Some(_) => {
                    disk.read_at(at, &mut b)?;
                    Some((FsInfo::decode(&b), at))
                }
                None => None,
            }
        } else {
            None
        };
        let mut fat = Fat {
            disk,
            boot,
            fsinfo,
            root_label: None,
            runs_cache: Mutex::default(),
            fat_ahead: std::sync::atomic::AtomicBool::new(false),
        };
        // The label entry of the root directory, as blkid reads it.
        let mut asm = Assembler::default();
        let _ = fat.scan_dir(ROOT, &mut asm, &mut |_| true);
        fat.root_label = asm.label;
        Ok(fat)
    }

    /// The boot sector.
    pub fn boot(&self) -> &BootSector {
        &self.boot
    }

    /// The FSInfo sector and its offset (FAT32).
    pub fn fsinfo(&self) -> Option<(FsInfo, u64)> {
        self.fsinfo
    }

    /// The volume label: the root directory's label entry, else the boot
    /// sector's (both space padded; "NO NAME" means none).
    pub fn label_bytes(&self) -> Option<Vec<u8>> {
        let raw = self.root_label.or(self.boot.label)?;
        let end = raw.iter().rposition(|&c| c != b' ' && c != 0)?;
        let l = raw.get(..=end)?.to_vec();
        (l != b"NO NAME").then_some(l)
    }

    /// A reader of the FAT in use.
    pub fn fat_reader(&self) -> FatReader<'_> {
        FatReader::new(&self.disk, &self.boot, self.boot.active_fat())
    }

    /// The disk the filesystem is read from (cached).
    pub fn disk(&self) -> &BlockCache {
        &self.disk
    }

    /// The short entry of `node` (None for the root).
    ///
    /// # Errors
    /// A node that is no entry offset of this volume; read errors.
    pub fn entry(&self, node: u64) -> Result<Option<ShortEntry>, FsError> {
        if node == ROOT {
            return Ok(None);
        }
        if node % 32 != 0 || node.checked_add(32).is_none_or(|e| e > self.disk.len()) {
            return Err(FsError::NotFound {
                path: format!("<{node}>"),
                detail: format!("{node:#x} is not the offset of a directory entry"),
            });
        }
        let mut b = [0u8; 32];
        self.disk.read_at(node, &mut b)?;
        // A slot that holds no file is no node (an older layer's free
        // slot where a newer one put a file: the file is new there).
        match dir::slot(&b) {
            dir::Slot::Short(e) => Ok(Some(e)),
            other => Err(FsError::NotFound {
                path: format!("<{node}>"),
                detail: format!(
                    "the directory slot at {node:#x} holds no file ({})",
                    match other {
                        dir::Slot::End | dir::Slot::Deleted => "free",
                        dir::Slot::Long { .. } => "a long-name piece",
                        _ => "the volume label",
                    }
                ),
            }),
        }
    }

    /// The first cluster of a directory node (None: the FAT12/16 root
    /// area).
    fn dir_start(&self, node: u64) -> Result<Option<u32>, FsError> {
        match self.entry(node)? {
            None => Ok(self.root_cluster()),
            Some(e) if !e.is_dir() => Err(FsError::NotFound {
                path: format!("<{node}>"),
                detail: format!("the entry at {node:#x} is not a directory"),
            }),
            // `..` of a directory below the root names cluster 0.
            Some(e) if e.first_cluster == 0 => Ok(self.root_cluster()),
            Some(e) => Ok(Some(e.first_cluster)),
        }
    }

    fn root_cluster(&self) -> Option<u32> {
        match self.boot.fat_type {
            FatType::Fat32 => Some(self.boot.root_cluster),
            _ => None,
        }
    }

    /// The runs (first cluster, count) of the chain from `first`, at most
    /// `limit` clusters in all, and how the chain ended.
    ///
    /// # Errors
    /// Read errors.
    pub fn chain(&self, first: u32, limit: u64) -> Result<(ClusterRuns, ChainEnd), FsError> {
        let mut runs = Vec::new();
        let mut total = 0u64;
        let end = table::walk(&mut self.fat_reader(), first, &mut |c, n| {
            let take = u64::from(n).min(limit.saturating_sub(total));
            if take > 0 {
                runs.push((c, u32::try_from(take).unwrap_or(u32::MAX)));
            }
            total = total.saturating_add(take);
            total < limit
        })?;
        Ok((runs, end))
    }

    /// The cached chain of a file starting at `first`.
    fn file_chain(&self, first: u32) -> Result<Arc<ClusterRuns>, FsError> {
        if let Ok(guard) = self.runs_cache.lock() {
            if let Some((f, runs)) = guard.as_ref() {
                if *f == first {
                    return Ok(runs.clone());
                }
            }
        }
        let (runs, _) = self.chain(first, self.boot.cluster_count)?;
        let runs = Arc::new(runs);
        if runs.len() <= MAX_CACHED_RUNS {
            if let Ok(mut guard) = self.runs_cache.lock() {
                *guard = Some((first, runs.clone()));
            }
        }
        Ok(runs)
    }

    /// Byte ranges (volume offset, length) of a directory's data, at most
    /// [`MAX_DIR_BYTES`], and what was wrong with its chain.
    fn dir_ranges(&self, start: Option<u32>) -> Result<(Ranges, Option<String>), FsError> {
        let Some(start) = start else {
            return Ok((
                vec![(self.boot.root_dir_offset, self.boot.root_dir_bytes)],
                None,
            ));
        };
        let limit = dir_clusters(self.boot.cluster_size);
        let (runs, end) = self.chain(start, limit.max(1))?;
        let mut out = Vec::new();
        for (c, n) in runs {
            if let Some(at) = self.boot.cluster_offset(c) {
                out.push((at, u64::from(n).saturating_mul(self.boot.cluster_size)));
            }
        }
        let problem = match end {
            ChainEnd::Broken(why) => Some(why),
            ChainEnd::Stopped => Some(format!(
                "directory at cluster {start}: longer than {} bytes; the rest is not read",
                MAX_DIR_BYTES
            )),
            ChainEnd::Complete => None,
        };
        Ok((out, problem))
    }

    /// Reads the slots of directory `node`, feeding them to `asm`, and
    /// calls `each` with each item until it returns false.
    ///
    /// # Errors
    /// Not a directory; read errors.
    pub fn scan_dir(
        &self,
        node: u64,
        asm: &mut Assembler,
        each: &mut dyn FnMut(Item) -> bool,
    ) -> Result<(), FsError> {
        let start = self.dir_start(node)?;
        let (ranges, problem) = self.dir_ranges(start)?;
        asm.problems.extend(problem);
        let mut buf = vec![0u8; 4096];
        for (at, len) in ranges {
            let mut done = 0u64;
            while done < len {
                let n = len.saturating_sub(done).min(4096);
                let chunk = buf
                    .get_mut(..usize::try_from(n).unwrap_or(0))
                    .unwrap_or_default();
                let pos = at.saturating_add(done);
                self.disk.read_at(pos, chunk)?;
                for (i, s) in chunk.chunks_exact(32).enumerate() {
                    let off = pos.saturating_add(u64::try_from(i).unwrap_or(0).saturating_mul(32));
                    let slot = dir::slot(s);
                    if slot == dir::Slot::End {
                        return Ok(());
                    }
                    if let Some(item) = asm.feed(slot, off) {
                        if !each(item) {
                            return Ok(());
                        }
                    }
                }
                done = done.saturating_add(n);
            }
        }
        Ok(())
    }
}

/// The most clusters a directory may take ([`MAX_DIR_BYTES`] of them).
pub(crate) fn dir_clusters(cluster_size: u64) -> u64 {
    MAX_DIR_BYTES
        .checked_div(cluster_size)
        .unwrap_or(MAX_DIR_BYTES)
}
