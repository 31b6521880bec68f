//! The comparison side of `check`: the window's counts against the
//! stored refcounts (leaks and corruptions), every structure that
//! references an over-used cluster, and the `OFLAG_COPIED` flags against
//! the refcounts (qemu's `compare_refcounts` and `check_oflag_copied`).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::as_conversions
)]
use super::*;

impl Checker<'_> {
    /// Compares the window's counts with the stored refcounts; returns
    /// the clusters referenced more often than their refcount says.
    pub(super) fn compare(&mut self) -> Vec<u64> {
        let mut too_low = Vec::new();
        if self.refcounts.is_none() {
            // The table could not be loaded (a check error said why;
            // qemu refuses to open such an image): nothing to compare.
            return too_low;
        }
        let mut k = self.window.start;
        while k < self.window.end {
            if let Some(run_end) = self.absent_refcounts_end(k, self.window.end) {
                self.compare_absent(k..run_end, &mut too_low);
                k = run_end.max(k.saturating_add(1));
                continue;
            }
            let i = usize::try_from(k.saturating_sub(self.window.start)).unwrap_or(usize::MAX);
            let counted = self.count_at(i);
            let stored = match self.stored_refcount(k) {
                Ok(v) => v,
                Err(e) => {
                    // Each cluster of the block is an error, as qemu
                    // counts them; one message and one step for the lot
                    // (a file of terabytes over one bad block took a
                    // lookup per cluster).
                    let next = self.refcount_block_end(k, self.window.end);
                    // qemu counts up to the file's last cluster, or the
                    // last referenced one past it (its `nb_clusters`).
                    let counted_to = self
                        .file_len
                        .div_ceil(self.cluster_size.max(1))
                        .max(self.max_ref.map_or(0, |m| m.saturating_add(1)));
                    let n = next.min(counted_to).saturating_sub(k);
                    if n == 0 {
                        k = next;
                        continue;
                    }
                    self.check_error_with(|| {
                        if n > 1 {
                            let last = k.saturating_add(n).saturating_sub(1);
                            format!("cannot get the refcount of clusters {k}-{last}: {e}")
                        } else {
                            format!("cannot get the refcount of cluster {k}: {e}")
                        }
                    });
                    self.out.check_errors =
                        self.out.check_errors.saturating_add(n.saturating_sub(1));
                    // As in qemu, a cluster whose refcount cannot be read
                    // does not move the image's end.
                    k = next;
                    continue;
                }
            };
            if stored > 0 || counted > 0 {
                self.highest = self.highest.max(k);
            }
            if stored != counted {
                let at = k.saturating_mul(self.cluster_size);
                if stored > counted {
                    self.problem(
                        Severity::Leak,
                        "leaked-cluster",
                        format!("cluster {k}"),
                        Some(at),
                        format!("refcount {stored}, referenced {counted} times: leaked (wasted space, no harm to data)"),
                    );
                } else {
                    self.refcount_too_low(k, stored, counted, &mut too_low);
                }
            }
            k = k.saturating_add(1);
        }
        too_low
    }

    /// Clusters whose refcount block is absent: stored 0, so only the
    /// counted ones are problems (the same report as a lookup per cluster
    /// would give, at the cost of scanning the counts).
    fn compare_absent(&mut self, run: std::ops::Range<u64>, too_low: &mut Vec<u64>) {
        let base = self.window.start;
        let idx = |k: u64| usize::try_from(k.saturating_sub(base)).unwrap_or(usize::MAX);
        let (lo, hi) = (idx(run.start), idx(run.end).min(self.counts.len()));
        let mut i = lo;
        while i < hi {
            // Only the 4096-cluster chunks where a count is.
            let chunk = i >> TOUCH_SHIFT;
            let chunk_end = chunk
                .saturating_add(1)
                .checked_shl(TOUCH_SHIFT)
                .unwrap_or(usize::MAX)
                .min(hi);
            if self.touched.get(u64::try_from(chunk).unwrap_or(u64::MAX)) {
                for j in i..chunk_end {
                    let counted = self.count_at(j);
                    if counted == 0 {
                        continue;
                    }
                    let k = base.saturating_add(u64::try_from(j).unwrap_or(u64::MAX));
                    self.highest = self.highest.max(k);
                    self.refcount_too_low(k, 0, counted, too_low);
                }
            }
            i = chunk_end;
        }
    }

    /// Cluster `k` is referenced more often than its refcount says: an
    /// error, and the cluster kept (up to a bound) for explaining.
    fn refcount_too_low(&mut self, k: u64, stored: u64, counted: u64, too_low: &mut Vec<u64>) {
        if too_low.len() < MAX_EXPLAINED {
            too_low.push(k);
        }
        self.problem(
            Severity::Error,
            "refcount-too-low",
            format!("cluster {k}"),
            Some(k.saturating_mul(self.cluster_size)),
            format!("refcount {stored}, referenced {counted} times"),
        );
    }

    /// Walks the metadata once more, naming who references each cluster
    /// whose refcount is too low, and adds them to those problems.
    pub(super) fn explain_clusters(&mut self, clusters: &[u64]) {
        self.explain = Some(clusters.iter().map(|&k| (k, Vec::new())).collect());
        self.walk(&crate::check::NoProgress);
        let Some(map) = self.explain.take() else {
            return;
        };
        for p in &mut self.out.problems.list {
            if p.kind != "refcount-too-low" {
                continue;
            }
            let Some(k) = p.offset.map(|o| o >> self.cluster_bits) else {
                continue;
            };
            if let Some(who) = map.get(&k) {
                if !who.is_empty() {
                    p.detail = format!("{}: {}", p.detail, who.join("; "));
                }
            }
        }
    }

    /// qemu's `check_oflag_copied`: the copied flag says "refcount is
    /// exactly 1", for the active L1's L2 tables and their data clusters.
    pub(super) fn check_oflag_copied(&mut self) {
        let l1_offset = self.h.l1_table_offset;
        let Ok(l1) = self.read(l1_offset, u64::from(self.h.l1_size).saturating_mul(8)) else {
            return;
        };
        let width = self.entry_width();
        let extended = self.h.extended_l2();
        let w = usize::try_from(width).unwrap_or(8);
        // The distinct L2 tables the entries name, and how many name each
        // (as the walk counts them).
        let mut tables = super::walk::L2Refs::new(self.distinct_tables_cap());
        for (i, chunk) in (0u64..).zip(l1.chunks_exact(8)) {
            let l1e = be64(chunk);
            let l2_offset = l1e & OFFSET_MASK;
            if l2_offset == 0 {
                continue;
            }
            let Ok(rc) = self.stored_refcount(l2_offset >> self.cluster_bits) else {
                continue;
            };
            if (rc == 1) != (l1e & OFLAG_COPIED != 0) {
                self.problem(
                    Severity::Error,
                    "oflag-copied-l1",
                    format!("L1 entry {i}"),
                    Some(l1_offset.saturating_add(i.saturating_mul(8))),
                    format!("entry {l1e:#x}: the copied flag disagrees with the L2 table's refcount {rc}"),
                );
            }
            // A table wholly past the end of the file reads as zeros.
            if l2_offset >= self.file_len {
                continue;
            }
            tables.add(l2_offset, 1, i, &None);
        }
        // Each distinct L2 table once, its problems counted once per L1
        // entry naming it (as qemu, which reads it per entry, counts them).
        for (l2_offset, n) in tables.refs.iter().map(|r| (r.offset, r.active)) {
            let Ok(table) = self.read(l2_offset, self.cluster_size) else {
                continue;
            };
            for (j, e) in (0u64..).zip(table.chunks_exact(w)) {
                let entry = be64(e);
                if entry & OFLAG_COMPRESSED != 0 {
                    continue;
                }
                let data = entry & OFFSET_MASK;
                if data == 0 {
                    continue;
                }
                let _ = extended;
                // qemu's check_oflag_copied: a cluster in an external data
                // file counts as referenced once.
                let rc = if self.h.data_file.is_some() {
                    1
                } else {
                    let Ok(rc) = self.stored_refcount(data >> self.cluster_bits) else {
                        continue;
                    };
                    rc
                };
                if (rc == 1) != (entry & OFLAG_COPIED != 0) {
                    self.problem_n(
                        Severity::Error,
                        "oflag-copied-l2",
                        format!("L2 entry {j} of the table at {l2_offset:#x}"),
                        Some(l2_offset.saturating_add(j.saturating_mul(width))),
                        format!("entry {entry:#x}: the copied flag disagrees with the data cluster's refcount {rc}{}", counted(n)),
                        n,
                    );
                }
            }
        }
    }
}
