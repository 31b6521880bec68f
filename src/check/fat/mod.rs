//! The filesystem side of `check` for FAT12/16/32: what `fsck.fat -n`
//! (dosfstools 4) finds, in its order and with its way of going on: it
//! fixes in memory what it would fix on disk (a chain cut, a start
//! cluster cleared) and checks the rest against that, so one damage
//! gives the findings it gives there.
//!
//! - the boot sector against its backup (FAT32; a leak: fsck.fat does
//!   not fix it and exits 0) and the dirty bit;
//! - the FAT copies against the first (the part that maps clusters), and
//!   entries naming no cluster of the volume (set to end of chain);
//! - every file from the root, a directory's files before its
//!   subdirectories: a start cluster past the volume, a chain reaching a
//!   free or bad cluster, a chain shorter or longer than the size, a
//!   cluster another file owns (the second is cut), a directory with a
//!   size, `.` and `..` naming the wrong cluster;
//! - clusters in use that no file owns (reclaimed), and the FSInfo free
//!   count against the clusters no file owns.
//!
//! Each problem's structure is the file's path as fsck.fat prints it
//! (short names, upper case), or the table or sector.
use std::fmt::Write as _;

use super::{Problem, Problems, Progress, Severity};
use crate::block::BlockSource;
use crate::fs::fat::boot::{FatType, MAX_FAT16_CLUSTERS};
use crate::fs::fat::dir::{self, ShortEntry};
use crate::fs::fat::Fat;

mod words;
use words::Words;

/// Clusters checked at most (the check holds two words per cluster).
pub const MAX_CLUSTERS: u64 = 1 << 25;
/// Directory levels followed at most.
const MAX_DEPTH: usize = 256;
/// Files checked at most.
const MAX_FILES: usize = 1 << 22;

/// What a FAT check found besides its problems.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub files: u64,
    pub clusters_used: u64,
    pub clusters: u64,
}

/// One file met: its path (as fsck.fat prints it), its entry's volume
/// offset, and what the check changed in memory.
struct File {
    path: String,
    offset: u64,
    entry: ShortEntry,
    start: u32,
}

struct Checker<'a> {
    fat: &'a Fat,
    layer_of: &'a dyn Fn(u64) -> Option<usize>,
    out: Problems,
    /// The FAT as fixed in memory (index: cluster).
    table: Words,
    /// The file owning each cluster (index into `files`, plus 1).
    owner: Words,
    files: Vec<File>,
    /// The files fsck.fat counts in its summary: every entry it meets
    /// (volume labels too) but `.`, `..` and the FAT32 root.
    counted: u64,
    kind: FatType,
    clusters: u32,
    cluster_size: u64,
}

/// The path component fsck.fat prints for an 8.3 name.
fn short_name(raw: &[u8; 11]) -> String {
    let part = |b: &[u8]| -> String {
        let end = b
            .iter()
            .rposition(|&c| c != b' ')
            .map_or(0, |i| i.saturating_add(1));
        let mut out = String::new();
        for &c in b.get(..end).unwrap_or_default() {
            if c.is_ascii_graphic() {
                out.push(char::from(c));
            } else {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\{c:03o}");
            }
        }
        out
    };
    let mut name = raw.to_owned();
    // 0x05 stands for a first byte 0xe5.
    if name.first() == Some(&0x05) {
        if let Some(b) = name.first_mut() {
            *b = 0xe5;
        }
    }
    let (base, ext) = name.split_at(8);
    let ext = part(ext);
    if ext.is_empty() {
        part(base)
    } else {
        format!("{}.{ext}", part(base))
    }
}

impl Checker<'_> {
    fn problem(
        &mut self,
        severity: Severity,
        kind: &'static str,
        structure: String,
        offset: Option<u64>,
        detail: String,
    ) {
        self.out.push(Problem::in_volume(
            self.layer_of,
            severity,
            kind,
            structure,
            offset,
            detail,
        ));
    }

    fn eoc(&self) -> u32 {
        self.kind.end_of_chain()
    }

    fn bad(&self) -> u32 {
        self.kind.bad()
    }

    fn get(&self, c: u32) -> u32 {
        self.table.get(usize::try_from(c).unwrap_or(usize::MAX))
    }

    fn set(&mut self, c: u32, v: u32) {
        self.table.set(usize::try_from(c).unwrap_or(usize::MAX), v);
    }

    fn owner_of(&self, c: u32) -> u32 {
        self.owner.get(usize::try_from(c).unwrap_or(usize::MAX))
    }

    fn set_owner(&mut self, c: u32, file: u32) {
        self.owner
            .set(usize::try_from(c).unwrap_or(usize::MAX), file);
    }

    /// fsck.fat's `next_cluster`: `None` at the end (or a free entry,
    /// which it returns as 0).
    fn next(&self, c: u32) -> Option<u32> {
        let v = self.get(c);
        (v < self.eoc() && v != self.bad() && v != 0).then_some(v)
    }

    /// The volume offset of cluster `c`'s FAT entry (first copy).
    fn entry_offset(&self, c: u32) -> u64 {
        let b = self.fat.boot();
        b.fat_offset
            .saturating_add(u64::from(c).saturating_mul(b.fat_type.bits()) / 8)
    }

    /// `truncate_file`: keeps `clusters` of the file's chain, frees the
    /// rest.
    fn truncate(&mut self, f: usize, mut clusters: u64) {
        let mut walk = self.files.get(f).map_or(0, |x| x.start);
        let mut deleting = clusters == 0;
        if deleting {
            if let Some(x) = self.files.get_mut(f) {
                x.start = 0;
            }
        }
        let mut steps = 0u64;
        while walk > 0 && steps <= u64::from(self.clusters) {
            steps = steps.saturating_add(1);
            let next = self.next(walk);
            if deleting {
                self.set(walk, 0);
            } else {
                clusters = clusters.saturating_sub(1);
                if clusters == 0 {
                    deleting = true;
                    let e = self.eoc();
                    self.set(walk, e);
                }
            }
            walk = next.unwrap_or(0);
        }
    }

    /// `check_file`.
    fn check_file(&mut self, f: usize, parent: Option<usize>, grandparent_start: u32) {
        let Some(file) = self.files.get(f) else {
            return;
        };
        let (path, entry, offset, file_start) = (
            file.path.clone(),
            file.entry.clone(),
            file.offset,
            file.start,
        );
        let root_cluster = match self.kind {
            FatType::Fat32 => self.fat.boot().root_cluster,
            _ => 0,
        };
        let cs = self.cluster_size;
        if entry.is_dir() {
            if entry.size != 0 {
                self.problem(
                    Severity::Error,
                    "fat-directory-size",
                    path.clone(),
                    Some(offset.saturating_add(28)),
                    format!("directory has non-zero size {}", entry.size),
                );
            }
            if let Some(p) = parent {
                let parent_start = self.files.get(p).map_or(0, |x| x.start);
                let dots = match &entry.raw_name {
                    b".          " => Some(parent_start),
                    b"..         " => {
                        let g = if grandparent_start == root_cluster {
                            0
                        } else {
                            grandparent_start
                        };
                        Some(g)
                    }
                    _ => None,
                };
                if let Some(expect) = dots {
                    if entry.first_cluster != expect {
                        self.problem(
                            Severity::Error,
                            "fat-dot-start",
                            path,
                            Some(offset.saturating_add(26)),
                            format!(
                                "start ({}) does not point to the directory it names ({expect})",
                                entry.first_cluster
                            ),
                        );
                    }
                    return;
                }
            }
            if file_start == 0 {
                self.problem(
                    Severity::Error,
                    "fat-directory-start",
                    path,
                    Some(offset.saturating_add(26)),
                    "start does point to root directory".into(),
                );
                return;
            }
        }
        let mut start = file_start;
        if start == 1 {
            self.problem(
                Severity::Error,
                "fat-bad-start",
                path.clone(),
                Some(offset.saturating_add(26)),
                "bad start cluster 1".into(),
            );
            start = 0;
        }
        if u64::from(start) >= u64::from(self.clusters).saturating_add(2) {
            self.problem(
                Severity::Error,
                "fat-start-beyond-limit",
                path.clone(),
                Some(offset.saturating_add(26)),
                format!(
                    "start cluster beyond limit ({start} > {})",
                    u64::from(self.clusters).saturating_add(1)
                ),
            );
            start = 0;
        }
        if let Some(x) = self.files.get_mut(f) {
            x.start = start;
        }
        let me = u32::try_from(f.saturating_add(1)).unwrap_or(u32::MAX);
        let (mut clusters, mut prev) = (0u64, 0u32);
        let mut curr = (start != 0).then_some(start);
        while let Some(c) = curr {
            let value = self.get(c);
            if value == 0 || value == self.bad() {
                let what = if value == 0 { "free" } else { "bad" };
                self.problem(
                    Severity::Error,
                    "fat-chain-free-cluster",
                    path.clone(),
                    Some(self.entry_offset(c)),
                    format!("contains a {what} cluster ({c})"),
                );
                if prev != 0 {
                    let e = self.eoc();
                    self.set(prev, e);
                } else if let Some(x) = self.files.get_mut(f) {
                    x.start = 0;
                }
                break;
            }
            if !entry.is_dir() && u64::from(entry.size) <= clusters.saturating_mul(cs) {
                self.problem(
                    Severity::Error,
                    "fat-file-size",
                    path.clone(),
                    Some(offset.saturating_add(28)),
                    format!(
                        "file size is {} bytes, cluster chain length is > {} bytes",
                        entry.size,
                        clusters.saturating_mul(cs)
                    ),
                );
                self.truncate(f, clusters);
                break;
            }
            let owner = self.owner_of(c);
            if owner != 0 {
                let other = self
                    .files
                    .get(
                        usize::try_from(owner)
                            .unwrap_or(usize::MAX)
                            .saturating_sub(1),
                    )
                    .map_or_else(String::new, |o| o.path.clone());
                self.problem(
                    Severity::Error,
                    "fat-shared-clusters",
                    path.clone(),
                    Some(self.entry_offset(c)),
                    format!("{other} and {path} share clusters (cluster {c})"),
                );
                if prev != 0 {
                    let e = self.eoc();
                    self.set(prev, e);
                } else if let Some(x) = self.files.get_mut(f) {
                    x.start = 0;
                }
                break;
            }
            self.set_owner(c, me);
            clusters = clusters.saturating_add(1);
            prev = c;
            curr = self.next(c);
        }
        if !entry.is_dir() && u64::from(entry.size) > clusters.saturating_mul(cs) {
            self.problem(
                Severity::Error,
                "fat-file-size",
                path,
                Some(offset.saturating_add(28)),
                format!(
                    "file size is {} bytes, cluster chain length is {} bytes",
                    entry.size,
                    clusters.saturating_mul(cs)
                ),
            );
        }
    }

    /// The short entries of a directory (its chain as fixed in memory),
    /// as (volume offset, entry), and how many volume labels it holds.
    fn entries(&self, start: Option<u32>) -> (Vec<(u64, ShortEntry)>, u64) {
        let boot = self.fat.boot();
        let mut ranges = Vec::new();
        match start {
            None => ranges.push((boot.root_dir_offset, boot.root_dir_bytes)),
            Some(mut c) => {
                let limit = crate::fs::fat::MAX_DIR_BYTES
                    .checked_div(self.cluster_size)
                    .unwrap_or(0);
                for _ in 0..limit.max(1) {
                    if let Some(at) = boot.cluster_offset(c) {
                        ranges.push((at, self.cluster_size));
                    }
                    match self.next(c) {
                        Some(n) => c = n,
                        None => break,
                    }
                }
            }
        }
        let mut out = Vec::new();
        let mut labels = 0u64;
        // Read a piece of up to 64 KiB at a time, not an entry at a time
        // (the FAT fuzz target spent most of its time in 32-byte reads).
        let mut buf = vec![0u8; 1 << 16];
        for (at, len) in ranges {
            let mut pos = 0u64;
            while pos.saturating_add(32) <= len {
                let n = (len.saturating_sub(pos) & !31).min(1 << 16);
                let Some(piece) = buf.get_mut(..usize::try_from(n).unwrap_or(0)) else {
                    return (out, labels);
                };
                let base = at.saturating_add(pos);
                pos = pos.saturating_add(n);
                // A piece that cannot be read whole (past the end of a
                // truncated volume) is read an entry at a time, up to the
                // first that cannot be read, as fsck.fat stops there.
                let whole = self.fat.disk().read_at(base, piece).is_ok();
                for (i, raw) in piece.chunks_exact_mut(32).enumerate() {
                    let off = base.saturating_add(u64::try_from(i).unwrap_or(0).saturating_mul(32));
                    if !whole && self.fat.disk().read_at(off, raw).is_err() {
                        return (out, labels);
                    }
                    match dir::slot(raw) {
                        dir::Slot::End => return (out, labels),
                        dir::Slot::Short(e) => out.push((off, e)),
                        dir::Slot::Label(_) => labels = labels.saturating_add(1),
                        _ => {}
                    }
                }
            }
        }
        (out, labels)
    }

    /// `check_dir` then `subdirs`: the directory's files, then each
    /// subdirectory's.
    fn check_dir(
        &mut self,
        dir: Option<usize>,
        start: Option<u32>,
        parent_start: u32,
        depth: usize,
    ) {
        if depth > MAX_DEPTH || self.files.len() >= MAX_FILES {
            return;
        }
        let prefix = dir
            .and_then(|d| self.files.get(d))
            .map_or_else(String::new, |d| d.path.clone());
        let mut mine = Vec::new();
        let (entries, labels) = self.entries(start);
        // fsck.fat counts a volume label among the files.
        self.counted = self.counted.saturating_add(labels);
        for (offset, entry) in entries {
            if !matches!(&entry.raw_name, b".          " | b"..         ") {
                self.counted = self.counted.saturating_add(1);
            }
            let path = format!("{prefix}/{}", short_name(&entry.raw_name));
            let start = entry.first_cluster;
            self.files.push(File {
                path,
                offset,
                entry,
                start,
            });
            mine.push(self.files.len().saturating_sub(1));
        }
        for &f in &mine {
            self.check_file(f, dir, parent_start);
        }
        let my_start = dir.and_then(|d| self.files.get(d)).map_or(0, |d| d.start);
        for &f in &mine {
            let Some(file) = self.files.get(f) else {
                continue;
            };
            let dots = matches!(&file.entry.raw_name, b".          " | b"..         ");
            if !file.entry.is_dir() || dots || file.start == 0 {
                continue;
            }
            let s = file.start;
            self.check_dir(Some(f), Some(s), my_start, depth.saturating_add(1));
        }
    }
}

/// Checks the FAT filesystem, read-only. `layer_of` tells which chain
/// layer holds the volume's byte at an offset.
pub fn check(
    fat: &Fat,
    layer_of: &dyn Fn(u64) -> Option<usize>,
    progress: &dyn Progress,
) -> (Problems, Summary) {
    let boot = fat.boot();
    let mut c = Checker {
        fat,
        layer_of,
        out: Problems::default(),
        table: Words::new(0),
        owner: Words::new(0),
        files: Vec::new(),
        counted: 0,
        kind: boot.fat_type,
        clusters: u32::try_from(boot.cluster_count.min(MAX_CLUSTERS)).unwrap_or(0),
        cluster_size: boot.cluster_size.max(1),
    };
    let mut summary = Summary {
        clusters: boot.cluster_count,
        ..Summary::default()
    };
    // Only what the volume holds: the first FAT must lie within it (its
    // entries are what the check reads and keeps, one word per cluster),
    // and no more clusters are checked than it has entries for. A boot
    // sector claiming 32 million clusters on an 84-byte volume would
    // otherwise cost 256 MB and seconds of reading zeros.
    let volume = crate::fs::Filesystem::source(fat).len();
    let fat_bytes = boot.fat_sectors.saturating_mul(boot.bytes_per_sector);
    let fat_end = boot.fat_offset.saturating_add(fat_bytes);
    if fat_end > volume {
        c.problem(
            Severity::Error,
            "fat-past-volume",
            "FAT".into(),
            Some(boot.fat_offset),
            format!(
                "the first FAT (bytes {:#x}-{:#x}) lies past the end of the volume ({volume} bytes): not checked",
                boot.fat_offset,
                fat_end.saturating_sub(1)
            ),
        );
        return (c.out, summary);
    }
    // Geometry fsck.fat refuses and stops at, the first of "only 1 or 2
    // FATs are supported", "Too many clusters for FAT16 filesystem" and
    // "Filesystem has N clusters but only space for M FAT entries": the
    // check reports the same and nothing further. Where the second FAT
    // lies and every count after follow from that geometry, so further
    // findings would be its echoes (and a FAT16 read as 16 million
    // entries cost seconds); `ls` and the other views still show what the
    // FAT describes.
    let entries = fat_bytes
        .saturating_mul(8)
        .checked_div(boot.fat_type.bits())
        .unwrap_or(0);
    let held = entries.saturating_sub(2);
    // The decode has limited `cluster_count` to what the FAT takes: the
    // geometry's own count is what fsck.fat judges.
    let claimed = boot.data_clusters.max(boot.cluster_count);
    if !(1..=2).contains(&boot.num_fats) {
        c.problem(
            Severity::Error,
            "fat-count",
            "boot sector".into(),
            Some(0x10),
            format!(
                "{} FATs (fsck.fat checks 1 or 2, and refuses the volume): not checked further",
                boot.num_fats
            ),
        );
        return (c.out, summary);
    }
    if boot.fat_type == FatType::Fat16 && claimed > MAX_FAT16_CLUSTERS {
        c.problem(
            Severity::Error,
            "fat-too-many-clusters",
            "boot sector".into(),
            None,
            format!(
                "too many clusters ({claimed}) for a FAT16 filesystem (at most {MAX_FAT16_CLUSTERS}; fsck.fat refuses it, the kernel will not mount it): not checked further"
            ),
        );
        return (c.out, summary);
    }
    if claimed > held {
        c.problem(
            Severity::Error,
            "fat-too-small",
            "FAT".into(),
            Some(boot.fat_offset),
            format!(
                "{claimed} clusters, but the FAT ({fat_bytes} bytes) has entries for {held} (fsck.fat refuses it): not checked further"
            ),
        );
        return (c.out, summary);
    }
    if boot.cluster_count > MAX_CLUSTERS {
        c.problem(
            Severity::Leak,
            "fat-not-checked",
            "FAT".into(),
            None,
            format!(
                "{} clusters: more than the {MAX_CLUSTERS} this check holds in memory; not checked",
                boot.cluster_count
            ),
        );
        return (c.out, summary);
    }
    boot_sector(&mut c);
    let total = usize::try_from(u64::from(c.clusters).saturating_add(2)).unwrap_or(0);
    progress.stage("FAT", u64::try_from(total).unwrap_or(0));
    // The first FAT, then the copies against it.
    let mut table = Words::new(total);
    fat.fat_reader()
        .nonzero_entries(total, |cl, v| table.set(cl, v));
    c.table = table;
    c.owner = Words::new(total);
    if let Some(at) = second_differs(&c) {
        if !choose_copy(&mut c, at, total) {
            return (c.out, summary);
        }
    }
    // Entries naming no cluster of the volume: 1, or past the last and
    // below the bad mark. Found with one pass over the entries that are
    // not 0 (they are rare), then reported and set to end of chain in
    // cluster order.
    let (limit, bad) = (u64::from(c.clusters).saturating_add(2), c.bad());
    let out_of_range: Vec<(u32, u32)> = c
        .table
        .pages()
        .flat_map(|(at, page)| {
            page.iter()
                .enumerate()
                .map(move |(i, &v)| (at.saturating_add(i), v))
        })
        .skip_while(|&(cl, _)| cl < 2)
        .filter(|&(_, v)| v == 1 || (u64::from(v) >= limit && v < bad))
        .filter_map(|(cl, v)| Some((u32::try_from(cl).ok()?, v)))
        .collect();
    for (cl, v) in out_of_range {
        c.problem(
            Severity::Error,
            "fat-cluster-out-of-range",
            "FAT".into(),
            Some(c.entry_offset(cl)),
            format!("cluster {} out of range ({v})", cl.saturating_sub(2)),
        );
        let e = c.eoc();
        c.set(cl, e);
    }
    progress.advance(u64::try_from(total).unwrap_or(0));
    // The files, from the root.
    let root = match c.kind {
        FatType::Fat32 => {
            // The root directory is a chain too, owned first.
            let rc = boot.root_cluster;
            c.files.push(File {
                path: String::new(),
                offset: 0,
                entry: ShortEntry::decode(&[0u8; 32]),
                start: rc,
            });
            let mut cur = Some(rc);
            let mut n = 0u64;
            while let Some(cl) = cur {
                if n > u64::from(c.clusters) || c.owner_of(cl) != 0 {
                    break;
                }
                c.set_owner(cl, 1);
                n = n.saturating_add(1);
                cur = c.next(cl);
            }
            Some(0)
        }
        _ => None,
    };
    let root_start = root.map(|_| boot.root_cluster);
    c.check_dir(root, root_start, 0, 0);
    summary.files = c.counted;
    // Clusters in use that no file owns, reclaimed; then every cluster no
    // file owns that is not bad is free. One pass does both: a reclaimed
    // cluster is free once set to 0, so it counts as fsck.fat's second
    // pass would count it.
    let mut reclaimed = 0u64;
    let mut free = 0u64;
    let mut first_lost = None;
    let bad = c.bad();
    let mut cl = 2usize;
    while cl < total {
        // A page of the FAT never written holds free entries only; whether
        // a file owns them is asked of the owners' page.
        let page_end = total.min(
            cl.saturating_sub(cl % words::PAGE)
                .saturating_add(words::PAGE),
        );
        if !c.table.has_page(cl) && !c.owner.has_page(cl) {
            free = free.saturating_add(u64::try_from(page_end.saturating_sub(cl)).unwrap_or(0));
            cl = page_end;
            continue;
        }
        for i in cl..page_end {
            let v = c.table.get(i);
            if c.owner.get(i) != 0 || v == bad {
                continue;
            }
            free = free.saturating_add(1);
            if v != 0 {
                first_lost.get_or_insert(i);
                c.table.set(i, 0);
                reclaimed = reclaimed.saturating_add(1);
            }
        }
        cl = page_end;
    }
    if reclaimed > 0 {
        let at = first_lost
            .and_then(|i| u32::try_from(i).ok())
            .map(|cl| c.entry_offset(cl));
        c.problem(
            Severity::Error,
            "fat-unused-clusters",
            "FAT".into(),
            at,
            format!(
                "{reclaimed} cluster(s) ({} bytes) in use that no file owns",
                reclaimed.saturating_mul(c.cluster_size)
            ),
        );
    }
    summary.clusters_used = u64::from(c.clusters).saturating_sub(free);
    if let Some((info, at)) = fat.fsinfo() {
        if let Some(count) = info.free_count {
            if u64::from(count) != free {
                c.problem(
                    Severity::Error,
                    "fat-free-count",
                    "FSInfo".into(),
                    Some(at.saturating_add(488)),
                    format!("free cluster summary wrong ({count} vs. really {free})"),
                );
            }
        }
    }
    (c.out, summary)
}

/// The boot sector: its backup (FAT32) and the dirty bit.
fn boot_sector(c: &mut Checker<'_>) {
    let boot = c.fat.boot();
    let bps = boot.bytes_per_sector;
    let mut first = vec![0u8; 512];
    if c.fat.disk().read_at(0, &mut first).is_err() {
        return;
    }
    let dirty_at = if boot.fat_type == FatType::Fat32 {
        0x41
    } else {
        0x25
    };
    if boot.fat_type != FatType::Fat12 && first.get(dirty_at).is_some_and(|b| b & 1 != 0) {
        c.problem(
            Severity::Error,
            "fat-dirty",
            "boot sector".into(),
            Some(u64::try_from(dirty_at).unwrap_or(0)),
            "dirty bit is set: the filesystem was not properly unmounted".into(),
        );
    }
    if boot.fat_type == FatType::Fat32 && boot.backup_boot_sector != 0 {
        let at = boot.backup_boot_sector.saturating_mul(bps);
        let mut backup = vec![0u8; 512];
        if c.fat.disk().read_at(at, &mut backup).is_ok() && backup != first {
            let diff = first
                .iter()
                .zip(&backup)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            c.problem(
                Severity::Leak,
                "fat-boot-backup",
                "boot sector".into(),
                Some(at.saturating_add(u64::try_from(diff).unwrap_or(0))),
                format!("the boot sector and its backup differ (first at byte {diff})"),
            );
        }
    }
}

/// Where the second FAT first differs from the first, over the bytes
/// that map clusters (fsck.fat compares these two; a volume with more
/// copies is refused before this).
fn second_differs(c: &Checker<'_>) -> Option<u64> {
    let boot = c.fat.boot();
    if boot.num_fats < 2 {
        return None;
    }
    let size = u64::from(c.clusters)
        .saturating_add(2)
        .saturating_mul(boot.fat_type.bits())
        .saturating_add(7)
        / 8;
    let fat_bytes = boot.fat_sectors.saturating_mul(boot.bytes_per_sector);
    let base = boot.fat_offset.saturating_add(fat_bytes);
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut pos = 0u64;
    while pos < size {
        let n = size.saturating_sub(pos).min(1 << 16);
        let len = usize::try_from(n).unwrap_or(0);
        let (Some(x), Some(y)) = (a.get_mut(..len), b.get_mut(..len)) else {
            return None;
        };
        if c.fat
            .disk()
            .read_at(boot.fat_offset.saturating_add(pos), x)
            .is_err()
            || c.fat.disk().read_at(base.saturating_add(pos), y).is_err()
        {
            return None;
        }
        // Equal chunks are the rule: one slice compare (memcmp), and the
        // byte-by-byte scan only for the chunk that differs.
        if x != y {
            let i = x.iter().zip(y.iter()).position(|(p, q)| p != q)?;
            return Some(
                base.saturating_add(pos)
                    .saturating_add(u64::try_from(i).unwrap_or(0)),
            );
        }
        pos = pos.saturating_add(n);
    }
    None
}

/// fsck.fat's choice between two FATs that differ (`read_fat`): a copy
/// whose first entry (the media byte and all ones above it) is intact is
/// trusted; both intact, the first is used; only the second intact, the
/// second is used (and the check goes on with it, as fsck.fat copies it
/// over the first); neither, fsck.fat gives up. `at` is where the second
/// first differs. Whether the check goes on.
fn choose_copy(c: &mut Checker<'_>, at: u64, total: usize) -> bool {
    let boot = c.fat.boot();
    // FAT_EXTD: the entry's bits above its low byte (28 bits on FAT32).
    let bits = match c.kind {
        FatType::Fat32 => 28,
        kind => u32::try_from(kind.bits()).unwrap_or(16),
    };
    let extd = 1u32.checked_shl(bits).unwrap_or(0).wrapping_sub(1) & !0xff;
    let first_ok = c.get(0) & extd == extd;
    let mut second = crate::fs::fat::table::FatReader::new(c.fat.disk(), boot, 1);
    let second_ok = second.entry(0).is_ok_and(|v| v & extd == extd);
    let which = match (first_ok, second_ok) {
        (true, true) => "both appear intact: the first is used",
        (true, false) => "the second's first entry is damaged: the first is used",
        (false, true) => "the first's first entry is damaged: the second is used",
        (false, false) => {
            c.problem(
                Severity::Error,
                "fat-copies-corrupt",
                "FAT".into(),
                Some(boot.fat_offset),
                format!(
                    "the FAT copies differ (first at {at:#x}) and the first entry of both is damaged (fsck.fat gives up): not checked further"
                ),
            );
            return false;
        }
    };
    // The finding points into the copy not used: where the damage is.
    let (copy, offset) = if first_ok {
        ("FAT 2", at)
    } else {
        let fat_bytes = boot.fat_sectors.saturating_mul(boot.bytes_per_sector);
        ("FAT 1", at.saturating_sub(fat_bytes))
    };
    c.problem(
        Severity::Error,
        "fat-copies-differ",
        copy.into(),
        Some(offset),
        format!("FAT copy 2 differs from the first (first at {at:#x}); {which}"),
    );
    if !first_ok {
        let mut table = Words::new(total);
        second.nonzero_entries(total, |cl, v| table.set(cl, v));
        c.table = table;
    }
    true
}
