//! ext2/3/4 behind the [`Filesystem`] seam: the decoders of this module
//! turned into the model every caller shares.
use super::superblock::{sb, Compat, Incompat, RoCompat, Superblock};
use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::blockmap::Run as ExtRun;
use super::group_desc::placement;
use super::inode::{Inode, Timestamp as ExtTime};
use super::{Ext4, FsError};
use crate::block::BlockSource;
use crate::fs::node::{
    DirEntry, FileType, Metadata, NodeId, Problem, Run, RunKind, Timestamp, Xattr,
};
use crate::fs::report::{Check, Column, GroupRow, GroupTable, NamedCheck, Report, Value};
use crate::fs::{Filesystem, FsKind};

/// The features ext3 has (blkid's rule: any other incompat or ro_compat
/// feature, such as extents, 64bit or flex_bg, makes it ext4).
const EXT3_INCOMPAT: Incompat = Incompat::FILETYPE
    .union(Incompat::NEEDS_RECOVERY)
    .union(Incompat::JOURNAL_DEV);
const EXT3_RO_COMPAT: RoCompat = RoCompat::SPARSE_SUPER
    .union(RoCompat::LARGE_FILE)
    .union(RoCompat::from_bits_retain(0x4));

fn time(t: ExtTime) -> Timestamp {
    Timestamp {
        secs: t.secs,
        nsec: t.nsec,
    }
}

impl Ext4 {
    fn file_type_of(inode: &Inode) -> FileType {
        FileType::from_mode(u32::from(inode.mode))
    }

    /// The metadata of node `node`, inode `i`.
    fn metadata_of(&self, node: NodeId, i: &Inode) -> Metadata {
        let sb = Ext4::superblock(self);
        let huge = sb.has_ro_compat(RoCompat::HUGE_FILE) && i.flags & 0x4_0000 != 0;
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
        Metadata {
            node,
            file_type: Ext4::file_type_of(i),
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
            // What a user sets (chattr), not how the file is laid out.
            flags: if i.flags & !LAYOUT_BITS == 0 {
                // Only layout flags (most files: extents): no names to
                // look through.
                Vec::new()
            } else {
                i.flags_set()
                    .filter(|f| !LAYOUT_FLAGS.contains(f))
                    .collect()
            },
        }
    }

    /// The runs of node `node`, inode `inode` ([`Filesystem::runs`]).
    fn runs_of(
        &self,
        node: NodeId,
        inode: &Inode,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        // Devices, FIFOs and sockets own no blocks but an attribute block
        // (their i_block is not a map).
        let mapped = inode.is_reg() || inode.is_dir() || inode.is_symlink();
        let map = if mapped {
            self.block_map(inode)?
        } else {
            Default::default()
        };
        problems.extend(map.skipped.into_iter().map(Problem::lost));
        problems.extend(map.warnings.into_iter().map(Problem::warning));
        if map.more_problems > 0 {
            problems.push(Problem::warning(FsError::corrupt(
                "inode",
                "block map",
                inode.base,
                format!(
                    "inode {node}: {} more block map problems not listed",
                    map.more_problems
                ),
            )));
        }
        let bs = Ext4::superblock(self).block_size;
        let attr = (inode.file_acl != 0).then_some(Run {
            logical: 0,
            physical: inode.file_acl.saturating_mul(bs),
            len: bs,
            kind: RunKind::Attr,
        });
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
                return Ok(());
            }
        }
        if let Some(a) = attr {
            let _ = each(a);
        }
        Ok(())
    }

    /// Group `g`'s row of the group table: dumpe2fs's facts (blocks,
    /// bitmaps, inode table, free counts, flags, where the backups are)
    /// with the descriptor's and bitmaps' checksums as stored and
    /// computed. A descriptor that cannot be read is a row with its
    /// error; a bitmap that cannot be read is an error of its own, the
    /// rest of the row is still given.
    pub fn group_row(&self, g: u64) -> GroupRow {
        let d = match self.group(g) {
            Ok(d) => d,
            Err(e) => return GroupRow::failed(g, e.to_string()),
        };
        let sb = Ext4::superblock(self);
        let (first, last) = self.group_blocks(g);
        let itable_blocks = (u64::from(sb.inodes_per_group)
            .saturating_mul(u64::from(sb.inode_size)))
        .div_ceil(sb.block_size.max(1));
        let itable_last = d
            .inode_table
            .saturating_add(itable_blocks.saturating_sub(1));
        let place = placement(sb, g);
        let (bitmaps, bitmap_error) = match self.bitmap_checksums(&d) {
            Ok(b) => (b, None),
            Err(e) => ((None, None), Some(format!("group {g}: bitmaps: {e}"))),
        };
        let csum = sb.has_metadata_csum();
        let uint = |v: u64| Some(Value::Uint(v));
        let range = |r: Option<(u64, u64)>| r.map(|(a, b)| Value::Range([a, b]));
        let ok = |c: Option<Check>| c.map(|c| Value::Bool(c.ok()));
        let flags = d.flag_names();
        let mut checks = Vec::new();
        if let Some(c) = d.check {
            checks.push(NamedCheck {
                what: "descriptor",
                bits: 16,
                check: c,
            });
        }
        for (what, c) in [("block bitmap", bitmaps.0), ("inode bitmap", bitmaps.1)] {
            if let Some(c) = c {
                checks.push(NamedCheck {
                    what,
                    bits: if d.bitmap_csum_hi { 32 } else { 16 },
                    check: c,
                });
            }
        }
        let mut notes = Vec::new();
        if let Some(s) = place.superblock {
            notes.push(format!(
                "{} sb {s}",
                if g == 0 { "primary" } else { "backup" }
            ));
        }
        if let Some((a, b)) = place.descriptors {
            notes.push(format!("gdt {a}-{b}"));
        }
        if let Some((a, b)) = place.reserved_gdt {
            notes.push(format!("reserved gdt {a}-{b}"));
        }
        if let Some(m) = place.meta_descriptor {
            notes.push(format!("meta_bg gdt {m}"));
        }
        if !d.flags.is_empty() && !d.flags_apply {
            notes.push(format!(
                "bg_flags {:#x} ignored (no descriptor checksums)",
                d.flags.bits()
            ));
        }
        notes.extend(bitmap_error.clone());
        GroupRow {
            index: g,
            offset: Some(d.base),
            cells: vec![
                format!("{first}-{last}"),
                d.block_bitmap.to_string(),
                d.inode_bitmap.to_string(),
                format!("{}-{itable_last}", d.inode_table),
                d.free_blocks.to_string(),
                d.free_inodes.to_string(),
                d.used_dirs.to_string(),
                flags.join(","),
            ],
            values: vec![
                ("first_block", uint(first)),
                ("last_block", uint(last)),
                ("superblock", place.superblock.map(Value::Uint)),
                ("descriptors", range(place.descriptors)),
                ("reserved_gdt", range(place.reserved_gdt)),
                ("meta_descriptor", place.meta_descriptor.map(Value::Uint)),
                ("block_bitmap", uint(d.block_bitmap)),
                ("inode_bitmap", uint(d.inode_bitmap)),
                ("inode_table", uint(d.inode_table)),
                ("inode_table_last", uint(itable_last)),
                ("free_blocks", uint(d.free_blocks)),
                ("free_inodes", uint(d.free_inodes)),
                ("directories", uint(d.used_dirs)),
                ("unused_inodes", uint(d.itable_unused)),
                ("flags", Some(Value::Names(flags))),
                ("checksum", uint(u64::from(d.checksum))),
                ("checksum_ok", ok(d.check)),
                (
                    "block_bitmap_csum",
                    csum.then(|| Value::Uint(u64::from(d.block_bitmap_csum))),
                ),
                ("block_bitmap_csum_ok", ok(bitmaps.0)),
                (
                    "inode_bitmap_csum",
                    csum.then(|| Value::Uint(u64::from(d.inode_bitmap_csum))),
                ),
                ("inode_bitmap_csum_ok", ok(bitmaps.1)),
                ("bitmap_error", bitmap_error.map(Value::Text)),
            ],
            ok: (!checks.is_empty()).then(|| checks.iter().all(|c| c.check.ok())),
            checks,
            notes,
            error: None,
            fields: d.report().fields,
        }
    }
}

/// Inode flags that say how the file is laid out (an extent tree, an
/// htree, inline data, block counts in blocks), not what a user set: not
/// in [`Metadata::flags`], so converting a file's layout is no change.
const LAYOUT_FLAGS: &[&str] = &["index", "extents", "inline_data", "huge_file"];
/// The bits of [`LAYOUT_FLAGS`] (`index`, `huge_file`, `extents`,
/// `inline_data`).
const LAYOUT_BITS: u32 = 0x1000 | 0x4_0000 | 0x8_0000 | 0x1000_0000;

/// The columns of the group table's text form (dumpe2fs's facts, one
/// line per group).
const GROUP_COLUMNS: &[Column] = &[
    Column {
        title: "blocks",
        width: 21,
    },
    Column {
        title: "block bmp",
        width: 12,
    },
    Column {
        title: "inode bmp",
        width: 12,
    },
    Column {
        title: "inode table",
        width: 21,
    },
    Column {
        title: "free blk",
        width: 8,
    },
    Column {
        title: "free ino",
        width: 8,
    },
    Column {
        title: "dirs",
        width: 6,
    },
    Column {
        title: "flags",
        width: 0,
    },
];

impl Filesystem for Ext4 {
    fn kind(&self) -> FsKind {
        let sb = self.superblock();
        if !EXT3_INCOMPAT.contains(sb.feature_incompat)
            || !EXT3_RO_COMPAT.contains(sb.feature_ro_compat)
        {
            FsKind::Ext4
        } else if sb.has_compat(Compat::HAS_JOURNAL) || sb.has_incompat(Incompat::JOURNAL_DEV) {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        }
    }

    fn source(&self) -> &Arc<dyn BlockSource> {
        self.disk().inner()
    }

    fn cached_bytes(&self, offset: u64, len: usize) -> Option<crate::block::cache::Shared> {
        self.disk().shared(offset, len)
    }

    fn block_size(&self) -> u64 {
        self.superblock().block_size
    }

    fn label(&self) -> Option<Vec<u8>> {
        let l = self.superblock().text_bytes(sb!("s_volume_name"));
        (!l.is_empty()).then_some(l)
    }

    fn uuid(&self) -> Option<String> {
        Some(super::journal::uuid_text(&self.superblock().uuid))
    }

    fn root(&self) -> NodeId {
        2
    }

    fn superblock(&self) -> Report {
        Ext4::superblock(self).report()
    }

    fn groups(&self, first: u64, count: u64) -> Result<GroupTable, FsError> {
        let sb = Ext4::superblock(self);
        let total = sb.group_count();
        // e2fsprogs opens no filesystem whose groups hold another number
        // of inodes than the superblock counts (dumpe2fs: "The ext2
        // superblock is corrupt"): the group count is then a claim that
        // nothing confirms, and a hostile one makes millions of rows.
        let claimed = sb.inodes_in_groups();
        if total > 0 && claimed != u64::from(sb.inodes_count) {
            return Err(FsError::corrupt(
                "superblock",
                "s_inodes_count",
                Superblock::offset_of(sb!("s_inodes_count")),
                format!(
                    "{} inodes, but {total} groups of {} inodes hold {claimed}: the group table is not read (dumpe2fs refuses this superblock too)",
                    sb.inodes_count, sb.inodes_per_group
                ),
            ));
        }
        let end = first.saturating_add(count).min(total);
        let rows = (first..end).map(|g| self.group_row(g)).collect();
        Ok(GroupTable {
            noun: "block group",
            columns: GROUP_COLUMNS.to_vec(),
            total,
            rows,
        })
    }

    fn group_report(&self, group: u64) -> Result<Report, FsError> {
        Ok(self.group(group)?.report())
    }

    fn metadata(&self, node: NodeId) -> Result<Metadata, FsError> {
        // Without the checks: their problems are not part of metadata.
        Ok(self.metadata_of(node, &self.inode_unchecked(node)?))
    }

    fn metadata_runs(
        &self,
        node: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(Metadata, Result<(), FsError>), FsError> {
        // Read once, without the checks whose problems neither keeps.
        let inode = self.inode_unchecked(node)?;
        let meta = self.metadata_of(node, &inode);
        Ok((meta, self.runs_of(node, &inode, problems, each)))
    }

    fn node_report(&self, node: NodeId) -> Result<Report, FsError> {
        Ok(self.inode(node)?.report())
    }

    fn node_offset(&self, node: NodeId) -> Result<u64, FsError> {
        Ok(self.inode(node)?.base)
    }

    fn node_span(&self, node: NodeId) -> Result<(u64, u64), FsError> {
        // The report's span: the inode's slot (`Inode::report`), found
        // without reading it.
        let at = self.inode_offset(node)?;
        Ok((at, u64::from(Ext4::superblock(self).inode_size)))
    }

    fn read_dir(
        &self,
        dir: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(DirEntry) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        // Without the checks: the listing keeps none of their problems.
        let inode = self.inode_unchecked(dir)?;
        if !inode.is_dir() {
            return Err(FsError::NotFound {
                path: format!("<{dir}>"),
                detail: format!("inode {dir} is a {}, not a directory", inode.type_name()),
            });
        }
        self.for_each_entry(&inode, problems, &mut |e| {
            each(DirEntry {
                file_type: FileType::from_code(e.file_type),
                node: u64::from(e.inode),
                offset: (e.offset != 0).then_some(e.offset),
                name: e.name,
            })
        })
    }

    fn lookup(&self, path: &[u8]) -> Result<NodeId, FsError> {
        self.lookup_bytes(path)
    }
    fn prefetch_nodes(&self, nodes: &[NodeId]) -> bool {
        use crate::block::BlockSource;
        if !self.disk.remote() {
            return false;
        }
        let isize = u64::from(self.sb.inode_size);
        let wanted: Vec<(u64, u64)> = nodes
            .iter()
            .filter_map(|&ino| self.inode_offset(ino).ok().map(|at| (at, isize)))
            .collect();
        // The first batch also takes the in-use inode tables: the rows
        // of the directories opened next are then held.
        match self.disk.prefetch(&self.with_itables(wanted)) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("prefetch: {e}");
                false
            }
        }
    }

    fn prefetch_all_dirs(&self) -> Vec<NodeId> {
        match Ext4::prefetch_all_dirs(self) {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!("prefetch: {e}");
                Vec::new()
            }
        }
    }

    fn prefetch_dirs(&self, dirs: &[NodeId]) -> bool {
        match Ext4::prefetch_dirs(self, dirs) {
            Ok(did) => did.is_some(),
            Err(e) => {
                tracing::debug!("prefetch: {e}");
                false
            }
        }
    }

    fn runs(
        &self,
        node: NodeId,
        problems: &mut Vec<Problem>,
        each: &mut dyn FnMut(Run) -> ControlFlow<()>,
    ) -> Result<(), FsError> {
        self.runs_of(node, &self.inode(node)?, problems, each)
    }

    fn read_file(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let inode = self.inode(node)?;
        // What cannot be mapped reads as zeros; `runs` reports it.
        let runs = self.data_runs_cached(&inode)?;
        self.read_at(&inode, &runs, offset, buf)
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

    fn xattrs(&self, node: NodeId, problems: &mut Vec<Problem>) -> Result<Vec<Xattr>, FsError> {
        let inode = self.inode(node)?;
        let x = Ext4::xattrs(self, &inode)?;
        problems.extend(x.problems.into_iter().map(Problem::warning));
        Ok(x.attrs
            .into_iter()
            // Inline data is the file's content, not an attribute.
            .filter(|a| !(a.name_index == 7 && a.name == b"system.data"))
            .map(|a| Xattr {
                name: a.name,
                value: a.value,
            })
            .collect())
    }

    fn replay_note(&self) -> Option<String> {
        Ext4::replay_note(self)
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
