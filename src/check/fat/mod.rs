//! The filesystem side of `check` for FAT12/16/32: what `fsck.fat -n`
//! (dosfstools 4) finds, in its order and with its way of going on: it
//! fixes in memory what it would fix on disk (a chain cut, a start
//! cluster cleared) and checks the rest against that, so one damage
//! gives the findings it gives there.
//!
//! - the geometry fsck.fat refuses (`geometry`), then the boot sector
//!   against its backup (FAT32; a leak: fsck.fat does not fix it and
//!   exits 0);
//! - the FAT copies: a copy whose first entry is damaged is not used,
//!   neither intact ends the check, copies that differ are reported
//!   (the part that maps clusters); entries naming no cluster of the
//!   volume (set to end of chain);
//! - every file from the root, a directory's files before its
//!   subdirectories: a start cluster past the volume, a chain reaching a
//!   free or bad cluster, a chain shorter or longer than the size, a
//!   cluster another file owns (the second is cut), a directory with a
//!   size, `.` and `..` naming the wrong cluster;
//! - clusters in use that no file owns (reclaimed), the dirty state (the
//!   boot sector's flag, the FAT's clean-shutdown bit), and the FSInfo
//!   free count against the clusters no file owns.
//!
//! Each problem's structure is the file's path as fsck.fat prints it
//! (short names, upper case), or the table or sector.
use super::{Problem, Problems, Progress, Severity};
use crate::block::BlockSource;
use crate::fs::fat::boot::FatType;
use crate::fs::fat::dir::ShortEntry;
use crate::fs::fat::Fat;

mod copies;
mod files;
mod geometry;
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
    /// The boot sector, read once: the geometry, the backup comparison and
    /// the dirty flag all look at it.
    sector0: [u8; 512],
    /// The files fsck.fat counts in its summary: every entry it meets
    /// (volume labels too) but `.`, `..` and the FAT32 root.
    counted: u64,
    kind: FatType,
    clusters: u32,
    cluster_size: u64,
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
        sector0: [0; 512],
        counted: 0,
        kind: boot.fat_type,
        clusters: u32::try_from(boot.cluster_count.min(MAX_CLUSTERS)).unwrap_or(0),
        cluster_size: boot.cluster_size.max(1),
    };
    let mut summary = Summary {
        clusters: boot.cluster_count,
        ..Summary::default()
    };
    if fat.disk().read_at(0, &mut c.sector0).is_err() || !geometry::fits(&mut c) {
        return (c.out, summary);
    }
    let total = usize::try_from(u64::from(c.clusters).saturating_add(2)).unwrap_or(0);
    progress.stage("FAT", u64::try_from(total).unwrap_or(0));
    // The first FAT, then the copies against it.
    let mut table = Words::new(total);
    fat.fat_reader()
        .nonzero_entries(total, |cl, v| table.set(cl, v));
    c.table = table;
    c.owner = Words::new(total);
    if !copies::choose(&mut c, total) {
        return (c.out, summary);
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
    geometry::dirty(&mut c);
    summary.clusters_used = u64::from(c.clusters).saturating_sub(free);
    // An FSInfo sector with a bad signature is one fsck.fat re-creates
    // with the count unknown (`geometry` reports it): nothing to compare.
    if let Some((info, at)) = fat.fsinfo().filter(|(info, _)| info.valid) {
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
