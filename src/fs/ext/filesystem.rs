//! ext2/3/4 behind the [`Filesystem`] seam: the decoders of this module
//! turned into the model every caller shares.
use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::blockmap::Run as ExtRun;
use super::inode::{Inode, Timestamp as ExtTime};
use super::{superblock, Ext4, FsError};
use crate::block::BlockSource;
use crate::fs::node::{DirEntry, FileType, Metadata, NodeId, Run, RunKind, Timestamp, Xattr};
use crate::fs::report::{GroupRow, GroupTable, RawValue, Report, ReportField};
use crate::fs::{Filesystem, FsKind};
use crate::layout::FieldValue;

/// incompat features ext3 does not have (blkid's rule: any of them, or
/// extents, 64bit, flex_bg… makes it ext4).
const EXT4_INCOMPAT: u32 = !(0x2 | 0x4 | 0x8);
const EXT4_RO_COMPAT: u32 = !(0x1 | 0x2 | 0x4);

fn time(t: ExtTime) -> Timestamp {
    Timestamp {
        secs: t.secs,
        nsec: t.nsec,
    }
}

fn field(f: &FieldValue) -> ReportField {
    ReportField {
        name: f.name,
        offset: f.offset,
        size: f.size as u64,
        raw: match &f.text {
            Some(t) => RawValue::Bytes(t.as_bytes().to_vec()),
            None => RawValue::Uint(f.value),
        },
        shown: String::new(),
        check: None,
    }
}

impl Ext4 {
    fn file_type_of(inode: &Inode) -> FileType {
        FileType::from_mode(u32::from(inode.mode))
    }
}

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

impl Filesystem for Ext4 {
    fn kind(&self) -> FsKind {
        let sb = self.superblock();
        if sb.feature_incompat & EXT4_INCOMPAT != 0 || sb.feature_ro_compat & EXT4_RO_COMPAT != 0 {
            FsKind::Ext4
        } else if sb.feature_compat & 0x4 != 0 || sb.has_incompat(0x8) {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        }
    }

    fn source(&self) -> &Arc<dyn BlockSource> {
        self.disk().inner()
    }

    fn block_size(&self) -> u64 {
        self.superblock().block_size
    }

    fn label(&self) -> Option<Vec<u8>> {
        let l = self.superblock().text("s_volume_name");
        (!l.is_empty()).then(|| l.into_bytes())
    }

    fn uuid(&self) -> Option<String> {
        Some(super::journal::uuid_text(&self.superblock().uuid))
    }

    fn root(&self) -> NodeId {
        2
    }

    fn superblock(&self) -> Report {
        let sb = Ext4::superblock(self);
        let mut fields: Vec<ReportField> = sb.fields.iter().map(field).collect();
        if let (Some(ok), Some(f)) = (
            sb.checksum_ok,
            fields.iter_mut().find(|f| f.name == "s_checksum"),
        ) {
            f.shown = if ok { "ok" } else { "BAD" }.to_owned();
        }
        Report {
            structure: "superblock",
            title: "superblock".to_owned(),
            offset: superblock::OFFSET,
            len: superblock::SIZE as u64,
            fields,
            problems: match sb.checksum_ok {
                Some(false) => vec!["superblock checksum does not match".to_owned()],
                _ => Vec::new(),
            },
        }
    }

    fn groups(&self, first: u64, count: u64) -> Result<GroupTable, FsError> {
        let total = Ext4::superblock(self).group_count();
        let mut rows = Vec::new();
        let end = first.saturating_add(count).min(total);
        for g in first..end {
            let d = self.group(g)?;
            rows.push(GroupRow {
                index: g,
                offset: d.fields.first().map_or(0, |f| f.offset),
                cells: vec![
                    d.block_bitmap.to_string(),
                    d.inode_bitmap.to_string(),
                    d.inode_table.to_string(),
                    d.free_blocks.to_string(),
                    d.free_inodes.to_string(),
                    d.used_dirs.to_string(),
                    d.flag_names().join(","),
                ],
                ok: d.checksum_ok,
            });
        }
        Ok(GroupTable {
            noun: "block group",
            columns: vec![
                "block bitmap",
                "inode bitmap",
                "inode table",
                "free blocks",
                "free inodes",
                "directories",
                "flags",
            ],
            total,
            rows,
        })
    }

    fn group_report(&self, group: u64) -> Result<Report, FsError> {
        let d = self.group(group)?;
        let offset = d.fields.first().map_or(0, |f| f.offset);
        Ok(Report {
            structure: "group descriptor",
            title: format!("group {group}"),
            offset,
            len: u64::from(Ext4::superblock(self).desc_size.max(32)),
            fields: d.fields.iter().map(field).collect(),
            problems: match d.checksum_ok {
                Some(false) => vec![format!("group {group}: descriptor checksum does not match")],
                _ => Vec::new(),
            },
        })
    }

    fn metadata(&self, node: NodeId) -> Result<Metadata, FsError> {
        let i = self.inode(node)?;
        let sb = Ext4::superblock(self);
        let huge = sb.has_ro_compat(0x8) && i.flags & 0x4_0000 != 0;
        let allocated = if huge {
            i.blocks.saturating_mul(sb.block_size)
        } else {
            i.blocks.saturating_mul(512)
        };
        let rdev = i.is_device().then(|| {
            let b = &i.block;
            let old = u32::from(u16::from_le_bytes([b[0], b[1]]));
            if old != 0 {
                (old >> 8, old & 0xff)
            } else {
                let new = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
            }
        });
        Ok(Metadata {
            node,
            file_type: Ext4::file_type_of(&i),
            mode: u32::from(i.mode),
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            links: u32::from(i.links),
            allocated,
            atime: Some(time(i.atime)),
            mtime: Some(time(i.mtime)),
            ctime: Some(time(i.ctime)),
            crtime: i.crtime.map(time),
            generation: Some(i.generation),
            rdev,
            flags: i.flag_names(),
        })
    }

    fn node_report(&self, node: NodeId) -> Result<Report, FsError> {
        let i = self.inode(node)?;
        let mut fields: Vec<ReportField> = i.fields().iter().map(field).collect();
        if let (Some(c), Some(f)) = (
            i.checksum,
            fields.iter_mut().find(|f| f.name == "i_checksum_lo"),
        ) {
            f.check = Some(c);
            f.shown = if c.ok() { "ok" } else { "BAD" }.to_owned();
        }
        Ok(Report {
            structure: "inode",
            title: format!("inode {node}"),
            offset: i.base,
            len: i.raw().len() as u64,
            fields,
            problems: i.problems.iter().map(ToString::to_string).collect(),
        })
    }

    fn read_dir(
        &self,
        dir: NodeId,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(DirEntry) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let inode = self.inode(dir)?;
        if !inode.is_dir() {
            return Err(FsError::NotFound {
                path: format!("<{dir}>"),
                detail: format!("inode {dir} is a {}, not a directory", inode.type_name()),
            });
        }
        let listing = self.list_dir(&inode)?;
        problems.extend(listing.problems);
        for e in listing.entries {
            let entry = DirEntry {
                file_type: entry_type(e.file_type),
                node: u64::from(e.inode),
                offset: (e.offset != 0).then_some(e.offset),
                name: e.name,
            };
            if each(entry).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn lookup(&self, path: &[u8]) -> Result<NodeId, FsError> {
        crate::fs::node::lookup_by_listing(self, path)
    }

    fn runs(
        &self,
        node: NodeId,
        problems: &mut Vec<FsError>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        let inode = self.inode(node)?;
        let map = self.block_map(&inode)?;
        problems.extend(map.skipped);
        problems.extend(map.warnings);
        let bs = Ext4::superblock(self).block_size;
        for r in map.runs {
            let ExtRun {
                logical,
                physical,
                len,
                uninit,
                meta,
                level,
            } = r;
            let run = Run {
                logical: logical.saturating_mul(bs),
                physical: physical.saturating_mul(bs),
                len: len.saturating_mul(bs),
                kind: if meta {
                    RunKind::Meta { level }
                } else if uninit {
                    RunKind::Unwritten
                } else {
                    RunKind::Data
                },
            };
            if each(run).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn read_file(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let inode = self.inode(node)?;
        let have = inode.size.saturating_sub(offset);
        let n = usize::try_from(have).unwrap_or(usize::MAX).min(buf.len());
        let Some(part) = buf.get_mut(..n) else {
            return Ok(0);
        };
        let runs = Ext4::runs(self, &inode)?;
        Ext4::read_file(self, &inode, &runs, offset, part)?;
        Ok(n)
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        let inode = self.inode(node)?;
        if !inode.is_symlink() {
            return Err(FsError::NotFound {
                path: format!("<{node}>"),
                detail: format!("inode {node} is a {}, not a symlink", inode.type_name()),
            });
        }
        self.symlink_target(&inode)
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<Xattr>, FsError> {
        let inode = self.inode(node)?;
        let x = Ext4::xattrs(self, &inode)?;
        if let Some(p) = x.problems.into_iter().next() {
            return Err(p);
        }
        Ok(x.attrs
            .into_iter()
            .map(|a| Xattr {
                name: a.name,
                value: a.value,
            })
            .collect())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::layered::LayeredReader;

    /// The trait gives what the ext methods give, on the demo chain (whose
    /// content `tests/it/demo.rs` checks against debugfs).
    #[test]
    fn the_trait_agrees_with_the_decoder_on_the_demo() {
        let chain = crate::demo::open().unwrap();
        let disk: Arc<dyn BlockSource> = Arc::new(LayeredReader::new(&chain).unwrap());
        let fs = crate::fs::open(disk).unwrap();
        assert_eq!(fs.kind(), FsKind::Ext4);
        let ext = fs.as_any().downcast_ref::<Ext4>().unwrap();
        let node = fs.lookup(b"/etc/hostname").unwrap();
        assert_eq!(node, ext.lookup("/etc/hostname").unwrap());
        let meta = fs.metadata(node).unwrap();
        assert_eq!(meta.file_type, FileType::Regular);
        let mut buf = vec![0u8; 4096];
        let n = fs.read_file(node, 0, &mut buf).unwrap();
        let inode = ext.inode(node).unwrap();
        assert_eq!(&buf[..n], &ext.read_all(&inode, 1 << 20).unwrap()[..]);
        let mut names = Vec::new();
        let mut problems = Vec::new();
        fs.read_dir(fs.root(), &mut problems, &mut |e| {
            names.push(e.name);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(names.iter().any(|n| n == b"etc"), "{names:?}");
        assert!(problems.is_empty());
        let sb = fs.superblock();
        assert_eq!(sb.field("s_magic").unwrap().value(), 0xef53);
        assert!(fs.groups(0, 10).unwrap().total >= 1);
    }
}
