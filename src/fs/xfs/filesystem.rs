//! XFS behind the [`Filesystem`] seam: the decoders of this module turned
//! into the model every caller shares. The allocation groups are the
//! "groups": one row per AG with its free space and inodes as its trees
//! hold them, and the three headers' CRCs.
use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::ag::AgSummary;
use super::bmbt::{Extent, Mapping};
use super::crc::Check;
use super::dinode::{Dinode, Fork, Format, DINODE};
use super::{superblock, Xfs};
use crate::block::BlockSource;
use crate::fs::node::{DirEntry, FileType, Metadata, NodeId, Problem, Run, RunKind, Xattr};
use crate::fs::report::{
    Column, GroupRow, GroupTable, NamedCheck, RawValue, Report, ReportField, Value,
};
use crate::fs::{Filesystem, FsError, FsKind};
use crate::layout::{Field, FieldValue, Kind};

/// A report field from a decoded table field and the bytes it came from
/// (text and UUID fields keep their raw bytes: escaping is the printer's).
pub(crate) fn report_field(
    table: &[Field],
    f: &FieldValue,
    bytes: &[u8],
    base: u64,
    shown: String,
    check: Option<Check>,
) -> ReportField {
    let def = table.iter().find(|d| d.name == f.name);
    let raw = match def.map(|d| d.kind) {
        Some(Kind::Uint) | None => RawValue::Uint(f.value),
        Some(_) => {
            let start = f.offset.saturating_sub(base);
            let start = usize::try_from(start).unwrap_or(usize::MAX);
            RawValue::Bytes(
                bytes
                    .get(start..start.saturating_add(f.size))
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default(),
            )
        }
    };
    let shown = if shown.is_empty() {
        match (&raw, def.map(|d| d.kind)) {
            (_, Some(Kind::Uuid)) | (_, Some(Kind::Text)) => f.text.clone().unwrap_or_default(),
            _ => shown,
        }
    } else {
        shown
    };
    ReportField {
        name: f.name,
        offset: f.offset,
        size: u64::try_from(f.size).unwrap_or(0),
        raw,
        shown,
        check,
    }
}

fn crc_shown(c: Option<Check>) -> String {
    match c {
        Some(c) if c.ok() => "ok".to_owned(),
        Some(c) => format!("BAD (computed {:#010x})", c.computed),
        None => String::new(),
    }
}

/// The UUID as `blkid` prints it.
fn uuid_text(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    let part = |r: std::ops::Range<usize>| h.get(r).map(|s| s.concat()).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..4),
        part(4..6),
        part(6..8),
        part(8..10),
        part(10..16)
    )
}

/// The columns of the groups listing.
const COLUMNS: &[Column] = &[
    Column {
        title: "blocks",
        width: 10,
    },
    Column {
        title: "free blocks",
        width: 12,
    },
    Column {
        title: "longest free",
        width: 12,
    },
    Column {
        title: "free extents",
        width: 12,
    },
    Column {
        title: "free list",
        width: 9,
    },
    Column {
        title: "inodes",
        width: 8,
    },
    Column {
        title: "free inodes",
        width: 11,
    },
    Column {
        title: "inode chunks",
        width: 12,
    },
    Column {
        title: "problems",
        width: 8,
    },
];

fn row(s: &AgSummary) -> GroupRow {
    let uint = |v: u64| Some(Value::Uint(v));
    let checks = [
        ("AGF", s.agf.crc),
        ("AGI", s.agi.crc),
        ("AGFL", s.agfl.as_ref().and_then(|l| l.crc)),
    ]
    .into_iter()
    .filter_map(|(what, c)| {
        c.map(|check| NamedCheck {
            what,
            bits: 32,
            check,
        })
    })
    .collect();
    GroupRow {
        index: u64::from(s.agno),
        offset: Some(s.agf.offset),
        cells: vec![
            s.agf.length.to_string(),
            s.free_blocks.to_string(),
            s.longest.to_string(),
            s.free_extents.to_string(),
            s.agf.flcount.to_string(),
            s.inodes.to_string(),
            s.free_inodes.to_string(),
            s.chunks.to_string(),
            s.problems.len().to_string(),
        ],
        values: vec![
            ("offset", uint(s.agf.offset)),
            ("blocks", uint(s.agf.length.into())),
            ("free_blocks", uint(s.free_blocks)),
            ("longest_free", uint(s.longest)),
            ("free_extents", uint(s.free_extents)),
            ("free_list", uint(s.agf.flcount.into())),
            ("inodes", uint(s.inodes)),
            ("free_inodes", uint(s.free_inodes)),
            ("inode_chunks", uint(s.chunks)),
            ("problems", Some(Value::Texts(s.problems.clone()))),
        ],
        checks,
        ok: s.crcs_ok().map(|ok| ok && s.problems.is_empty()),
        notes: s.problems.clone(),
        ..GroupRow::default()
    }
}

/// A problem of a walk as the trait reports it: a CRC that does not match
/// is a warning (the block is still used), anything else lost part of
/// the answer.
fn problem(e: FsError) -> Problem {
    match &e {
        FsError::Corrupt { field, .. } if field.ends_with("crc") => Problem::warning(e),
        _ => Problem::lost(e),
    }
}

impl Xfs {
    fn header_report(&self, agno: u32) -> Result<Report, FsError> {
        let s = self.ag_summary(agno)?;
        let mut fields = Vec::new();
        let sect = usize::from(self.superblock().sectsize);
        let agf_bytes = self.read_bytes(s.agf.offset, sect, "AGF")?;
        for f in &s.agf.fields {
            let (shown, check) = if f.name == "agf_crc" {
                (crc_shown(s.agf.crc), s.agf.crc)
            } else {
                (String::new(), None)
            };
            fields.push(report_field(
                super::agf::AGF,
                f,
                &agf_bytes,
                s.agf.offset,
                shown,
                check,
            ));
        }
        let agi_bytes = self.read_bytes(s.agi.offset, sect, "AGI")?;
        for f in &s.agi.fields {
            let (shown, check) = if f.name == "agi_crc" {
                (crc_shown(s.agi.crc), s.agi.crc)
            } else {
                (String::new(), None)
            };
            fields.push(report_field(
                super::agi::AGI,
                f,
                &agi_bytes,
                s.agi.offset,
                shown,
                check,
            ));
        }
        if let Some(l) = &s.agfl {
            let bytes = self.read_bytes(l.offset, sect, "AGFL")?;
            for f in &l.fields {
                let (shown, check) = if f.name == "agfl_crc" {
                    (crc_shown(l.crc), l.crc)
                } else {
                    (String::new(), None)
                };
                fields.push(report_field(
                    super::agfl::AGFL,
                    f,
                    &bytes,
                    l.offset,
                    shown,
                    check,
                ));
            }
            for &(slot, bno) in &l.blocks {
                fields.push(ReportField {
                    name: "agfl_bno",
                    offset: l
                        .ring_offset
                        .saturating_add(u64::from(slot).saturating_mul(4)),
                    size: 4,
                    raw: RawValue::Uint(bno.into()),
                    shown: format!("free list slot {slot}"),
                    check: None,
                });
            }
        }
        Ok(Report {
            structure: "AG headers",
            title: format!("AG {agno}"),
            offset: s.agf.offset,
            len: u64::try_from(sect.saturating_mul(3)).unwrap_or(0),
            fields,
            problems: s.problems,
        })
    }
}

impl Filesystem for Xfs {
    fn kind(&self) -> FsKind {
        FsKind::Xfs
    }

    fn source(&self) -> &Arc<dyn BlockSource> {
        self.disk().inner()
    }

    fn block_size(&self) -> u64 {
        self.block_bytes()
    }

    fn label(&self) -> Option<Vec<u8>> {
        let f = &self.superblock().fname;
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        let l = f.get(..end).unwrap_or_default();
        (!l.is_empty()).then(|| l.to_vec())
    }

    fn uuid(&self) -> Option<String> {
        Some(uuid_text(&self.superblock().uuid))
    }

    fn root(&self) -> NodeId {
        self.superblock().rootino
    }

    fn superblock(&self) -> Report {
        let sb = Xfs::superblock(self);
        let sect = usize::from(sb.sectsize);
        let bytes = self
            .read_bytes(0, sect, "XFS superblock")
            .unwrap_or_default();
        let fields = sb
            .fields
            .iter()
            .map(|f| {
                let check = if f.name == "sb_crc" { sb.crc } else { None };
                report_field(
                    superblock::SUPERBLOCK,
                    f,
                    &bytes,
                    0,
                    sb.shown(f.name),
                    check,
                )
            })
            .collect();
        Report {
            structure: "superblock",
            title: "superblock".to_owned(),
            offset: 0,
            len: u64::from(sb.sectsize),
            fields,
            problems: sb.problems.clone(),
        }
    }

    fn groups(&self, first: u64, count: u64) -> Result<GroupTable, FsError> {
        let total = u64::from(Xfs::superblock(self).agcount);
        let end = first.saturating_add(count).min(total);
        let mut rows = Vec::new();
        for g in first..end {
            let agno = u32::try_from(g).unwrap_or(u32::MAX);
            rows.push(match self.ag_summary(agno) {
                Ok(s) => row(&s),
                Err(e) => GroupRow {
                    offset: self.ag_offset(agno).ok(),
                    ok: Some(false),
                    ..GroupRow::failed(g, e.to_string())
                },
            });
        }
        Ok(GroupTable {
            noun: "allocation group",
            columns: COLUMNS.to_vec(),
            total,
            rows,
        })
    }

    fn group_report(&self, group: u64) -> Result<Report, FsError> {
        let agno = u32::try_from(group)
            .ok()
            .filter(|&a| a < Xfs::superblock(self).agcount);
        let agno = agno.ok_or_else(|| {
            FsError::corrupt(
                "AG headers",
                "agno",
                0,
                format!(
                    "AG {group} does not exist ({} AGs)",
                    Xfs::superblock(self).agcount
                ),
            )
        })?;
        self.header_report(agno)
    }

    fn metadata(&self, node: NodeId) -> Result<Metadata, FsError> {
        let i = self.inode(node)?;
        Ok(Metadata {
            node,
            file_type: i.file_type(),
            mode: u32::from(i.mode),
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            links: i.nlink,
            allocated: i.nblocks.saturating_mul(self.block_bytes()),
            atime: Some(time(i.atime)),
            mtime: Some(time(i.mtime)),
            ctime: Some(time(i.ctime)),
            crtime: i.crtime.map(time),
            generation: Some(i.gen),
            rdev: i.rdev(),
            flags: i.flag_names(),
        })
    }

    fn node_report(&self, node: NodeId) -> Result<Report, FsError> {
        let i = self.inode(node)?;
        let mut fields: Vec<ReportField> = i
            .fields
            .iter()
            .map(|f| {
                let check = if f.name == "di_crc" { i.crc } else { None };
                report_field(DINODE, f, &i.raw, i.offset, i.shown(f.name), check)
            })
            .collect();
        let mut problems: Vec<String> = i.problems.clone();
        // The data fork's extent records, when the inode holds them.
        match i.fork(Fork::Data) {
            Ok(Some((fork, at, Format::Extents))) => {
                let n = usize::try_from(i.nextents)
                    .unwrap_or(usize::MAX)
                    .min(fork.len() / 16);
                for k in 0..n {
                    let off = k.saturating_mul(16);
                    let Some(rec) = fork.get(off..off.saturating_add(16)) else {
                        break;
                    };
                    let e = Extent::decode(rec, at.saturating_add(u64::try_from(off).unwrap_or(0)));
                    fields.push(ReportField {
                        name: "bmx",
                        offset: e.at,
                        size: 16,
                        raw: RawValue::Bytes(rec.to_vec()),
                        shown: format!(
                            "[startoff {}, startblock {}, blockcount {}{}]",
                            e.startoff,
                            e.startblock,
                            e.blockcount,
                            if e.unwritten { ", unwritten" } else { "" }
                        ),
                        check: None,
                    });
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        Ok(Report {
            structure: "inode",
            title: format!("inode {node}"),
            offset: i.offset,
            len: u64::try_from(i.raw.len()).unwrap_or(0),
            fields,
            problems,
        })
    }

    fn read_dir(
        &self,
        dir: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(DirEntry) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let inode = self.inode(dir)?;
        if !inode.is_dir() {
            return Err(FsError::NotFound {
                path: format!("<{dir}>"),
                detail: format!("inode {dir} is not a directory"),
            });
        }
        let mut found = Vec::new();
        let listed = self.list_dir(&inode, &mut found, &mut |e| {
            each(DirEntry {
                file_type: e.ftype.and_then(entry_type),
                node: e.ino,
                offset: Some(e.at),
                name: e.name,
            })
        });
        problems.extend(found.into_iter().map(problem));
        listed
    }

    fn prefetch_nodes(&self, nodes: &[NodeId]) -> bool {
        self.prefetch_inodes(nodes).unwrap_or_else(|e| {
            tracing::debug!("prefetch: {e}");
            false
        })
    }

    fn prefetch_dirs(&self, dirs: &[NodeId]) -> bool {
        Xfs::prefetch_dirs(self, dirs).unwrap_or_else(|e| {
            tracing::debug!("prefetch: {e}");
            false
        })
    }

    fn lookup(&self, path: &[u8]) -> Result<NodeId, FsError> {
        let mut node = self.root();
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            let dir = self.inode(node)?;
            let not_found = |detail: String| FsError::NotFound {
                path: crate::escape::printable_bytes(path),
                detail,
            };
            if !dir.is_dir() {
                return Err(not_found(format!("inode {node} is not a directory")));
            }
            node = self.dir_lookup(&dir, part)?.ok_or_else(|| {
                not_found(format!("no {:?}", crate::escape::printable_bytes(part)))
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
        let i = self.inode(node)?;
        let mut found = Vec::new();
        let walked = self.data_runs(&i, &mut found, each);
        problems.extend(found.into_iter().map(problem));
        walked
    }

    fn read_file(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let i = self.inode(node)?;
        let have = self.readable_end(&i, offset)?.saturating_sub(offset);
        let n = usize::try_from(have).unwrap_or(usize::MAX).min(buf.len());
        let Some(part) = buf.get_mut(..n) else {
            return Ok(0);
        };
        part.fill(0);
        if n == 0 {
            return Ok(0);
        }
        match i.format {
            Format::Local => {
                if let Some((fork, _, _)) = i.fork(Fork::Data)? {
                    let start = usize::try_from(offset).unwrap_or(usize::MAX);
                    let src = fork.get(start..).unwrap_or_default();
                    let m = src.len().min(n);
                    if let (Some(d), Some(s)) = (part.get_mut(..m), src.get(..m)) {
                        d.copy_from_slice(s);
                    }
                }
                Ok(n)
            }
            Format::Extents | Format::Btree => {
                if i.is_realtime() {
                    return Err(realtime(node));
                }
                self.read_extents(&i, offset, part)?;
                Ok(n)
            }
            _ => Ok(n),
        }
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        let i = self.inode(node)?;
        if i.file_type() != FileType::Symlink {
            return Err(FsError::NotFound {
                path: format!("<{node}>"),
                detail: format!("inode {node} is not a symlink"),
            });
        }
        let mut problems = Vec::new();
        let target = self.symlink_target(&i, &mut problems)?;
        match problems.into_iter().next() {
            Some(p) => Err(p),
            None => Ok(target),
        }
    }

    fn xattrs(&self, node: NodeId, problems: &mut Vec<Problem>) -> Result<Vec<Xattr>, FsError> {
        let i = self.inode(node)?;
        let mut found = Vec::new();
        let attrs = self.attrs(&i, &mut found);
        problems.extend(found.into_iter().map(problem));
        Ok(attrs?
            .into_iter()
            .map(|a| Xattr {
                name: a.full_name(),
                value: a.value,
            })
            .collect())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Xfs {
    /// The data fork's runs (map blocks included) of inode `i`.
    fn data_runs(
        &self,
        i: &Dinode,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let bs = self.block_bytes();
        match i.format {
            Format::Local => {
                // The bytes live in the inode itself.
                if let Some((fork, at, _)) = i.fork(Fork::Data)? {
                    let len = i.size.min(u64::try_from(fork.len()).unwrap_or(0));
                    if len > 0 {
                        let _ = each(Run {
                            logical: 0,
                            physical: at,
                            len,
                            kind: RunKind::Data,
                        });
                    }
                }
                Ok(())
            }
            Format::Extents | Format::Btree => {
                if i.is_realtime() {
                    return Err(realtime(i.ino));
                }
                let mut failed = None;
                self.walk_fork(i, Fork::Data, 0, problems, &mut |m| {
                    let run = match m {
                        Mapping::Node { level, at } => Run {
                            logical: 0,
                            physical: at,
                            len: bs,
                            kind: RunKind::Meta {
                                level: u8::try_from(level).unwrap_or(u8::MAX),
                            },
                        },
                        Mapping::Extent(e) => match self.fsb_offset(e.startblock) {
                            Ok(physical) => Run {
                                logical: e.startoff.saturating_mul(bs),
                                physical,
                                len: e.blockcount.saturating_mul(bs),
                                kind: if e.unwritten {
                                    RunKind::Unwritten
                                } else {
                                    RunKind::Data
                                },
                            },
                            Err(err) => {
                                failed = Some(err);
                                return ControlFlow::Continue(());
                            }
                        },
                    };
                    each(run)
                })?;
                problems.extend(failed);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn realtime(node: NodeId) -> FsError {
    FsError::Unsupported {
        what: format!("XFS inode {node}: a realtime file: its blocks are on the realtime device"),
    }
}

fn time(t: crate::fs::node::Timestamp) -> crate::fs::node::Timestamp {
    t
}

/// The directory entry file type (`XFS_DIR3_FT_*`).
fn entry_type(t: u8) -> Option<FileType> {
    Some(match t {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::CharDevice,
        4 => FileType::BlockDevice,
        5 => FileType::Fifo,
        6 => FileType::Socket,
        7 => FileType::Symlink,
        _ => return None,
    })
}

impl Xfs {
    /// Fills `buf` with the file's bytes from `offset` (holes and
    /// unwritten extents read as zeros; `buf` is zeroed by the caller).
    /// Where reading the inode at `offset` ends. A regular file ends at
    /// `di_size`, which the kernel's inode verifier refuses at 2^63 or
    /// more. Any other inode (a directory, a symlink, one of no valid
    /// type) is read no further than its data fork reaches: the kernel
    /// never read(2)s those, so past their fork their size is only a
    /// claim. The fork is walked from `offset` on, so reading one
    /// sequentially costs its map once per piece, not more.
    fn readable_end(&self, i: &Dinode, offset: u64) -> Result<u64, FsError> {
        if i64::try_from(i.size).is_err() {
            return Err(FsError::corrupt(
                "inode",
                "di_size",
                i.offset.saturating_add(0x38),
                format!(
                    "inode {}: size {} is negative as the kernel reads it (2^63 or more); its verifier refuses the inode",
                    i.ino, i.size
                ),
            ));
        }
        if i.file_type() == FileType::Regular {
            return Ok(i.size);
        }
        let held = match i.format {
            Format::Local => i.fork(Fork::Data)?.map_or(0, |(fork, _, _)| {
                u64::try_from(fork.len()).unwrap_or(u64::MAX)
            }),
            Format::Extents | Format::Btree => {
                let bs = self.block_bytes();
                let mut end = 0u64;
                let mut problems = Vec::new();
                self.walk_fork(
                    i,
                    Fork::Data,
                    offset.checked_div(bs).unwrap_or(0),
                    &mut problems,
                    &mut |m| {
                        if let Mapping::Extent(e) = m {
                            end = end.max(e.end().saturating_mul(bs));
                        }
                        ControlFlow::Continue(())
                    },
                )?;
                end
            }
            _ => 0,
        };
        Ok(i.size.min(held))
    }

    fn read_extents(&self, i: &Dinode, offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let bs = self.block_bytes();
        let end = offset.saturating_add(u64::try_from(buf.len()).unwrap_or(u64::MAX));
        let mut problems = Vec::new();
        let mut failed = None;
        self.walk_fork(
            i,
            Fork::Data,
            offset.checked_div(bs).unwrap_or(0),
            &mut problems,
            &mut |m| {
                let Mapping::Extent(e) = m else {
                    return ControlFlow::Continue(());
                };
                let e_start = e.startoff.saturating_mul(bs);
                let e_end = e.end().saturating_mul(bs);
                if e_start >= end {
                    return ControlFlow::Break(());
                }
                if e.unwritten {
                    return ControlFlow::Continue(());
                }
                let from = e_start.max(offset);
                let to = e_end.min(end);
                if from >= to {
                    return ControlFlow::Continue(());
                }
                let read = self.fsb_offset(e.startblock).and_then(|base| {
                    let at = base.saturating_add(from.saturating_sub(e_start));
                    let dst = usize::try_from(from.saturating_sub(offset)).unwrap_or(usize::MAX);
                    let len = usize::try_from(to.saturating_sub(from)).unwrap_or(0);
                    let Some(d) = buf.get_mut(dst..dst.saturating_add(len)) else {
                        return Ok(());
                    };
                    let end_at = at.saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
                    if end_at > self.disk().len() {
                        return Err(FsError::corrupt(
                            "file data",
                            "extent",
                            e.at,
                            format!(
                                "inode {}: data at {at:#x} is past the end of the volume",
                                i.ino
                            ),
                        ));
                    }
                    self.disk().read_at(at, d)?;
                    Ok(())
                });
                match read {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(err) => {
                        failed = Some(err);
                        ControlFlow::Break(())
                    }
                }
            },
        )?;
        match failed.or_else(|| problems.into_iter().next()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
