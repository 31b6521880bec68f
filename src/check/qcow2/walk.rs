//! The walk of `check`: every cluster the qcow2 metadata references,
//! counted as qemu counts them (`calculate_refcounts` in
//! `block/qcow2-refcount.c`): header, L1 and L2 tables of the image and
//! of every snapshot, the snapshot table, the refcount table and blocks,
//! and persistent bitmaps. Unlike qemu, each distinct table is walked
//! once, its references counted by multiplicity (see [`L2Ref`]), so the
//! cost follows the tables the file holds, not how often they are named.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use super::*;
use std::collections::HashMap;

/// An L2 table and how often L1 tables name it. Each distinct table is
/// walked once and its references counted by multiplicity: snapshots
/// share most L2 tables with the active image, and a hostile image can
/// name one table from every entry of a 4M-entry L1 table (walking it per
/// reference, as qemu does, costs 2^40 entries from a 42 MiB file).
pub(super) struct L2Ref {
    pub(super) offset: u64,
    /// References from the active L1 table (its entries count as
    /// allocated clusters).
    pub(super) active: u64,
    /// References from snapshots' L1 tables.
    snapshots: u64,
    /// The first reference, which names the table in problems.
    l1_index: u64,
    snapshot: Option<Arc<str>>,
}

/// The distinct L2 tables of one walk, in the order first named.
pub(super) struct L2Refs {
    index: HashMap<u64, usize>,
    pub(super) refs: Vec<L2Ref>,
    /// Distinct tables kept at most: the file's clusters (a well-formed
    /// image cannot hold more tables than that; more distinct offsets are
    /// misaligned entries of a damaged image).
    cap: usize,
    /// References to tables past the cap, not walked.
    dropped: u64,
}

impl L2Refs {
    pub(super) fn new(cap: usize) -> L2Refs {
        L2Refs {
            index: HashMap::new(),
            refs: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    pub(super) fn add(&mut self, offset: u64, n: u64, l1_index: u64, snapshot: &Option<Arc<str>>) {
        let (active, snapshots) = if snapshot.is_none() { (n, 0) } else { (0, n) };
        if let Some(r) = self.index.get(&offset).and_then(|&i| self.refs.get_mut(i)) {
            r.active = r.active.saturating_add(active);
            r.snapshots = r.snapshots.saturating_add(snapshots);
            return;
        }
        if self.refs.len() >= self.cap {
            self.dropped = self.dropped.saturating_add(n);
            return;
        }
        self.index.insert(offset, self.refs.len());
        self.refs.push(L2Ref {
            offset,
            active,
            snapshots,
            l1_index,
            snapshot: snapshot.clone(),
        });
    }
}

/// Tables named by several snapshots or bitmaps, grouped: (first
/// position, how many) per distinct (offset, size in entries), in the
/// order first named, while their sizes fit `budget` entries; and the
/// position of the first table left out. Distinct tables of a
/// well-formed image lie apart in the file, so a budget of the file's
/// size in entries (and a little) leaves out only tables that overlap.
fn group_tables(
    tables: impl Iterator<Item = (u64, u64)>,
    mut budget: u64,
) -> (Vec<(usize, u64)>, Option<usize>) {
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    let mut groups: Vec<(usize, u64, u64)> = Vec::new();
    for (i, key) in tables.enumerate() {
        match seen.get(&key).and_then(|&g| groups.get_mut(g)) {
            Some(g) => g.1 = g.1.saturating_add(1),
            None => {
                seen.insert(key, groups.len());
                groups.push((i, 1, key.1));
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (i, n, size) in groups {
        match budget.checked_sub(size) {
            Some(left) => budget = left,
            None => return (out, Some(i)),
        }
        out.push((i, n));
    }
    (out, None)
}

impl Checker<'_> {
    /// Every reference, in qemu's order (`calculate_refcounts`), except
    /// that L2 tables are walked after all L1 tables, once each.
    pub(super) fn walk(&mut self, progress: &dyn Progress) {
        self.inc(0, self.cluster_size, &Who::Header);
        let cap = self.distinct_tables_cap();
        let mut l2 = L2Refs::new(cap);
        let (l1_offset, l1_size) = (self.h.l1_table_offset, u64::from(self.h.l1_size));
        self.walk_l1(l1_offset, l1_size, None, 1, &mut l2, progress);
        let snapshots = std::mem::take(&mut self.snapshots);
        let mut walkable = Vec::new();
        for s in &snapshots {
            if s.l1_offset & self.cluster_size.saturating_sub(1) != 0 {
                self.walk_problem(
                    "snapshot-l1-unaligned",
                    format!("snapshot {}", s.name),
                    None,
                    format!("L1 table offset {:#x} is not cluster aligned", s.l1_offset),
                );
                continue;
            }
            if s.l1_size > MAX_L1_BYTES / 8 {
                self.walk_problem(
                    "snapshot-l1-too-large",
                    format!("snapshot {}", s.name),
                    None,
                    format!("L1 table of {:#x} entries is too large", s.l1_size),
                );
                continue;
            }
            walkable.push(s);
        }
        // Snapshots naming one L1 table share its walk.
        let budget = (self.file_len / 8).saturating_add(MAX_L1_BYTES / 8);
        let (groups, left_out) =
            group_tables(walkable.iter().map(|s| (s.l1_offset, s.l1_size)), budget);
        for (i, n) in groups {
            let Some(s) = walkable.get(i) else { continue };
            self.walk_l1(
                s.l1_offset,
                s.l1_size,
                Some(s.name.clone()),
                n,
                &mut l2,
                progress,
            );
        }
        if let Some(s) = left_out.and_then(|i| walkable.get(i)) {
            if self.first_pass {
                self.check_error(format!(
                    "snapshot L1 tables: distinct tables overlap in a file of {} bytes; \
                     the tables from snapshot {} on were not walked",
                    self.file_len, s.name
                ));
            }
        }
        self.snapshots = snapshots;
        if l2.dropped > 0 && self.first_pass {
            self.check_error(format!(
                "L1 tables name more distinct L2 tables than the file has clusters ({}): \
                 {} references to further tables were not walked",
                l2.cap, l2.dropped
            ));
        }
        for r in &l2.refs {
            self.walk_l2(r);
        }
        let snap_offset = self.header_value("snapshots_offset");
        self.inc(snap_offset, self.snapshots_size, &Who::SnapshotTable);
        let rt_bytes = u64::from(self.h.refcount_table_clusters).saturating_mul(self.cluster_size);
        // A table past qemu's limit is refused (a check error from
        // `load_refcounts`; qemu will not open the image): its claimed
        // size, up to terabytes, is not counted cluster by cluster.
        if rt_bytes <= MAX_REFTABLE_BYTES {
            self.inc(self.h.refcount_table_offset, rt_bytes, &Who::RefcountTable);
        }
        self.walk_bitmaps();
        self.walk_refblocks();
    }

    fn header_value(&self, name: &str) -> u64 {
        crate::layout::value_of(&self.h.fields, name).unwrap_or(0)
    }

    /// One L1 table, named `n` times (by the header or by snapshots):
    /// its clusters and entries counted, its L2 tables noted in `l2`.
    fn walk_l1(
        &mut self,
        l1_offset: u64,
        l1_size: u64,
        snapshot: Option<Arc<str>>,
        n: u64,
        l2: &mut L2Refs,
        progress: &dyn Progress,
    ) {
        if l1_size == 0 {
            return;
        }
        let bytes = l1_size.saturating_mul(8);
        self.inc_n(
            l1_offset,
            bytes,
            &Who::L1 {
                snapshot: snapshot.clone(),
            },
            n,
        );
        let table = match self.read(l1_offset, bytes) {
            Ok(t) => t,
            Err(e) => {
                if self.first_pass {
                    self.check_error(format!("L1 table: {e}"));
                }
                return;
            }
        };
        let active = snapshot.is_none();
        for (i, chunk) in (0u64..).zip(table.chunks_exact(8)) {
            if active {
                progress.advance(1);
            }
            let entry = be64(chunk);
            if entry == 0 {
                continue;
            }
            let at = l1_offset.saturating_add(i.saturating_mul(8));
            if entry & L1E_RESERVED_MASK != 0 {
                self.walk_problem_n(
                    "l1-reserved-bits",
                    format!("L1 entry {i}"),
                    Some(at),
                    format!("entry {entry:#x} has reserved bits set"),
                    n,
                );
            }
            let l2_offset = entry & OFFSET_MASK;
            self.inc_n(
                l2_offset,
                self.cluster_size,
                &Who::L2 {
                    l1_index: i,
                    snapshot: snapshot.clone(),
                },
                n,
            );
            if l2_offset & self.cluster_size.saturating_sub(1) != 0 {
                self.walk_problem_n(
                    "l2-table-unaligned",
                    format!("L1 entry {i}"),
                    Some(at),
                    format!("L2 table offset {l2_offset:#x} is not cluster aligned"),
                    n,
                );
            }
            // A table wholly past the end of the file reads as zeros:
            // nothing in it to walk.
            if l2_offset < self.file_len {
                l2.add(l2_offset, n, i, &snapshot);
            }
        }
    }

    pub(super) fn entry_width(&self) -> u64 {
        if self.h.extended_l2() {
            16
        } else {
            8
        }
    }

    /// One L2 table, walked once for all `r`'s references.
    fn walk_l2(&mut self, r: &L2Ref) {
        let (l1_index, l2_offset, snapshot) = (r.l1_index, r.offset, &r.snapshot);
        let n = r.active.saturating_add(r.snapshots);
        let table = match self.read(l2_offset, self.cluster_size) {
            Ok(t) => t,
            Err(e) => {
                if self.first_pass {
                    self.check_error(format!("L2 table at {l2_offset:#x}: {e}"));
                }
                return;
            }
        };
        let active = r.active;
        let extended = self.h.extended_l2();
        let width = self.entry_width();
        let entries = self.cluster_size.checked_div(width).unwrap_or(0);
        let l2_bits = self
            .cluster_bits
            .saturating_sub(if extended { 4 } else { 3 });
        let guest_base = l1_index
            .checked_shl(self.cluster_bits.saturating_add(l2_bits))
            .unwrap_or(u64::MAX);
        self.next_contiguous = 0;
        let w = usize::try_from(width).unwrap_or(8);
        for (j, chunk) in (0u64..entries).zip(table.chunks_exact(w)) {
            let entry = be64(chunk);
            let bitmap = if extended {
                be64(chunk.get(8..).unwrap_or(&[]))
            } else {
                0
            };
            let at = l2_offset.saturating_add(j.saturating_mul(width));
            let guest = guest_base.saturating_add(j << self.cluster_bits);
            let structure =
                || format!("L2 entry {j} of the table at {l2_offset:#x} (guest offset {guest:#x})");
            let compressed = entry & OFLAG_COMPRESSED != 0;
            if !compressed && entry & L2E_STD_RESERVED_MASK != 0 {
                self.walk_problem_n(
                    "l2-reserved-bits",
                    structure(),
                    Some(at),
                    format!("entry {entry:#x} has reserved bits set"),
                    n,
                );
            }
            if compressed {
                if entry & OFLAG_COPIED != 0 {
                    self.walk_problem_n(
                        "compressed-copied-flag",
                        structure(),
                        Some(at),
                        "the copied flag is set on a compressed cluster".into(),
                        n,
                    );
                }
                if bitmap != 0 {
                    self.walk_problem_n(
                        "compressed-subcluster-bitmap",
                        structure(),
                        Some(at),
                        format!("compressed cluster with a subcluster bitmap {bitmap:#x}"),
                        n,
                    );
                    continue;
                }
                let descriptor = entry & 0x3fff_ffff_ffff_ffff;
                let (coffset, csize) = compressed_location(descriptor, self.cluster_bits);
                self.inc_n(
                    coffset,
                    csize,
                    &Who::Compressed {
                        guest,
                        snapshot: snapshot.clone(),
                    },
                    n,
                );
                if active > 0 && self.first_pass {
                    self.out.allocated_clusters = Some(
                        self.out
                            .allocated_clusters
                            .unwrap_or(0)
                            .saturating_add(active),
                    );
                    self.out.compressed_clusters = Some(
                        self.out
                            .compressed_clusters
                            .unwrap_or(0)
                            .saturating_add(active),
                    );
                    self.out.fragmented_clusters = Some(
                        self.out
                            .fragmented_clusters
                            .unwrap_or(0)
                            .saturating_add(active),
                    );
                }
                continue;
            }
            let offset = entry & OFFSET_MASK;
            let zero = entry & OFLAG_ZERO != 0 && !extended;
            if offset == 0 {
                if !zero && bitmap & L2_BITMAP_ALL_ALLOC != 0 {
                    self.walk_problem_n(
                        "unallocated-subcluster-bitmap",
                        structure(),
                        Some(at),
                        format!(
                            "unallocated cluster with allocated subclusters (bitmap {bitmap:#x})"
                        ),
                        n,
                    );
                }
                continue;
            }
            // Normal, or zero with storage kept.
            if (bitmap >> 32) & bitmap != 0 {
                self.walk_problem_n(
                    "subcluster-bitmap",
                    structure(),
                    Some(at),
                    format!(
                        "subcluster bitmap {bitmap:#x} marks subclusters both allocated and zero"
                    ),
                    n,
                );
            }
            if offset & self.cluster_size.saturating_sub(1) != 0 {
                let contains_data = if extended {
                    bitmap & L2_BITMAP_ALL_ALLOC != 0
                } else {
                    !zero
                };
                let (kind, what) = if contains_data {
                    ("data-cluster-unaligned", "data cluster")
                } else {
                    ("prealloc-cluster-unaligned", "preallocated zero cluster")
                };
                self.walk_problem_n(
                    kind,
                    structure(),
                    Some(at),
                    format!("{what} offset {offset:#x} is not cluster aligned"),
                    n,
                );
            }
            // The same in every reference to the table (qemu restarts the
            // contiguity per table walk).
            if active > 0 && self.first_pass {
                self.out.allocated_clusters = Some(
                    self.out
                        .allocated_clusters
                        .unwrap_or(0)
                        .saturating_add(active),
                );
                if self.next_contiguous != 0 && offset != self.next_contiguous {
                    self.out.fragmented_clusters = Some(
                        self.out
                            .fragmented_clusters
                            .unwrap_or(0)
                            .saturating_add(active),
                    );
                }
                self.next_contiguous = offset.saturating_add(self.cluster_size);
            }
            // Data in an external data file is not refcounted here (qemu's
            // check_refcounts_l2 skips it too).
            if self.h.data_file.is_some() {
                continue;
            }
            self.inc_n(
                offset,
                self.cluster_size,
                &Who::Data {
                    guest,
                    snapshot: snapshot.clone(),
                },
                n,
            );
        }
    }

    fn walk_bitmaps(&mut self) {
        let Some((dir_offset, dir_size)) = self.bitmap_directory else {
            return;
        };
        self.inc(dir_offset, dir_size, &Who::BitmapDirectory);
        let bitmaps = std::mem::take(&mut self.bitmaps);
        // Bitmaps naming one table share its walk (as snapshots do).
        let budget = (self.file_len / 8).saturating_add(1 << 20);
        let (groups, left_out) = group_tables(
            bitmaps.iter().map(|b| (b.table_offset, b.table_size)),
            budget,
        );
        if let Some(b) = left_out.and_then(|i| bitmaps.get(i)) {
            if self.first_pass {
                self.check_error(format!(
                    "bitmap tables: distinct tables overlap in a file of {} bytes; \
                     the tables from bitmap {:?} on were not walked",
                    self.file_len, b.name
                ));
            }
        }
        for (i, n) in groups {
            let Some(b) = bitmaps.get(i) else { continue };
            let bytes = b.table_size.saturating_mul(8);
            self.inc_n(
                b.table_offset,
                bytes,
                &Who::BitmapTable {
                    name: b.name.clone(),
                },
                n,
            );
            let table = match self.read(b.table_offset, bytes) {
                Ok(t) => t,
                Err(e) => {
                    if self.first_pass {
                        self.check_error(format!("bitmap {:?} table: {e}", b.name));
                    }
                    continue;
                }
            };
            for (i, chunk) in (0u64..).zip(table.chunks_exact(8)) {
                let entry = be64(chunk);
                let offset = entry & BME_OFFSET_MASK;
                let bad = entry & BME_RESERVED_MASK != 0
                    || (offset != 0
                        && (entry & BME_FLAG_ALL_ONES != 0
                            || offset & self.cluster_size.saturating_sub(1) != 0));
                if bad {
                    self.walk_problem_n(
                        "bitmap-table-entry",
                        format!("bitmap {:?} table entry {i}", b.name),
                        Some(b.table_offset.saturating_add(i.saturating_mul(8))),
                        format!("entry {entry:#x} is invalid"),
                        n,
                    );
                    continue;
                }
                if offset != 0 {
                    self.inc_n(
                        offset,
                        self.cluster_size,
                        &Who::BitmapData {
                            name: b.name.clone(),
                            index: i,
                        },
                        n,
                    );
                }
            }
        }
        self.bitmaps = bitmaps;
    }

    /// The refcount blocks (qemu's `check_refblocks`), last: a block
    /// must be referenced exactly once, by the refcount table.
    fn walk_refblocks(&mut self) {
        let Some(table) = self.refcounts.as_ref().map(|r| r.table.clone()) else {
            return;
        };
        let rt = self.h.refcount_table_offset;
        let real_clusters = self.file_len.div_ceil(self.cluster_size.max(1));
        for (i, &raw) in (0u64..).zip(table.iter()) {
            let at = rt.saturating_add(i.saturating_mul(8));
            let offset = raw & REFT_OFFSET_MASK;
            if raw & REFT_RESERVED_MASK != 0 {
                self.walk_problem(
                    "refcount-table-reserved-bits",
                    format!("refcount table entry {i}"),
                    Some(at),
                    format!("entry {raw:#x} has reserved bits set"),
                );
                continue;
            }
            if offset & self.cluster_size.saturating_sub(1) != 0 {
                self.walk_problem(
                    "refcount-block-unaligned",
                    format!("refcount table entry {i}"),
                    Some(at),
                    format!("refcount block offset {offset:#x} is not cluster aligned"),
                );
                continue;
            }
            let cluster = offset >> self.cluster_bits;
            if cluster >= real_clusters {
                self.walk_problem(
                    "refcount-block-outside",
                    format!("refcount table entry {i}"),
                    Some(at),
                    format!("refcount block {i} at {offset:#x} is outside the image"),
                );
                continue;
            }
            if offset != 0 {
                self.inc(offset, self.cluster_size, &Who::RefcountBlock { index: i });
                if self.explain.is_none() && self.window.contains(&cluster) {
                    let idx = usize::try_from(cluster.saturating_sub(self.window.start))
                        .unwrap_or(usize::MAX);
                    let n = self.count_at(idx);
                    if n != 1 {
                        self.problem(
                            Severity::Error,
                            "refcount-block-refcount",
                            format!("refcount block {i}"),
                            Some(offset),
                            format!("referenced {n} times (must be exactly once)"),
                        );
                    }
                }
            }
        }
    }
}
