//! The files, from the root: fsck.fat's `check_dir`, `check_file` and
//! `truncate_file` over the FAT as fixed in memory.
use std::fmt::Write as _;

use super::{Checker, File, Severity, MAX_DEPTH, MAX_FILES};
use crate::block::BlockSource;
use crate::fs::fat::boot::FatType;
use crate::fs::fat::dir::{self, ShortEntry};

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
    pub(super) fn check_dir(
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
