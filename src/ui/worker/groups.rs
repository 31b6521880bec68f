//! The worker's group tables: ext's block group descriptors (with their
//! checksums, as dumpe2fs shows them), or for other filesystems the table
//! the filesystem gives (XFS's allocation groups); offsets on the disk.
use super::fs::{field_row, printable_chain};
use super::{error_chain, Worker};
use crate::block::{BlockError, BlockSource};
use crate::fs::ext::Ext4;
use crate::ui::msg::{
    Checksum, FieldRow, GroupRow, GroupsTable, OtherGroupRow, OtherGroups, MAX_GROUP_ROWS,
};

impl Worker {
    /// The group table as of `as_of`, at disk offsets.
    pub(super) fn groups(
        &mut self,
        as_of: usize,
    ) -> Result<Result<GroupsTable, String>, BlockError> {
        let fs = match self.fsys(as_of)? {
            Ok(fs) => fs,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(ext) = fs.as_any().downcast_ref::<Ext4>() {
            let mut t = groups_table(ext);
            for r in &mut t.rows {
                r.offset = r.offset.map(|o| self.disk_offset(o));
            }
            return Ok(Ok(t));
        }
        let table = match fs.groups(0, MAX_GROUP_ROWS) {
            Ok(t) => t,
            Err(e) => return Ok(Err(printable_chain(&e))),
        };
        let esc = crate::escape::printable;
        let rows = table
            .rows
            .iter()
            .map(|r| OtherGroupRow {
                index: r.index,
                offset: r.offset.map(|o| self.disk_offset(o)),
                cells: r.cells.iter().map(|c| esc(c)).collect(),
                ok: r.ok,
            })
            .collect();
        Ok(Ok(GroupsTable {
            count: table.total,
            desc_size: 0,
            checksum_kind: "",
            rows: Vec::new(),
            other: Some(OtherGroups {
                noun: table.noun,
                columns: table.columns.iter().map(|c| esc(c.title)).collect(),
                rows,
            }),
        }))
    }

    /// One group's header fields, at disk offsets.
    pub(super) fn group_fields(
        &mut self,
        as_of: usize,
        group: u64,
    ) -> Result<Result<Vec<FieldRow>, String>, BlockError> {
        let fs = match self.fsys(as_of)? {
            Ok(fs) => fs,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(ext) = fs.as_any().downcast_ref::<Ext4>() {
            let rows: Result<Vec<FieldRow>, String> = ext
                .group(group)
                .map(|d| d.fields().iter().map(field_row).collect())
                .map_err(|e| printable_chain(&e));
            return Ok(rows.map(|rows| {
                rows.into_iter()
                    .map(|mut r| {
                        r.offset = self.disk_offset(r.offset);
                        r
                    })
                    .collect()
            }));
        }
        Ok(match fs.group_report(group) {
            Ok(report) => Ok(self.report_rows(&report)),
            Err(e) => Err(printable_chain(&e)),
        })
    }
}

/// The group descriptor table (the first [`MAX_GROUP_ROWS`] groups); a
/// descriptor that cannot be read is a row with its error.
fn groups_table(fs: &Ext4) -> GroupsTable {
    use crate::fs::ext::group_desc::expected_checksum;
    let sb = fs.superblock();
    let count = sb.group_count();
    let desc_size = if sb.is_64bit() {
        usize::from(sb.desc_size)
    } else {
        32
    };
    let rows = (0..count.min(MAX_GROUP_ROWS))
        .map(|g| match fs.group(g) {
            Ok(d) => {
                let offset = Some(d.base);
                let checksum = match d.checksum_ok() {
                    None => Checksum::None,
                    Some(true) => Checksum::Ok(d.checksum),
                    Some(false) => {
                        // The expected value, from the descriptor's bytes.
                        let mut raw = vec![0u8; desc_size];
                        let expected = offset
                            .and_then(|o| fs.disk().read_at(o, &mut raw).ok())
                            .and_then(|()| expected_checksum(sb, g, &raw))
                            .unwrap_or(0);
                        Checksum::Bad {
                            stored: d.checksum,
                            expected,
                        }
                    }
                };
                GroupRow {
                    group: g,
                    offset,
                    block_bitmap: d.block_bitmap,
                    inode_bitmap: d.inode_bitmap,
                    inode_table: d.inode_table,
                    free_blocks: d.free_blocks,
                    free_inodes: d.free_inodes,
                    used_dirs: d.used_dirs,
                    itable_unused: d.itable_unused,
                    flags: d.flag_names(),
                    checksum,
                    error: None,
                }
            }
            Err(e) => GroupRow {
                group: g,
                offset: None,
                block_bitmap: 0,
                inode_bitmap: 0,
                inode_table: 0,
                free_blocks: 0,
                free_inodes: 0,
                used_dirs: 0,
                itable_unused: 0,
                flags: Vec::new(),
                checksum: Checksum::None,
                error: Some(crate::escape::printable(&error_chain(&e))),
            },
        })
        .collect();
    GroupsTable {
        count,
        desc_size,
        checksum_kind: if sb.has_metadata_csum() {
            "crc32c"
        } else if sb.has_ro_compat(crate::fs::ext::superblock::RoCompat::UNINIT_BG) {
            "crc16"
        } else {
            "none"
        },
        rows,
        other: None,
    }
}
