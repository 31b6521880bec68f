//! FAT behind the [`Filesystem`] seam. Metadata is given as Linux's vfat
//! shows it with default mount options: owner root, mode 0755 (files and
//! directories) less the write bits of read-only files, times read as UTC,
//! a directory's size its clusters' bytes.
use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::boot::{FatType, BPB};
use super::dir::{self, Assembler, ShortEntry};
use super::fsinfo::FSINFO;
use super::table::{ChainEnd, FatReader};
use super::{Fat, FsError, ROOT};
use crate::block::BlockSource;
use crate::fs::node::{
    DirEntry, FileType, Metadata, NodeId, Problem, Run, RunKind, Timestamp, Xattr,
};
use crate::fs::report::{Column, GroupRow, GroupTable, RawValue, Report, ReportField, Value};
use crate::fs::{Filesystem, FsKind};
use crate::layout::{Endian, Field, Kind};

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
#[allow(
    clippy::arithmetic_side_effects,
    reason = "FAT dates: y < 2108, 1 <= m <= 12, d < 32 (see fat_time), every term is small"
)]
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y.saturating_sub(1) } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A FAT date and time (and 10 ms units) as a timestamp; None for a date
/// that cannot be (month or day 0, the "no date" of many tools).
#[allow(
    clippy::arithmetic_side_effects,
    reason = "every input is a u16 bit field or a u8: the sums stay far below 2^40"
)]
fn fat_time(date: u16, time: u16, tenths: u8) -> Option<Timestamp> {
    let year = 1980 + i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0xf);
    let day = i64::from(date & 0x1f);
    if !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    let hour = i64::from(time >> 11);
    let minute = i64::from((time >> 5) & 0x3f);
    let second = i64::from(time & 0x1f) * 2 + i64::from(tenths / 100);
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp {
        secs,
        nsec: u32::from(tenths % 100) * 10_000_000,
    })
}

fn report_fields(tables: &[&'static [Field]], bytes: &[u8], base: u64) -> Vec<ReportField> {
    let mut out = Vec::new();
    for table in tables {
        for f in table.iter() {
            let Some(end) = f.offset.checked_add(f.size) else {
                continue;
            };
            let Some(raw) = bytes.get(f.offset..end) else {
                continue;
            };
            let (raw, shown) = match f.kind {
                Kind::Uint => {
                    let v = f.read(bytes, Endian::Little).unwrap_or(0);
                    (RawValue::Uint(v), String::new())
                }
                _ => (RawValue::Bytes(raw.to_vec()), String::new()),
            };
            out.push(ReportField {
                name: f.name,
                offset: base.saturating_add(u64::try_from(f.offset).unwrap_or(0)),
                size: u64::try_from(f.size).unwrap_or(0),
                raw,
                shown,
                check: None,
            });
        }
    }
    out
}

fn flags(attr: u8) -> Vec<&'static str> {
    [
        (dir::ATTR_READ_ONLY, "readonly"),
        (dir::ATTR_HIDDEN, "hidden"),
        (dir::ATTR_SYSTEM, "system"),
        (dir::ATTR_VOLUME_ID, "volume"),
        (dir::ATTR_DIRECTORY, "directory"),
        (dir::ATTR_ARCHIVE, "archive"),
    ]
    .iter()
    .filter(|(b, _)| attr & b != 0)
    .map(|(_, n)| *n)
    .collect()
}

/// Case-insensitive name comparison, as vfat looks names up.
fn same_name(a: &str, b: &[u8]) -> bool {
    let Ok(b) = std::str::from_utf8(b) else {
        return false;
    };
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

impl Fat {
    fn chain_bytes(&self, e: &ShortEntry) -> Result<u64, FsError> {
        if e.first_cluster == 0 {
            return Ok(0);
        }
        let limit = if e.is_dir() {
            super::dir_clusters(self.boot.cluster_size)
        } else {
            self.boot.cluster_count
        };
        let (runs, _) = self.chain(e.first_cluster, limit.max(1))?;
        Ok(runs
            .iter()
            .map(|&(_, n)| u64::from(n))
            .sum::<u64>()
            .saturating_mul(self.boot.cluster_size))
    }
}

impl Filesystem for Fat {
    fn kind(&self) -> FsKind {
        match self.boot.fat_type {
            FatType::Fat12 => FsKind::Fat12,
            FatType::Fat16 => FsKind::Fat16,
            FatType::Fat32 => FsKind::Fat32,
        }
    }

    fn source(&self) -> &Arc<dyn BlockSource> {
        self.disk.inner()
    }

    fn block_size(&self) -> u64 {
        self.boot.cluster_size
    }

    fn label(&self) -> Option<Vec<u8>> {
        self.label_bytes()
    }

    fn uuid(&self) -> Option<String> {
        self.boot.serial_text()
    }

    fn root(&self) -> NodeId {
        ROOT
    }

    fn node_name(&self, node: NodeId) -> String {
        if node == ROOT {
            "the root directory".to_owned()
        } else {
            format!("the entry at {node:#x}")
        }
    }

    fn superblock(&self) -> Report {
        let mut raw = vec![0u8; super::boot::SIZE];
        let mut problems = self.boot.problems.clone();
        if let Err(e) = self.disk.read_at(0, &mut raw) {
            problems.push(e.to_string());
        }
        let mut fields = report_fields(&self.boot.tables(), &raw, 0);
        for f in &mut fields {
            f.shown = match f.name {
                "BPB_Media" if f.value() == 0xf8 => "fixed disk".to_owned(),
                "BPB_Media" if f.value() == 0xf0 => "removable".to_owned(),
                "BS_VolID" => self.boot.serial_text().unwrap_or_default(),
                "Signature_word" if f.value() == 0xaa55 => "ok".to_owned(),
                "Signature_word" => "BAD".to_owned(),
                _ => String::new(),
            };
        }
        if let Some((info, at)) = self.fsinfo {
            let mut b = vec![0u8; 512];
            if self.disk.read_at(at, &mut b).is_ok() {
                fields.extend(report_fields(&[FSINFO], &b, at));
            }
            if !info.valid {
                problems.push(format!("FSInfo sector at {at:#x}: bad signatures"));
            }
        }
        let _ = BPB;
        Report {
            structure: "boot sector",
            title: format!("{} boot sector", self.boot.fat_type.name()),
            offset: 0,
            len: 512,
            fields,
            problems,
        }
    }

    fn groups(&self, first: u64, count: u64) -> Result<GroupTable, FsError> {
        // The FAT copies are FAT's "group tables": where each lies, and
        // whether it says what the copy in use says.
        let b = &self.boot;
        let fat_bytes = b.fat_sectors.saturating_mul(b.bytes_per_sector);
        let active = b.active_fat();
        let used_len = b
            .cluster_count
            .saturating_add(2)
            .saturating_mul(b.fat_type.bits())
            .div_ceil(8)
            .min(fat_bytes);
        let mut rows = Vec::new();
        for copy in first..first.saturating_add(count).min(b.num_fats) {
            let at = b.fat_offset.saturating_add(copy.saturating_mul(fat_bytes));
            let same = if copy == active {
                "in use".to_owned()
            } else {
                let other = b
                    .fat_offset
                    .saturating_add(active.saturating_mul(fat_bytes));
                match self.same_bytes(at, other, used_len) {
                    Ok(true) => "same as the FAT in use".to_owned(),
                    Ok(false) => "DIFFERS from the FAT in use".to_owned(),
                    Err(e) => e.to_string(),
                }
            };
            let free = self.free_clusters(copy)?;
            rows.push(GroupRow {
                index: copy,
                offset: Some(at),
                cells: vec![
                    format!("{at:#x}"),
                    fat_bytes.to_string(),
                    free.to_string(),
                    same.clone(),
                ],
                values: vec![
                    ("offset", Some(Value::Uint(at))),
                    ("bytes", Some(Value::Uint(fat_bytes))),
                    ("free_clusters", Some(Value::Uint(free))),
                    ("state", Some(Value::Text(same.clone()))),
                ],
                ok: Some(!same.starts_with("DIFFERS")),
                ..GroupRow::default()
            });
        }
        let col = |title, width| Column { title, width };
        Ok(GroupTable {
            noun: "FAT copy",
            columns: vec![
                col("offset", 12),
                col("bytes", 10),
                col("free clusters", 13),
                col("state", 0),
            ],
            total: b.num_fats,
            rows,
        })
    }

    fn group_report(&self, group: u64) -> Result<Report, FsError> {
        let b = &self.boot;
        if group >= b.num_fats {
            return Err(FsError::NotFound {
                path: format!("FAT {group}"),
                detail: format!("the volume has {} FATs", b.num_fats),
            });
        }
        let fat_bytes = b.fat_sectors.saturating_mul(b.bytes_per_sector);
        let at = b.fat_offset.saturating_add(group.saturating_mul(fat_bytes));
        let mut reader = FatReader::new(&self.disk, b, group);
        let entry_size = b.fat_type.bits().div_ceil(8);
        let mut fields = Vec::new();
        for (i, name) in [(0u32, "FAT[0]"), (1, "FAT[1]")] {
            let v = reader.entry(i)?;
            fields.push(ReportField {
                name,
                offset: at.saturating_add(u64::from(i).saturating_mul(b.fat_type.bits()) / 8),
                size: entry_size,
                raw: RawValue::Uint(u64::from(v)),
                shown: if i == 0 {
                    format!("media {:#04x}", v & 0xff)
                } else {
                    "end-of-chain mark (and clean/error bits)".to_owned()
                },
                check: None,
            });
        }
        Ok(Report {
            structure: "FAT",
            title: format!("FAT {group}"),
            offset: at,
            len: fat_bytes,
            fields,
            problems: Vec::new(),
        })
    }

    fn metadata(&self, node: NodeId) -> Result<Metadata, FsError> {
        let Some(e) = self.entry(node)? else {
            let size = match self.boot.fat_type {
                FatType::Fat32 => {
                    let (runs, _) = self.chain(
                        self.boot.root_cluster,
                        super::dir_clusters(self.boot.cluster_size),
                    )?;
                    runs.iter()
                        .map(|&(_, n)| u64::from(n))
                        .sum::<u64>()
                        .saturating_mul(self.boot.cluster_size)
                }
                _ => self.boot.root_dir_bytes,
            };
            return Ok(Metadata {
                node,
                file_type: FileType::Directory,
                mode: 0o040_755,
                uid: 0,
                gid: 0,
                size,
                links: 1,
                allocated: size,
                atime: None,
                mtime: None,
                ctime: None,
                crtime: None,
                generation: None,
                rdev: None,
                flags: vec!["directory"],
            });
        };
        let dir = e.is_dir();
        let allocated = self.chain_bytes(&e)?;
        let mut perm = 0o755;
        if e.attr & dir::ATTR_READ_ONLY != 0 {
            perm &= !0o222;
        }
        let mtime = fat_time(e.wrt_date, e.wrt_time, 0);
        Ok(Metadata {
            node,
            file_type: if dir {
                FileType::Directory
            } else {
                FileType::Regular
            },
            mode: if dir { 0o040_000 } else { 0o100_000 } | perm,
            uid: 0,
            gid: 0,
            size: if dir { allocated } else { u64::from(e.size) },
            links: 1,
            allocated,
            atime: fat_time(e.acc_date, 0, 0),
            mtime,
            ctime: mtime,
            crtime: fat_time(e.crt_date, e.crt_time, e.crt_tenth),
            generation: None,
            rdev: None,
            flags: flags(e.attr),
        })
    }

    fn node_report(&self, node: NodeId) -> Result<Report, FsError> {
        if node == ROOT {
            return Ok(Report {
                structure: "root directory",
                title: "the root directory (no entry)".to_owned(),
                offset: self.boot.root_dir_offset,
                len: 0,
                fields: Vec::new(),
                problems: Vec::new(),
            });
        }
        let mut b = [0u8; 32];
        self.disk.read_at(node, &mut b)?;
        let mut fields = report_fields(&[dir::ENTRY], &b, node);
        let e = ShortEntry::decode(&b);
        for f in &mut fields {
            f.shown = match f.name {
                "DIR_Name" => e.display_name(),
                "DIR_Attr" => flags(e.attr).join(","),
                _ => String::new(),
            };
        }
        Ok(Report {
            structure: "directory entry",
            title: format!("entry at {node:#x}"),
            offset: node,
            len: 32,
            fields,
            problems: Vec::new(),
        })
    }

    fn read_dir(
        &self,
        dir: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(DirEntry) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let mut asm = Assembler::default();
        let result = self.scan_dir(dir, &mut asm, &mut |item| {
            let name = match item.name.as_str() {
                "." | ".." => item.name.clone().into_bytes(),
                _ => item.name.into_bytes(),
            };
            let entry = DirEntry {
                name,
                node: item.offset,
                file_type: Some(if item.entry.is_dir() {
                    FileType::Directory
                } else {
                    FileType::Regular
                }),
                offset: Some(item.long_offset.unwrap_or(item.offset)),
            };
            each(entry).is_continue()
        });
        // A broken long-name sequence leaves the short names listed.
        problems.extend(asm.problems.into_iter().map(|p| {
            Problem::warning(FsError::Corrupt {
                structure: "FAT directory",
                field: "entries",
                offset: 0,
                detail: p,
            })
        }));
        result
    }

    fn prefetch_dirs(&self, dirs: &[NodeId]) -> bool {
        Fat::prefetch_dirs(self, dirs).unwrap_or_else(|e| {
            tracing::debug!("prefetch: {e}");
            false
        })
    }

    fn lookup(&self, path: &[u8]) -> Result<NodeId, FsError> {
        let mut node = ROOT;
        for part in path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
        {
            let mut found = None;
            let mut asm = Assembler::default();
            self.scan_dir(node, &mut asm, &mut |item| {
                if same_name(&item.name, part) || same_name(&item.short_name, part) {
                    found = Some(item.offset);
                    false
                } else {
                    true
                }
            })?;
            node = found.ok_or_else(|| FsError::NotFound {
                path: crate::escape::printable_bytes(path),
                detail: format!("no {:?}", crate::escape::printable_bytes(part)),
            })?;
        }
        Ok(node)
    }

    fn runs(
        &self,
        node: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let Some(e) = self.entry(node)? else {
            if self.boot.fat_type != FatType::Fat32 {
                let _ = each(Run {
                    logical: 0,
                    physical: self.boot.root_dir_offset,
                    len: self.boot.root_dir_bytes,
                    kind: RunKind::Data,
                });
                return Ok(());
            }
            return self.chain_runs(self.boot.root_cluster, None, node, problems, each);
        };
        if e.first_cluster == 0 {
            if !e.is_dir() && e.size != 0 {
                problems.push(Problem::lost(FsError::corrupt(
                    "FAT directory entry",
                    "DIR_FstClusLO",
                    node,
                    format!("a file of {} bytes with no cluster", e.size),
                )));
            }
            return Ok(());
        }
        let size = (!e.is_dir()).then_some(u64::from(e.size));
        self.chain_runs(e.first_cluster, size, node, problems, each)
    }

    fn read_file(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let Some(e) = self.entry(node)? else {
            return Err(FsError::NotFound {
                path: "/".to_owned(),
                detail: "the root is a directory".to_owned(),
            });
        };
        let size = if e.is_dir() {
            self.chain_bytes(&e)?
        } else {
            u64::from(e.size)
        };
        let want = usize::try_from(size.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let Some(out) = buf.get_mut(..want) else {
            return Ok(0);
        };
        if want == 0 {
            return Ok(0);
        }
        let runs = self.file_chain(e.first_cluster)?;
        let cs = self.boot.cluster_size;
        let end = offset.saturating_add(u64::try_from(want).unwrap_or(u64::MAX));
        let mut logical = 0u64;
        let mut filled = offset;
        for &(c, n) in runs.iter() {
            let len = u64::from(n).saturating_mul(cs);
            let (a, b) = (logical.max(offset), logical.saturating_add(len).min(end));
            if a < b {
                let Some(base) = self.boot.cluster_offset(c) else {
                    break;
                };
                let from = usize::try_from(a.saturating_sub(offset)).unwrap_or(usize::MAX);
                let to = usize::try_from(b.saturating_sub(offset)).unwrap_or(usize::MAX);
                if let Some(dst) = out.get_mut(from..to) {
                    self.disk
                        .read_at(base.saturating_add(a.saturating_sub(logical)), dst)?;
                }
                filled = b;
            }
            logical = logical.saturating_add(len);
            if logical >= end {
                break;
            }
        }
        if filled < end {
            return Err(FsError::corrupt(
                "FAT directory entry",
                "DIR_FileSize",
                node,
                format!(
                    "the file's size is {size} bytes, its cluster chain from {} holds {logical}",
                    e.first_cluster
                ),
            ));
        }
        Ok(want)
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        Err(FsError::NotFound {
            path: format!("<{node}>"),
            detail: "FAT has no symbolic links".to_owned(),
        })
    }

    fn xattrs(&self, _node: NodeId, _problems: &mut Vec<Problem>) -> Result<Vec<Xattr>, FsError> {
        Ok(Vec::new())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Fat {
    /// Free entries of FAT copy `copy`.
    fn free_clusters(&self, copy: u64) -> Result<u64, FsError> {
        let mut reader = FatReader::new(&self.disk, &self.boot, copy);
        let last = u32::try_from(self.boot.cluster_count.saturating_add(1)).unwrap_or(u32::MAX);
        reader.count_free(2, last)
    }

    /// Whether `len` bytes at `a` and `b` are equal.
    fn same_bytes(&self, a: u64, b: u64, len: u64) -> Result<bool, FsError> {
        let mut x = vec![0u8; 64 << 10];
        let mut y = vec![0u8; 64 << 10];
        let mut done = 0u64;
        // (reads as zeros, length) of the runs at a and b, and where
        // (from `done`'s start) each ends.
        let (mut run_a, mut run_b) = ((false, 0u64), (false, 0u64));
        let (mut known_a, mut known_b) = (0u64, 0u64);
        while done < len {
            let rest = len.saturating_sub(done);
            // Where both copies read as zeros (holes, clusters no layer
            // holds), they are equal without reading: two tables of the
            // size a field claims cost what is stored. The disk is asked
            // again only past the run it last answered.
            if done >= known_a {
                run_a = crate::block::zero_run(&self.disk, a.saturating_add(done), rest);
                known_a = done.saturating_add(run_a.1);
            }
            if done >= known_b {
                run_b = crate::block::zero_run(&self.disk, b.saturating_add(done), rest);
                known_b = done.saturating_add(run_b.1);
            }
            if run_a.0 && run_b.0 {
                done = known_a.min(known_b);
                continue;
            }
            let n = usize::try_from(rest.min(64 << 10)).unwrap_or(0);
            let (xs, ys) = (
                x.get_mut(..n).unwrap_or_default(),
                y.get_mut(..n).unwrap_or_default(),
            );
            self.disk.read_at(a.saturating_add(done), xs)?;
            self.disk.read_at(b.saturating_add(done), ys)?;
            if xs != ys {
                return Ok(false);
            }
            done = done.saturating_add(u64::try_from(n).unwrap_or(u64::MAX).max(1));
        }
        Ok(true)
    }

    /// Streams the runs of the chain from `first`; for a file of `size`
    /// bytes, stops after the clusters the size needs and reports a chain
    /// that is shorter or longer.
    fn chain_runs(
        &self,
        first: u32,
        size: Option<u64>,
        node: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let cs = self.boot.cluster_size;
        let need = match size {
            Some(s) => s.div_ceil(cs.max(1)),
            None => super::dir_clusters(cs),
        };
        let mut logical = 0u64;
        let mut clusters = 0u64;
        let mut extra = 0u64;
        let mut stopped = false;
        // The walk goes on past what the size needs (emitting nothing) so
        // a chain that loops or breaks there is still named; it costs the
        // chain's real length, bounded by the cycle check.
        let end = super::table::walk(&mut self.fat_reader(), first, &mut |c, n| {
            let take = u64::from(n).min(need.saturating_sub(clusters));
            extra = extra.saturating_add(u64::from(n).saturating_sub(take));
            if take == 0 {
                return true;
            }
            if let Some(at) = self.boot.cluster_offset(c) {
                let len = take.saturating_mul(cs);
                if each(Run {
                    logical,
                    physical: at,
                    len,
                    kind: RunKind::Data,
                })
                .is_break()
                {
                    stopped = true;
                    return false;
                }
                logical = logical.saturating_add(len);
            }
            clusters = clusters.saturating_add(take);
            true
        })?;
        if stopped {
            return Ok(());
        }
        let corrupt =
            |detail: String| FsError::corrupt("FAT cluster chain", "FAT entry", node, detail);
        match end {
            ChainEnd::Broken(why) => problems.push(Problem::lost(corrupt(why))),
            // The file's bytes are all there: a warning.
            ChainEnd::Complete | ChainEnd::Stopped if extra > 0 && size.is_some() => {
                problems.push(Problem::warning(corrupt(format!(
                    "the chain from cluster {first} goes on {extra} cluster(s) past the {need} the file's size needs"
                ))));
            }
            ChainEnd::Complete | ChainEnd::Stopped if extra > 0 => {
                problems.push(Problem::lost(corrupt(format!(
                    "directory chain from cluster {first} longer than {} bytes: the rest is not read",
                    super::MAX_DIR_BYTES
                ))));
            }
            ChainEnd::Complete | ChainEnd::Stopped => {}
        }
        if let Some(s) = size {
            if clusters < need {
                problems.push(Problem::lost(corrupt(format!(
                    "the file's size is {s} bytes but its chain from cluster {first} holds {} clusters of {cs}",
                    clusters
                ))));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_times_are_utc_calendar_times() {
        // 2023-11-14 22:13:20 = 1700000000.
        let date = ((2023 - 1980) << 9) | (11 << 5) | 14;
        let time = (22 << 11) | (13 << 5) | 10;
        assert_eq!(fat_time(date, time, 0).unwrap().secs, 1_700_000_000);
        assert_eq!(fat_time(date, time, 150).unwrap().secs, 1_700_000_001);
        assert_eq!(fat_time(date, time, 150).unwrap().nsec, 500_000_000);
        assert!(fat_time(0, 0, 0).is_none());
    }
}
